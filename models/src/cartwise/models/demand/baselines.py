"""Forecasting baselines, measured in the same runs as the model.

Each takes a history array ``(n, t)`` of daily units (NaN = the series had not started) and
returns ``(n, horizon)`` forecasts; the ones with intervals return quantiles at 0.1/0.5/0.9.
Days the shop is known to be closed get zero from every baseline (``future_closed``), so the
comparison is about demand, not about knowing the opening hours.

- :func:`zero`, :func:`seasonal_naive` (last week again), :func:`moving_average` (28 days);
- :func:`auto_ets`: statsforecast's AutoETS per series (weekly season), with 80% intervals;
- :class:`LightGBMGlobal`: one LightGBM per quantile over all series, on scaled lags and the
  day of week (a direct multi-horizon model: the horizon is a feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASELINE_LEVELS = (0.1, 0.5, 0.9)


def _filled(history: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(history, dtype=np.float64))


def _close(forecast: np.ndarray, future_closed: np.ndarray | None) -> np.ndarray:
    if future_closed is not None:
        forecast = forecast.copy()
        forecast[..., np.asarray(future_closed, dtype=bool)] = 0.0
    return forecast


def zero(history: np.ndarray, horizon: int) -> np.ndarray:
    """Forecast zero sales."""
    return np.zeros((history.shape[0], horizon))


def seasonal_naive(
    history: np.ndarray, horizon: int, *, period: int = 7, future_closed: np.ndarray | None = None
) -> np.ndarray:
    """The last ``period`` days, repeated."""
    last = _filled(history)[:, -period:]
    reps = int(np.ceil(horizon / period))
    return _close(np.tile(last, reps)[:, :horizon], future_closed)


def moving_average(
    history: np.ndarray,
    horizon: int,
    *,
    window: int = 28,
    history_closed: np.ndarray | None = None,
    future_closed: np.ndarray | None = None,
) -> np.ndarray:
    """The mean of the last ``window`` open days, flat."""
    recent = _filled(history)[:, -window:]
    open_days = np.ones(recent.shape[1], dtype=bool)
    if history_closed is not None:
        open_days = ~np.asarray(history_closed, dtype=bool)[-window:]
    mean = recent[:, open_days].mean(axis=1) if open_days.any() else recent.mean(axis=1)
    return _close(np.repeat(mean[:, None], horizon, axis=1), future_closed)


def auto_ets(
    history: np.ndarray,
    horizon: int,
    *,
    season: int = 7,
    future_closed: np.ndarray | None = None,
) -> np.ndarray:
    """statsforecast AutoETS per series → (n, horizon, 3): the 80% interval and the mean."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    rows = []
    for i, series in enumerate(np.asarray(history, dtype=np.float64)):
        started = np.flatnonzero(~np.isnan(series))
        values = series[started[0] :] if len(started) else np.zeros(1)
        if len(values) < 2 * season + 1:
            values = np.concatenate([np.zeros(2 * season + 1 - len(values)), values])
        rows.append(
            pd.DataFrame(
                {
                    "unique_id": i,
                    "ds": np.arange(len(values)),
                    "y": values,
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    model = StatsForecast(models=[AutoETS(season_length=season)], freq=1, n_jobs=1)
    out = model.forecast(df=frame, h=horizon, level=[80])
    out = out.sort_values(["unique_id", "ds"])
    n = history.shape[0]
    mean = out["AutoETS"].to_numpy().reshape(n, horizon)
    lo = out["AutoETS-lo-80"].to_numpy().reshape(n, horizon)
    hi = out["AutoETS-hi-80"].to_numpy().reshape(n, horizon)
    result: np.ndarray = np.maximum(np.stack([lo, mean, hi], axis=2), 0.0)
    if future_closed is not None:
        result[:, np.asarray(future_closed, dtype=bool), :] = 0.0
    return result


N_LAGS = 28


def _lgb_features(
    filled: np.ndarray,
    closed: np.ndarray,
    origins: np.ndarray,
    series: np.ndarray,
    h: int,
    day_of_week: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for (series, origin) pairs at horizon ``h`` (1-based): features and the scale."""
    lags = np.stack([filled[series, origins - k] for k in range(1, N_LAGS + 1)], axis=1)
    open_lags = ~np.stack([closed[origins - k] for k in range(1, N_LAGS + 1)], axis=1)
    count = np.maximum(open_lags.sum(axis=1), 1)
    scale = np.maximum((lags * open_lags).sum(axis=1) / count, 0.1)
    scaled = np.minimum(lags / scale[:, None], 50.0)
    target_day = origins + h - 1
    same_dow = np.minimum(filled[series, target_day - 7] / scale, 50.0)
    two_weeks = np.minimum(filled[series, target_day - 14] / scale, 50.0)
    feats = np.column_stack(
        [
            np.full(len(origins), h, dtype=np.float64),
            day_of_week[target_day],
            scaled,
            same_dow,
            two_weeks,
            scaled[:, :7].mean(axis=1),
            np.log1p(scale),
            closed[target_day].astype(np.float64),
        ]
    )
    return feats, scale


@dataclass
class LightGBMGlobal:
    """A global direct LightGBM per quantile on scaled lags, the horizon and the weekday."""

    horizon: int = 7
    levels: tuple[float, ...] = BASELINE_LEVELS
    rounds: int = 300
    learning_rate: float = 0.05
    leaves: int = 31
    every: int = 1  # use every n-th origin for training (quick runs)
    seed: int = 0
    models: dict[float, Any] = field(default_factory=dict)

    def fit(self, units: np.ndarray, closed: np.ndarray, day_of_week: np.ndarray) -> LightGBMGlobal:
        """Train on all origins whose horizon lies inside ``units`` (n, t)."""
        import lightgbm as lgb

        filled = _filled(units)
        started = np.cumsum(~np.isnan(units), axis=1) > 0
        t = units.shape[1]
        xs, ys, ws = [], [], []
        origins_all = np.arange(N_LAGS, t - self.horizon + 1, self.every)
        for h in range(1, self.horizon + 1):
            grid_s, grid_o = np.meshgrid(np.arange(units.shape[0]), origins_all, indexing="ij")
            ser, ori = grid_s.ravel(), grid_o.ravel()
            keep = started[ser, ori - N_LAGS] & ~closed[ori + h - 1]
            ser, ori = ser[keep], ori[keep]
            feats, scale = _lgb_features(filled, closed, ori, ser, h, day_of_week)
            xs.append(feats)
            ys.append(np.minimum(filled[ser, ori + h - 1] / scale, 50.0))
            ws.append(scale)
        x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
        for level in self.levels:
            params = {
                "objective": "quantile",
                "alpha": level,
                "learning_rate": self.learning_rate,
                "num_leaves": self.leaves,
                "min_data_in_leaf": 50,
                "feature_fraction": 0.8,
                "bagging_fraction": 0.8,
                "bagging_freq": 1,
                "seed": self.seed,
                "num_threads": 1,
                "verbose": -1,
                "deterministic": True,
            }
            self.models[level] = lgb.train(
                params, lgb.Dataset(x, y, weight=w), num_boost_round=self.rounds
            )
        return self

    def predict(
        self, units: np.ndarray, closed: np.ndarray, day_of_week: np.ndarray, origin: int
    ) -> np.ndarray:
        """(n, horizon, len(levels)) quantiles from ``origin`` (index into the arrays)."""
        filled = _filled(units)
        n = units.shape[0]
        series = np.arange(n)
        out = np.zeros((n, self.horizon, len(self.levels)))
        for h in range(1, self.horizon + 1):
            feats, scale = _lgb_features(filled, closed, np.full(n, origin), series, h, day_of_week)
            for k, level in enumerate(self.levels):
                out[:, h - 1, k] = np.maximum(self.models[level].predict(feats), 0.0) * scale
        out = np.sort(out, axis=2)
        out[:, closed[origin : origin + self.horizon], :] = 0.0
        return out


__all__ = [
    "BASELINE_LEVELS",
    "LightGBMGlobal",
    "auto_ets",
    "moving_average",
    "seasonal_naive",
    "zero",
]
