"""The ``release_expired_reservations`` flow gives expired reservations' stock back, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col

from cartwise.commerce.inventory.models import StockReservation
from cartwise.commerce.orders.models import Order
from cartwise.platform.types import utcnow
from tests.conftest import Account
from tests.test_commerce.factories import add_item, checkout_body, make_variant, stock_of, user_cart

pytestmark = [pytest.mark.integration]


def _order_for(client: TestClient, account: Account, sku: str, quantity: int) -> str:
    cart_id = user_cart(client, account.headers)
    add_item(client, cart_id, account.headers, sku, quantity)
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=account.headers)
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order"]["id"]
    return order_id


def test_flow_releases_expired_reservations_and_a_rerun_changes_nothing(
    prefect_harness: None,
    client: TestClient,
    session: Session,
    customer: Account,
    settings: Any,
) -> None:
    from cartwise.pipelines.flows.maintenance import release_expired_reservations

    variant = make_variant(session, stock=10)
    stale = _order_for(client, customer, variant.sku, 4)
    fresh = _order_for(client, customer, variant.sku, 1)
    assert stock_of(session, variant.sku) == (10, 5)
    session.execute(
        update(StockReservation)
        .where(col(StockReservation.order_id) == stale)
        .values(expires_at=utcnow() - timedelta(minutes=1))
    )
    session.commit()
    overrides = {"database_url": settings.database_url, "var_dir": str(settings.var_dir)}

    assert release_expired_reservations(overrides=overrides) == {"released": 1}

    assert stock_of(session, variant.sku) == (10, 1)
    session.expire_all()
    assert session.get(Order, stale).status == "cancelled"  # type: ignore[union-attr]
    assert session.get(Order, fresh).status == "pending_payment"  # type: ignore[union-attr]

    assert release_expired_reservations(overrides=overrides) == {"released": 0}
    assert stock_of(session, variant.sku) == (10, 1)
