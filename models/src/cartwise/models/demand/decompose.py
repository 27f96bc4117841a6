"""Seasonal decomposition of one SKU's daily units: trend + weekly pattern + remainder.

``method="stl"`` uses statsmodels' robust STL (statsmodels comes with statsforecast);
``method="ma"`` is the classical additive decomposition: a centred moving average of one period
as the trend, the mean detrended value per weekday (centred to sum to zero) as the season.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _series(units: pd.Series | pd.DataFrame, product_id: int | None) -> pd.Series:
    if isinstance(units, pd.DataFrame):
        if not {"date", "units"} <= set(units.columns):
            raise ValueError("a frame to decompose needs date and units columns")
        frame = units
        if product_id is not None:
            if "product_id" not in frame:
                raise ValueError("product_id given but the frame has no product_id column")
            frame = frame[frame["product_id"] == product_id]
        elif "product_id" in frame and frame["product_id"].nunique() > 1:
            raise ValueError("the frame holds several products: pass product_id")
        series = frame.groupby(pd.to_datetime(frame["date"]).dt.normalize())["units"].sum()
    elif isinstance(units, pd.Series):
        series = units.copy()
        series.index = pd.to_datetime(series.index).normalize()
    else:
        raise ValueError("units must be a Series indexed by date or a frame with date, units")
    if series.empty:
        raise ValueError("nothing to decompose: no rows")
    series = series.astype(float).sort_index()
    full = pd.date_range(series.index.min(), series.index.max(), freq="D")
    # Days without a row are days without sales.
    return series.groupby(level=0).sum().reindex(full, fill_value=0.0)


def decompose(
    units: pd.Series | pd.DataFrame,
    *,
    product_id: int | None = None,
    period: int = 7,
    method: Literal["stl", "ma"] = "stl",
) -> pd.DataFrame:
    """Columns ``units, trend, seasonal, resid`` per day (``units = trend + seasonal + resid``)."""
    series = _series(units, product_id)
    if len(series) < 2 * period:
        raise ValueError(f"need at least {2 * period} days to decompose, got {len(series)}")
    if method == "stl":
        from statsmodels.tsa.seasonal import STL  # type: ignore[import-untyped]

        fit = STL(series, period=period, robust=True).fit()
        trend = np.asarray(fit.trend)
        seasonal = np.asarray(fit.seasonal)
    elif method == "ma":
        trend_s = series.rolling(period, center=True, min_periods=period).mean()
        if period % 2 == 0:
            trend_s = trend_s.rolling(2, min_periods=2).mean().shift(-1)
        trend_s = trend_s.bfill().ffill()
        detrended = series - trend_s
        phase = np.arange(len(series)) % period
        profile = detrended.groupby(phase).mean()
        profile = profile - profile.mean()
        trend = trend_s.to_numpy()
        seasonal = profile.reindex(phase).to_numpy()
    else:
        raise ValueError(f"method must be 'stl' or 'ma', got {method!r}")
    values = series.to_numpy()
    return pd.DataFrame(
        {"units": values, "trend": trend, "seasonal": seasonal, "resid": values - trend - seasonal},
        index=series.index,
    )


def weekly_profile(parts: pd.DataFrame) -> pd.Series:
    """The mean seasonal component per weekday (Mon … Sun) of a :func:`decompose` result."""
    if "seasonal" not in parts:
        raise ValueError("not a decomposition: no seasonal column")
    index = pd.DatetimeIndex(parts.index)
    profile = parts["seasonal"].groupby(index.dayofweek).mean()
    profile = profile.reindex(range(7), fill_value=0.0)
    profile.index = pd.Index(DAYS, name="weekday")
    return profile


def seasonal_strength(parts: pd.DataFrame) -> float:
    """``max(0, 1 - var(resid) / var(seasonal + resid))`` (Hyndman's strength of seasonality)."""
    total = float(np.var(parts["seasonal"] + parts["resid"]))
    if total <= 0:
        return 0.0
    return max(0.0, 1.0 - float(np.var(parts["resid"])) / total)


__all__ = ["DAYS", "decompose", "seasonal_strength", "weekly_profile"]
