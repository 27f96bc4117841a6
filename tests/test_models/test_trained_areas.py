"""Tune → MLflow → register → gate, for the customers, demand, search and fraud areas.

The session's trained shop ran ``cartwise models train all --budget demo`` and ``cartwise
models evaluate all`` (the commands a person runs): each area's Ray Tune trials went to MLflow,
the best one became version 1 with its provenance tags, and the gate made it the first
champion. These tests read that registry (without writing to it) instead of tuning every area
a second time. Version 1 is checked by number: a later test (the retraining loop) may move the
fraud champion on.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from cartwise.models import areas, tracking

pytestmark = pytest.mark.slow

AREAS = ("customers", "demand", "search", "fraud")
# Each area's validation metric on the registered version's run.
VAL_METRICS = {
    "customers": "churn_pr_auc",
    "demand": "val_wape",
    "search": "val_mrr_at_10",
    "fraud": "val_pr_auc",
}


@pytest.fixture(scope="module")
def registry(trained_shop: Any) -> Any:
    """Model settings reading the trained shop's MLflow store."""
    import mlflow

    from cartwise.models.settings import ModelSettings

    yield ModelSettings(env="test", var_dir=trained_shop.var_dir, log_level="WARNING")
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.mark.parametrize("area", AREAS)
def test_tune_registered_version_one_and_the_gate_made_it_champion(
    area: str, registry: Any
) -> None:
    spec = areas.spec(area)
    client = tracking.client(registry)
    trials = client.search_runs(
        [tracking.experiment(spec.model_name, registry)], filter_string="tags.kind = 'trial'"
    )
    assert len(trials) >= 2, "the demo budget's two trials are each logged to MLflow"
    assert all(t.data.metrics for t in trials), "every trial reported its metrics"

    version = client.get_model_version(spec.model_name, "1")
    assert version.tags["feature_service"] == spec.feature_service
    assert version.tags["budget"] == "demo"
    assert version.tags["data_version"]
    run = client.get_run(version.run_id)
    metric = VAL_METRICS[area]
    assert metric in run.data.metrics, sorted(run.data.metrics)
    assert math.isfinite(run.data.metrics[metric])

    # The gate: no champion before, so version 1 was promoted, scored on the held-out window.
    assert version.tags["gate.decision"] == "first_champion"
    assert version.tags["gate.metric"] == spec.metric
    assert version.tags["gate.champion_version"] == "none"
    score = float(version.tags["gate.challenger_score"])
    assert math.isfinite(score)
    if area == "demand":
        assert 0 < score < 1.5  # WAPE: below 1 beats forecasting nothing
    elif area == "fraud":
        assert score > 0.05  # PR-AUC well above the ~5% fraud base rate's chance level
    else:
        assert score > 0
    assert tracking.current(spec.model_name, tracking.CHAMPION, settings=registry) is not None


def test_the_registered_fraud_model_scores_through_the_pyfunc(registry: Any) -> None:
    from cartwise.models.fraud import data as fraud_data

    loaded = tracking.load("fraud", version=1, settings=registry)
    out = loaded.predict(pd.DataFrame([dict.fromkeys(fraud_data.FEATURES, 1.0)] * 2))
    assert set(out["decision"]) <= {"allow", "review", "block"}
    assert out["risk"].between(0.0, 1.0).all()


def test_the_registered_demand_model_forecasts_from_the_end_of_its_history(
    registry: Any, trained_shop: Any
) -> None:
    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.demand import data
    from cartwise.models.source import Source

    settings = FeatureSettings(**trained_shop.overrides())
    source = Source(facts_dir=settings.exports_dir, store=store.get_store(settings))
    loaded = tracking.load("demand", version=1, settings=registry)
    assert loaded.predictor.history_end == data.read_panel(source).end
