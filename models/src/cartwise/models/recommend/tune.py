"""Tune the hybrid two-tower recommender with Ray Tune and register the best as ``challenger``.

:func:`run` follows the area contract (:mod:`cartwise.models.areas`):

1. purchases from the ``order_lines`` facts, split by time (:func:`.dataset.windows`):
   train | validation (the last ``valid_days`` before the holdout) | holdout (the last
   ``holdout_days``, kept for the gate);
2. Ray Tune trials of :func:`.train.train_two_tower` (customer tower on ``recommend_v1``,
   item tower on ``product_v1`` + MiniLM content) on the training part, scored by NDCG@10 on
   validation every epoch (ASHA stops poor trials early);
3. the best trial's configuration (and best epoch count, and the repurchase blend weight it
   chose on validation) is refit on everything before the holdout, with features as of the
   holdout's start;
4. the session GRU is trained on the sessions of the ``events`` facts before the holdout;
5. the predictor is registered as model ``recommend`` (alias ``challenger``) in the best
   trial's MLflow run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models import tuning
from cartwise.models.recommend.train import TowerData, train_two_tower

BUDGETS: dict[str, dict[str, Any]] = {
    # demo: ~2 trials of a few epochs on the generated shop (the whole run well under 90 s).
    "demo": {
        "num_samples": 2,
        "epochs": 6,
        "session_epochs": 2,
        "max_sessions": 10_000,
        "space": "demo",
    },
    "full": {
        "num_samples": 8,
        "epochs": 30,
        "session_epochs": 6,
        "max_sessions": 200_000,
        "space": "full",
    },
}
HOLDOUT_DAYS = 28
VALID_DAYS = 28
METRIC = "val_ndcg_at_10"
# MLflow metrics must be finite: the "own items first" blend weight (inf) is logged as this.
INF_WEIGHT = 1e9


def search_space(budget: str, epochs: int) -> dict[str, Any]:
    """The two-tower's Ray Tune search space for a budget."""
    from ray import tune as rt

    if budget == "demo":
        return {
            "dim": rt.choice([32, 64]),
            "lr": rt.loguniform(2e-3, 1e-2),
            "id_dropout": rt.choice([0.25, 0.5]),
            "epochs": epochs,
        }
    return {
        "dim": rt.choice([32, 64, 128]),
        "hidden": rt.choice([(128,), (256,), (256, 128)]),
        "lr": rt.loguniform(1e-3, 1e-2),
        "weight_decay": rt.loguniform(1e-6, 1e-3),
        "id_dropout": rt.choice([0.1, 0.25, 0.5]),
        "positives": rt.choice(["pairs", "lines"]),
        "epochs": epochs,
    }


def metric_name(name: str) -> str:
    """MLflow-safe metric names (``ndcg@10`` → ``ndcg_at_10``)."""
    return name.replace("@", "_at_")


def _trial(config: dict[str, Any], data: TowerData) -> None:
    """One Ray Tune trial: train the two-tower, reporting validation metrics every epoch."""
    import torch

    torch.set_num_threads(1)
    cfg = {k: v for k, v in config.items() if k in _TOWER_KEYS}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        values = {metric_name(k): min(v, INF_WEIGHT) for k, v in metrics.items()}
        # A tiny state makes Tune keep the best epoch's checkpoint, and with it that epoch's
        # metrics (its epoch count and repurchase weight are what the refit reuses).
        tuning.report(values | {"epoch": epoch}, state={"epoch": epoch})

    train_two_tower({**cfg, "eval_every": 1}, data, on_epoch=report)


_TOWER_KEYS = frozenset(
    {
        "dim",
        "hidden",
        "epochs",
        "lr",
        "weight_decay",
        "batch_size",
        "id_dropout",
        "positives",
        "init_std",
        "half_life_days",
        "seed",
    }
)


def input_example(recommender: Any) -> pd.DataFrame:
    """A two-row input for the pyfunc signature: a known customer with and without a session."""
    users = recommender.user_ids[:2].tolist()
    items = recommender.item_ids[:2].tolist()
    return pd.DataFrame(
        {"user_id": users, "k": [5] * len(users), "session": [items, []][: len(users)]}
    )


