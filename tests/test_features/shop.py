"""A small shop with hand-set timestamps, so every feature value is computable by hand."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlmodel import Session

from cartwise.commerce.catalog.models import Category, Product, Variant
from cartwise.commerce.customers.models import User
from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.inventory.models import StockLevel, StockMovement
from cartwise.commerce.orders.models import Order, OrderLine
from cartwise.commerce.payments.models import Payment


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    """A moment in March 2026 (UTC)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@dataclass
class Shop:
    """Ids of the hand-made shop."""

    customer: int
    other: int
    mug: int
    rake: int
    kitchen: int
    garden: int


def _order(
    s: Session,
    oid: str,
    user: int,
    when: datetime,
    lines: list[tuple[Product, Variant, int]],
    *,
    status: str = "delivered",
    country: str = "GB",
    refunded: bool = False,
) -> Order:
    subtotal = sum((v.price * q for _, v, q in lines), Decimal("0"))
    order = Order(
        id=oid,
        user_id=user,
        email="x@example.com",
        status=status,
        currency="GBP",
        subtotal=subtotal,
        total=subtotal,
        refunded_amount=subtotal if refunded else Decimal(0),
        country=country,
        created_at=when,
        updated_at=when,
    )
    s.add(order)
    s.flush()
    for product, variant, qty in lines:
        s.add(
            OrderLine(
                order_id=oid,
                variant_id=variant.id,
                product_id=product.id,
                sku=variant.sku,
                product_name=product.name,
                quantity=qty,
                unit_price=variant.price,
                line_total=variant.price * qty,
            )
        )
    return order


def build_shop(s: Session) -> Shop:
    """Two categories, two products, a customer with three orders, events and a stock ledger."""
    kitchen = Category(name="Kitchen", slug="kitchen")
    garden = Category(name="Garden", slug="garden")
    s.add_all([kitchen, garden])
    s.flush()
    mug = Product(name="Mug", slug="mug", category_id=kitchen.id, created_at=at(1, 0))
    rake = Product(name="Rake", slug="rake", category_id=garden.id, created_at=at(1, 0))
    s.add_all([mug, rake])
    s.flush()
    mug_v = Variant(product_id=mug.id, sku="MUG-1", price=Decimal("10.00"))
    rake_v = Variant(product_id=rake.id, sku="RAKE-1", price=Decimal("5.00"))
    s.add_all([mug_v, rake_v])
    ann = User(
        email="ann@example.com", hashed_password="!", created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    bob = User(email="bob@example.com", hashed_password="!", created_at=at(8, 0))
    s.add_all([ann, bob])
    s.flush()
    ids = (ann.id, bob.id, mug.id, rake.id, kitchen.id, garden.id)
    assert all(ids)
    _order(s, "o1", ann.id, at(1, 10), [(mug, mug_v, 3)])
    _order(s, "o2", ann.id, at(5, 15), [(rake, rake_v, 1)], status="refunded", refunded=True)
    _order(s, "o3", ann.id, at(10, 9), [(mug, mug_v, 2)], country="FR")
    _order(s, "o4", bob.id, at(9, 11), [(rake, rake_v, 4)])
    s.flush()
    s.add_all(
        [
            Payment(
                order_id="o1",
                provider="manual",
                amount=Decimal(30),
                currency="GBP",
                status="succeeded",
                created_at=at(1, 10),
                updated_at=at(1, 10),
            ),
            Payment(
                order_id="o3",
                provider="manual",
                amount=Decimal(20),
                currency="GBP",
                status="failed",
                created_at=at(10, 9),
                updated_at=at(10, 9),
            ),
            Payment(
                order_id="o3",
                provider="manual",
                amount=Decimal(20),
                currency="GBP",
                status="succeeded",
                created_at=at(10, 9, 1),
                updated_at=at(10, 9, 1),
            ),
        ]
    )
    s.add(StockLevel(sku="MUG-1", on_hand=45))
    s.add(StockLevel(sku="RAKE-1", on_hand=20))
    for i, (sku, reason, delta, after, when) in enumerate(
        [
            ("MUG-1", "restock", 50, 50, at(1, 0)),
            ("MUG-1", "sale", -3, 47, at(1, 10)),
            ("MUG-1", "sale", -2, 45, at(10, 9)),
            ("RAKE-1", "restock", 25, 25, at(1, 0)),
            ("RAKE-1", "sale", -4, 21, at(9, 11)),
        ]
    ):
        s.add(
            StockMovement(
                sku=sku,
                reason=reason,
                delta_on_hand=delta,
                on_hand_after=after,
                reserved_after=0,
                created_at=when,
                note=str(i),
            )
        )
    session_events = [
        ("view", mug.id, None, None, at(10, 8, 0)),
        ("view", rake.id, None, None, at(10, 8, 1)),
        ("search", None, "mug", None, at(10, 8, 2)),
        ("click", mug.id, "mug", 1, at(10, 8, 3)),
        ("add_to_cart", mug.id, None, None, at(10, 8, 4)),
    ]
    for kind, pid, query, pos, when in session_events:
        s.add(
            ShopperEvent(
                event_id=str(uuid.uuid4()),
                type=kind,
                session_id="s-ann",
                user_id=ann.id,
                product_id=pid,
                query=query,
                position=pos,
                client_ts=when,
                received_at=when,
            )
        )
    s.commit()
    return Shop(*(int(i) for i in ids if i is not None))
