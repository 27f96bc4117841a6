"""``train_model(area)`` and ``evaluate_and_promote(area)``: features → Ray Tune → MLflow → gate.

Both are thin: the tasks call :mod:`cartwise.models.areas` with a Source built by
:mod:`cartwise.pipelines.training`. Training registers a new ``challenger``; the gate moves
``champion`` only when the challenger wins by the margin, and Serve picks the move up itself.
Re-running either after a crash is safe: training registers a fresh version (the old
challenger stays in the registry), and the gate compares whatever ``challenger`` points at.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

RETRIES = 1
RETRY_DELAYS: list[float] = [10.0]


@task(name="train", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def train_task(area: str, budget: str, tune_samples: int | None, seed: int) -> dict[str, Any]:
    """Tune the area's model on the current features and register it as ``challenger``."""
    from cartwise.models import areas
    from cartwise.pipelines.training import model_source

    trained = areas.train(
        area,
        model_source(),
        budget=budget,  # type: ignore[arg-type]
        tune_samples=tune_samples,
        seed=seed,
    )
    get_run_logger().info(
        "%s: registered %s v%d (%s)", area, trained.model_name, trained.version, trained.metrics
    )
    return {
        "area": area,
        "model": trained.model_name,
        "version": trained.version,
        "metrics": trained.metrics,
        "data_version": trained.data_version,
        "seconds": round(trained.seconds, 1),
    }


@task(name="gate", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def gate_task(area: str, margin: float | None) -> dict[str, Any]:
    """Compare ``challenger`` with ``champion`` on the held-out window; promote if better."""
    from cartwise.models import areas
    from cartwise.pipelines.training import model_source

    decision = areas.evaluate(area, model_source(), margin=margin)
    get_run_logger().info("%s: %s (%s)", area, decision.outcome, decision.reason)
    return {
        "area": area,
        "outcome": decision.outcome,
        "reason": decision.reason,
        "challenger": decision.challenger_version,
        "champion_before": decision.champion_version,
    }


@flow(name="train-model")
def train_model(
    area: str = "all", budget: str = "demo", tune_samples: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train one area (or ``all``) and register each result as ``challenger``."""
    from cartwise.pipelines.training import resolve_areas

    return {name: train_task(name, budget, tune_samples, seed) for name in resolve_areas(area)}


@flow(name="evaluate-and-promote")
def evaluate_and_promote(area: str = "all", margin: float | None = None) -> dict[str, Any]:
    """Gate one area (or ``all``): ``champion`` moves only when the challenger is better."""
    from cartwise.pipelines.training import resolve_areas

    return {name: gate_task(name, margin) for name in resolve_areas(area)}
