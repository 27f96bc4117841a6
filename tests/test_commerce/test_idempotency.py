"""Idempotency-Key on checkout: retries and concurrent duplicates give exactly one order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    checkout_body,
    guest_cart,
    make_variant,
    order_count,
    orders,
    stock_of,
    user_cart,
)


def test_same_key_twice_gives_one_order(client: TestClient, session: Session) -> None:
    variant = make_variant(session, stock=10)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 2)
    keyed = headers | {"Idempotency-Key": "retry-me-1"}
    first = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    # The same order, as it stands now: only updated_at moves (starting payment touches it).
    first_body, again_body = first.json(), again.json()
    first_body["order"].pop("updated_at")
    again_body["order"].pop("updated_at")
    assert again_body == first_body
    assert order_count(session) == 1
    assert stock_of(session, variant.sku) == (10, 2)
    stored = orders(session)[0]
    assert (stored.idempotency_scope, stored.idempotency_key) == (f"c:{cart_id}", "retry-me-1")
    assert stored.request_hash is not None


def test_key_reused_with_another_body_is_422(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku)
    keyed = customer.headers | {"Idempotency-Key": "k-1"}
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)
    assert r.status_code == 201
    other = checkout_body(cart_id, email="someone-else@example.com")
    body = assert_problem(client.post("/api/v1/checkout", json=other, headers=keyed), 422)
    assert body["type"].endswith("idempotency-key-reused")
    # The same key on another of the user's carts is a reuse too (scope is the user).
    second_cart = user_cart(client, customer.headers)
    add_item(client, second_cart, customer.headers, variant.sku)
    assert_problem(
        client.post("/api/v1/checkout", json=checkout_body(second_cart), headers=keyed), 422
    )
    assert order_count(session) == 1
    assert stock_of(session, variant.sku) == (10, 1)
    # A fresh key places the second order.
    fresh = customer.headers | {"Idempotency-Key": "k-2"}
    r = client.post("/api/v1/checkout", json=checkout_body(second_cart), headers=fresh)
    assert r.status_code == 201
    assert order_count(session) == 2


def test_bad_keys_are_422(client: TestClient, session: Session) -> None:
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku)
    for key in ("", "k" * 121):
        r = client.post(
            "/api/v1/checkout",
            json=checkout_body(cart_id),
            headers=headers | {"Idempotency-Key": key},
        )
        assert_problem(r, 422)
    assert order_count(session) == 0
    r = client.post(
        "/api/v1/checkout",
        json=checkout_body(cart_id),
        headers=headers | {"Idempotency-Key": "k" * 120},
    )
    assert r.status_code == 201


def test_concurrent_requests_with_one_key_make_one_order(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku, 3)
    keyed = customer.headers | {"Idempotency-Key": "double-click"}
    start = threading.Barrier(5, timeout=30)

    def attempt(_: int) -> Any:
        start.wait()
        return client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(attempt, range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["order"]["id"] for r in responses}) == 1
    assert order_count(session) == 1
    assert stock_of(session, variant.sku) == (10, 3)


def test_concurrent_requests_without_a_key_still_use_the_cart_once(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku, 1)
    start = threading.Barrier(5, timeout=30)

    def attempt(_: int) -> Any:
        start.wait()
        return client.post(
            "/api/v1/checkout", json=checkout_body(cart_id), headers=customer.headers
        )

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(attempt, range(5)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    assert order_count(session) == 1
    assert stock_of(session, variant.sku) == (10, 1)
