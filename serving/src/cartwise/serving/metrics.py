"""ML metrics of the ingress: predictions, ML call latency, fallbacks, cache, drift, training.

- Per ML call (:func:`observe_ml_call`, from ``call_ml``): answers per model and version, call
  latency by outcome, and prediction-cache hits. These are this replica's counters.
- Fallbacks: the ingress's :class:`~cartwise.serving.fallback.FallbackCounter` (the numbers of
  ``/api/v1/ml/status``), read at scrape time.
- Model status: each area's ``status`` call (served version, load time, the prediction-cache
  counters shared by all model replicas in Redis), refreshed at most every
  ``metrics_cache_seconds``.
- Drift and training: the latest ``MonitoringReport`` per area and the ``RetrainDecision`` rows,
  read with SQL (cached) so every replica reports the same; empty tables give no series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cartwise.platform.metrics import (
    ML_CALL_LATENCY,
    ML_PREDICTION_CACHE,
    ML_PREDICTIONS,
    CachedCollector,
    MetricsHub,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cartwise.serving.fallback import FallbackCounter
    from cartwise.serving.routes.common import IngressState

STATUS_TIMEOUT_S = 2.0
RETRAINED = ("retrained_promoted", "retrained_not_promoted")


def observe_ml_call(
    area: str, method: str, result: dict[str, Any] | None, reason: str | None, seconds: float
) -> None:
    """Record one ML call: latency by outcome, and the answering model version and cache hit."""
    ML_CALL_LATENCY.labels(area, method, "ok" if result is not None else reason or "error").observe(
        seconds
    )
    if result is None or method == "status":
        return
    ref = result.get("model")
    if not isinstance(ref, dict) or "name" not in ref or "version" not in ref:
        return
    ML_PREDICTIONS.labels(area, str(ref["name"]), str(ref["version"])).inc()
    if "cached" in result:
        ML_PREDICTION_CACHE.labels(area, "hit" if result["cached"] else "miss").inc()


class FallbackCollector(Collector):
    """The ingress's fallback answers per area and reason, since the replica started."""

    def __init__(self, counter: FallbackCounter) -> None:
        self.counter = counter

    def collect(self) -> Iterator[Metric]:
        """One counter family from the fallback snapshot."""
        family = CounterMetricFamily(
            "cartwise_ml_fallbacks",
            "Answers served by a baseline instead of a model, by area and reason.",
            labels=["area", "reason"],
        )
        for area, reasons in sorted(self.counter.snapshot().items()):
            for reason, count in sorted(reasons.items()):
                family.add_metric([area, reason], count)
        yield family


