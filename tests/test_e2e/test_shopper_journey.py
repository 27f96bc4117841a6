"""A full shopper journey over real HTTP through Ray Serve, on PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.test_e2e.conftest import ServeApp

pytestmark = pytest.mark.e2e

ADDRESS = {
    "full_name": "Ann Shopper",
    "line1": "1 High Street",
    "city": "York",
    "postcode": "YO1 1AA",
    "country": "GB",
}


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"]
    return {"Authorization": f"Bearer {body['access_token']}"}


def _register(http: httpx.Client, label: str) -> tuple[str, dict[str, str]]:
    email = f"{label}-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct-horse-battery-1"
    r = http.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "full_name": label.title()},
    )
    assert r.status_code == 201, r.text
    return email, _login(http, email, password)


def check_out_one(
    http: httpx.Client, shopper: dict[str, str], sku: str, address: dict[str, str] = ADDRESS
) -> httpx.Response:
    """A new cart holding one unit of ``sku``, checked out with a fresh idempotency key."""
    cart = http.post("/api/v1/carts", headers=shopper)
    assert cart.status_code in (200, 201), cart.text
    cart_id = cart.json()["id"]
    r = http.post(
        f"/api/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1}, headers=shopper
    )
    assert r.status_code == 200, r.text
    return http.post(
        "/api/v1/checkout",
        json={"cart_id": cart_id, "shipping_address": address},
        headers={**shopper, "Idempotency-Key": uuid.uuid4().hex},
    )


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_shopper_journey(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        # Register and log in.
        email, shopper = _register(http, "shopper")
        me = http.get("/api/v1/users/me", headers=shopper)
        assert me.status_code == 200
        assert me.json()["email"] == email

        # Browse the real catalog: categories, a listing, a search, a product.
        categories = http.get("/api/v1/categories").json()
        assert any(c["parent_id"] is None for c in categories)
        listing = http.get("/api/v1/products", params={"in_stock": True, "page_size": 10})
        assert listing.status_code == 200, listing.text
        page = listing.json()
        assert page["total"] > 50
        assert len(page["items"]) == 10
        found = http.get("/api/v1/products", params={"q": "heart"}).json()
        assert found["items"], "the sample has heart-shaped products"
        product_id = found["items"][0]["id"]
        detail = http.get(f"/api/v1/products/{product_id}")
        assert detail.status_code == 200
        assert detail.headers.get("etag")
        assert (
            http.get(
                f"/api/v1/products/{product_id}", headers={"If-None-Match": detail.headers["etag"]}
            ).status_code
            == 304
        )
        variant = detail.json()["variants"][0]
        sku, price = variant["sku"], Decimal(variant["price"])
        assert variant["available"] == 50

        # A cart with two units.
        r = http.post("/api/v1/carts", headers=shopper)
        assert r.status_code in (200, 201), r.text
        cart_id = r.json()["id"]
        r = http.post(
            f"/api/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 2}, headers=shopper
        )
        assert r.status_code == 200, r.text
        cart = r.json()
        assert cart["item_count"] == 2
        assert Decimal(cart["subtotal"]) == price * 2

        # Checkout: one order, pending payment (manual provider), stock reserved.
        body = {"cart_id": cart_id, "shipping_address": ADDRESS}
        key = {"Idempotency-Key": uuid.uuid4().hex}
        r = http.post("/api/v1/checkout", json=body, headers={**shopper, **key})
        assert r.status_code == 201, r.text
        result = r.json()
        assert result["payment_provider"] == "manual"
        order = result["order"]
        order_id = order["id"]
        assert order["status"] == "pending_payment"
        assert Decimal(order["subtotal"]) == price * 2
        assert [(ln["sku"], ln["quantity"]) for ln in order["lines"]] == [(sku, 2)]
        replay = http.post("/api/v1/checkout", json=body, headers={**shopper, **key})
        assert replay.status_code == 200
        assert replay.json()["order"]["id"] == order_id

        # Staff mark it paid (the manual provider: no money moves through the API).
        admin = _login(http, serve_app.admin_email, serve_app.admin_password)
        stock = http.get(f"/api/v1/inventory/{sku}", headers=admin).json()
        assert (stock["on_hand"], stock["reserved"]) == (50, 2)
        _problem(
            http.post(
                f"/api/v1/orders/{order_id}/transitions",
                json={"to_status": "paid"},
                headers=shopper,
            ),
            403,
        )
        r = http.post(
            f"/api/v1/orders/{order_id}/transitions",
            json={"to_status": "paid", "reason": "bank transfer received"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "paid"

        # The shopper sees the order paid, with its history; the sale left the stock.
        mine = http.get(f"/api/v1/orders/{order_id}", headers=shopper)
        assert mine.status_code == 200, mine.text
        seen = mine.json()
        assert seen["status"] == "paid"
        assert [t["to_status"] for t in seen["transitions"]] == ["pending_payment", "paid"]
        orders = http.get("/api/v1/orders", headers=shopper).json()
        assert [o["id"] for o in orders["items"]] == [order_id]
        stock = http.get(f"/api/v1/inventory/{sku}", headers=admin).json()
        assert (stock["on_hand"], stock["reserved"]) == (48, 0)

        # Another shopper cannot see the order or the cart: 404, not 403.
        _, other = _register(http, "other")
        _problem(http.get(f"/api/v1/orders/{order_id}", headers=other), 404)
        _problem(http.get(f"/api/v1/carts/{cart_id}", headers=other), 404)
        assert http.get("/api/v1/orders", headers=other).json()["items"] == []
        _problem(http.get(f"/api/v1/orders/{order_id}"), 404)


def test_serve_runs_the_app_in_its_replica(serve_app: ServeApp) -> None:
    from ray import serve

    from cartwise.platform import db
    from cartwise.serving.app import APP_NAME, DEPLOYMENT_NAME

    status = serve.status()
    app = status.applications[APP_NAME]
    assert str(app.status) in ("RUNNING", "ApplicationStatus.RUNNING")
    deployment = app.deployments[DEPLOYMENT_NAME]
    assert sum(deployment.replica_states.values()) == 1
    # The app (and its connection pool) lives in the replica, never on the driver.
    assert all(serve_app.database_url.rsplit("/", 1)[1] not in url for url in db._engines)

    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        ready = http.get("/readyz")
        assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
        r = http.get("/healthz", headers={"X-Request-Id": "e2e-trace-1"})
        assert r.headers["x-request-id"] == "e2e-trace-1"
        assert r.headers["x-content-type-options"] == "nosniff"
        schema = http.get("/openapi.json").json()
        assert "/api/v1/checkout" in schema["paths"]
        assert http.get("/docs").status_code == 200
        _problem(http.get("/api/v1/products/999999"), 404)
        _problem(
            http.post(
                "/api/v1/carts/nope/items",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        )
