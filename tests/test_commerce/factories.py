"""Test data straight in the database (no catalog routes needed) and shopper helpers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select, update

from cartwise.commerce.catalog.models import Product, ProductStatus, Variant
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import StockLevel, StockReservation
from cartwise.commerce.orders.models import Order
from cartwise.platform.types import utcnow

ADDRESS: dict[str, str] = {
    "full_name": "Ann Shopper",
    "line1": "1 High Street",
    "city": "York",
    "postcode": "YO1 1AA",
    "country": "GB",
}


def make_variant(
    session: Session,
    *,
    price: str = "12.50",
    stock: int = 10,
    sku: str | None = None,
    status: ProductStatus = ProductStatus.active,
    is_active: bool = True,
    currency: str = "GBP",
    name: str = "Mug",
) -> Variant:
    """A product with one variant and its stock row, committed."""
    suffix = uuid.uuid4().hex[:8]
    product = Product(name=name, slug=f"{name.lower()}-{suffix}", status=status)
    session.add(product)
    session.flush()
    assert product.id is not None
    variant = Variant(
        product_id=product.id,
        sku=sku or f"SKU-{suffix.upper()}",
        price=Decimal(price),
        currency=currency,
        is_active=is_active,
    )
    session.add(variant)
    session.flush()
    inventory.ensure_stock_row(session=session, sku=variant.sku, on_hand=stock)
    session.commit()
    session.refresh(variant)
    return variant


def stock_of(session: Session, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU, read fresh."""
    session.expire_all()
    level = session.get(StockLevel, sku)
    assert level is not None
    return level.on_hand, level.reserved


def order_count(session: Session) -> int:
    """How many orders exist."""
    session.expire_all()
    return int(session.exec(select(func.count()).select_from(Order)).one())


def orders(session: Session) -> list[Order]:
    """Every order, oldest first."""
    session.expire_all()
    return list(session.exec(select(Order).order_by(col(Order.created_at))))


def guest_cart(client: TestClient) -> tuple[str, dict[str, str]]:
    """A new guest cart: its id and the headers that open it."""
    r = client.post("/api/v1/carts")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"]
    return body["id"], {"X-Cart-Token": body["token"]}


def user_cart(client: TestClient, headers: dict[str, str]) -> str:
    """The signed-in user's active cart id."""
    r = client.post("/api/v1/carts", headers=headers)
    assert r.status_code in (200, 201), r.text
    assert r.json()["token"] is None
    cart_id: str = r.json()["id"]
    return cart_id


def add_item(
    client: TestClient, cart_id: str, headers: dict[str, str], sku: str, quantity: int = 1
) -> dict[str, Any]:
    """Add a SKU to a cart and return the cart."""
    r = client.post(
        f"/api/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": quantity}, headers=headers
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def checkout_body(cart_id: str, **extra: Any) -> dict[str, Any]:
    """A checkout request body with an email and a shipping address."""
    body: dict[str, Any] = {
        "cart_id": cart_id,
        "email": "guest@example.com",
        "shipping_address": ADDRESS,
    }
    body.update(extra)
    return body


def place_order(client: TestClient, headers: dict[str, str], sku: str, quantity: int = 1) -> str:
    """A signed-in shopper's new cart with one line, checked out; returns the order id."""
    cart_id = user_cart(client, headers)
    add_item(client, cart_id, headers, sku, quantity)
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order"]["id"]
    return order_id


def expire_reservations(session: Session, order_id: str) -> None:
    """Make the order's stock reservations a minute past their expiry (committed)."""
    session.execute(
        update(StockReservation)
        .where(col(StockReservation.order_id) == order_id)
        .values(expires_at=utcnow() - timedelta(minutes=1))
    )
    session.commit()
