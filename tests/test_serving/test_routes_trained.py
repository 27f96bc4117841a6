"""Every ML route against the trained demo shop, with the real model services in-process.

The services run through the real ``LocalMLClient`` (what ``cartwise api`` and plain uvicorn
use). Deadlines are raised for this module: it checks that each route answers from its model
(``fallback: false``) with sensible content on a shared, busy machine, not how fast it is.
The shop is shared state: the only writes here are a product, a user and an order of this
module's own, and the search events every search stores.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from cartwise.commerce.catalog import service as catalog
from cartwise.commerce.catalog.models import Product, Variant
from cartwise.commerce.customers.models import User
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.orders.models import Order, RiskDecision
from cartwise.models.areas import spec
from cartwise.platform.auth import Role, hash_password, issue_access_token
from cartwise.serving.routes import common
from tests.test_commerce.factories import add_item, checkout_body, guest_cart

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _model_name(area: str) -> str:
    return spec(area).model_name


@pytest.fixture(scope="module")
def served(trained_shop: Any) -> Iterator[tuple[FastAPI, TestClient]]:
    """The served app on the shop, with the five services built and their models loaded."""
    from cartwise.serving.asgi import create_app
    from cartwise.serving.runtime.client import SERVICE_PATHS, LocalMLClient, import_object

    overrides = trained_shop.overrides(
        rate_limit_per_minute=100_000,
        auth_rate_limit_per_minute=100_000,
        log_level="WARNING",
        # The events API pushes session features to Feast (personalisation test).
        feast_push_enabled=True,
    )
    services = {
        area: import_object(path)(settings=dict(overrides), config=None)
        for area, path in SERVICE_PATHS.items()
    }

    async def warm() -> None:
        # First calls load models, MiniLM and catalogues; the routes' deadlines are for later.
        await services["recommend"].recommend(k=3)
        await services["search"].search(q="lamp", k=3)
        await services["search"].suggest(prefix="la", k=3)
        await services["customers"].segments()
        await services["demand"].status()
        await services["fraud"].score(
            request={
                "order_id": "warm-up",
                "customer_id": None,
                "order_amount": 10.0,
                "shipping_country": "GB",
                "orders_last_hour": 0,
                "request_epoch": int(time.time()),
            }
        )

    asyncio.run(warm())
    app = create_app(overrides, ml=LocalMLClient(services))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


@pytest.fixture(autouse=True)
def _generous_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for area in list(common.DEADLINES):
        monkeypatch.setitem(common.DEADLINES, area, 20.0)


@pytest.fixture(scope="module")
def served_app(served: tuple[FastAPI, TestClient]) -> FastAPI:
    """The served app."""
    return served[0]


@pytest.fixture(scope="module")
def http(served: tuple[FastAPI, TestClient]) -> TestClient:
    """The HTTP client on the served app."""
    return served[1]


@pytest.fixture(scope="module")
def db(served_app: FastAPI) -> Iterator[Session]:
    """A session on the shop's database."""
    with Session(served_app.state.engine, expire_on_commit=False) as s:
        yield s


def _headers(app: FastAPI, user_id: int, role: Role) -> dict[str, str]:
    token = issue_access_token(app.state.settings, user_id, role).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def staff_headers(served_app: FastAPI, db: Session) -> dict[str, str]:
    """A staff token (the shop's first admin; one is made if the shop has none yet, as when
    this module runs without test_cli's ``users create-admin`` before it)."""
    admin = db.execute(text("SELECT id FROM \"user\" WHERE role = 'admin' ORDER BY id")).first()
    if admin is None:
        user = User(
            email=f"admin-{uuid.uuid4().hex[:8]}@example.com",
            hashed_password=hash_password("admin-password-1"),
            role=Role.admin,
        )
        db.add(user)
        db.commit()
        assert user.id is not None
        return _headers(served_app, user.id, Role.admin)
    return _headers(served_app, int(admin[0]), Role.admin)


@pytest.fixture(scope="module")
def buyer(db: Session) -> int:
    """The customer with the most orders."""
    row = db.execute(
        text(
            'SELECT user_id FROM "order" WHERE user_id IS NOT NULL '
            "GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
        )
    ).first()
    assert row is not None
    return int(row[0])


def _assert_shown_products_are_buyable(db: Session, items: list[dict[str, Any]]) -> None:
    assert items
    for item in items:
        product = db.get(Product, item["product_id"])
        assert product is not None
        assert product.status == "active"
        assert item["in_stock"] is True


