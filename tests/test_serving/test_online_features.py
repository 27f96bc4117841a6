"""OnlineFeatures on the trained shop's Feast online store: rows in, rows out, never raising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cartwise.features.settings import FeatureSettings
from cartwise.serving.runtime.features import OnlineFeatures

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def online(trained_shop: Any) -> OnlineFeatures:
    """A reader on the shop's store (read-only)."""
    return OnlineFeatures(FeatureSettings(**trained_shop.overrides()))


def test_rows_come_back_in_order_with_their_features(online: OnlineFeatures) -> None:
    rows = online.get("customer_v1", [{"customer_id": 2}, {"customer_id": 999_999}])
    assert [r["customer_id"] for r in rows] == [2, 999_999]
    assert rows[0]["orders_lifetime"] is not None
    # An unknown entity has no features, not an error.
    assert rows[1]["orders_lifetime"] is None
    assert online.status()["errors"] == 0


def test_request_fields_reach_on_demand_features(online: OnlineFeatures) -> None:
    request = {
        "customer_id": 2,
        "order_amount": 80.0,
        "shipping_country": "ZZ",
        "orders_last_hour": 3,
        "request_epoch": 1_900_000_000,
    }
    (row,) = online.get("fraud_v1", [request])
    assert row["order_velocity_1h"] == 3
    assert row["is_new_country"] == 1


def test_failures_answer_none_features_and_are_counted(online: OnlineFeatures) -> None:
    before = online.status()["errors"]
    rows = online.get("no_such_service_v9", [{"customer_id": 2}])
    assert rows == [{"customer_id": 2}]
    assert online.status()["errors"] == before + 1
    assert "no_such_service_v9" in (online.status()["last_error"] or "")
    # A known service that fails still answers every feature it had before, as None.
    broken = OnlineFeatures(FeatureSettings(**{**_overrides(online), "feast_project": "c1-none"}))
    broken._names["customer_v1"] = ["orders_lifetime"]
    assert broken.get("customer_v1", [{"customer_id": 2}]) == [
        {"customer_id": 2, "orders_lifetime": None}
    ]
    assert online.get("customer_v1", []) == []


def _overrides(online: OnlineFeatures) -> dict[str, Any]:
    settings = online._settings
    assert settings is not None
    values = settings.model_dump()
    values["var_dir"] = Path(values["var_dir"])
    return values
