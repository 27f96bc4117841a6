"""The collaborative PyTorch model: matrix factorisation trained with the BPR loss.

BPR-MF (Rendle et al. 2009): a user vector, an item vector and an item bias; the score of a
pair is ``u · v + b``, and training pushes a bought item's score above a sampled not-bought
item's. Serving never needs torch: :meth:`BPRMF.export` hands the weights over as numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class BPRMF(nn.Module):
    """Matrix factorisation with an item bias, for implicit feedback."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float = 0.05) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0 or dim <= 0:
            raise ValueError("n_users, n_items and dim must be positive")
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        nn.init.zeros_(self.bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of (user, item) pairs, shape (batch,)."""
        u = self.user(users)
        v = self.item(items)
        scores: torch.Tensor = (u * v).sum(dim=-1) + self.bias(items).squeeze(-1)
        return scores

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user, shape (batch, n_items)."""
        scores: torch.Tensor = self.user(users) @ self.item.weight.T + self.bias.weight.T
        return scores

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user vectors, item vectors, item biases) as float32 numpy arrays."""
        with torch.no_grad():
            return (
                self.user.weight.detach().cpu().numpy().astype(np.float32).copy(),
                self.item.weight.detach().cpu().numpy().astype(np.float32).copy(),
                self.bias.weight.detach().cpu().numpy().astype(np.float32).ravel().copy(),
            )


def bpr_loss(
    model: BPRMF,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    reg: float = 0.0,
) -> torch.Tensor:
    """Mean ``-log sigmoid(s_pos - s_neg)`` plus L2 on the embeddings the batch touched.

    ``negatives`` may be (batch,) or (batch, n_neg); each negative is paired with its positive.
    """
    pos = model(users, positives)
    if negatives.dim() == 2:
        neg = model(users[:, None].expand_as(negatives), negatives)
        diff = pos[:, None] - neg
    else:
        neg = model(users, negatives)
        diff = pos - neg
    loss = -nn.functional.logsigmoid(diff).mean()
    if reg > 0:
        # Regularising only what the batch used keeps rare items from being shrunk to zero
        # by the sheer number of batches that do not contain them.
        penalty = (
            model.user(users).pow(2).sum(dim=-1).mean()
            + model.item(positives).pow(2).sum(dim=-1).mean()
            + model.item(negatives).pow(2).sum(dim=-1).mean()
        )
        loss = loss + reg * penalty
    return loss


class Reranker(nn.Module):
    """A small MLP scoring (customer, candidate item) feature rows; inputs standardised."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (64, 32)) -> None:
        super().__init__()
        if n_features <= 0:
            raise ValueError("n_features must be positive")
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def standardise(self, features: np.ndarray) -> None:
        """Fix the input scaling from training features (column mean and std)."""
        mean = torch.as_tensor(features.mean(axis=0), dtype=torch.float32)
        std = torch.as_tensor(features.std(axis=0), dtype=torch.float32).clamp_min(1e-6)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
        x = (features - self.mean) / self.std
        logits: torch.Tensor = self.net(x).squeeze(-1)
        return logits

    def export(self) -> list[np.ndarray]:
        """[mean, std, W1, b1, W2, b2, ...] as float32 numpy arrays (W as (in, out))."""
        with torch.no_grad():
            out = [
                self.mean.detach().numpy().copy(),
                self.std.detach().numpy().copy(),
            ]
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    out += [
                        layer.weight.detach().numpy().T.copy(),
                        layer.bias.detach().numpy().copy(),
                    ]
            return [a.astype(np.float32) for a in out]


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy within each group (one customer's candidates), over positives.

    ``groups`` holds dense group ids 0..G-1; each group's positives share the probability
    mass (ListNet with a top-one target spread over the bought items). Groups without a
    positive contribute nothing.
    """
    n_groups = int(groups.max()) + 1
    top = torch.full((n_groups,), -torch.inf).scatter_reduce(0, groups, logits, reduce="amax")
    shifted = torch.exp(logits - top[groups])
    log_norm = torch.log(torch.zeros(n_groups).index_add(0, groups, shifted)) + top
    positives = torch.zeros(n_groups).index_add(0, groups, labels)
    log_p = logits - log_norm[groups]
    weight = labels / positives.clamp_min(1.0)[groups]
    has = (positives > 0).sum().clamp_min(1)
    loss: torch.Tensor = -(weight * log_p).sum() / has
    return loss


def _mlp(width: int, hidden: tuple[int, ...], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def _linear_export(net: nn.Sequential) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for layer in net:
        if isinstance(layer, nn.Linear):
            out += [
                layer.weight.detach().numpy().T.astype(np.float32).copy(),
                layer.bias.detach().numpy().astype(np.float32).copy(),
            ]
    return out


class TwoTower(nn.Module):
    """A hybrid two-tower model: id embeddings plus feature (and content) towers, summed.

    The user vector is ``E_user[id] + MLP(customer features)`` and the item vector
    ``E_item[id] + MLP(item features ⊕ content vector)``; the score is their dot product.
    Index 0 of each id table is "unknown": training replaces ids by 0 at random (id dropout),
    so a new customer (features only) or a new product (content and features only) still gets
    a useful vector from the feature towers.
    """

    user_mean: torch.Tensor
    user_std: torch.Tensor
    item_mean: torch.Tensor
    item_std: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        user_features: int,
        item_features: int,
        *,
        dim: int = 64,
        hidden: tuple[int, ...] = (128,),
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        if min(n_users, n_items, user_features, item_features, dim) <= 0:
            raise ValueError("sizes and feature widths must be positive")
        self.user_id = nn.Embedding(n_users + 1, dim)
        self.item_id = nn.Embedding(n_items + 1, dim)
        nn.init.normal_(self.user_id.weight, std=init_std)
        nn.init.normal_(self.item_id.weight, std=init_std)
        self.user_tower = _mlp(user_features, hidden, dim)
        self.item_tower = _mlp(item_features, hidden, dim)
        for name, width in (("user", user_features), ("item", item_features)):
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))

    def standardise(self, user_features: np.ndarray, item_features: np.ndarray) -> None:
        """Fix the input scaling of both towers from the training features."""
        for name, x in (("user", user_features), ("item", item_features)):
            mean = torch.as_tensor(x.mean(axis=0), dtype=torch.float32)
            std = torch.as_tensor(x.std(axis=0), dtype=torch.float32).clamp_min(1e-3)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)

    def users(self, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """User vectors (batch, dim); ``ids`` are 1-based indices, 0 = unknown."""
        x = (features - self.user_mean) / self.user_std
        out: torch.Tensor = self.user_id(ids) + self.user_tower(x)
        return out

    def items(self, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Item vectors (batch, dim); ``ids`` are 1-based indices, 0 = unknown."""
        x = (features - self.item_mean) / self.item_std
        out: torch.Tensor = self.item_id(ids) + self.item_tower(x)
        return out

    def export(self) -> dict[str, Any]:
        """The weights as float32 numpy arrays (see ``predict.Towers``)."""
        with torch.no_grad():
            return {
                "user_id": self.user_id.weight.detach().numpy().astype(np.float32).copy(),
                "item_id": self.item_id.weight.detach().numpy().astype(np.float32).copy(),
                "user_mean": self.user_mean.numpy().copy(),
                "user_std": self.user_std.numpy().copy(),
                "item_mean": self.item_mean.numpy().copy(),
                "item_std": self.item_std.numpy().copy(),
                "user_layers": _linear_export(self.user_tower),
                "item_layers": _linear_export(self.item_tower),
            }


class SessionGRU(nn.Module):
    """Next-item prediction over a session's products (GRU4Rec-style, tied item embeddings).

    Item index 0 is padding; a session's hidden state is projected into the item embedding
    space and scored against every item.
    """

    def __init__(self, n_items: int, dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        if min(n_items, dim, hidden) <= 0:
            raise ValueError("n_items, dim and hidden must be positive")
        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (batch, steps, n_items + 1) of the next item after each step."""
        states, _ = self.gru(self.embedding(sequences))
        logits: torch.Tensor = self.out(states) @ self.embedding.weight.T
        return logits

    def _gru_param(self, name: str) -> torch.Tensor:
        param: torch.Tensor = getattr(self.gru, name)
        return param

    def export(self) -> dict[str, np.ndarray]:
        """Embedding, GRU and projection weights as float32 numpy arrays."""
        with torch.no_grad():
            arrays: dict[str, torch.Tensor] = {
                "embedding": self.embedding.weight,
                "w_ih": self._gru_param("weight_ih_l0"),
                "w_hh": self._gru_param("weight_hh_l0"),
                "b_ih": self._gru_param("bias_ih_l0"),
                "b_hh": self._gru_param("bias_hh_l0"),
                "out_w": self.out.weight,
                "out_b": self.out.bias,
            }
            return {k: v.detach().numpy().astype(np.float32).copy() for k, v in arrays.items()}


__all__ = ["BPRMF", "Reranker", "SessionGRU", "TwoTower", "bpr_loss", "listwise_loss"]
