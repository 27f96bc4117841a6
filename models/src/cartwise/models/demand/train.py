"""One training trial of the quantile forecaster, deterministic for a seed.

:func:`train` fits on a :class:`~.data.Panel` minus its last ``valid_days`` (the validation
window): every (series, origin) pair with enough observed history is a training window, its
targets masked beyond the fit range and on closed days. After each epoch the model forecasts
the validation window from its origin; the best epoch (lowest validation WAPE) is kept, and its
intervals are calibrated on the same window (a multiplier of each quantile's distance from the
median, see :func:`.metrics.calibrate_spread`). The returned :class:`~.predict.DemandForecaster`
holds the panel's last ``lookback`` days, so it forecasts from the panel's end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from cartwise.models.demand import metrics, windows
from cartwise.models.demand.data import Panel, calendar
from cartwise.models.demand.model import QuantileMLP, pinball
from cartwise.models.demand.predict import DemandForecaster

QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)

DEFAULTS: dict[str, Any] = {
    "lookback": 56,  # days of history the model reads
    "horizon": 28,  # days it forecasts
    "quantiles": QUANTILES,
    "hidden": 64,
    "depth": 2,  # encoder layers
    "emb": 8,  # horizon embedding size
    "epochs": 15,
    "lr": 3e-3,  # Adam
    "weight_decay": 1e-5,
    "batch_size": 256,
    "max_windows": 20_000,  # windows drawn per epoch
    "weight_power": 1.0,  # window weight = scale ** p: 1 = pinball in units (WAPE's weighting)
    "floor": 0.1,  # minimum series scale (units/day), so rare sellers do not blow up
    "clip": 20.0,  # scaled units above this are clipped: one wholesale order is not a level
    "min_history": 7,  # observed lookback days a training window needs
    "valid_days": 28,  # the validation window at the panel's end (0: none)
    "calibrate": True,
    "seed": 0,
    "threads": 1,
}

EpochCallback = Callable[[int, dict[str, float], dict[str, Any]], None]


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``config``; unknown keys and bad values raise ValueError."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg = {**DEFAULTS, **config}
    for key in ("lookback", "horizon", "hidden", "depth", "emb", "epochs", "batch_size"):
        if int(cfg[key]) <= 0:
            raise ValueError(f"{key} must be positive")
    if float(cfg["lr"]) <= 0 or float(cfg["floor"]) <= 0 or float(cfg["clip"]) <= 0:
        raise ValueError("lr, floor and clip must be positive")
    levels = tuple(float(q) for q in cfg["quantiles"])
    if list(levels) != sorted(set(levels)) or not all(0 < q < 1 for q in levels):
        raise ValueError("quantiles must be increasing levels in (0, 1)")
    if 0.5 not in levels:
        raise ValueError("quantiles must include the median 0.5")
    cfg["quantiles"] = levels
    if int(cfg["valid_days"]) < 0:
        raise ValueError("valid_days must be non-negative")
    return cfg


def _future_closed(panel: Panel, stop: int) -> np.ndarray:
    """Closed flags for days ``0 … stop - 1``: the panel's own, then the learned calendar."""
    known = panel.closed[: min(stop, panel.n_days)]
    if stop <= panel.n_days:
        return known.copy()
    extra = pd.date_range(panel.end, periods=stop - panel.n_days, freq="D")
    return np.concatenate([known, panel.closures.closed(extra)])


