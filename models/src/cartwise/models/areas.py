"""The five model areas behind one interface: train (Ray Tune → MLflow → ``challenger``), gate.

Each area package ``cartwise.models.<area>`` provides, by convention:

- ``tune.run(source, *, budget, tune_samples=None, seed=0, settings=None, progress=None)``:
  tunes on the training window, registers the best trial as ``challenger`` and returns a
  :class:`Trained`;
- ``evaluate.holdout(source, *, settings=None)``: a :class:`Holdout`, the gate's evaluator over
  the held-out time window (the same callable scores challenger and champion).

:data:`AREAS` names each area's registered model and primary metric; the CLI
(``cartwise models train|evaluate|promote``), ``make demo`` and the Prefect flows go through
:func:`train` and :func:`evaluate` here, so they never need to know an area's internals.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

Budget = Literal["demo", "full"]
BUDGETS: tuple[Budget, ...] = ("demo", "full")
# Stage messages for a progress display: (area, message).
ProgressFn = Callable[[str, str], None]


@dataclass(frozen=True)
class AreaSpec:
    """One area: its package, its registered model and the metric its gate compares."""

    area: str
    model_name: str
    metric: str
    higher_is_better: bool
    feature_service: str
    description: str

    @property
    def module(self) -> str:
        """The area's package."""
        return f"cartwise.models.{self.area}"


AREAS: dict[str, AreaSpec] = {
    spec.area: spec
    for spec in (
        AreaSpec(
            "recommend",
            "recommend",
            "ndcg_at_10",
            True,
            "recommend_v1",
            "collaborative + content two-tower hybrid, session model, baselines",
        ),
        AreaSpec(
            "search",
            "search",
            "mrr_at_10",
            True,
            "search_rank_v1",
            "BM25 + MiniLM retrieval, typo correction, learned ranker, autocomplete",
        ),
        AreaSpec(
            "customers",
            "customers",
            "churn_pr_auc",
            True,
            "customer_v1",
            "segments, churn and 90-day value, association rules",
        ),
        AreaSpec(
            "demand",
            "demand",
            "wape",
            False,
            "demand_v1",
            "28-day quantile forecasts, reorder points, supplier scores",
        ),
        AreaSpec(
            "fraud",
            "fraud",
            "pr_auc",
            True,
            "fraud_v1",
            "classifier + autoencoder, calibrated risk with allow/review/block",
        ),
    )
}


@dataclass(frozen=True)
class Trained:
    """What ``tune.run`` returns: the registered challenger and how it scored."""

    area: str
    model_name: str
    version: int
    run_id: str | None
    metrics: dict[str, float]
    data_version: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Holdout:
    """The gate's evaluator: scores a loaded model version on the held-out window."""

    evaluate: Callable[[Any], Mapping[str, float]]  # tracking.Loaded -> metrics
    window: str  # "YYYY-MM-DD/YYYY-MM-DD"


def register_challenger(
    area: str,
    predictor: Any,
    source: Source,
    *,
    run_id: str | None,
    metrics: Mapping[str, float],
    data_window: str,
    input_example: Any,
    seed: int,
    budget: str,
    started: float,
    signature: Any = None,
    tags: Mapping[str, str] | None = None,
    info: Mapping[str, Any] | None = None,
    settings: ModelSettings | None = None,
) -> Trained:
    """Register the best trial's predictor as the area's ``challenger``; the end of ``tune.run``.

    Every version carries the same provenance tags (seed, budget, export snapshot, data
    window, feature service) plus the area's own ``tags``; ``started`` is the
    ``time.perf_counter()`` of the run's start.
    """
    import time

    from cartwise.models import tracking

    area_spec = spec(area)
    data_version = source.data_version()
    version = tracking.register(
        area_spec.model_name,
        predictor,
        area=area,
        input_example=input_example,
        signature=signature,
        run_id=run_id,
        metrics=metrics,
        data_window=data_window,
        feature_service=area_spec.feature_service,
        tags={"seed": str(seed), "data_version": data_version, "budget": budget, **(tags or {})},
        settings=settings,
    )
    details = dict(info or {})
    details["monitoring"] = _keep_reference(
        area, predictor, source, version, data_window=data_window, settings=settings
    )
    return Trained(
        area=area,
        model_name=area_spec.model_name,
        version=int(version.version),
        run_id=run_id,
        metrics=dict(metrics),
        data_version=data_version,
        seconds=time.perf_counter() - started,
        info=details,
    )


def _keep_reference(
    area: str,
    predictor: Any,
    source: Source,
    version: Any,
    *,
    data_window: str,
    settings: ModelSettings | None,
) -> dict[str, Any]:
    """Log the new version's reference sample and permutation importance (drift monitoring)."""
    import logging

    from cartwise.models import monitoring
    from cartwise.models.monitoring.areas import ADAPTERS

    if area not in ADAPTERS:
        return {"reference": None, "reason": f"no drift monitoring for {area}"}
    try:
        return monitoring.capture(
            area,
            predictor,
            source,
            model_name=str(version.name),
            version=int(version.version),
            run_id=str(version.run_id),
            data_window=data_window,
            settings=settings,
        )
    except Exception as exc:
        # The version is registered by now; losing it over its reference sample would waste
        # the whole tuning run. The drift check reports the missing reference instead.
        logging.getLogger(__name__).warning(
            "%s v%s: no reference sample kept: %s", area, version.version, exc, exc_info=True
        )
        return {"reference": None, "reason": f"{type(exc).__name__}: {exc}"}


def spec(area: str) -> AreaSpec:
    """The area's spec; ``ValueError`` naming the known areas otherwise."""
    try:
        return AREAS[area]
    except KeyError:
        raise ValueError(f"unknown area {area!r}; known: {', '.join(AREAS)}") from None


def train(
    area: str,
    source: Source,
    *,
    budget: Budget = "demo",
    tune_samples: int | None = None,
    seed: int = 0,
    settings: ModelSettings | None = None,
    progress: ProgressFn | None = None,
) -> Trained:
    """Tune and register a new ``challenger`` of the area's model."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    if tune_samples is not None and tune_samples < 1:
        raise ValueError("tune_samples must be at least 1")
    module = importlib.import_module(f"{spec(area).module}.tune")
    result: Trained = module.run(
        source,
        budget=budget,
        tune_samples=tune_samples,
        seed=seed,
        settings=settings,
        progress=progress,
    )
    return result


def evaluate(
    area: str,
    source: Source,
    *,
    margin: float | None = None,
    settings: ModelSettings | None = None,
) -> Any:
    """Gate the area's ``challenger`` against its ``champion``; returns the gate's Decision."""
    from cartwise.models import gate

    area_spec = spec(area)
    module = importlib.import_module(f"{area_spec.module}.evaluate")
    holdout: Holdout = module.holdout(source, settings=settings)
    return gate.evaluate_and_promote(
        area_spec.model_name,
        evaluate=holdout.evaluate,
        metric=area_spec.metric,
        higher_is_better=area_spec.higher_is_better,
        margin=margin,
        window=holdout.window,
        settings=settings,
    )


__all__ = [
    "AREAS",
    "BUDGETS",
    "AreaSpec",
    "Budget",
    "Holdout",
    "ProgressFn",
    "Trained",
    "evaluate",
    "register_challenger",
    "spec",
    "train",
]
