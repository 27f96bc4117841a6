"""The global quantile forecaster: an MLP encoder over the lookback, a per-day MLP decoder.

MQ-forecaster style: the encoder turns a scaled lookback window (plus observed and closed flags
and a few static inputs, see :mod:`.windows`) into a context vector; for each of the next
``horizon`` days the decoder reads the context, a learned horizon embedding and that day's
calendar, and emits ``Q`` quantiles, kept ordered by building them as the median plus softplus
steps. Trained with the pinball loss on scaled units.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cartwise.models.demand.data import N_CALENDAR
from cartwise.models.demand.windows import encoder_width


class QuantileMLP(nn.Module):
    """Encoder MLP → context; decoder MLP per horizon day → ordered quantiles."""

    def __init__(
        self,
        lookback: int,
        horizon: int,
        quantiles: tuple[float, ...],
        *,
        hidden: int = 64,
        depth: int = 2,
        emb: int = 8,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        layers: list[nn.Module] = []
        width = encoder_width(lookback)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.horizon_emb = nn.Parameter(torch.randn(horizon, emb) * 0.1)
        self.decoder = nn.Sequential(
            nn.Linear(hidden + emb + N_CALENDAR, hidden),
            nn.ReLU(),
            nn.Linear(hidden, len(quantiles)),
        )
        self.depth = depth
        self.median = int(np.argmin(np.abs(np.asarray(quantiles) - 0.5)))

    def forward(self, inputs: torch.Tensor, cal: torch.Tensor) -> torch.Tensor:
        """(B, E) inputs, (B, H, C) calendar → (B, H, Q) ordered scaled quantiles."""
        context = self.encoder(inputs)
        batch, horizon = cal.shape[0], cal.shape[1]
        emb = self.horizon_emb[:horizon]
        dec = torch.cat(
            [
                context[:, None, :].expand(batch, horizon, context.shape[1]),
                emb[None].expand(batch, horizon, emb.shape[1]),
                cal,
            ],
            dim=2,
        )
        raw = self.decoder(dec)
        steps = nn.functional.softplus(raw)
        med = raw[..., self.median : self.median + 1]
        upper = med + torch.cumsum(steps[..., self.median + 1 :], dim=-1)
        lower = med - torch.cumsum(steps[..., : self.median].flip(-1), dim=-1).flip(-1)
        return torch.cat([lower, med, upper], dim=-1)

    def export(self) -> dict[str, np.ndarray]:
        """The weights as float32 numpy arrays (what the predictor keeps)."""
        return {
            k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.state_dict().items()
        }


def pinball(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """Weighted mean pinball loss: pred (B, H, Q), target and weight (B, H), levels (Q,)."""
    diff = target[..., None] - pred
    loss = torch.maximum(levels * diff, (levels - 1) * diff).mean(dim=-1)
    return (loss * weight).sum() / weight.sum().clamp_min(1e-9)


__all__ = ["QuantileMLP", "pinball"]
