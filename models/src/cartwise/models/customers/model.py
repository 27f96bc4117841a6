"""The ``nn.Module``s: an autoencoder for segment embeddings, and MLPs for churn and value.

Every network is a stack of ``Linear`` + ``ReLU`` layers, so :mod:`.predict` can run the exported
weights with numpy alone (see :func:`export` and :func:`cartwise.models.customers.predict.forward`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn


def _stack(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """features → ``dim``-d embedding → features; the embedding is what k-means clusters."""

    def __init__(self, n_inputs: int, hidden: int = 32, dim: int = 4) -> None:
        super().__init__()
        self.encoder = _stack([n_inputs, hidden, dim])
        self.decoder = _stack([dim, hidden, n_inputs])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, embedding)."""
        z = self.encoder(x)
        return self.decoder(z), z


class MLP(nn.Module):
    """A plain MLP with ``outputs`` heads (churn: one logit; value: buy logit + log spend)."""

    def __init__(
        self,
        n_inputs: int,
        hidden: int = 64,
        layers: int = 2,
        outputs: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = _stack([n_inputs, *([hidden] * layers), outputs], dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (n, outputs)."""
        out: torch.Tensor = self.net(x)
        return out


def export(module: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (weight, bias) of each Linear layer as float32 numpy, in order."""
    return [
        (
            layer.weight.detach().cpu().numpy().astype(np.float32).copy(),
            layer.bias.detach().cpu().numpy().astype(np.float32).copy(),
        )
        for layer in module
        if isinstance(layer, nn.Linear)
    ]


__all__ = ["MLP", "AutoEncoder", "export"]
