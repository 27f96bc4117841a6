"""Forecast metrics over (series, day) arrays with a mask of the days that count.

- WAPE: ``sum |y - median| / sum y`` (volume-weighted, so big sellers count more);
- MASE: each series' MAE over the in-sample MAE of the weekly seasonal naive, averaged;
- pinball: the weighted quantile loss ``2 sum pinball / sum y``, averaged over levels;
- coverage: the share of actuals inside ``[q_lo, q_hi]``, the bounds rounded to whole units
  (units are counts: a q10 of 0.0001 units means "zero" for a SKU that sells on one day in ten).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _mask(y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    keep: np.ndarray = ~np.isnan(y)
    return keep if mask is None else keep & np.asarray(mask, dtype=bool)


def wape(y: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Weighted absolute percentage error of a point forecast."""
    keep = _mask(y, mask)
    total = float(np.abs(y[keep]).sum())
    if total <= 0:
        return float("nan")
    return float(np.abs(y[keep] - pred[keep]).sum() / total)


def mase(
    y: np.ndarray, pred: np.ndarray, scale: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Mean over series of MAE / ``scale`` (series with a zero or unknown scale are skipped)."""
    keep = _mask(y, mask)
    err = np.where(keep, np.abs(np.nan_to_num(y) - pred), 0.0)
    count = keep.reshape(len(y), -1).sum(axis=1)
    mae = err.reshape(len(y), -1).sum(axis=1) / np.maximum(count, 1)
    ok = (count > 0) & np.isfinite(scale) & (scale > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(mae[ok] / scale[ok]))


def seasonal_scale(history: np.ndarray, period: int = 7) -> np.ndarray:
    """Per series: mean |y_t - y_{t-period}| over the history (the MASE denominator)."""
    diff = np.abs(history[:, period:] - history[:, :-period])
    count = (~np.isnan(diff)).sum(axis=1)
    total = np.nansum(diff, axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pinball(
    y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float], mask: np.ndarray | None = None
) -> float:
    """Weighted quantile loss averaged over levels: ``quantiles`` is (..., Q)."""
    keep = _mask(y, mask)
    total = float(np.abs(y[keep]).sum())
    if total <= 0:
        return float("nan")
    losses = []
    for k, level in enumerate(levels):
        diff = y[keep] - quantiles[..., k][keep]
        losses.append(2 * np.maximum(level * diff, (level - 1) * diff).sum() / total)
    return float(np.mean(losses))


def coverage(
    y: np.ndarray, low: np.ndarray, high: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Share of actuals inside the interval ``[round(low), round(high)]``."""
    keep = _mask(y, mask)
    if not keep.any():
        return float("nan")
    inside = (y[keep] >= np.round(low[keep])) & (y[keep] <= np.round(high[keep]))
    return float(inside.mean())


def calibrate_spread(
    y: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    mask: np.ndarray | None = None,
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """Per level, the multiplier of its distance from the median that makes intervals cover.

    For each symmetric pair of levels (0.1, 0.9) the multiplier whose interval coverage on
    these actuals is closest to the nominal ``0.9 - 0.1`` (the median stays). Returns (Q,).
    """
    levels_arr = np.asarray(levels, dtype=np.float64)
    q = len(levels_arr)
    median = int(np.argmin(np.abs(levels_arr - 0.5)))
    spread = np.ones(q)
    keep = _mask(y, mask)
    if not keep.any():
        return spread
    grid = np.geomspace(0.2, 5.0, 61) if grid is None else grid
    med = quantiles[..., median][keep]
    actual = y[keep]
    for k in range(median):
        partner = q - 1 - k
        if partner <= median or not np.isclose(levels_arr[k] + levels_arr[partner], 1.0):
            continue
        nominal = levels_arr[partner] - levels_arr[k]
        lo = quantiles[..., k][keep] - med
        hi = quantiles[..., partner][keep] - med
        best, best_gap = 1.0, np.inf
        for m in grid:
            low = np.round(np.maximum(med + m * lo, 0.0))
            high = np.round(np.maximum(med + m * hi, 0.0))
            cov = float(((actual >= low) & (actual <= high)).mean())
            gap = abs(cov - nominal)
            if gap < best_gap - 1e-12:
                best, best_gap = float(m), gap
        spread[k] = spread[partner] = best
    return spread


__all__ = ["calibrate_spread", "coverage", "mase", "pinball", "seasonal_scale", "wape"]