def test_recommendations_for_a_customer(
    http: TestClient, served_app: FastAPI, db: Session, buyer: int
) -> None:
    r = http.get(
        "/api/v1/recommendations",
        params={"k": 8},
        headers=_headers(served_app, buyer, Role.customer),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False, body
    assert body["model"]["name"] == _model_name("recommend")
    assert body["model"]["version"] >= 1
    assert body["strategy"] in {"personal", "session", "new_customer", "popular"}
    assert len(body["items"]) == 8
    _assert_shown_products_are_buyable(db, body["items"])
    anonymous = http.get("/api/v1/recommendations", params={"session_id": uuid.uuid4().hex})
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json()["fallback"] is False
    assert anonymous.json()["items"]


def test_similar_and_complements(http: TestClient, db: Session) -> None:
    pid = int(db.execute(text("SELECT min(id) FROM product WHERE status = 'active'")).scalar_one())
    r = http.get(f"/api/v1/products/{pid}/similar", params={"k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False, body
    assert pid not in [i["product_id"] for i in body["items"]]
    _assert_shown_products_are_buyable(db, body["items"])

    sku = db.execute(
        text(
            "SELECT v.sku FROM variant v JOIN stock_level s ON s.sku = v.sku "
            "WHERE v.product_id = :pid AND s.on_hand - s.reserved > 0 LIMIT 1"
        ),
        {"pid": pid},
    ).scalar_one()
    cart_id, token = guest_cart(http)
    add_item(http, cart_id, token, sku)
    r = http.get(f"/api/v1/carts/{cart_id}/complements", params={"k": 5}, headers=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False, body
    assert body["strategy"] in {"complements", "similar", "popular"}
    assert pid not in [i["product_id"] for i in body["items"]]
    r = http.get(
        "/api/v1/recommendations", params={"context": "cart", "cart_id": cart_id}, headers=token
    )
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is False


def _common_word(db: Session) -> str:
    names = [row[0] for row in db.execute(text("SELECT name FROM product WHERE status='active'"))]
    words = Counter(w for name in names for w in re.findall(r"[a-z]+", name.lower()) if len(w) >= 5)
    return str(words.most_common(1)[0][0])


def test_search_with_a_typo_suggests_the_word(http: TestClient, db: Session) -> None:
    word = _common_word(db)
    typo = word[0] + word[2] + word[1] + word[3:]  # two letters swapped
    r = http.get("/api/v1/search", params={"q": typo, "per_page": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False, body
    assert body["model"]["name"] == _model_name("search")
    assert body["did_you_mean"] is not None
    assert word in body["did_you_mean"]
    assert body["total"] >= 1
    assert body["facets"]["category"]
    first = body["items"][0]
    assert "<mark>" in first["highlight"]
    assert word in first["name"].lower()

    prefix = word[:3]
    r = http.get("/api/v1/search/suggest", params={"q": prefix, "k": 5})
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is False
    assert r.json()["suggestions"]


def test_staff_customer_analytics(
    http: TestClient, staff_headers: dict[str, str], buyer: int
) -> None:
    r = http.get(f"/api/v1/customers/{buyer}/insights", headers=staff_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer_id"] == buyer
    assert 0.0 <= body["churn_probability"] <= 1.0
    assert body["ltv_90d"] >= 0.0
    assert body["segment_name"]

    r = http.get("/api/v1/analytics/segments", headers=staff_headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["segments"]) >= 2

    r = http.get("/api/v1/analytics/churn-risk", params={"limit": 5}, headers=staff_headers)
    assert r.status_code == 200, r.text
    rows = r.json()["customers"]
    assert 1 <= len(rows) <= 5
    risks = [row["churn_probability"] for row in rows]
    assert risks == sorted(risks, reverse=True)
    assert all(row["email"] for row in rows)

    r = http.get("/api/v1/analytics/cohorts", params={"months": 6}, headers=staff_headers)
    assert r.status_code == 200, r.text
    cohorts = r.json()["cohorts"]
    assert cohorts
    assert all(c["months_since"] >= 0 and 0 < c["retention"] <= 1 for c in cohorts)
    assert any(c["months_since"] == 0 and c["retention"] == 1.0 for c in cohorts)


def test_staff_planning(http: TestClient, db: Session, staff_headers: dict[str, str]) -> None:
    sku = db.execute(
        text("SELECT sku FROM order_line GROUP BY sku ORDER BY sum(quantity) DESC, sku LIMIT 1")
    ).scalar_one()
    r = http.get("/api/v1/inventory/forecast", params={"sku": sku}, headers=staff_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sku"] == sku
    assert len(body["days"]) == 28
    assert body["model"]["name"] == _model_name("demand")

    r = http.get(
        "/api/v1/inventory/reorder-suggestions",
        params={"service_level": 0.95, "limit": 10},
        headers=staff_headers,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["suggestions"]) <= 10

    r = http.get("/api/v1/suppliers/performance", headers=staff_headers)
    assert r.status_code == 200, r.text
    suppliers = r.json()["suppliers"]
    assert len(suppliers) >= 1
    measured = [s for s in suppliers if s["due_lines"] > 0]
    assert measured
    for s in measured:
        assert 0.0 <= s["on_time_rate"] <= 1.0
        assert 0.0 < s["fill_rate"] <= 1.0
        assert s["lead_time_mean"] > 0

    r = http.get("/api/v1/ml/status", headers=staff_headers)
    assert r.status_code == 200, r.text
    assert all(area["available"] for area in r.json()["areas"].values()), r.json()


def test_checkout_is_scored_by_the_fraud_model(
    http: TestClient, served_app: FastAPI, db: Session
) -> None:
    suffix = uuid.uuid4().hex[:8]
    product = Product(name=f"Routes test kettle {suffix}", slug=f"routes-kettle-{suffix}")
    db.add(product)
    db.flush()
    assert product.id is not None
    variant = Variant(product_id=product.id, sku=f"RT-{suffix.upper()}", price=Decimal("19.00"))
    db.add(variant)
    db.flush()
    inventory.ensure_stock_row(session=db, sku=variant.sku, on_hand=3)
    email = f"routes-{suffix}@example.com"
    db.add(User(email=email, hashed_password=hash_password("x-long-password"), role=Role.customer))
    db.commit()
    try:
        cart_id, token = guest_cart(http)
        add_item(http, cart_id, token, variant.sku)
        r = http.post("/api/v1/checkout", json=checkout_body(cart_id, email=email), headers=token)
        assert r.status_code == 201, r.text
        db.expire_all()
        order = db.get(Order, r.json()["order"]["id"])
        assert order is not None
        assert order.risk_fallback is False, order.risk_reasons
        assert order.risk_score is not None
        assert 0.0 <= order.risk_score <= 1.0
        assert order.risk_decision in set(RiskDecision)
        assert order.risk_model_version is not None
        assert int(order.risk_model_version) >= 1
        assert order.risk_reasons
    finally:
        # Off sale again, so other tests on the shared shop never see it.
        catalog.archive_product(session=db, product_id=product.id)


def test_three_views_in_a_category_show_in_the_next_call_within_1s(
    http: TestClient, db: Session
) -> None:
    rows = db.execute(
        text(
            "SELECT p.id, c.name FROM product p JOIN category c ON c.id = p.category_id "
            "JOIN variant v ON v.product_id = p.id JOIN stock_level s ON s.sku = v.sku "
            "WHERE p.status = 'active' AND v.is_active AND s.on_hand - s.reserved > 0 "
            "GROUP BY p.id, c.name ORDER BY p.id"
        )
    ).all()
    by_category: dict[str, list[int]] = {}
    for pid, name in rows:
        by_category.setdefault(name, []).append(int(pid))
    url = "/api/v1/recommendations"
    # The biggest category the anonymous (popular) answer does not already lead with.
    before = http.get(url, params={"session_id": uuid.uuid4().hex, "k": 6}).json()["items"]
    shown = Counter(item["category"] for item in before)
    category = max(by_category, key=lambda c: (len(by_category[c]) - 10 * shown[c], c))
    viewed = by_category[category][:3]
    assert len(by_category[category]) >= 5, by_category

    session_id = uuid.uuid4().hex
    now = datetime.now(UTC).isoformat()
    events = [
        {"type": "view", "session_id": session_id, "product_id": pid, "client_ts": now}
        for pid in viewed
    ]
    r = http.post("/api/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    stored = time.monotonic()
    body: dict[str, Any] = {}
    while time.monotonic() - stored < 1.0:
        body = http.get(url, params={"session_id": session_id, "k": 6}).json()
        share = sum(item["category"] == category for item in body["items"]) / 6
        if body["strategy"] == "session" and share >= 0.5:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - stored
    assert body["strategy"] == "session", body
    assert body["fallback"] is False
    top = Counter(item["category"] for item in body["items"]).most_common(1)[0][0]
    assert top == category, body["items"]
    assert elapsed < 1.0
