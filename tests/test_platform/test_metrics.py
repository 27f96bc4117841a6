"""``/metrics``: HTTP metrics per route template, the bearer token, and business metrics in SQL.

Business numbers come from orders placed through the real checkout, on SQLite and PostgreSQL.
Process counters (HTTP, checkout failures) are shared by every app in the test process, so
those tests compare before/after values instead of absolute ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlmodel import Session

from cartwise.commerce.carts.models import Cart
from cartwise.platform.metrics import CachedCollector, MetricsHub
from cartwise.platform.types import utcnow
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import add_item, checkout_body, guest_cart, make_variant

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    """GET /metrics and parse it: (sample name, labels) → value."""
    r = client.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def settings(make_settings: Callable[..., Any], db_url: str) -> Any:
    """Settings for the current backend with the scrape-time cache off (every scrape reads)."""
    return make_settings(database_url=db_url, metrics_cache_seconds=0)


@pytest.fixture
def sqlite_client(make_settings: Callable[..., Any], tmp_path: Path) -> Any:
    """A commerce app on SQLite only (for what does not depend on the backend)."""
    from cartwise.commerce import create_app
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()

    def build(**overrides: Any) -> TestClient:
        app = create_app(make_settings(database_url=url, **overrides))
        return TestClient(app, raise_server_exceptions=False)

    return build


def test_requests_and_latency_are_recorded_per_route_template_and_status(
    sqlite_client: Callable[..., TestClient],
) -> None:
    client = sqlite_client()
    template = "/api/v1/products/{product_id}"
    before = scrape(client)
    assert client.get("/api/v1/products/987654").status_code == 404
    assert client.get("/api/v1/products/987655").status_code == 404
    assert client.get("/api/v1/no-such-route/1").status_code == 404
    assert client.post("/metrics").status_code == 405
    assert client.request("BREW", "/api/v1/coffee-pot").status_code in (404, 405)
    after = scrape(client)

    key = {"method": "GET", "route": template, "status": "404"}
    assert value(after, "cartwise_http_requests_total", **key) == (
        value(before, "cartwise_http_requests_total", **key) + 2
    )
    assert value(after, "cartwise_http_request_duration_seconds_count", **key) == (
        value(before, "cartwise_http_request_duration_seconds_count", **key) + 2
    )
    assert value(after, "cartwise_http_request_duration_seconds_bucket", **key, le="+Inf") == value(
        after, "cartwise_http_request_duration_seconds_count", **key
    )
    # The 405 keeps the template of the route that matched the path but not the method.
    gone = {"method": "POST", "route": "/metrics", "status": "405"}
    assert value(after, "cartwise_http_requests_total", **gone) >= 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "cartwise_http_requests_total", **unmatched) == (
        value(before, "cartwise_http_requests_total", **unmatched) + 1
    )
    # Raw paths and made-up methods never become labels (cardinality stays bounded).
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert not any(r and "987654" in r for r in routes)
    methods = {dict(labels).get("method") for (_, labels) in after}
    assert "BREW" not in methods
    assert "other" in methods
    # The scrape is the only request in flight: every earlier one was counted down again.
    assert value(after, "cartwise_http_requests_in_flight") == 1
    # The previous scrape itself was recorded under its route.
    scraped = {"method": "GET", "route": "/metrics", "status": "200"}
    assert value(after, "cartwise_http_requests_total", **scraped) >= 1


def test_metrics_need_the_bearer_token_when_one_is_set(
    sqlite_client: Callable[..., TestClient],
) -> None:
    token = "scrape-token-0123456789abcdef"
    client = sqlite_client(metrics_token=token)
    assert_problem(client.get("/metrics"), 401)
    assert_problem(client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
    assert_problem(client.get("/metrics", headers={"Authorization": f"Basic {token}"}), 401)
    samples = scrape(client, {"Authorization": f"Bearer {token}"})
    assert ("cartwise_http_requests_in_flight", frozenset()) in samples
    # The route is documented like every other (checked on the route: building the whole
    # OpenAPI document costs seconds).
    from cartwise.commerce.metrics import router

    route = next(r for r in router.routes if getattr(r, "path", None) == "/metrics")
    assert getattr(route, "include_in_schema", False)
    assert getattr(route, "endpoint", None).__doc__


def test_production_refuses_to_serve_metrics_without_a_token(
    make_settings: Callable[..., Any], pg_database: str
) -> None:
    from cartwise.commerce import create_app

    production = {
        "env": "production",
        "jwt_secret": "j" * 40,
        "database_url": pg_database,
    }
    with pytest.raises(ValueError, match="CARTWISE_METRICS_TOKEN"):
        create_app(make_settings(**production))
    with pytest.raises(ValueError, match="CARTWISE_METRICS_TOKEN"):
        create_app(make_settings(**production, metrics_token="short"))
    app = create_app(make_settings(**production, metrics_token="m" * 32))
    assert app.state.metrics is not None


def test_business_metrics_follow_orders_placed_through_checkout(
    client: TestClient, session: Session, staff: Account
) -> None:
    empty = scrape(client)
    assert value(empty, "cartwise_orders_placed_total", currency="GBP") == 0
    assert value(empty, "cartwise_metrics_source_up", source="business") == 1

    variant = make_variant(session, price="12.50", stock=20)
    totals: list[Decimal] = []
    order_ids: list[str] = []
    for quantity in (2, 1):
        cart_id, headers = guest_cart(client)
        add_item(client, cart_id, headers, variant.sku, quantity)
        r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
        assert r.status_code == 201, r.text
        totals.append(Decimal(r.json()["order"]["total"]))
        order_ids.append(r.json()["order"]["id"])
    # Staff record the first order's payment (the manual provider moves no money).
    r = client.post(
        f"/api/v1/orders/{order_ids[0]}/payments/manual",
        json={"reference": "bank transfer"},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    # One cart left with a line for two days (abandoned), one being filled now (active).
    stale_id, stale_headers = guest_cart(client)
    add_item(client, stale_id, stale_headers, variant.sku)
    live_id, live_headers = guest_cart(client)
    add_item(client, live_id, live_headers, variant.sku)
    # An empty cart is neither abandoned nor active.
    guest_cart(client)
    session.execute(
        update(Cart).where(Cart.id == stale_id).values(updated_at=utcnow() - timedelta(hours=48))  # type: ignore[arg-type]
    )
    session.commit()

    after = scrape(client)
    assert value(after, "cartwise_orders_placed_total", currency="GBP") == 2
    assert value(after, "cartwise_orders", status="paid") == 1
    assert value(after, "cartwise_orders", status="pending_payment") == 1
    assert value(after, "cartwise_revenue_total", currency="GBP") == pytest.approx(float(totals[0]))
    assert value(after, "cartwise_carts", state="converted") == 2
    assert value(after, "cartwise_carts", state="abandoned") == 1
    assert value(after, "cartwise_carts", state="active") == 1
    assert value(after, "cartwise_cart_abandonment_ratio") == pytest.approx(1 / 3)

    refund = client.post(f"/api/v1/orders/{order_ids[0]}/refunds", headers=staff.headers)
    assert refund.status_code == 201, refund.text
    refunded = scrape(client)
    assert value(refunded, "cartwise_refunds_total", currency="GBP") == pytest.approx(
        float(Decimal(refund.json()["amount"]))
    )
    # Revenue is what was captured; the refund is its own series.
    assert value(refunded, "cartwise_revenue_total", currency="GBP") == pytest.approx(
        float(totals[0])
    )
    assert value(refunded, "cartwise_orders", status="refunded") == 1


# A process counter: the backend does not matter, one is enough.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_checkout_failures_are_counted_by_problem_type(client: TestClient) -> None:
    before = scrape(client)
    cart_id, headers = guest_cart(client)
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert assert_problem(r, 422)["type"].endswith("/empty-cart")
    after = scrape(client)
    assert value(after, "cartwise_checkout_failures_total", reason="empty-cart") == (
        value(before, "cartwise_checkout_failures_total", reason="empty-cart") + 1
    )
    assert value(after, "cartwise_orders_placed_total", currency="GBP") == 0


def test_cached_source_is_read_once_per_ttl_and_keeps_its_last_answer_on_failure() -> None:
    calls: list[int] = []
    fail = [False]

    def fetch() -> list[Any]:
        calls.append(1)
        if fail[0]:
            raise RuntimeError("database down")
        family = GaugeMetricFamily("cartwise_test_rows", "Rows.")
        family.add_metric([], float(len(calls)))
        return [family]

    hub = MetricsHub()
    hub.add(CachedCollector("slow", fetch, ttl_s=3600))
    first = hub.render().decode()
    second = hub.render().decode()
    assert len(calls) == 1
    assert "cartwise_test_rows 1.0" in first
    assert first == second

    hub_fresh = MetricsHub()
    cached = CachedCollector("fresh", fetch, ttl_s=0)
    hub_fresh.add(cached)
    assert "cartwise_test_rows 2.0" in hub_fresh.render().decode()
    fail[0] = True
    text = hub_fresh.render().decode()
    # The last good answer stays, and the source says it is down.
    assert "cartwise_test_rows 2.0" in text
    assert 'cartwise_metrics_source_up{source="fresh"} 0.0' in text
