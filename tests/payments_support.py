"""Helpers for the payment tests: orders placed straight in the database, signed webhooks."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from cartwise.commerce.catalog.models import Product, Variant
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import StockLevel
from cartwise.commerce.orders.models import Order, OrderLine
from cartwise.platform.settings import DEV_WEBHOOK_SECRET
from cartwise.platform.types import utcnow
from tests.stripe_peer import StripePeer

WEBHOOK_URL = "/api/v1/payments/stripe/webhook"
T = TypeVar("T", bound=SQLModel)


def place_order(
    engine: Engine,
    *,
    quantity: int = 2,
    unit_price: Decimal = Decimal("12.50"),
    on_hand: int = 10,
    user_id: int | None = None,
    provider: str = "stripe",
) -> tuple[str, str]:
    """What checkout leaves behind: an order, its line and an active stock reservation.

    Returns (order id, SKU). The total is the line total (no shipping or tax).
    """
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    total = unit_price * quantity
    with Session(engine, expire_on_commit=False) as s:
        product = Product(name="Enamel mug", slug=f"mug-{uuid.uuid4().hex[:10]}")
        s.add(product)
        s.flush()
        assert product.id is not None
        s.add(Variant(product_id=product.id, sku=sku, price=unit_price, currency="GBP"))
        s.flush()
        s.add(StockLevel(sku=sku, on_hand=on_hand, reserved=0))
        order = Order(
            user_id=user_id,
            email="shopper@example.com",
            currency="GBP",
            subtotal=total,
            total=total,
            payment_provider=provider,
        )
        s.add(order)
        s.flush()
        s.add(
            OrderLine(
                order_id=order.id,
                sku=sku,
                product_name="Enamel mug",
                quantity=quantity,
                unit_price=unit_price,
                line_total=total,
            )
        )
        inventory.reserve(
            session=s,
            sku=sku,
            quantity=quantity,
            order_id=order.id,
            expires_at=utcnow() + timedelta(minutes=15),
        )
        s.commit()
        return order.id, sku


def post_event(
    client: TestClient,
    event: dict[str, Any],
    *,
    secret: str = DEV_WEBHOOK_SECRET,
    signature: str | None = None,
) -> Any:
    """POST an event as Stripe does: the exact bytes, signed by the stripe library."""
    payload = json.dumps(event)
    header = signature if signature is not None else StripePeer.sign(payload, secret)
    return client.post(
        WEBHOOK_URL,
        content=payload.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def count(session: Session, model: type[SQLModel], *where: Any) -> int:
    """How many rows of a table match (read fresh)."""
    session.expire_all()
    return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def fresh(session: Session, model: type[T], key: Any) -> T:
    """A row re-read from the database."""
    row = session.get(model, key, populate_existing=True)
    assert row is not None
    return row
