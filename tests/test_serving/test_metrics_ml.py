"""ML metrics of the ingress, with the ML client double, on SQLite and PostgreSQL.

Predictions per model version, ML call latency, fallbacks by reason, prediction-cache hits,
served model versions, and drift/training read from the monitoring tables at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.monitoring.models import DecisionOutcome, MonitoringReport, RetrainDecision
from cartwise.platform.types import utcnow
from tests.test_platform.test_metrics import scrape, value
from tests.test_serving.routes_support import (
    MODEL,
    FakeML,
    category,
    fake_ml_fixture,  # noqa: F401  (fixture)
    items_answer,
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
    sell,
)

RECOMMEND = "/api/v1/recommendations"


@pytest.fixture
def settings(make_settings: Callable[..., Any], db_url: str) -> Any:
    """Settings for the current backend with the scrape-time cache off."""
    return make_settings(database_url=db_url, metrics_cache_seconds=0)


@pytest.fixture
def ids(session: Session) -> list[int]:
    """Three sold products the recommender may answer with."""
    cat = category(session, "Kitchen")
    variants = [product(session, name, cat=cat) for name in ("Mug", "Pan", "Bowl")]
    for v in variants:
        sell(session, v, 2)
    return [v.product_id for v in variants]


# Process counters and model status: no SQL involved, one backend is enough.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_predictions_latency_cache_and_fallbacks_are_counted(
    ml: TestClient, fake_ml: FakeML, ids: list[int]
) -> None:
    version = {"area": "recommend", "model": MODEL["name"], "version": str(MODEL["version"])}
    ok = {"area": "recommend", "method": "recommend", "outcome": "ok"}
    before = scrape(ml)

    fake_ml.set("recommend", "recommend", items_answer(*ids))
    assert ml.get(RECOMMEND, params={"session_id": "s-1"}).json()["fallback"] is False
    cached = items_answer(*ids)

    def answer_from_cache(**kwargs: Any) -> dict[str, Any]:
        return {**cached(**kwargs), "cached": True}

    fake_ml.set("recommend", "recommend", answer_from_cache)
    assert ml.get(RECOMMEND, params={"session_id": "s-2"}).json()["fallback"] is False
    # Untrained, then too slow: both answered by popularity.
    fake_ml.set("recommend", "recommend", None)
    assert ml.get(RECOMMEND, params={"session_id": "s-3"}).json()["fallback_reason"] == (
        "model_unavailable"
    )
    fake_ml.set("recommend", "recommend", "hang")
    assert ml.get(RECOMMEND, params={"session_id": "s-4"}).json()["fallback_reason"] == "deadline"
    after = scrape(ml)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cartwise_ml_predictions_total", **version) == 2
    assert delta("cartwise_ml_call_duration_seconds_count", **ok) == 2
    assert delta("cartwise_ml_prediction_cache_total", area="recommend", result="hit") == 1
    assert delta("cartwise_ml_prediction_cache_total", area="recommend", result="miss") == 1
    for reason in ("model_unavailable", "deadline"):
        assert (
            delta(
                "cartwise_ml_call_duration_seconds_count",
                area="recommend",
                method="recommend",
                outcome=reason,
            )
            == 1
        )
        # The fallback counter belongs to this app's ingress: absolute values.
        assert value(after, "cartwise_ml_fallbacks_total", area="recommend", reason=reason) == 1


# Process counters and model status: no SQL involved, one backend is enough.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_model_status_is_reported_per_area(ml: TestClient, fake_ml: FakeML) -> None:
    status = {
        "area": "recommend",
        "model": {**MODEL, "loaded_at": 1_700_000_000.5},
        "cache": {"shared": {MODEL["name"]: {"hits": 7, "misses": 3}}},
    }
    fake_ml.set("recommend", "status", status)
    samples = scrape(ml)
    labels = {"area": "recommend", "model": MODEL["name"]}
    assert value(samples, "cartwise_ml_model_available", area="recommend") == 1
    assert value(samples, "cartwise_ml_model_available", area="fraud") == 0
    assert value(samples, "cartwise_ml_model_version", **labels) == MODEL["version"]
    assert value(samples, "cartwise_ml_model_loaded_timestamp_seconds", **labels) == 1_700_000_000.5
    shared = "cartwise_ml_prediction_cache_shared_total"
    assert value(samples, shared, model=MODEL["name"], result="hit") == 7
    assert value(samples, shared, model=MODEL["name"], result="miss") == 3


def test_drift_and_training_come_from_the_monitoring_tables(
    ml: TestClient, session: Session
) -> None:
    empty = scrape(ml)
    # Empty tables: the ingress still answers, with no drift series and the source up.
    assert value(empty, "cartwise_metrics_source_up", source="monitoring") == 1
    assert not [k for k in empty if k[0] == "cartwise_ml_drift_share"]

    now = utcnow()
    old = MonitoringReport(
        area="recommend",
        model_name=MODEL["name"],
        model_version=3,
        drift_share=0.1,
        created_at=now - timedelta(hours=2),
    )
    session.add(old)
    session.commit()
    latest = MonitoringReport(
        area="recommend",
        model_name=MODEL["name"],
        model_version=3,
        drift_share=0.45,
        prediction_drift=0.2,
        breach=True,
        created_at=now - timedelta(hours=1),
    )
    fraud = MonitoringReport(area="fraud", model_name="cartwise-fraud", drift_share=0.05)
    session.add_all([latest, fraud])
    session.commit()
    trained_at = now - timedelta(minutes=30)
    session.add_all(
        [
            RetrainDecision(
                area="recommend",
                outcome=DecisionOutcome.no_drift,
                reason="below threshold",
                created_at=now - timedelta(hours=2),
            ),
            RetrainDecision(
                area="recommend",
                outcome=DecisionOutcome.retrained_promoted,
                reason="drift share 0.45 over 0.3",
                report_id=latest.id,
                version_before=3,
                version_after=4,
                created_at=trained_at,
            ),
        ]
    )
    session.commit()

    samples = scrape(ml)
    assert value(
        samples, "cartwise_ml_drift_share", area="recommend", model=MODEL["name"]
    ) == pytest.approx(0.45)
    assert value(
        samples, "cartwise_ml_drift_share", area="fraud", model="cartwise-fraud"
    ) == pytest.approx(0.05)
    assert value(samples, "cartwise_ml_prediction_drift", area="recommend") == pytest.approx(0.2)
    assert value(samples, "cartwise_ml_drift_breach", area="recommend") == 1
    assert value(samples, "cartwise_ml_drift_breach", area="fraud") == 0
    assert value(
        samples, "cartwise_ml_last_training_timestamp_seconds", area="recommend"
    ) == pytest.approx(trained_at.timestamp())
    assert value(samples, "cartwise_ml_last_trained_version", area="recommend") == 4
    assert not [
        k
        for k in samples
        if k[0] == "cartwise_ml_last_training_timestamp_seconds" and dict(k[1])["area"] == "fraud"
    ]
    decisions = "cartwise_ml_retrain_decisions_total"
    assert value(samples, decisions, area="recommend", outcome="no_drift") == 1
    assert value(samples, decisions, area="recommend", outcome="retrained_promoted") == 1
