"""The served app: light to create, OpenAPI, the session push, and fraud scoring in checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.catalog import service as catalog
from cartwise.commerce.events.service import sinks_of
from cartwise.commerce.orders.models import Order, RiskDecision
from cartwise.commerce.orders.risk import RiskRequest
from cartwise.serving.risk import ServingRiskScorer
from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_commerce.factories import add_item, checkout_body, guest_cart
from tests.test_serving.routes_support import (
    FakeML,
    fake_ml_fixture,  # noqa: F401  (fixture)
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
)

FRAUD_MODEL = {"name": "cartwise-fraud", "version": 4, "alias": "champion"}
ML_PATHS = {
    "/api/v1/recommendations": "recommendations",
    "/api/v1/products/{product_id}/similar": "recommendations",
    "/api/v1/carts/{cart_id}/complements": "recommendations",
    "/api/v1/search": "search",
    "/api/v1/search/suggest": "search",
    "/api/v1/customers/{customer_id}/insights": "analytics",
    "/api/v1/analytics/segments": "analytics",
    "/api/v1/analytics/churn-risk": "analytics",
    "/api/v1/analytics/cohorts": "analytics",
    "/api/v1/inventory/forecast": "inventory",
    "/api/v1/inventory/reorder-suggestions": "inventory",
    "/api/v1/suppliers/performance": "suppliers",
    "/api/v1/ml/status": "ml",
}


def test_creating_the_app_imports_neither_torch_nor_ray(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from cartwise.serving.asgi import create_app\n"
        "app = create_app({'env': 'test', 'var_dir': sys.argv[1], 'redis_url': '',\n"
        "                  'database_url': 'sqlite:///' + sys.argv[1] + '/c.db'})\n"
        "assert app.state.ml is not None and app.state.risk_scorer is not None\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'ray', 'feast', 'mlflow')}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"torch": False, "ray": False, "feast": False, "mlflow": False}


def test_openapi_lists_the_ml_routes_with_tags(ml: TestClient) -> None:
    schema = ml.get("/openapi.json").json()
    for path, tag in ML_PATHS.items():
        operation = schema["paths"][path]["get"]
        assert operation["tags"] == [tag], path
        assert operation["summary"], path
        assert operation["description"], path
        assert "200" in operation["responses"]
        assert "422" in operation["responses"]
    assert "503" in schema["paths"]["/api/v1/analytics/segments"]["get"]["responses"]
    answer = schema["components"]["schemas"]["Recommendations"]["properties"]
    assert {"model", "fallback", "fallback_reason", "experiment", "items"} <= set(answer)


def test_session_push_stays_a_sink_of_the_events_route(settings: Any) -> None:
    from cartwise.serving.asgi import create_app

    app = create_app({**settings.model_dump(), "feast_push_enabled": True}, ml=FakeML())
    assert app.state.session_push in sinks_of(app)


def _request(amount: str = "20.00") -> RiskRequest:
    return RiskRequest(
        order_id="o1",
        customer_id=7,
        email="a@example.com",
        order_amount=Decimal(amount),
        currency="GBP",
        shipping_country="GB",
        orders_last_hour=0,
        request_epoch=1_700_000_000,
    )


FRAUD_ANSWER = {
    "risk": 0.83,
    "decision": "review",
    "anomaly": 0.2,
    "reasons": [{"feature": "order_amount", "contribution": 0.4}],
    "model": FRAUD_MODEL,
    "cached": False,
}


def test_scorer_maps_the_model_answer_outside_any_event_loop(make_settings: Any) -> None:
    fake = FakeML()
    fake.set("fraud", "score", FRAUD_ANSWER)
    assessment = ServingRiskScorer(fake, make_settings()).assess(_request())
    assert assessment.decision is RiskDecision.review
    assert assessment.risk == 0.83
    assert assessment.model_version == "4"
    assert assessment.reasons == [{"feature": "order_amount", "contribution": 0.4}]
    assert assessment.fallback is False
    (call,) = fake.calls
    assert call.timeout_s == 0.25
    assert call.kwargs == {
        "request": {
            "order_id": "o1",
            "customer_id": 7,
            "order_amount": 20.0,
            "shipping_country": "GB",
            "orders_last_hour": 0,
            "request_epoch": 1_700_000_000,
        }
    }


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "model unavailable"),
        ("hang", "deadline"),
        ({"risk": "high"}, "invalid request"),
        (RuntimeError("boom"), "error"),
    ],
)
def test_scorer_falls_back_to_the_rule(make_settings: Any, answer: Any, why: str) -> None:
    fake = FakeML()
    if answer is not None:
        fake.set("fraud", "score", answer)
    scorer = ServingRiskScorer(fake, make_settings())
    started = time.monotonic()
    small = scorer.assess(_request("20.00"))
    assert time.monotonic() - started < 1.0
    assert small.fallback is True
    assert small.decision is RiskDecision.allow
    assert small.reason is not None
    assert why in small.reason
    big = scorer.assess(_request("900.00"))
    assert big.decision is RiskDecision.review
    assert big.model_version is None


def test_checkout_is_scored_by_the_model_through_the_adapter(
    ml: TestClient, ml_app: FastAPI, fake_ml: FakeML, session: Session
) -> None:
    variant = product(session, "Kettle", price="25.00")
    fake_ml.set("fraud", "score", FRAUD_ANSWER)
    cart_id, token = guest_cart(ml)
    add_item(ml, cart_id, token, variant.sku, 2)
    r = ml.post("/api/v1/checkout", json=checkout_body(cart_id), headers=token)
    assert r.status_code == 201, r.text
    assert r.json()["under_review"] is True
    order_id = r.json()["order"]["id"]
    session.expire_all()
    order = session.get(Order, order_id)
    assert order is not None
    assert order.risk_score == 0.83
    assert order.risk_decision == RiskDecision.review
    assert order.risk_model_version == "4"
    assert order.risk_fallback is False
    payload = fake_ml.calls_to("fraud", "score")[-1].kwargs["request"]
    assert payload["order_id"] == order_id
    assert payload["order_amount"] == float(order.total)

    # Model down: the rule decides, the sale goes through, and it is counted.
    fake_ml.set("fraud", "score", ModelUnavailable("down"))
    cart_id, token = guest_cart(ml)
    add_item(ml, cart_id, token, variant.sku, 1)
    r = ml.post("/api/v1/checkout", json=checkout_body(cart_id), headers=token)
    assert r.status_code == 201, r.text
    assert r.json()["under_review"] is False
    session.expire_all()
    order = session.get(Order, r.json()["order"]["id"])
    assert order is not None
    assert order.risk_fallback is True
    assert order.risk_decision == RiskDecision.allow
    assert ml_app.state.ml_fallbacks.snapshot()["fraud"] == {"model_unavailable": 1}


def test_scorer_from_many_checkout_threads_at_once(make_settings: Any) -> None:
    fake = FakeML()
    fake.set("fraud", "score", FRAUD_ANSWER)
    scorer = ServingRiskScorer(fake, make_settings())
    results: list[Any] = []

    def work() -> None:
        results.append(scorer.assess(_request()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert [r.decision for r in results] == [RiskDecision.review] * 8


def test_catalog_snapshot_reloads_after_writes_and_refreshes_old_ones_in_background(
    ml_app: FastAPI, session: Session
) -> None:
    view = ml_app.state.ml_ingress.catalog
    now = [100.0]
    view._clock = lambda: now[0]
    lamp = product(session, "Lamp", stock=2)
    first = anyio.run(view.get)
    assert first.products[lamp.product_id].available == 2
    assert anyio.run(view.get) is first
    # Older than the TTL but no write seen: still served, reloaded off the request path.
    now[0] += 10
    assert anyio.run(view.get) is first
    deadline = time.monotonic() + 5
    while view._snapshot is first and time.monotonic() < deadline:
        time.sleep(0.01)
    refreshed = view._snapshot
    assert refreshed is not first
    assert refreshed.loaded_at == now[0]
    # A write moves the catalogue version: the next read waits for a snapshot that has it.
    catalog.archive_product(session=session, product_id=lamp.product_id)
    after = anyio.run(view.get)
    assert lamp.product_id not in after.products


def test_ml_routes_serve_with_redis_down(make_settings: Any, db_url: str) -> None:
    from cartwise.serving.asgi import create_app

    settings = make_settings(database_url=db_url, redis_url="redis://127.0.0.1:1/0")
    fake = FakeML()
    app = create_app({**settings.model_dump(), "feast_push_enabled": False}, ml=fake)
    with Session(app.state.engine) as session:
        lamp = product(session, "Desk Lamp")
    fake.set("recommend", "recommend", {"items": [{"product_id": lamp.product_id, "score": 1}]})
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/recommendations")
        assert r.status_code == 200, r.text
        assert [i["product_id"] for i in r.json()["items"]] == [lamp.product_id]
        r = client.get("/api/v1/search", params={"q": "lamp"})
        assert r.status_code == 200, r.text
        assert r.json()["fallback"] is True
        assert [i["product_id"] for i in r.json()["items"]] == [lamp.product_id]
        assert client.get("/api/v1/search/suggest", params={"q": "de"}).status_code == 200
