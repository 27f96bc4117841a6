"""The learned search ranker: a small MLP over (query, product) features, trained listwise.

Each search is one list of candidates (the hybrid retriever's union); the loss is the softmax
cross-entropy of the clicked candidates within their list (ListNet with click targets), so the
model learns to order candidates, not to predict absolute click probabilities. Serving runs the
exported numpy weights (:func:`export`) and never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Ranker(nn.Module):
    """features → hidden (ReLU) → score; ``hidden=0`` is a linear ranker."""

    def __init__(self, n_features: int, hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
            )
        else:
            self.net = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores with the trailing feature axis removed: (..., F) → (...)."""
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over lists of -Σ_pos log softmax(scores)[pos] / #pos; padding is masked out."""
    masked = scores.masked_fill(~mask, -1e9)
    log_p = torch.log_softmax(masked, dim=-1)
    target = labels * mask
    per_list = -(target * log_p).sum(-1) / target.sum(-1).clamp(min=1.0)
    return per_list.mean()


def export(model: Ranker) -> dict[str, np.ndarray]:
    """The ranker's weights as float64 numpy arrays (``w1``, ``b1``, ``w2``, ``b2``)."""
    layers = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(layers, start=1):
        out[f"w{i}"] = layer.weight.detach().cpu().numpy().astype(np.float64).T.copy()
        out[f"b{i}"] = layer.bias.detach().cpu().numpy().astype(np.float64).copy()
    return out


__all__ = ["Ranker", "export", "listwise_loss"]
