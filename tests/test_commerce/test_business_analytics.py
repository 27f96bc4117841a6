"""Staff business analytics over a small shop with known answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.catalog.models import Category, Product
from cartwise.commerce.customers.models import User
from cartwise.commerce.orders.models import Order, OrderLine
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import make_variant
from tests.test_commerce.test_experiments import add_events

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
END = T0 + timedelta(days=3)
RANGE = {"start": T0.isoformat(), "end": END.isoformat()}


def add_order(
    session: Session,
    *,
    at: datetime,
    status: str,
    lines: Sequence[tuple[Any, int, str]],
    user_id: int | None = None,
    email: str = "someone@example.com",
    country: str | None = "GB",
    currency: str = "GBP",
    refunded: str = "0",
) -> str:
    """An order with lines (variant, quantity, unit price) placed at ``at``."""
    oid = uuid.uuid4().hex
    subtotal = sum((Decimal(p) * q for _, q, p in lines), Decimal("0"))
    session.add(
        Order(
            id=oid,
            user_id=user_id,
            email=email,
            status=status,  # type: ignore[arg-type]
            currency=currency,
            subtotal=subtotal,
            total=subtotal,
            refunded_amount=Decimal(refunded),
            country=country,
            created_at=at,
            updated_at=at,
        )
    )
    session.flush()
    for variant, quantity, price in lines:
        session.add(
            OrderLine(
                order_id=oid,
                variant_id=variant.id,
                product_id=variant.product_id,
                sku=variant.sku,
                product_name="line name",
                quantity=quantity,
                unit_price=Decimal(price),
                line_total=Decimal(price) * quantity,
            )
        )
    session.commit()
    return oid


@pytest.fixture
def shop(session: Session) -> dict[str, Any]:
    """Three products in two categories, three customers, orders in and out of the range."""
    kitchen, garden = (
        Category(name="Kitchen", slug="kitchen"),
        Category(name="Garden", slug="garden"),
    )
    session.add_all([kitchen, garden])
    session.commit()
    p1 = make_variant(session, price="10.00", name="Mug")
    p2 = make_variant(session, price="5.50", name="Spoon")
    p3 = make_variant(session, price="3.00", name="Seeds")
    for variant, category in ((p1, kitchen), (p2, kitchen), (p3, garden)):
        product = session.get(Product, variant.product_id)
        assert product is not None
        product.category_id = category.id
    users = [User(email=f"{n}@example.com", hashed_password="!") for n in "abc"]
    session.add_all(users)
    session.commit()
    a, b, c = (u.id for u in users)
    h = timedelta(hours=1)
    # Before the range: makes A a returning customer.
    add_order(
        session, at=T0 - timedelta(days=10), status="delivered", lines=[(p1, 1, "10.00")], user_id=a
    )
    # Day 1 (the start is inclusive).
    add_order(
        session,
        at=T0,
        status="delivered",
        lines=[(p1, 2, "10.00"), (p2, 1, "5.50")],
        user_id=a,
    )
    add_order(
        session,
        at=T0 + 5 * h,
        status="paid",
        lines=[(p1, 1, "10.00")],
        email="Guest@Example.com",
        country="FR",
    )
    add_order(session, at=T0 + 6 * h, status="cancelled", lines=[(p3, 5, "3.00")], user_id=b)
    # Day 2.
    add_order(
        session,
        at=T0 + 30 * h,
        status="shipped",
        lines=[(p3, 4, "3.00")],
        user_id=a,
        refunded="2.00",
    )
    add_order(
        session, at=T0 + 31 * h, status="pending_payment", lines=[(p1, 1, "10.00")], user_id=c
    )
    add_order(session, at=T0 + 32 * h, status="review", lines=[(p1, 1, "10.00")], user_id=b)
    add_order(
        session,
        at=T0 + 33 * h,
        status="paid",
        lines=[(p2, 2, "7.00")],
        user_id=c,
        country="US",
        currency="USD",
    )
    add_order(session, at=T0 + 34 * h, status="refunded", lines=[(p2, 9, "5.50")], user_id=a)
    # The end is exclusive.
    add_order(session, at=END, status="delivered", lines=[(p1, 3, "10.00")], user_id=b)
    m = timedelta(minutes=1)
    ids = {"p1": p1.product_id, "p2": p2.product_id, "p3": p3.product_id}
    add_events(
        session,
        [
            {
                "type": "view",
                "product_id": ids["p1"],
                "session_id": "s1",
                "user_id": a,
                "at": T0 + m,
            },
            {
                "type": "add_to_cart",
                "product_id": ids["p1"],
                "session_id": "s1",
                "user_id": a,
                "at": T0 + 2 * m,
            },
            {
                "type": "purchase",
                "product_id": ids["p1"],
                "session_id": "s1",
                "user_id": a,
                "at": T0 + 3 * m,
            },
            {"type": "view", "product_id": ids["p1"], "session_id": "s2", "at": T0 + m},
            {"type": "view", "product_id": ids["p1"], "session_id": "s2", "at": T0 + 2 * m},
            {"type": "view", "product_id": ids["p2"], "session_id": "s2", "at": T0 + 3 * m},
            {
                "type": "view",
                "product_id": ids["p2"],
                "session_id": "s3",
                "user_id": c,
                "at": T0 + h,
            },
            {
                "type": "add_to_cart",
                "product_id": ids["p2"],
                "session_id": "s3",
                "user_id": c,
                "at": T0 + h + m,
            },
            {"type": "add_to_cart", "product_id": ids["p3"], "session_id": "s4", "at": T0 + 2 * h},
            {"type": "purchase", "product_id": ids["p3"], "session_id": "s4", "at": T0 + 2 * h + m},
            {
                "type": "view",
                "product_id": ids["p3"],
                "session_id": "s5",
                "user_id": a,
                "at": T0 + 3 * h,
            },
            {"type": "search", "query": "mug", "session_id": "s5", "user_id": a, "at": T0 + 3 * h},
            {"type": "view", "product_id": ids["p1"], "session_id": "s6", "at": T0 - m},
            {"type": "purchase", "product_id": ids["p1"], "session_id": "s2", "at": END},
        ],
    )
    return {"ids": ids, "kitchen": kitchen.id, "garden": garden.id}


def check_sales_by_day_category_country(
    client: TestClient, staff: Account, shop: dict[str, Any]
) -> None:
    """Sales totals and breakdowns: only paid..delivered orders, per currency."""
    r = client.get("/api/v1/analytics/sales", params=RANGE, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["statuses"] == ["paid", "fulfilled", "shipped", "delivered"]
    assert body["totals"] == [
        {
            "currency": "GBP",
            "revenue": "47.50",
            "orders": 3,
            "units": 8,
            "refunded": "2.00",
            "average_order_value": "15.83",
        },
        {
            "currency": "USD",
            "revenue": "14.00",
            "orders": 1,
            "units": 2,
            "refunded": "0.00",
            "average_order_value": "14.00",
        },
    ]
    assert body["by_day"] == [
        {"day": "2026-11-02", "currency": "GBP", "revenue": "35.50", "orders": 2, "units": 4},
        {"day": "2026-11-03", "currency": "GBP", "revenue": "12.00", "orders": 1, "units": 4},
        {"day": "2026-11-03", "currency": "USD", "revenue": "14.00", "orders": 1, "units": 2},
    ]
    assert body["by_category"] == [
        {
            "category_id": shop["kitchen"],
            "category": "Kitchen",
            "currency": "GBP",
            "revenue": "35.50",
            "orders": 2,
            "units": 4,
        },
        {
            "category_id": shop["kitchen"],
            "category": "Kitchen",
            "currency": "USD",
            "revenue": "14.00",
            "orders": 1,
            "units": 2,
        },
        {
            "category_id": shop["garden"],
            "category": "Garden",
            "currency": "GBP",
            "revenue": "12.00",
            "orders": 1,
            "units": 4,
        },
    ]
    assert body["by_country"] == [
        {"country": "GB", "currency": "GBP", "revenue": "37.50", "orders": 2, "units": 7},
        {"country": "US", "currency": "USD", "revenue": "14.00", "orders": 1, "units": 2},
        {"country": "FR", "currency": "GBP", "revenue": "10.00", "orders": 1, "units": 1},
    ]


def check_products_top_sellers_and_conversion(
    client: TestClient, staff: Account, shop: dict[str, Any]
) -> None:
    """Top sellers by units and revenue; per-product view → purchase sessions."""
    ids = shop["ids"]
    r = client.get("/api/v1/analytics/products", params=RANGE, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    top = [(t["product_id"], t["currency"], t["units"], t["revenue"]) for t in body["top_sellers"]]
    assert top == [
        (ids["p3"], "GBP", 4, "12.00"),
        (ids["p1"], "GBP", 3, "30.00"),
        (ids["p2"], "USD", 2, "14.00"),
        (ids["p2"], "GBP", 1, "5.50"),
    ]
    conversion = {
        c["product_id"]: (
            c["views"],
            c["viewing_sessions"],
            c["purchasing_sessions"],
            c["converted_sessions"],
            c["conversion_rate"],
        )
        for c in body["conversion"]
    }
    assert conversion == {
        ids["p1"]: (3, 2, 1, 1, 0.5),
        ids["p2"]: (2, 2, 0, 0, 0.0),
        ids["p3"]: (1, 1, 1, 0, 0.0),
    }
    assert [c["product_id"] for c in body["conversion"]] == [ids["p1"], ids["p2"], ids["p3"]]

    r = client.get(
        "/api/v1/analytics/products",
        params={**RANGE, "by": "revenue", "limit": 2},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    by_revenue = [(t["product_id"], t["revenue"]) for t in r.json()["top_sellers"]]
    assert by_revenue == [(ids["p1"], "30.00"), (ids["p2"], "14.00")]


def check_funnel(client: TestClient, staff: Account, shop: dict[str, Any]) -> None:
    """Nested funnel steps by sessions and signed-in users."""
    r = client.get("/api/v1/analytics/funnel", params=RANGE, headers=staff.headers)
    assert r.status_code == 200, r.text
    steps = [
        (
            s["step"],
            s["sessions"],
            s["users"],
            s["session_rate"],
            s["session_step_rate"],
            s["user_rate"],
        )
        for s in r.json()["steps"]
    ]
    assert steps == [
        ("view", 4, 2, 1.0, 1.0, 1.0),
        ("add_to_cart", 2, 2, 0.5, 0.5, 1.0),
        ("purchase", 1, 1, 0.25, 0.5, 0.5),
    ]


def check_customers_new_vs_returning(
    client: TestClient, staff: Account, shop: dict[str, Any]
) -> None:
    """New vs returning customers (guests by email) and average order values."""
    r = client.get("/api/v1/analytics/customers", params=RANGE, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["customers"], body["new_customers"], body["returning_customers"]) == (3, 2, 1)
    assert body["returning_rate"] == pytest.approx(1 / 3)
    assert body["segments"] == [
        {
            "segment": "new",
            "currency": "GBP",
            "customers": 1,
            "orders": 1,
            "revenue": "10.00",
            "average_order_value": "10.00",
        },
        {
            "segment": "new",
            "currency": "USD",
            "customers": 1,
            "orders": 1,
            "revenue": "14.00",
            "average_order_value": "14.00",
        },
        {
            "segment": "returning",
            "currency": "GBP",
            "customers": 1,
            "orders": 2,
            "revenue": "37.50",
            "average_order_value": "18.75",
        },
    ]


def test_known_numbers(client: TestClient, staff: Account, shop: dict[str, Any]) -> None:
    """Sales, products, funnel and customers over the same small shop."""
    check_sales_by_day_category_country(client, staff, shop)
    check_products_top_sellers_and_conversion(client, staff, shop)
    check_funnel(client, staff, shop)
    check_customers_new_vs_returning(client, staff, shop)


def test_empty_range_and_default_range(
    client: TestClient, staff: Account, shop: dict[str, Any]
) -> None:
    # The default range is the last 30 days up to now: the 2026-11 shop is in it or not,
    # depending on today's date, so only the shape and the range length are checked.
    r = client.get("/api/v1/analytics/sales", headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    span = datetime.fromisoformat(body["end"]) - datetime.fromisoformat(body["start"])
    assert span == timedelta(days=30)
    quiet = {"start": "2020-01-01T00:00:00Z", "end": "2020-02-01T00:00:00Z"}
    r = client.get("/api/v1/analytics/customers", params=quiet, headers=staff.headers)
    assert r.status_code == 200, r.text
    assert r.json()["customers"] == 0
    assert r.json()["segments"] == []
    r = client.get("/api/v1/analytics/funnel", params=quiet, headers=staff.headers)
    assert [s["sessions"] for s in r.json()["steps"]] == [0, 0, 0]
    assert r.json()["steps"][0]["session_rate"] is None


BAD_RANGES: list[dict[str, str]] = [
    {"start": "2026-11-05T00:00:00Z", "end": "2026-11-01T00:00:00Z"},  # reversed
    {"start": "2026-11-05T00:00:00Z", "end": "2026-11-05T00:00:00Z"},  # empty
    {"start": "2010-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},  # too long
    {"start": "2026-11-01T00:00:00"},  # no time zone
    {"end": "yesterday"},
    {"start": "0001-01-01T00:00:00+05:00"},  # no UTC equivalent
]


def test_staff_only_bad_input_and_openapi(
    client: TestClient, staff: Account, customer: Account
) -> None:
    for path in ("sales", "products", "funnel", "customers"):
        url = f"/api/v1/analytics/{path}"
        assert_problem(client.get(url), 401)
        assert_problem(client.get(url, headers=customer.headers), 403)
        for params in BAD_RANGES:
            assert_problem(client.get(url, params=params, headers=staff.headers), 422)
    url = "/api/v1/analytics/products"
    assert_problem(client.get(url, params={"by": "price"}, headers=staff.headers), 422)
    assert_problem(client.get(url, params={"limit": 0}, headers=staff.headers), 422)
    paths = client.get("/openapi.json").json()["paths"]
    for name in ("sales", "products", "funnel", "customers", "search"):
        assert f"/api/v1/analytics/{name}" in paths
        assert paths[f"/api/v1/analytics/{name}"]["get"]["description"]
