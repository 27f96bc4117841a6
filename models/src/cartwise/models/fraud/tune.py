"""Ray Tune over the fraud trial; the best epoch of the best trial becomes ``challenger``.

The data is cut by time into train (first 70% of the days), validation (next 15%: early
stopping, the stacker, the thresholds) and the held-out last 15%, which only
:func:`cartwise.models.fraud.evaluate.holdout` touches.
"""

from __future__ import annotations

import time
from typing import Any

from cartwise.models import areas
from cartwise.models.fraud import data as fraud_data
from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

AREA = "fraud"
SPLIT = (0.7, 0.15, 0.15)
# Per budget: trials, epochs per trial (ASHA stops weak trials early), batch size.
BUDGET_PLAN: dict[str, dict[str, int]] = {
    "demo": {"samples": 2, "epochs": 6, "batch_size": 256},
    "full": {"samples": 8, "epochs": 25, "batch_size": 128},
}


def search_space(budget: areas.Budget) -> dict[str, Any]:
    """The Ray Tune search space of a budget."""
    from ray import tune as rt

    plan = BUDGET_PLAN[budget]
    return {
        "hidden": rt.choice([[64, 32], [32, 16], [128, 64]]),
        "lr": rt.loguniform(1e-3, 1e-2),
        "dropout": rt.choice([0.0, 0.1, 0.2]),
        "pos_weight": rt.choice([2.0, 5.0, 10.0]),
        "ae_bottleneck": rt.choice([2, 3, 4]),
        "clip": rt.choice([3.0, 5.0, float("inf")]),
        "epochs": plan["epochs"],
        "batch_size": plan["batch_size"],
    }


def prepare(source: Source) -> tuple[Any, fraud_data.Dataset, fraud_data.Dataset]:
    """The :class:`~.train.TrainSet` of the training window, and its train and valid parts."""
    from cartwise.models.fraud.train import trainset

    dataset = fraud_data.load(source)
    if len(dataset) == 0:
        raise ValueError("no customer orders to train the fraud model on")
    cuts = fraud_data.time_cuts(dataset.frame["event_timestamp"], SPLIT)
    train_part, valid_part, _ = fraud_data.split(dataset, cuts)
    if not train_part.y.any():
        raise ValueError("no fraud labelled in the training window")
    data = trainset(
        train_part.x,
        train_part.y,
        valid_part.x,
        valid_part.y,
        fraud_data.FEATURES,
        fraud_data.LOG_FEATURES,
        fraud_data.NON_NEGATIVE,
    )
    return data, train_part, valid_part


def run(
    source: Source,
    *,
    budget: areas.Budget,
    tune_samples: int | None = None,
    seed: int = 0,
    settings: ModelSettings | None = None,
    progress: areas.ProgressFn | None = None,
) -> areas.Trained:
    """Tune on the training window, register the best scorer as ``challenger``."""
    from ray import tune as rt

    from cartwise.models import tuning
    from cartwise.models.fraud.train import trainable

    if budget not in BUDGET_PLAN:
        raise ValueError(f"budget must be one of {tuple(BUDGET_PLAN)}, got {budget!r}")
    started = time.perf_counter()
    say = progress or (lambda area, message: None)
    say(AREA, "loading fraud_v1 features and labels")
    data, train_part, valid_part = prepare(source)
    samples = tune_samples or BUDGET_PLAN[budget]["samples"]
    say(
        AREA,
        f"tuning {samples} trials on {len(train_part)} orders ({int(data.y_train.sum())} fraud)",
    )
    result = tuning.tune(
        rt.with_parameters(trainable, data=data),
        area=AREA,
        search_space=search_space(budget),
        metric="val_pr_auc",
        mode="max",
        num_samples=samples,
        max_epochs=BUDGET_PLAN[budget]["epochs"],
        seed=seed,
        tags={"budget": budget},
        verbose=0,
        settings=settings,
    )
    if result.best_checkpoint is None:
        raise RuntimeError("the best fraud trial left no checkpoint")
    scorer = tuning.load_state(result.best_checkpoint)["scorer"]
    window = f"{train_part.window().split('/')[0]}/{valid_part.window().split('/')[-1]}"
    scorer.info.update({"data_window": window, "tuned_config": result.best_config})
    metrics = {
        k: float(v)
        for k, v in result.best_metrics.items()
        if k.startswith("val_") and isinstance(v, int | float)
    }
    say(
        AREA,
        f"registering the best trial (val PR-AUC {metrics.get('val_pr_auc', float('nan')):.3f})",
    )
    return areas.register_challenger(
        AREA,
        scorer,
        source,
        run_id=result.best_run_id,
        metrics=metrics,
        data_window=window,
        input_example=train_part.frame[list(fraud_data.FEATURES)].head(5),
        seed=seed,
        budget=budget,
        started=started,
        tags={
            "thresholds": repr(scorer.thresholds),
            "review_rule": str(scorer.info.get("review_rule", "precision")),
        },
        info={
            "best_config": result.best_config,
            "thresholds": dict(scorer.thresholds),
            "review_rule": scorer.info.get("review_rule", "precision"),
        },
        settings=settings,
    )


__all__ = ["BUDGET_PLAN", "SPLIT", "prepare", "run", "search_space"]
