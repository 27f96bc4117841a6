"""The ``nn.Module``s: the fraud classifier MLP and the autoencoder, plus their numpy export.

Both are plain stacks of ``Linear`` layers with ReLU between them, so :func:`export` turns one
into ``(weight, bias, activation)`` triples that :func:`dense_forward` evaluates with numpy: the
predictor serving loads never needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# (weight (out, in), bias (out,), activation after the layer: "relu" or "linear")
Layer = tuple[np.ndarray, np.ndarray, str]


class Classifier(nn.Module):
    """An MLP from standardised features to one fraud logit."""

    def __init__(self, n_in: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (n,)."""
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


class AutoEncoder(nn.Module):
    """in → hidden → bottleneck → hidden → in; its reconstruction error is the anomaly score."""

    def __init__(self, n_in: int, hidden: int = 16, bottleneck: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, bottleneck),
            nn.Linear(bottleneck, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_in),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x``."""
        out: torch.Tensor = self.net(x)
        return out

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error per row."""
        out: torch.Tensor = ((self(x) - x) ** 2).mean(dim=1)
        return out


def export(module: nn.Module) -> list[Layer]:
    """The module's ``Linear`` layers as numpy triples, with the activation that follows each."""
    children = list(module.modules())
    layers: list[Layer] = []
    for i, child in enumerate(children):
        if not isinstance(child, nn.Linear):
            continue
        following = next((c for c in children[i + 1 :] if isinstance(c, nn.Linear | nn.ReLU)), None)
        activation = "relu" if isinstance(following, nn.ReLU) else "linear"
        layers.append(
            (
                child.weight.detach().cpu().numpy().astype(np.float64),
                child.bias.detach().cpu().numpy().astype(np.float64),
                activation,
            )
        )
    return layers


def dense_forward(layers: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """Evaluate exported layers on ``x`` (n, d) with numpy."""
    out = x
    for weight, bias, activation in layers:
        out = out @ weight.T + bias
        if activation == "relu":
            out = np.maximum(out, 0.0)
    return out


__all__ = ["AutoEncoder", "Classifier", "Layer", "dense_forward", "export"]
