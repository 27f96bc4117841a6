"""CustomerService against the trained shop: insights, segments, churn risk."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model loads once)."""
    from cartwise.serving.services.customers import CustomerService

    return CustomerService(overrides, QUIET)


@pytest.fixture(scope="module")
def buyer(service: Any) -> dict[str, Any]:
    """A customer with several orders, and their customer_v1 online features."""
    from cartwise.serving.runtime.features import OnlineFeatures

    rows = OnlineFeatures(service.settings).get(
        "customer_v1", [{"customer_id": c} for c in range(1, 80)]
    )
    found = [r for r in rows if (r.get("orders_lifetime") or 0) >= 2]
    assert found
    return found[0]


def test_insights_of_a_customer(service: Any, model: Any, buyer: dict[str, Any]) -> None:
    out = run(service.insights(customer_id=buyer["customer_id"]))
    assert out["model"] == model.info()
    assert out["customer_id"] == buyer["customer_id"]
    assert out["segment_name"] == model.predictor.names[out["segment"]]
    assert 0.0 <= out["churn_probability"] <= 1.0
    assert out["ltv_90d"] >= 0.0
    assert out["horizon_days"] == model.predictor.horizon_days
    assert out["has_features"] is True
    # The same numbers as the model on the same online features.
    import pandas as pd

    from cartwise.models.customers import data as cdata

    frame = cdata.fill_missing(pd.DataFrame([buyer]).drop(columns=["top_category_id"]))
    expected = model.predictor.insights(frame).iloc[0]
    assert out["churn_probability"] == pytest.approx(float(expected["churn_probability"]))
    assert out["segment"] == int(expected["segment"])


@pytest.fixture
def newcomer(trained_shop: Any) -> Iterator[int]:
    """A customer who signed up after the features were materialised (deleted afterwards)."""
    from sqlalchemy import delete, insert

    from cartwise.commerce.customers.models import User
    from cartwise.platform.db import get_engine
    from cartwise.platform.settings import Settings

    engine = get_engine(Settings(database_url=trained_shop.database_url))
    user = User.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        uid = conn.execute(
            insert(user)
            .values(
                email=f"new-{uuid.uuid4().hex[:8]}@example.com",
                full_name="New Customer",
                hashed_password="x",
                role="customer",
                is_active=True,
                created_at=datetime.now(UTC),
            )
            .returning(user.c.id)
        ).scalar_one()
    yield int(uid)
    with engine.begin() as conn:
        conn.execute(delete(user).where(user.c.id == uid))


def test_a_customer_without_features_reads_as_inactive(service: Any, newcomer: int) -> None:
    out = run(service.insights(customer_id=newcomer))
    assert out["has_features"] is False
    assert out["customer_id"] == newcomer
    assert 0.0 <= out["churn_probability"] <= 1.0


def test_unknown_customers_and_bad_ids_are_value_errors(service: Any) -> None:
    with pytest.raises(ValueError, match="unknown customer"):
        run(service.insights(customer_id=99_999_999))
    with pytest.raises(ValueError, match="customer_id"):
        run(service.insights(customer_id="7"))
    with pytest.raises(ValueError, match="customer_id"):
        run(service.insights(customer_id=0))


def test_segments_have_profiles_and_current_sizes(service: Any, model: Any) -> None:
    out = run(service.segments())
    assert out["model"] == model.info()
    names = [s["name"] for s in out["segments"]]
    assert names == list(model.predictor.names)
    assert sum(s["current_customers"] for s in out["segments"]) == out["customers"] > 0
    assert sum(s["current_share"] for s in out["segments"]) == pytest.approx(1.0)
    for s in out["segments"]:
        assert {"mean_orders_90d", "share", "customers"} <= set(s)


def test_churn_risk_lists_buyers_most_at_risk_first(service: Any, buyer: dict[str, Any]) -> None:
    out = run(service.churn_risk(limit=5))
    customers = out["customers"]
    assert len(customers) == 5
    risks = [c["churn_probability"] for c in customers]
    assert risks == sorted(risks, reverse=True)
    everyone = run(service.churn_risk(limit=1000))["customers"]
    assert risks == [c["churn_probability"] for c in everyone[:5]]
    # Only customers who have bought can churn; the buyer is among them.
    assert buyer["customer_id"] in {c["customer_id"] for c in everyone}
    for bad in (0, 10_000, "5"):
        with pytest.raises(ValueError, match="limit"):
            run(service.churn_risk(limit=bad))


def test_no_model_in_the_registry_is_model_unavailable(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    from cartwise.serving.services.customers import CustomerService

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    service = CustomerService({**overrides, "mlflow_tracking_uri": uri, "mlflow_registry_uri": uri})
    with pytest.raises(ModelUnavailable):
        run(service.insights(customer_id=1))
    with pytest.raises(ModelUnavailable):
        run(service.segments())


def test_insights_are_logged_with_the_churn_inputs_and_probability(
    service: Any, model: Any, buyer: dict[str, Any]
) -> None:
    from datetime import timedelta

    from cartwise.models.customers import data as cdata
    from cartwise.models.monitoring import feature_log

    logger = service.feature_logger
    assert logger is not None
    logger.flush()
    before = logger.written
    out = run(service.insights(customer_id=buyer["customer_id"]))
    assert logger.flush()
    assert logger.written == before + 1
    now = datetime.now(UTC)
    frame = feature_log.read(
        "customers", now - timedelta(hours=1), now + timedelta(minutes=5), service.model_settings
    )
    row = frame[frame["key"] == str(buyer["customer_id"])].iloc[-1]
    assert row["prediction"] == pytest.approx(out["churn_probability"])
    assert int(row["model_version"]) == model.version
    # The monitored statistics the churn model read (the category lists are not logged).
    assert set(cdata.STATS) <= set(frame.columns)
    assert not set(cdata.AFFINITY) & set(frame.columns)
    assert row["orders_lifetime"] == pytest.approx(buyer["orders_lifetime"])
    assert row["days_since_last_order"] == pytest.approx(buyer["days_since_last_order"])