def signature() -> Any:
    """The pyfunc signature: user_id (+ optional k, session) → the long recommendations frame."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("long", "user_id"),
            ColSpec("long", "k", required=False),
            ColSpec(Array("long"), "session", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("long", "user_id"),
            ColSpec("long", "rank"),
            ColSpec("long", "product_id"),
            ColSpec("double", "score"),
            ColSpec("boolean", "fallback"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def run(
    source: Any,
    *,
    budget: str = "demo",
    tune_samples: int | None = None,
    seed: int = 0,
    settings: Any = None,
    progress: Any = None,
) -> Any:
    """Tune, refit and register the recommender as ``challenger``; returns ``areas.Trained``."""
    from ray import tune as rt

    from cartwise.models import areas, tracking
    from cartwise.models.recommend import dataset
    from cartwise.models.recommend.metrics import evaluate_next_item
    from cartwise.models.recommend.train import train_session

    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    plan = BUDGETS[budget]
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress is not None:
            progress("recommend", message)

    settings = tracking.configure(settings)
    say("reading purchases and the catalogue")
    purchases = dataset.read_source(source)
    split = dataset.windows(purchases, holdout_days=HOLDOUT_DAYS, valid_days=VALID_DAYS)
    cat = dataset.catalogue(source, cache_dir=settings.var_dir / "cache" / "recommend")
    say("customer (recommend_v1) and product (product_v1) features")
    tune_data = dataset.load(source, purchases, cat, cutoff=split.valid, valid_end=split.holdout)
    if not tune_data.valid:
        raise ValueError("no purchases by known customers in the validation window")

    say(f"Ray Tune: {tune_samples or plan['num_samples']} two-tower trials")
    result = tuning.tune(
        rt.with_parameters(_trial, data=tune_data),
        area="recommend",
        search_space=search_space(plan["space"], int(plan["epochs"])),
        metric=METRIC,
        mode="max",
        num_samples=tune_samples or int(plan["num_samples"]),
        max_epochs=int(plan["epochs"]),
        seed=seed,
        tags={"budget": budget, "model": "two-tower"},
        verbose=0,
        settings=settings,
    )
    best = result.best_metrics
    config = {k: v for k, v in result.best_config.items() if k in _TOWER_KEYS}
    config["epochs"] = int(best.get("training_iteration", config.get("epochs", 1)))
    weight = float(best.get("repurchase_weight", 0.0))
    weight = np.inf if weight >= INF_WEIGHT else weight

    say(f"refit on everything before {split.holdout.date()} ({config['epochs']} epochs)")
    full = dataset.load(source, purchases, cat, cutoff=split.holdout)
    recommender, refit = train_two_tower(
        {**config, "repurchase_weights": (weight,), "eval_every": 0}, full
    )
    recommender.repurchase_weight = weight

    say("session model (GRU) on the events")
    index = {int(p): i for i, p in enumerate(recommender.item_ids.tolist())}
    sessions = dataset.sessions(source, index, end=split.holdout)
    recent = sessions.sequences[-int(plan["max_sessions"]) :]
    session_metrics: dict[str, float] = {}
    if recent:
        session_model, fit = train_session(
            {"epochs": int(plan["session_epochs"]), "seed": seed}, recent, recommender.n_items
        )
        recommender.session_model = session_model
        session_metrics = {"session_loss": fit["loss"], "session_sessions": fit["sessions"]}
        held = dataset.sessions(source, index, start=split.holdout, end=split.end)
        if held.sequences:
            scored = evaluate_next_item(session_model.scores, held.sequences[:2000])
            session_metrics |= {"holdout_session_hr_at_10": scored["hr@10"]}

    window = split.describe(pd.Timestamp(purchases["ts"].min()).normalize())
    recommender.info |= {
        "data_window": window,
        "holdout": split.holdout_window,
        "best_config": {k: v for k, v in config.items()},
        "repurchase_weight": weight,
    }
    metrics = {
        metric_name(k): float(v)
        for k, v in best.items()
        if k.startswith("val_") and isinstance(v, int | float)
    }
    metrics |= {
        "refit_loss": float(refit["loss"]),
        "repurchase_weight": min(weight, INF_WEIGHT),
        **session_metrics,
    }
    say("registering the challenger")
    return areas.register_challenger(
        "recommend",
        recommender,
        source,
        run_id=result.best_run_id,
        metrics=metrics,
        data_window=window,
        input_example=input_example(recommender),
        signature=signature(),
        seed=seed,
        budget=budget,
        started=started,
        tags={
            "model": "two-tower + repurchase + session GRU",
            "holdout": split.holdout_window,
        },
        info={
            "best_config": config,
            "trials": len(result.results_df),
            "holdout": split.holdout_window,
            "data_window": window,
        },
        settings=settings,
    )


__all__ = ["BUDGETS", "METRIC", "input_example", "metric_name", "run", "search_space", "signature"]