def training_windows(panel: Panel, fit_end: int, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every usable (series, origin) window before ``fit_end``: inputs, calendar, targets."""
    lookback, horizon = int(cfg["lookback"]), int(cfg["horizon"])
    n = panel.n_series
    units = panel.units[:, :fit_end]
    pad_l, pad_r = np.full((n, lookback), np.nan), np.full((n, horizon), np.nan)
    upad = np.concatenate([pad_l, units, pad_r], axis=1)
    ppad = np.concatenate([pad_l, panel.price[:, :fit_end], pad_r], axis=1)
    closed_all = _future_closed(panel, fit_end + horizon)
    cpad = np.concatenate([np.zeros(lookback, bool), closed_all])
    span = lookback + horizon
    uw = np.lib.stride_tricks.sliding_window_view(upad, span, axis=1)  # (n, fit_end+1, span)
    pw = np.lib.stride_tricks.sliding_window_view(ppad, span, axis=1)
    cw = np.lib.stride_tricks.sliding_window_view(cpad, span)  # (fit_end+1, span)
    observed_hist = (~np.isnan(uw[:, :, :lookback])).sum(axis=2)
    fut = uw[:, :, lookback:]
    fut_open = ~np.isnan(fut) & ~cw[None, :, lookback:]
    usable = (observed_hist >= int(cfg["min_history"])) & fut_open.any(axis=2)
    usable[:, 0] = False
    series, origin = np.nonzero(usable)
    hist = uw[series, origin, :lookback]
    inputs, scale = windows.encode(
        hist,
        cw[origin, :lookback],
        windows.price_ratio(pw[series, origin, :lookback]),
        floor=float(cfg["floor"]),
        clip=float(cfg["clip"]),
    )
    days = pd.date_range(panel.start, periods=fit_end + horizon, freq="D")
    cal_all = calendar(days, closed_all)
    target = np.nan_to_num(fut[series, origin]) / scale[:, None]
    mask = fut_open[series, origin]
    return {
        "inputs": inputs,
        "origin": origin.astype(np.int64),
        "cal_all": cal_all,
        "target": np.minimum(target, float(cfg["clip"])).astype(np.float32),
        "mask": mask,
        "scale": scale,
    }


def validation_arrays(
    panel: Panel, fit_end: int, days: int, lookback: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """History before ``fit_end``, actuals of the ``days`` after: hist, price, closed, y, open."""
    n = panel.n_series
    take = min(lookback, fit_end)
    hist = np.full((n, lookback), np.nan)
    price = np.full((n, lookback), np.nan)
    closed = np.zeros(lookback, dtype=bool)
    hist[:, lookback - take :] = panel.units[:, fit_end - take : fit_end]
    price[:, lookback - take :] = panel.price[:, fit_end - take : fit_end]
    closed[lookback - take :] = panel.closed[fit_end - take : fit_end]
    y = panel.units[:, fit_end : fit_end + days]
    open_days = ~np.isnan(y) & ~panel.closed[None, fit_end : fit_end + days]
    return hist, price, closed, y, open_days


def build_predictor(
    cfg: Mapping[str, Any],
    weights: dict[str, np.ndarray],
    panel: Panel,
    spread: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
) -> DemandForecaster:
    """A forecaster from trained weights, holding ``panel``'s last lookback days."""
    levels = tuple(float(q) for q in cfg["quantiles"])
    base = DemandForecaster(
        weights=weights,
        quantiles=levels,
        lookback=int(cfg["lookback"]),
        horizon=int(cfg["horizon"]),
        depth=int(cfg["depth"]),
        floor=float(cfg["floor"]),
        clip=float(cfg["clip"]),
        closures=panel.closures,
        spread=np.ones(len(levels)) if spread is None else np.asarray(spread, dtype=np.float64),
        product_ids=np.zeros(0, np.int64),
        history=np.zeros((0, int(cfg["lookback"]))),
        history_price=np.zeros((0, int(cfg["lookback"]))),
        history_closed=np.zeros(int(cfg["lookback"]), dtype=bool),
        history_end=panel.end,
        info=dict(info or {}),
    )
    return base.with_history(panel)


def validate(
    predictor: DemandForecaster, panel: Panel, fit_end: int, days: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Forecast ``days`` from ``fit_end`` and score them: metrics, y, quantiles, open mask."""
    hist, price, closed, y, open_days = validation_arrays(panel, fit_end, days, predictor.lookback)
    origin = panel.start + pd.Timedelta(days=fit_end)
    q = predictor.forecast_arrays(hist, price, closed, origin, y.shape[1])
    levels = predictor.quantiles
    lo, hi = levels.index(0.1) if 0.1 in levels else 0, levels.index(0.9) if 0.9 in levels else -1
    scores = {
        "val_wape": metrics.wape(y, q[..., predictor.median], open_days),
        "val_pinball": metrics.pinball(y, q, levels, open_days),
        "val_coverage80": metrics.coverage(y, q[..., lo], q[..., hi], open_days),
    }
    return scores, y, q, open_days


def train(
    config: Mapping[str, Any],
    panel: Panel,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[DemandForecaster, dict[str, float]]:
    """Fit the forecaster; returns the best epoch's (calibrated) predictor and its metrics.

    Metrics: ``loss_first``/``loss`` (weighted pinball of the first and last epoch, scaled
    units), ``val_wape``, ``val_pinball``, ``val_coverage80`` (after calibration), ``epochs``,
    ``best_epoch``, ``windows`` and ``seconds``. ``on_epoch(epoch, metrics, state)`` gets each
    epoch's metrics and a state (weights, spread) to checkpoint.
    """
    cfg = resolve_config(config)
    started = time.perf_counter()
    lookback, horizon = int(cfg["lookback"]), int(cfg["horizon"])
    valid_days = min(int(cfg["valid_days"]), horizon)
    fit_end = panel.n_days - valid_days
    if fit_end <= int(cfg["min_history"]) + 1:
        raise ValueError(f"the panel has {panel.n_days} days: too short to train and validate")
    data = training_windows(panel, fit_end, cfg)
    n_windows = len(data["origin"])
    if n_windows == 0:
        raise ValueError("no training windows: too little history per series")
    levels = cfg["quantiles"]
    seed = int(cfg["seed"])
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        model = QuantileMLP(
            lookback,
            horizon,
            levels,
            hidden=int(cfg["hidden"]),
            depth=int(cfg["depth"]),
            emb=int(cfg["emb"]),
        )
        optimizer = torch.optim.Adam(
            model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        inputs = torch.from_numpy(data["inputs"])
        cal_all = torch.from_numpy(data["cal_all"])
        offsets = torch.from_numpy(data["origin"])[:, None] + torch.arange(horizon)[None, :]
        target = torch.from_numpy(data["target"])
        power = float(cfg["weight_power"])
        w_series = data["scale"] ** power
        w_series = w_series / w_series.mean()
        weight = torch.from_numpy((data["mask"] * w_series[:, None]).astype(np.float32))
        level_t = torch.tensor(levels, dtype=torch.float32)
        per_epoch = min(int(cfg["max_windows"]), n_windows)
        batch = int(cfg["batch_size"])
        history: list[float] = []
        best: dict[str, Any] | None = None
        last_metrics: dict[str, float] = {}
        for epoch in range(1, int(cfg["epochs"]) + 1):
            model.train()
            chosen = rng.permutation(n_windows)[:per_epoch]
            total, total_w = 0.0, 0.0
            for begin in range(0, per_epoch, batch):
                idx = torch.from_numpy(chosen[begin : begin + batch])
                pred = model(inputs[idx], cal_all[offsets[idx]])
                loss = pinball(pred, target[idx], weight[idx], level_t)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                w = float(weight[idx].sum())
                total += float(loss.detach()) * w
                total_w += w
            history.append(total / max(total_w, 1e-9))
            model.eval()
            weights = model.export()
            epoch_metrics = {"loss": history[-1]}
            spread = np.ones(len(levels))
            if valid_days > 0:
                raw = build_predictor(cfg, weights, panel.window(0, fit_end))
                scores, y, q, open_days = validate(raw, panel, fit_end, valid_days)
                if cfg["calibrate"]:
                    spread = metrics.calibrate_spread(y, q, levels, open_days)
                    raw.spread = spread
                    scores = validate(raw, panel, fit_end, valid_days)[0]
                epoch_metrics |= scores
            state = {"weights": weights, "spread": spread, "config": dict(cfg)}
            if on_epoch is not None:
                on_epoch(epoch, dict(epoch_metrics), state)
            key = epoch_metrics.get("val_wape", -epoch)
            if best is None or (math.isfinite(key) and key < best["key"]):
                best = {"key": key, "epoch": epoch, "state": state, "metrics": epoch_metrics}
            last_metrics = epoch_metrics
        assert best is not None
        result = {
            **{k: v for k, v in best["metrics"].items() if k != "loss"},
            "loss_first": history[0],
            "loss": history[-1],
            "epochs": float(len(history)),
            "best_epoch": float(best["epoch"]),
            "windows": float(n_windows),
            "seconds": time.perf_counter() - started,
        }
        if not all(math.isfinite(v) for v in (history[0], history[-1], last_metrics["loss"])):
            raise FloatingPointError(f"training diverged: {result}")
        predictor = build_predictor(
            cfg,
            best["state"]["weights"],
            panel,
            best["state"]["spread"],
            info={"config": dict(cfg), "metrics": dict(result), "loss_history": history},
        )
        return predictor, result
    finally:
        torch.set_num_threads(previous_threads)


__all__ = [
    "DEFAULTS",
    "QUANTILES",
    "EpochCallback",
    "build_predictor",
    "resolve_config",
    "train",
    "training_windows",
    "validate",
    "validation_arrays",
]
