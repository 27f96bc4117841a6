"""Tune the search ranker with Ray Tune and register the best predictor as ``challenger``.

The driver does the heavy, trial-independent work once (:func:`~.train.prepare`: catalog,
MiniLM vectors, ``search_rank_v1`` snapshots, candidate lists from clicks before the holdout
window); trials only fit the ranker on those lists (``train``), reporting validation MRR@10 on
the last 20% of the training window's searches each epoch, with the numpy weights as the
checkpoint. The best weights go into the predictor, which is registered with its data window.
"""

from __future__ import annotations

import time
from typing import Any

from cartwise.models import areas
from cartwise.models.search.train import RankLists
from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

AREA = "search"
METRIC = "val_mrr_at_10"
VALID_SHARE = 0.2
BUDGET_SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {"num_samples": 2, "epochs": 6},
    "full": {"num_samples": 8, "epochs": 25},
}


def search_space(budget: areas.Budget) -> dict[str, Any]:
    """Ray Tune's search space for a budget."""
    from ray import tune as rt

    epochs = int(BUDGET_SETTINGS[budget]["epochs"])
    if budget == "demo":
        return {
            "hidden": rt.choice([16, 32]),
            "lr": rt.choice([0.01, 0.003]),
            "weight_decay": 1e-4,
            "epochs": epochs,
        }
    return {
        "hidden": rt.choice([0, 16, 32, 64]),
        "lr": rt.loguniform(1e-3, 3e-2),
        "weight_decay": rt.loguniform(1e-6, 1e-3),
        "dropout": rt.choice([0.0, 0.1]),
        "batch_size": rt.choice([128, 256]),
        "epochs": epochs,
    }


def trainable(config: dict[str, Any], train_lists: RankLists, valid_lists: RankLists) -> None:
    """One Ray Tune trial: fit the ranker, report each epoch with its weights."""
    from cartwise.models import tuning
    from cartwise.models.search.train import train

    tuning.seed_everything(int(config["seed"]))

    def report(epoch: int, metrics: dict[str, float], weights: dict[str, Any]) -> None:
        tuning.report(
            {
                METRIC: metrics["mrr_at_10"],
                "val_ndcg_at_10": metrics["ndcg_at_10"],
                "train_loss": metrics["train_loss"],
            },
            state={"weights": weights, "epoch": epoch},
        )

    train({**config, "threads": 1}, train_lists, valid_lists, on_epoch=report)


def run(
    source: Source,
    *,
    budget: areas.Budget = "demo",
    tune_samples: int | None = None,
    seed: int = 0,
    settings: ModelSettings | None = None,
    progress: areas.ProgressFn | None = None,
) -> areas.Trained:
    """Tune the ranker on the training window and register the best predictor as challenger."""
    import pandas as pd
    from ray import tune as rt

    from cartwise.models import tuning
    from cartwise.models.search.train import attach, mrr_ndcg, prepare

    if budget not in areas.BUDGETS:
        raise ValueError(f"budget must be one of {areas.BUDGETS}, got {budget!r}")
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            progress(AREA, message)

    prepared = prepare(source, progress=lambda stage, done, total: say(stage))
    train_lists, valid_lists = prepared.lists.split(VALID_SHARE)
    if len(train_lists) == 0 or len(valid_lists) == 0:
        raise ValueError("too few searches with clicks to train and validate the ranker")
    base = mrr_ndcg(valid_lists.x[:, :, 4], valid_lists)
    say(f"tuning the ranker on {len(train_lists)} click lists ({budget})")
    result = tuning.tune(
        rt.with_parameters(trainable, train_lists=train_lists, valid_lists=valid_lists),
        area=AREA,
        search_space=search_space(budget),
        metric=METRIC,
        mode="max",
        num_samples=tune_samples or int(BUDGET_SETTINGS[budget]["num_samples"]),
        max_epochs=int(BUDGET_SETTINGS[budget]["epochs"]),
        seed=seed,
        tags={"budget": budget},
        verbose=0,
        settings=settings,
    )
    if result.best_checkpoint is None:
        raise RuntimeError("the best search trial left no checkpoint")
    state = tuning.load_state(result.best_checkpoint)
    predictor = attach(prepared.predictor, state["weights"])
    best = {k: float(v) for k, v in result.best_metrics.items() if k in (METRIC, "val_ndcg_at_10")}
    predictor.info.update(
        {
            "config": {k: v for k, v in result.best_config.items()},
            "validation": best,
            "validation_unranked_hybrid_mrr_at_10": base["mrr_at_10"],
            "budget": budget,
            "seed": seed,
        }
    )
    say("registering the challenger")
    example = pd.DataFrame({"query": ["table lamp", "wireles headphones"], "k": [5, 5]})
    return areas.register_challenger(
        AREA,
        predictor,
        source,
        run_id=result.best_run_id,
        metrics={**best, "val_unranked_mrr_at_10": base["mrr_at_10"]},
        data_window=prepared.window,
        input_example=example,
        signature=_signature(predictor, example),
        seed=seed,
        budget=budget,
        started=started,
        tags={
            "products": str(predictor.n_products),
            "click_lists": str(len(prepared.lists)),
        },
        info={
            "window": prepared.window,
            "trials": len(result.results_df),
            "best_config": dict(result.best_config),
            "prepare_seconds": prepared.seconds,
        },
        settings=settings,
    )


def _signature(predictor: Any, example: Any) -> Any:
    """The inferred signature with ``k`` optional (a frame of queries alone is valid input)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    inferred = infer_signature(example, predictor.predict(example))
    inputs = Schema([ColSpec("string", "query"), ColSpec("long", "k", required=False)])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


__all__ = ["BUDGET_SETTINGS", "METRIC", "run", "search_space", "trainable"]
