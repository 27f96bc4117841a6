"""Ray Tune over the customers trial, then the best trial registered as ``challenger``.

Budgets: ``demo`` (2 trials, 6 epochs: the demo shop in well under 90 s) and ``full``
(8 trials, 30 epochs with ASHA). The training rows come from :func:`.evaluate.prepare` (cut-offs
before the held-out window), so the gate's window stays unseen.
"""

from __future__ import annotations

import time
from typing import Any

from cartwise.models import areas
from cartwise.models.customers import data as cdata
from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

SPEC = areas.AREAS["customers"]
BUDGET_SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {"num_samples": 2, "epochs": 6, "max_train": 2},
    "full": {"num_samples": 8, "epochs": 30, "max_train": 4},
}


def trainable(config: dict[str, Any], data: cdata.TrainData) -> None:
    """One Tune trial: the three networks, reporting validation metrics and state per epoch."""
    import torch

    from cartwise.models import tuning
    from cartwise.models.customers.train import fit

    tuning.seed_everything(int(config["seed"]))
    torch.set_num_threads(1)

    def on_epoch(epoch: int, metrics: dict[str, float], state: Any) -> None:
        tuning.report(metrics, state=state())

    fit({**config, "threads": 1}, data, on_epoch)


def search_space(budget: str) -> dict[str, Any]:
    """The search space of a budget."""
    from ray import tune as rt

    epochs = BUDGET_SETTINGS[budget]["epochs"]
    return {
        "epochs": epochs,
        "hidden": rt.choice([32, 64, 128]),
        "layers": rt.choice([1, 2]),
        "dropout": rt.choice([0.0, 0.1, 0.2]),
        "lr": rt.loguniform(5e-4, 5e-3),
        "ae_dim": rt.choice([3, 4, 6]),
        "ae_hidden": rt.choice([16, 32]),
    }


def run(
    source: Source,
    *,
    budget: str = "demo",
    tune_samples: int | None = None,
    seed: int = 0,
    settings: ModelSettings | None = None,
    progress: areas.ProgressFn | None = None,
) -> areas.Trained:
    """Tune, build the predictor from the best trial and register it as ``challenger``."""
    from ray import tune as rt

    from cartwise.models import tuning
    from cartwise.models.customers.evaluate import prepare
    from cartwise.models.customers.rules import association_rules
    from cartwise.models.customers.train import build

    if budget not in BUDGET_SETTINGS:
        raise ValueError(f"budget must be one of {sorted(BUDGET_SETTINGS)}, got {budget!r}")
    started = time.perf_counter()
    say = progress or (lambda area, message: None)
    budget_cfg = BUDGET_SETTINGS[budget]
    say("customers", "reading customer_v1 features at the training cut-offs")
    prepared = prepare(source, max_train=int(budget_cfg["max_train"]))
    data, valid, plan = prepared.data, prepared.valid, prepared.plan
    say("customers", f"{len(data.x)} training rows; tuning ({budget})")
    result = tuning.tune(
        rt.with_parameters(trainable, data=data),
        area="customers",
        search_space=search_space(budget),
        metric=SPEC.metric,
        mode="max",
        num_samples=tune_samples or int(budget_cfg["num_samples"]),
        max_epochs=int(budget_cfg["epochs"]),
        seed=seed,
        tags={"budget": budget},
        verbose=0,
        settings=settings,
    )
    if result.best_checkpoint is None:
        raise RuntimeError("the best customers trial left no checkpoint")
    state = tuning.load_state(result.best_checkpoint)
    say("customers", "building the predictor (segments, rules)")
    lines = source.facts(
        "order_lines", columns=["order_id", "product_id", "status"], end=plan.holdout
    )
    rules = association_rules(lines) if len(lines) else None
    model = build(state, data, valid.features, rules=rules, info={"plan": plan.window})
    model.horizon_days = plan.horizon
    metrics = {
        k: float(v)
        for k, v in result.best_metrics.items()
        if k in {"churn_pr_auc", "churn_roc_auc", "ltv_spearman", "ltv_mae", "ae_val_loss"}
    }
    window = f"{plan.train[0].date()}/{plan.holdout.date()}"
    trained = areas.register_challenger(
        "customers",
        model,
        source,
        run_id=result.best_run_id,
        metrics=metrics,
        data_window=window,
        input_example=data.example,
        seed=seed,
        budget=budget,
        started=started,
        tags={"horizon_days": str(plan.horizon)},
        info={"best_config": result.best_config, "window": window, "holdout": plan.window},
        settings=settings,
    )
    say("customers", f"registered version {trained.version} as challenger")
    return trained


__all__ = ["BUDGET_SETTINGS", "run", "search_space", "trainable"]
