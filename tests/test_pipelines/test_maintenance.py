"""The ``release_expired_reservations`` flow gives expired reservations' stock back, once."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.orders.models import Order
from tests.conftest import Account
from tests.test_commerce.factories import expire_reservations, make_variant, place_order, stock_of

pytestmark = [pytest.mark.integration]


def _order_for(client: TestClient, account: Account, sku: str, quantity: int = 1) -> str:
    return place_order(client, account.headers, sku, quantity)


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
    expire_reservations(session, stale)
    overrides = {"database_url": settings.database_url, "var_dir": str(settings.var_dir)}

    assert release_expired_reservations(overrides=overrides) == {"released": 1}

    assert stock_of(session, variant.sku) == (10, 1)
    session.expire_all()
    assert session.get(Order, stale).status == "cancelled"  # type: ignore[union-attr]
    assert session.get(Order, fresh).status == "pending_payment"  # type: ignore[union-attr]

    assert release_expired_reservations(overrides=overrides) == {"released": 0}
    assert stock_of(session, variant.sku) == (10, 1)
