"""Ray Tune over the forecaster, then the best trial registered as ``challenger``.

The panel comes through ``demand_v1`` (:func:`.data.read_panel`); the last
:data:`.evaluate.HOLDOUT_DAYS` days are held out for the gate, the trials train on the rest (each
with its own validation window at the end) and report ``val_wape`` every epoch (ASHA stops the
poor ones). The registered predictor keeps the best trial's weights and calibration, and the
history up to the source's last day, so serving forecasts from today.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.areas import ProgressFn, Trained, register_challenger, spec
from cartwise.models.demand.data import Panel

AREA = "demand"
METRIC = "val_wape"

BUDGETS: dict[str, dict[str, Any]] = {
    # make demo: ~300 SKUs x 120 days; two short trials.
    "demo": {"samples": 2, "epochs": 4, "max_windows": 4_000},
    "full": {"samples": 8, "epochs": 25, "max_windows": 30_000},
}


def search_space(budget: str) -> dict[str, Any]:
    """The Tune search space of a budget."""
    from ray import tune as rt

    b = BUDGETS[budget]
    return {
        "hidden": rt.choice([32, 64, 128]),
        "lr": rt.loguniform(1e-3, 1e-2),
        "lookback": rt.choice([28, 56]),
        "weight_power": rt.choice([0.5, 1.0]),
        "epochs": b["epochs"],
        "max_windows": b["max_windows"],
    }


def trainable(config: dict[str, Any], panel: Panel) -> None:
    """One Tune trial: train and report each epoch's validation metrics with a checkpoint."""
    import torch

    from cartwise.models import tuning
    from cartwise.models.demand.train import train

    tuning.seed_everything(int(config["seed"]))
    torch.set_num_threads(1)

    def on_epoch(epoch: int, values: dict[str, float], state: dict[str, Any]) -> None:
        tuning.report(values, state=state)

    train({**config, "threads": 1}, panel, on_epoch=on_epoch)


def input_example(product_ids: np.ndarray) -> pd.DataFrame:
    """A small pyfunc input: two known products at a 7-day horizon."""
    ids = product_ids[:2].astype(np.int64)
    return pd.DataFrame({"product_id": ids, "horizon": np.full(len(ids), 7, dtype=np.int64)})


def signature(example: pd.DataFrame, output: pd.DataFrame) -> Any:
    """The pyfunc signature: ``product_id`` required, ``horizon`` optional."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("long", "product_id"), ColSpec("long", "horizon", required=False)])
    out_cols = [ColSpec("long", "product_id"), ColSpec("datetime", "date")]
    out_cols += [ColSpec("double", c) for c in output.columns if c.startswith("q")]
    return ModelSignature(inputs=inputs, outputs=Schema(out_cols))  # type: ignore[arg-type]


def run(
    source: Any,
    *,
    budget: str = "demo",
    tune_samples: int | None = None,
    seed: int = 0,
    settings: Any = None,
    progress: ProgressFn | None = None,
) -> Trained:
    """Tune on the training window, register the best trial as ``challenger``."""
    from ray import tune as rt

    from cartwise.models import tuning
    from cartwise.models.demand.data import read_panel
    from cartwise.models.demand.evaluate import HOLDOUT_DAYS
    from cartwise.models.demand.train import build_predictor, resolve_config

    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    started = time.perf_counter()
    spec(AREA)  # fails early on an unknown area name

    def say(message: str) -> None:
        if progress:
            progress(AREA, message)

    say("reading demand_v1")
    panel = read_panel(source)
    if panel.n_days <= HOLDOUT_DAYS + 35:
        raise ValueError(f"{panel.n_days} days of demand: too few to train and hold out")
    train_panel = panel.window(0, panel.n_days - HOLDOUT_DAYS)
    say(f"tuning on {panel.n_series} SKUs x {train_panel.n_days} days")
    b = BUDGETS[budget]
    result = tuning.tune(
        rt.with_parameters(trainable, panel=train_panel),
        area=AREA,
        search_space=search_space(budget),
        metric=METRIC,
        mode="min",
        num_samples=tune_samples or int(b["samples"]),
        max_epochs=int(b["epochs"]),
        seed=seed,
        tags={"budget": budget},
        verbose=0,
        settings=settings,
    )
    if result.best_checkpoint is None:
        raise RuntimeError("the best demand trial left no checkpoint")
    state = tuning.load_state(result.best_checkpoint)
    cfg = resolve_config(state["config"])
    metrics = {
        k: float(v)
        for k, v in result.best_metrics.items()
        if k in {"val_wape", "val_pinball", "val_coverage80", "loss"}
    }
    say("registering the challenger")
    # Weights from the training window; history up to the source's last day, for serving.
    predictor = build_predictor(
        cfg,
        state["weights"],
        panel,
        state["spread"],
        info={"config": dict(cfg), "metrics": metrics, "train_end": str(train_panel.end.date())},
    )
    example = input_example(panel.product_ids)
    output = predictor.predict(example)
    window = f"{panel.start.date()}/{(train_panel.end - pd.Timedelta(days=1)).date()}"
    return register_challenger(
        AREA,
        predictor,
        source,
        run_id=result.best_run_id,
        metrics=metrics,
        data_window=window,
        input_example=example,
        signature=signature(example, output),
        seed=seed,
        budget=budget,
        started=started,
        tags={"skus": str(panel.n_series)},
        info={"config": {k: v for k, v in cfg.items() if k != "quantiles"}, "window": window},
        settings=settings,
    )


__all__ = ["BUDGETS", "METRIC", "input_example", "run", "search_space", "signature", "trainable"]
