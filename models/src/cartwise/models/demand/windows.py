"""Numpy featurisation shared by training and the torch-free predictor.

A *window* is one series at one forecast origin: the ``lookback`` days before the origin (units,
closed flags) and the calendar of the ``horizon`` days after it. Units are divided by the
series' mean over the open observed days of the lookback (its *scale*), so one global model fits
SKUs selling 0.1 or 1,000 units a day; forecasts are multiplied back.
"""

from __future__ import annotations

import numpy as np

# Extra encoder inputs after the three lookback vectors: log scale, zero share, observed share,
# relative price.
N_STATIC = 4


def encoder_width(lookback: int) -> int:
    """Width of the encoder input for a lookback."""
    return 3 * lookback + N_STATIC


def encode(
    hist: np.ndarray,
    hist_closed: np.ndarray,
    price_rel: np.ndarray,
    *,
    floor: float,
    clip: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, L) units (NaN = unobserved) + (B, L) closed + (B,) log price ratio → inputs, scale."""
    hist = np.asarray(hist, dtype=np.float64)
    closed = np.asarray(hist_closed, dtype=bool)
    observed = ~np.isnan(hist)
    filled = np.where(observed, hist, 0.0)
    open_obs = observed & ~closed
    count = open_obs.sum(axis=1)
    mean = (filled * open_obs).sum(axis=1) / np.maximum(count, 1)
    scale = np.maximum(mean, floor)
    scaled = np.minimum(filled / scale[:, None], clip)
    zero_share = ((filled <= 0) & open_obs).sum(axis=1) / np.maximum(count, 1)
    static = np.stack(
        [
            np.log1p(scale) / 5.0,
            zero_share,
            observed.mean(axis=1),
            np.clip(np.nan_to_num(price_rel), -1.0, 1.0),
        ],
        axis=1,
    )
    inputs = np.concatenate(
        [scaled, observed.astype(np.float64), closed.astype(np.float64), static], axis=1
    )
    return inputs.astype(np.float32), scale


def price_ratio(price: np.ndarray) -> np.ndarray:
    """(B, L) prices → log(last known price / mean known price); 0 when unknown."""
    price = np.asarray(price, dtype=np.float64)
    known = ~np.isnan(price) & (price > 0)
    mean = np.where(known, price, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    idx = np.where(known, np.arange(price.shape[1]), -1).max(axis=1)
    last = price[np.arange(len(price)), np.maximum(idx, 0)]
    ok = (idx >= 0) & (mean > 0)
    out = np.zeros(len(price))
    out[ok] = np.log(last[ok] / mean[ok])
    return out


def monotone(raw: np.ndarray, median: int) -> np.ndarray:
    """Raw outputs (..., Q) → ordered quantiles: the median plus softplus steps either side."""
    steps = np.logaddexp(0.0, raw)
    out = np.empty_like(raw)
    out[..., median] = raw[..., median]
    for k in range(median + 1, raw.shape[-1]):
        out[..., k] = out[..., k - 1] + steps[..., k]
    for k in range(median - 1, -1, -1):
        out[..., k] = out[..., k + 1] - steps[..., k]
    return out


def forward(
    weights: dict[str, np.ndarray],
    inputs: np.ndarray,
    cal: np.ndarray,
    *,
    depth: int,
    median: int,
) -> np.ndarray:
    """The network in numpy: (B, E) inputs, (B, H, C) calendar → (B, H, Q) scaled quantiles."""
    h = inputs.astype(np.float32)
    for i in range(depth):
        h = np.maximum(
            h @ weights[f"encoder.{2 * i}.weight"].T + weights[f"encoder.{2 * i}.bias"], 0
        )
    batch, horizon = cal.shape[0], cal.shape[1]
    emb = weights["horizon_emb"][:horizon]
    dec = np.concatenate(
        [
            np.broadcast_to(h[:, None, :], (batch, horizon, h.shape[1])),
            np.broadcast_to(emb[None], (batch, horizon, emb.shape[1])),
            cal.astype(np.float32),
        ],
        axis=2,
    )
    d = np.maximum(dec @ weights["decoder.0.weight"].T + weights["decoder.0.bias"], 0)
    raw = d @ weights["decoder.2.weight"].T + weights["decoder.2.bias"]
    return monotone(raw.astype(np.float64), median)


__all__ = ["N_STATIC", "encode", "encoder_width", "forward", "monotone", "price_ratio"]
