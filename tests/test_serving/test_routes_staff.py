"""Staff analytics routes with a double of the ML client, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.orders.models import OrderStatus
from cartwise.commerce.suppliers.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    Supplier,
)
from cartwise.platform.types import utcnow
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable
from tests.conftest import Account, assert_problem
from tests.test_serving.routes_support import (
    FakeML,
    fake_ml_fixture,  # noqa: F401  (fixture)
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
    sell,
)

CUSTOMERS_MODEL = {"name": "cartwise-customers", "version": 1, "alias": "champion"}
DEMAND_MODEL = {"name": "cartwise-demand", "version": 5, "alias": "champion"}
STAFF_ROUTES = [
    "/api/v1/customers/1/insights",
    "/api/v1/analytics/segments",
    "/api/v1/analytics/churn-risk",
    "/api/v1/analytics/cohorts",
    "/api/v1/inventory/forecast?sku=ABC",
    "/api/v1/inventory/reorder-suggestions",
    "/api/v1/suppliers/performance",
    "/api/v1/ml/status",
]


@pytest.mark.parametrize("path", STAFF_ROUTES)
def test_staff_only(ml: TestClient, customer: Account, path: str) -> None:
    assert_problem(ml.get(path), 401)
    assert_problem(ml.get(path, headers=customer.headers), 403)


def test_customer_insights(
    ml: TestClient, fake_ml: FakeML, staff: Account, customer: Account
) -> None:
    url = f"/api/v1/customers/{customer.id}/insights"
    fake_ml.set(
        "customers",
        "insights",
        lambda customer_id: {
            "customer_id": customer_id,
            "segment": 2,
            "segment_name": "loyal",
            "churn_probability": 0.12,
            "ltv_90d": 80.5,
            "horizon_days": 90,
            "model": CUSTOMERS_MODEL,
            "cached": False,
        },
    )
    r = ml.get(url, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer_id"] == customer.id
    assert body["segment_name"] == "loyal"
    assert body["churn_probability"] == 0.12
    assert body["model"] == CUSTOMERS_MODEL
    assert fake_ml.calls[-1].kwargs == {"customer_id": customer.id}
    assert fake_ml.calls[-1].timeout_s == 10.0
    assert_problem(ml.get("/api/v1/customers/999999/insights", headers=staff.headers), 404)
    fake_ml.set("customers", "insights", ValueError("no history for customer"))
    assert_problem(ml.get(url, headers=staff.headers), 404)
    for down in (ModelUnavailable("not trained"), Deadline("slow")):
        fake_ml.set("customers", "insights", down)
        problem = assert_problem(ml.get(url, headers=staff.headers), 503)
        assert "Staff analytics have no fallback" in problem["detail"]


def test_segments_and_churn_risk(
    ml: TestClient, fake_ml: FakeML, staff: Account, customer: Account
) -> None:
    fake_ml.set(
        "customers",
        "segments",
        {"segments": [{"segment": 0, "name": "new", "size": 10}], "model": CUSTOMERS_MODEL},
    )
    r = ml.get("/api/v1/analytics/segments", headers=staff.headers)
    assert r.status_code == 200, r.text
    assert r.json()["segments"] == [{"segment": 0, "name": "new", "size": 10}]
    fake_ml.set(
        "customers",
        "churn_risk",
        lambda limit: {
            "customers": [
                {
                    "customer_id": customer.id,
                    "churn_probability": 0.9,
                    "ltv_90d": 3.0,
                    "segment_name": "lapsing",
                },
                {"customer_id": 424242, "churn_probability": 0.8, "ltv_90d": 1.0},
            ][:limit],
            "model": CUSTOMERS_MODEL,
        },
    )
    r = ml.get("/api/v1/analytics/churn-risk", params={"limit": 2}, headers=staff.headers)
    assert r.status_code == 200, r.text
    rows = r.json()["customers"]
    assert [row["customer_id"] for row in rows] == [customer.id, 424242]
    assert rows[0]["email"] == customer.email
    assert rows[1]["email"] is None
    assert fake_ml.calls[-1].kwargs == {"limit": 2}
    assert_problem(
        ml.get("/api/v1/analytics/churn-risk", params={"limit": 0}, headers=staff.headers), 422
    )
    fake_ml.set("customers", "segments", ModelUnavailable("down"))
    assert_problem(ml.get("/api/v1/analytics/segments", headers=staff.headers), 503)


def _month(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def test_cohorts_from_orders(
    ml: TestClient, session: Session, staff: Account, make_user: Any
) -> None:
    variant = product(session, "Lamp", price="10.00")
    first, second = make_user(), make_user()
    now = utcnow()
    earlier = now - timedelta(days=62)
    sell(session, variant, 1, user_id=first.id, days_ago=62)
    sell(session, variant, 2, user_id=first.id, days_ago=0)
    sell(session, variant, 3, user_id=second.id, days_ago=0)
    sell(session, variant, 9, user_id=second.id, days_ago=1, status=OrderStatus.cancelled)
    r = ml.get("/api/v1/analytics/cohorts", params={"months": 12}, headers=staff.headers)
    assert r.status_code == 200, r.text
    rows = {(c["cohort"], c["months_since"]): c for c in r.json()["cohorts"]}
    gap = (now.year * 12 + now.month) - (earlier.year * 12 + earlier.month)
    assert set(rows) == {(_month(earlier), 0), (_month(earlier), gap), (_month(now), 0)}
    back = rows[(_month(earlier), gap)]
    assert back["cohort_size"] == 1
    assert back["retention"] == 1.0
    assert back["revenue"] == 20.0
    # The cancelled order neither makes a cohort nor adds revenue.
    assert rows[(_month(now), 0)]["revenue"] == 30.0
    recent = ml.get("/api/v1/analytics/cohorts", params={"months": 1}, headers=staff.headers)
    assert [c["cohort"] for c in recent.json()["cohorts"]] == [_month(now)]
    assert_problem(
        ml.get("/api/v1/analytics/cohorts", params={"months": 0}, headers=staff.headers), 422
    )


@pytest.fixture
def supplied(session: Session) -> dict[str, Any]:
    """A supplier with one on-time full delivery and one late half delivery; one without POs."""
    variant = product(session, "Tent", price="80.00", stock=7)
    fast = Supplier(name="Fast Ltd", lead_time_days=5)
    idle = Supplier(name="Idle Ltd", lead_time_days=9)
    session.add_all([fast, idle])
    session.commit()
    now = utcnow()

    def po(
        placed: int, expected: int, received: int, qty: int, status: PurchaseOrderStatus
    ) -> None:
        assert fast.id is not None
        order = PurchaseOrder(
            supplier_id=fast.id,
            status=status,
            placed_at=now - timedelta(days=placed),
            expected_at=now - timedelta(days=expected),
            received_at=now - timedelta(days=received),
            updated_at=now - timedelta(days=received),
        )
        session.add(order)
        session.flush()
        session.add(
            PurchaseOrderLine(
                purchase_order_id=order.id,
                variant_id=variant.id,
                product_id=variant.product_id,
                sku=variant.sku,
                quantity_ordered=10,
                quantity_received=qty,
                unit_cost=Decimal("40.00"),
            )
        )
        session.commit()

    po(20, 15, 16, 10, PurchaseOrderStatus.received)
    po(12, 7, 4, 5, PurchaseOrderStatus.partially_received)
    return {"variant": variant, "fast": fast, "idle": idle}


def test_suppliers_performance(ml: TestClient, staff: Account, supplied: dict[str, Any]) -> None:
    r = ml.get("/api/v1/suppliers/performance", headers=staff.headers)
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()["suppliers"]}
    fast = rows["Fast Ltd"]
    assert fast["lines"] == 2
    assert fast["due_lines"] == 2
    assert fast["on_time_rate"] == pytest.approx(0.5)
    assert fast["fill_rate"] == pytest.approx(0.75)
    assert fast["lead_time_mean"] == pytest.approx(6.0)
    assert rows["Idle Ltd"]["lines"] == 0
    assert rows["Idle Ltd"]["on_time_rate"] is None
    assert rows["Idle Ltd"]["promised_lead_time"] == 9.0


def test_forecast_and_reorder_suggestions(
    ml: TestClient, fake_ml: FakeML, staff: Account, supplied: dict[str, Any]
) -> None:
    variant = supplied["variant"]
    fake_ml.set(
        "demand",
        "forecast",
        lambda product_id, horizon: {
            "product_id": product_id,
            "quantiles": [0.1, 0.5, 0.9],
            "days": [
                {"date": f"2030-01-{d + 1:02d}", "q0.1": 0.0, "q0.5": 1.0, "q0.9": 2.0}
                for d in range(horizon)
            ],
            "model": DEMAND_MODEL,
        },
    )
    r = ml.get("/api/v1/inventory/forecast", params={"sku": variant.sku}, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sku"] == variant.sku
    assert body["product_id"] == variant.product_id
    assert len(body["days"]) == 28
    assert body["days"][0]["q0.9"] == 2.0
    assert fake_ml.calls[-1].kwargs == {"product_id": variant.product_id, "horizon": 28}
    assert_problem(
        ml.get("/api/v1/inventory/forecast", params={"sku": "NOPE-1"}, headers=staff.headers), 404
    )
    assert_problem(
        ml.get("/api/v1/inventory/forecast", params={"sku": "bad sku!"}, headers=staff.headers),
        422,
    )

    fake_ml.set(
        "demand",
        "reorder_suggestions",
        lambda stock, lead_times, service_level, limit: {
            "suggestions": [{"product_id": pid, "reorder_quantity": 3} for pid in stock][:limit],
            "model": DEMAND_MODEL,
        },
    )
    r = ml.get(
        "/api/v1/inventory/reorder-suggestions",
        params={"service_level": 0.9, "limit": 5},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    call = fake_ml.calls[-1]
    assert call.kwargs["stock"] == {variant.product_id: 7}
    assert call.kwargs["lead_times"] == {variant.product_id: pytest.approx(6.0)}
    assert call.kwargs["service_level"] == 0.9
    assert r.json()["suggestions"] == [
        {"product_id": variant.product_id, "reorder_quantity": 3, "name": "Tent"}
    ]
    assert_problem(
        ml.get(
            "/api/v1/inventory/reorder-suggestions",
            params={"service_level": 1.5},
            headers=staff.headers,
        ),
        422,
    )
    fake_ml.set("demand", "reorder_suggestions", ModelUnavailable("down"))
    assert_problem(ml.get("/api/v1/inventory/reorder-suggestions", headers=staff.headers), 503)


def test_commerce_routes_with_a_path_segment_still_work(
    ml: TestClient, staff: Account, supplied: dict[str, Any]
) -> None:
    # The ML routes go first; the commerce ones they shadow by a fixed word still answer.
    variant = supplied["variant"]
    r = ml.get(f"/api/v1/inventory/{variant.sku}", headers=staff.headers)
    assert r.status_code == 200, r.text
    r = ml.get(f"/api/v1/suppliers/{supplied['fast'].id}", headers=staff.headers)
    assert r.status_code == 200, r.text


def test_ml_status(ml: TestClient, fake_ml: FakeML, staff: Account) -> None:
    fake_ml.set(
        "recommend",
        "status",
        {"model": {"name": "r", "version": 2, "alias": "champion"}, "cache": {"hit_rate": 0.5}},
    )
    ml.get("/api/v1/search/suggest", params={"q": "a"})
    r = ml.get("/api/v1/ml/status", headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["areas"]["recommend"]["available"] is True
    assert body["areas"]["recommend"]["status"]["cache"] == {"hit_rate": 0.5}
    assert body["areas"]["fraud"] == {
        "available": False,
        "status": None,
        "reason": "model_unavailable",
    }
    assert body["fallbacks"] == {"suggest": {"model_unavailable": 1}}