class ModelStatusCollector(Collector):
    """Each area's served model (version, load time, shared cache counters), refreshed async."""

    def __init__(self, state: IngressState, areas: tuple[str, ...], ttl_s: float) -> None:
        self.state = state
        self.areas = areas
        self.ttl_s = ttl_s
        self.statuses: dict[str, dict[str, Any] | None] = {}
        self._fetched_at: float | None = None

    async def refresh(self) -> None:
        """Ask every area for its status, unless the last answers are younger than ``ttl_s``."""
        from cartwise.serving.routes.common import call_ml

        now = time.monotonic()
        if self._fetched_at is not None and now - self._fetched_at < self.ttl_s:
            return
        # Claimed before awaiting: concurrent scrapes do not all call the models.
        self._fetched_at = now
        outcomes = await asyncio.gather(
            *(
                call_ml(self.state, area, "status", timeout_s=STATUS_TIMEOUT_S)
                for area in self.areas
            )
        )
        self.statuses = {area: o.result for area, o in zip(self.areas, outcomes, strict=True)}

    def collect(self) -> Iterator[Metric]:
        """Families from the last status answers."""
        available = GaugeMetricFamily(
            "cartwise_ml_model_available",
            "1 when the area's model service answered its last status call with a model.",
            labels=["area"],
        )
        version = GaugeMetricFamily(
            "cartwise_ml_model_version",
            "The registered model version the area serves.",
            labels=["area", "model"],
        )
        loaded = GaugeMetricFamily(
            "cartwise_ml_model_loaded_timestamp_seconds",
            "When the serving replica loaded the version it serves (Unix time).",
            labels=["area", "model"],
        )
        shared = CounterMetricFamily(
            "cartwise_ml_prediction_cache_shared",
            "Prediction-cache lookups summed over all model replicas (Redis): same on every "
            "ingress replica, so aggregate with max, not sum.",
            labels=["model", "result"],
        )
        seen: set[str] = set()
        for area in self.areas:
            status = self.statuses.get(area)
            model = (status or {}).get("model") or {}
            number = model.get("version") if isinstance(model, dict) else None
            available.add_metric([area], 1.0 if number is not None else 0.0)
            if number is None:
                continue
            name = str(model.get("name", area))
            version.add_metric([area, name], float(number))
            if isinstance(model.get("loaded_at"), int | float):
                loaded.add_metric([area, name], float(model["loaded_at"]))
            cache = (status or {}).get("cache") or {}
            for cache_name, counts in (cache.get("shared") or {}).items():
                if cache_name in seen or not isinstance(counts, dict):
                    continue
                seen.add(cache_name)
                shared.add_metric([cache_name, "hit"], float(counts.get("hits") or 0))
                shared.add_metric([cache_name, "miss"], float(counts.get("misses") or 0))
        yield from (available, version, loaded, shared)


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def monitoring_families(engine: Engine) -> list[Metric]:
    """Latest drift per area and retraining decisions, from the monitoring tables."""
    from cartwise.commerce.monitoring.models import MonitoringReport, RetrainDecision

    r = MonitoringReport.__table__  # type: ignore[attr-defined]
    d = RetrainDecision.__table__  # type: ignore[attr-defined]
    drift = GaugeMetricFamily(
        "cartwise_ml_drift_share",
        "Share of drifted features in the latest drift report of each area.",
        labels=["area", "model"],
    )
    prediction_drift = GaugeMetricFamily(
        "cartwise_ml_prediction_drift",
        "Prediction drift score in the latest drift report of each area.",
        labels=["area"],
    )
    breach = GaugeMetricFamily(
        "cartwise_ml_drift_breach",
        "1 when the latest drift report of the area breached a threshold.",
        labels=["area"],
    )
    checked = GaugeMetricFamily(
        "cartwise_ml_drift_checked_timestamp_seconds",
        "When the latest drift report of each area was written (Unix time).",
        labels=["area"],
    )
    decisions = CounterMetricFamily(
        "cartwise_ml_retrain_decisions",
        "Retraining decisions recorded by monitor_drift, by area and outcome.",
        labels=["area", "outcome"],
    )
    trained = GaugeMetricFamily(
        "cartwise_ml_last_training_timestamp_seconds",
        "When monitor_drift last retrained the area's model (Unix time).",
        labels=["area"],
    )
    trained_version = GaugeMetricFamily(
        "cartwise_ml_last_trained_version",
        "The version the last retraining registered for each area.",
        labels=["area"],
    )
    latest_ids = select(func.max(r.c.id)).group_by(r.c.area).scalar_subquery()
    latest_training = (
        select(func.max(d.c.id))
        .where(d.c.outcome.in_(RETRAINED), d.c.version_after.is_not(None))
        .group_by(d.c.area)
        .scalar_subquery()
    )
    with engine.connect() as conn:
        reports = conn.execute(
            select(
                r.c.area,
                r.c.model_name,
                r.c.drift_share,
                r.c.prediction_drift,
                r.c.breach,
                r.c.created_at,
            ).where(r.c.id.in_(latest_ids))
        ).all()
        counts = conn.execute(
            select(d.c.area, d.c.outcome, func.count()).group_by(d.c.area, d.c.outcome)
        ).all()
        trainings = conn.execute(
            select(d.c.area, d.c.created_at, d.c.version_after).where(d.c.id.in_(latest_training))
        ).all()
    for area, model, share, pred, breached, created in sorted(reports):
        if share is not None:
            drift.add_metric([area, model], float(share))
        if pred is not None:
            prediction_drift.add_metric([area], float(pred))
        breach.add_metric([area], 1.0 if breached else 0.0)
        stamp = _ts(created)
        if stamp is not None:
            checked.add_metric([area], stamp)
    for area, outcome, count in sorted(counts):
        decisions.add_metric([area, str(outcome)], float(count))
    for area, created, version_after in sorted(trainings):
        stamp = _ts(created)
        if stamp is not None:
            trained.add_metric([area], stamp)
        trained_version.add_metric([area], float(version_after))
    return [drift, prediction_drift, breach, checked, decisions, trained, trained_version]


def install_ingress_metrics(app: FastAPI, state: IngressState, areas: tuple[str, ...]) -> None:
    """Register the ML collectors on the app's metrics hub (a no-op for an app without one)."""
    hub: MetricsHub | None = getattr(app.state, "metrics", None)
    if hub is None:
        return
    ttl_s = float(app.state.settings.metrics_cache_seconds)
    engine = state.engine
    hub.add(FallbackCollector(state.fallbacks))
    status = ModelStatusCollector(state, areas, ttl_s)
    hub.add(status)
    hub.add_refresher(status.refresh)
    hub.add(CachedCollector("monitoring", lambda: monitoring_families(engine), ttl_s))


__all__ = [
    "FallbackCollector",
    "ModelStatusCollector",
    "install_ingress_metrics",
    "monitoring_families",
    "observe_ml_call",
]
