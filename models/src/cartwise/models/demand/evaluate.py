"""Demand metrics on held-out days: the gate's holdout and the Online Retail benchmark.

- :func:`holdout`: the last ``HOLDOUT_DAYS`` (28) of the source are held out; a loaded model
  forecasts them from the history before them (through :meth:`DemandForecaster.forecast_arrays`,
  so any version, trained on any window, is scored on the same days). WAPE of the median is the
  gate's metric; pinball, 80% coverage and MASE come with it.
- :func:`rolling_origin`: weekly origins over the last weeks of a panel, a 7-day horizon each;
  the model and LightGBM are trained once on the data before the first origin, the local
  baselines (ETS, naive, average) refit at every origin. Only days the shop was open count.
- :func:`benchmark`: the quality bench's section on Online Retail (200 best-selling SKUs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models import report
from cartwise.models.areas import Holdout
from cartwise.models.demand import baselines, metrics
from cartwise.models.demand.data import Panel, cancelled_units, read_panel
from cartwise.models.demand.train import train, validation_arrays

Progress = Callable[[str, int, int], None]
HOLDOUT_DAYS = 28
LEVELS = baselines.BASELINE_LEVELS  # levels every quantile model is compared on

# Settings for Online Retail, chosen on the validation window before the first origin (the
# 28 days to 2011-10-14): lookback 28 (val WAPE 0.796) over 56 (0.802) and 112 (0.802); hidden
# 64 vs 128 and weight_power 0.5 vs 1 were within 0.005; the best epoch comes early (3-8).
BENCH_CONFIG: dict[str, Any] = {
    "lookback": 28,
    "hidden": 128,
    "epochs": 10,
    "lr": 2e-3,
    "max_windows": 30_000,
    "weight_power": 1.0,
}


def score(
    y: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...], open_days: np.ndarray
) -> dict[str, float]:
    """WAPE of the median, pinball on 0.1/0.5/0.9 and the 80% coverage of a quantile forecast."""
    idx = [levels.index(q) for q in LEVELS]
    picked = quantiles[..., idx]
    return {
        "wape": metrics.wape(y, picked[..., 1], open_days),
        "pinball": metrics.pinball(y, picked, LEVELS, open_days),
        "coverage80": metrics.coverage(y, picked[..., 0], picked[..., 2], open_days),
    }


def holdout(source: Any, *, settings: Any = None) -> Holdout:
    """The gate's evaluator: forecast the source's last 28 days from the days before them."""
    panel = read_panel(source)
    if panel.n_days <= HOLDOUT_DAYS + 7:
        raise ValueError(f"{panel.n_days} days of demand: too few to hold out {HOLDOUT_DAYS}")
    cut = panel.n_days - HOLDOUT_DAYS
    scale = metrics.seasonal_scale(panel.units[:, :cut])

    def evaluate(loaded: Any) -> dict[str, float]:
        predictor = loaded.predictor
        hist, price, closed, y, open_days = validation_arrays(
            panel, cut, HOLDOUT_DAYS, predictor.lookback
        )
        origin = panel.start + pd.Timedelta(days=cut)
        q = predictor.forecast_arrays(
            hist, price, closed, origin, min(HOLDOUT_DAYS, predictor.horizon)
        )
        y = y[:, : q.shape[1]]
        open_days = open_days[:, : q.shape[1]]
        result = score(y, q, tuple(predictor.quantiles), open_days)
        result["mase"] = metrics.mase(y, q[..., predictor.median], scale, open_days)
        return result

    first = panel.start + pd.Timedelta(days=cut)
    last = panel.end - pd.Timedelta(days=1)
    return Holdout(evaluate=evaluate, window=f"{first.date()}/{last.date()}")


def _expected_closed(panel: Panel, origin: int) -> np.ndarray:
    """Closed flags as known at ``origin``: observed before it, the learned calendar after."""
    closed = panel.closed.copy()
    closed[origin:] = panel.closures.closed(panel.days[origin:])
    return closed


def rolling_origin(
    panel: Panel,
    *,
    weeks: int = 8,
    horizon: int = 7,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    lgb_every: int = 1,
    with_ets: bool = True,
    progress: Progress | None = None,
) -> tuple[list[report.Row], dict[str, Any]]:
    """Every model over ``weeks`` weekly origins at the panel's end: report rows and info."""
    origins = [panel.n_days - 7 * weeks + 7 * k for k in range(weeks)]
    first = origins[0]
    steps = 4 + (1 if with_ets else 0) + weeks
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(stage, min(done, steps), steps)

    y = np.concatenate([panel.units[:, o : o + horizon] for o in origins], axis=1)
    open_days = np.concatenate(
        [
            ~np.isnan(panel.units[:, o : o + horizon]) & ~panel.closed[None, o : o + horizon]
            for o in origins
        ],
        axis=1,
    )
    scale = metrics.seasonal_scale(panel.units[:, :first])
    rows: list[report.Row] = []

    def add(
        name: str,
        point: np.ndarray,
        quant: np.ndarray | None,
        baseline: bool,
        seconds: float,
        note: str = "",
    ) -> None:
        m = {
            "wape": metrics.wape(y, point, open_days),
            "mase": metrics.mase(y, point, scale, open_days),
        }
        if quant is not None:
            m["pinball"] = metrics.pinball(y, quant, LEVELS, open_days)
            m["coverage80"] = metrics.coverage(y, quant[..., 0], quant[..., 2], open_days)
        else:
            m["pinball"] = m["coverage80"] = float("nan")
        rows.append(report.Row(name, m, baseline=baseline, note=note, seconds=seconds))

    # The model: trained once before the first origin (its own validation window inside).
    started = time.perf_counter()
    cfg = {**BENCH_CONFIG, **(config or {}), "seed": seed}
    predictor, fit = train(cfg, panel.window(0, first))
    step("model trained")
    parts = []
    for o in origins:
        hist, price, closed, _, _ = validation_arrays(panel, o, horizon, predictor.lookback)
        origin_day = panel.start + pd.Timedelta(days=o)
        parts.append(predictor.forecast_arrays(hist, price, closed, origin_day, horizon))
    q_all = np.concatenate(parts, axis=1)
    idx = [predictor.quantiles.index(q) for q in LEVELS]
    add(
        "quantile MLP (global)",
        q_all[..., predictor.median],
        q_all[..., idx],
        False,
        time.perf_counter() - started,
        f"best epoch {int(fit['best_epoch'])}/{int(fit['epochs'])}, "
        f"val WAPE {fit['val_wape']:.3f}, spread {np.round(predictor.spread[idx], 2).tolist()}",
    )
    step("model forecasts")
    info: dict[str, Any] = {"fit": fit, "config": {k: v for k, v in cfg.items()}}

    dow = panel.days.dayofweek.to_numpy().astype(np.float64)
    started = time.perf_counter()
    lgbm = baselines.LightGBMGlobal(horizon=horizon, every=lgb_every, seed=seed).fit(
        panel.units[:, :first], panel.closed[:first], dow
    )
    lgb_parts = [lgbm.predict(panel.units, _expected_closed(panel, o), dow, o) for o in origins]
    lq = np.concatenate(lgb_parts, axis=1)
    add("LightGBM global (lags, weekday)", lq[..., 1], lq, True, time.perf_counter() - started)
    step("LightGBM")

    def local(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> np.ndarray:
        outs = []
        for o in origins:
            closed = _expected_closed(panel, o)
            outs.append(fn(panel.units[:, :o], closed, o))
        return np.concatenate(outs, axis=1)

    started = time.perf_counter()
    snaive = local(
        lambda h, c, o: baselines.seasonal_naive(h, horizon, future_closed=c[o : o + horizon])
    )
    add("seasonal naive (weekly)", snaive, None, True, time.perf_counter() - started)
    started = time.perf_counter()
    ma = local(
        lambda h, c, o: baselines.moving_average(
            h, horizon, history_closed=c[:o], future_closed=c[o : o + horizon]
        )
    )
    add("moving average (28 days)", ma, None, True, time.perf_counter() - started)
    add("zero", np.zeros_like(y), None, True, 0.0)
    step("naive baselines")
    if with_ets:
        started = time.perf_counter()
        ets_parts = []
        for k, o in enumerate(origins):
            closed = _expected_closed(panel, o)
            ets_parts.append(
                baselines.auto_ets(
                    panel.units[:, :o], horizon, future_closed=closed[o : o + horizon]
                )
            )
            step(f"AutoETS origin {k + 1}/{weeks}")
        eq = np.concatenate(ets_parts, axis=1)
        add(
            "AutoETS (statsforecast)",
            eq[..., 1],
            eq,
            True,
            time.perf_counter() - started,
            "point = mean",
        )
    info["origins"] = [str((panel.start + pd.Timedelta(days=o)).date()) for o in origins]
    return rows, info


def benchmark(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> list[report.Section]:
    """Section *Demand, Online Retail*: the model vs baselines, rolling origin, 7-day horizon."""
    if progress:
        progress("reading demand_v1", 0, 1)
    source = data.online_retail_source()
    top = 100 if quick else 200
    panel = read_panel(source, top=top)
    weeks = 4 if quick else 8
    config = {"epochs": 8, "max_windows": 15_000} if quick else {}
    rows, info = rolling_origin(
        panel,
        weeks=weeks,
        config=config,
        seed=seed,
        lgb_every=3 if quick else 1,
        progress=progress,
    )
    subject = rows[0].model
    section = report.Section(
        key="demand-online-retail",
        title="Demand, Online Retail",
        protocol=(
            f"Daily units of the {top} best-selling SKUs (demand_v1 feature service over the "
            "imported Online Retail; cancelled sales netted out). Rolling origin: "
            f"{weeks} weekly origins ({info['origins'][0]} … {info['origins'][-1]}), 7-day "
            "horizon each. The quantile MLP and LightGBM are trained once on the days before "
            "the first origin (the MLP keeps its last 28 days for early stopping and interval "
            "calibration); ETS, seasonal naive and the moving average refit at each origin. "
            "Every model forecasts zero on days the learned calendar says the shop is closed "
            "(Saturdays, Christmas); only days the shop was open are scored. WAPE of the "
            "median (mean for ETS); MASE against the in-sample weekly naive; pinball = weighted "
            "quantile loss averaged over 0.1/0.5/0.9; coverage80 = share inside [q10, q90]."
        ),
        metrics=["wape", "mase", "pinball", "coverage80"],
        primary="wape",
        higher_is_better=False,
        rows=rows,
        subject=subject,
        goal="WAPE ≤ 0.95 x the best baseline, 80% intervals covering 75-85%",
        data=(
            f"UCI Online Retail (2010-12-01 … 2011-12-09, CC BY 4.0), {panel.n_series} SKUs x "
            f"{panel.n_days} days; closed weekdays learned: "
            f"{sorted(panel.closures.weekdays)} (0 = Monday), "
            f"{len(panel.closures.month_days)} closed calendar days."
        ),
        model_name="demand",
    )
    me = section.row(subject)
    best = section.best_baseline()
    ratio = section.ratio(me)
    cov = me.metrics["coverage80"]
    section.goal_met = bool(ratio <= 0.95 and 0.75 <= cov <= 0.85)
    section.notes.append(
        f"WAPE ratio to the best baseline ({best.model if best else '-'}): {ratio:.3f}; "
        f"80% coverage {cov:.3f}."
    )
    fit = info["fit"]
    section.notes.append(
        f"Model fit: {int(fit['windows'])} training windows, loss {fit['loss_first']:.4f} → "
        f"{fit['loss']:.4f}, validation WAPE {fit['val_wape']:.3f}, "
        f"{fit['seconds']:.0f} s on one thread."
    )
    lines = source.facts(
        "order_lines", columns=["user_id", "product_id", "quantity", "status", "created_at"]
    )
    cancelled = cancelled_units(lines)
    biggest = cancelled.nlargest(2, "units")
    section.notes.append(
        "Cancellations: the importer keeps a cancelled sale as delivered and its C-invoice as a "
        "separate refunded order, so demand_v1 still counts the sale; "
        f"{len(cancelled)} sales ({cancelled['units'].sum():,.0f} units) matched by a refund of "
        "the same customer, product and quantity within a day were netted out, the largest "
        + ", ".join(
            f"{int(u):,} units on {pd.Timestamp(d).date()}"
            for u, d in zip(biggest["units"], biggest["date"], strict=True)
        )
        + "."
    )
    section.notes.append(
        "Seasonal naive, the moving average, ETS and LightGBM get the same closed-day calendar "
        "(zero on Saturdays and the Christmas break) as the model."
    )
    section.limits += [
        "Goal gap: the quantile MLP is 1-2% behind the global LightGBM on WAPE (not 5% "
        "ahead); lookback, width, weighting and clipping variants on the validation window all "
        "landed within 0.75-0.77 on test. During development (before every cancellation was "
        "netted) seeds 0/1/2 gave 0.753/0.757/0.769 and their 3-seed average 0.757: the seed "
        "moves WAPE by about 2%, and averaging seeds did not help. "
        "Not tried yet: a LightGBM + MLP blend, promotion/price calendars.",
        "Daily units are dominated by one-off wholesale orders: every model's WAPE stays high, "
        "and the median forecast under-predicts those spikes by design.",
        "One run, one seed; the differences between the best rows are within a few percent.",
    ]
    if quick:
        section.limits.append("--quick: 100 SKUs, 4 origins, 8 epochs: not the headline numbers.")
    return [section]


__all__ = ["BENCH_CONFIG", "HOLDOUT_DAYS", "benchmark", "holdout", "rolling_origin", "score"]
