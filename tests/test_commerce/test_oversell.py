"""Oversell: 40 concurrent checkouts for 10 units sell exactly 10, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.inventory.models import MovementReason, StockMovement
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    checkout_body,
    make_variant,
    order_count,
    orders,
    stock_of,
    user_cart,
)

SHOPPERS = 40
STOCK = 10


def _ledger(session: Session, sku: str, reason: MovementReason) -> list[StockMovement]:
    session.expire_all()
    stmt = select(StockMovement).where(StockMovement.sku == sku, StockMovement.reason == reason)
    return list(session.exec(stmt))


def test_forty_concurrent_checkouts_sell_exactly_ten(
    client: TestClient, session: Session, make_user, staff: Account
) -> None:
    variant = make_variant(session, price="9.99", stock=STOCK, sku="HOT-ITEM")
    shoppers = [make_user() for _ in range(SHOPPERS)]
    carts = []
    for shopper in shoppers:
        cart_id = user_cart(client, shopper.headers)
        add_item(client, cart_id, shopper.headers, variant.sku, 1)
        carts.append((shopper, cart_id))
    start = threading.Barrier(SHOPPERS, timeout=30)

    def attempt(args: tuple[Account, str]) -> Any:
        shopper, cart_id = args
        start.wait()  # release all 40 requests at once
        return client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=shopper.headers)

    with ThreadPoolExecutor(max_workers=SHOPPERS) as pool:
        responses = list(pool.map(attempt, carts))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == STOCK, statuses
    assert statuses.count(409) == SHOPPERS - STOCK, statuses
    for r in responses:
        if r.status_code == 409:
            body = assert_problem(r, 409)
            assert body["type"].endswith("out-of-stock")
            assert body["sku"] == variant.sku
    assert order_count(session) == STOCK
    assert stock_of(session, variant.sku) == (STOCK, STOCK)
    assert len(_ledger(session, variant.sku, MovementReason.reserve)) == STOCK

    # Staff mark them paid (the manual provider): the reservations become sales.
    for order in orders(session):
        r = client.post(
            f"/api/v1/orders/{order.id}/transitions",
            json={"to_status": "paid"},
            headers=staff.headers,
        )
        assert r.status_code == 200, r.text
    assert stock_of(session, variant.sku) == (0, 0)
    assert len(_ledger(session, variant.sku, MovementReason.sale)) == STOCK
