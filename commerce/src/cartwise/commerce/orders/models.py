"""Orders, their lines, and the recorded state transitions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from cartwise.commerce.customers.models import AddressBase
from cartwise.platform.types import UTCDateTime, new_uuid, utcnow


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    pending_payment = "pending_payment"
    paid = "paid"
    fulfilled = "fulfilled"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"
    refunded = "refunded"
    review = "review"


# The one place the allowed transitions are written down.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.pending_payment: frozenset(
        {OrderStatus.paid, OrderStatus.cancelled, OrderStatus.review}
    ),
    OrderStatus.review: frozenset(
        {OrderStatus.pending_payment, OrderStatus.paid, OrderStatus.cancelled}
    ),
    OrderStatus.paid: frozenset(
        {OrderStatus.fulfilled, OrderStatus.refunded, OrderStatus.cancelled}
    ),
    OrderStatus.fulfilled: frozenset({OrderStatus.shipped, OrderStatus.refunded}),
    OrderStatus.shipped: frozenset({OrderStatus.delivered, OrderStatus.refunded}),
    OrderStatus.delivered: frozenset({OrderStatus.refunded}),
    OrderStatus.cancelled: frozenset(),
    OrderStatus.refunded: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether the state machine allows current → target."""
    return target in TRANSITIONS[current]


class RiskDecision(StrEnum):
    """What checkout does with an order, given its fraud risk."""

    allow = "allow"
    review = "review"
    block = "block"


class ReviewDecision(StrEnum):
    """A member of staff's verdict on an order held for fraud review."""

    approve = "approve"
    reject = "reject"


class Order(SQLModel, table=True):
    """A placed order with its totals frozen at checkout."""

    __tablename__ = "order"
    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_order_idempotency"),
        Index("ix_order_user_created", "user_id", "created_at"),
        Index("ix_order_status_created", "status", "created_at"),
        # Guest checkouts count their recent orders by email (fraud velocity).
        Index("ix_order_email_created", "email", "created_at"),
    )

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    user_id: int | None = Field(default=None, foreign_key="user.id")
    cart_id: str | None = Field(default=None, max_length=32)
    email: str = Field(max_length=254)
    status: OrderStatus = Field(default=OrderStatus.pending_payment, sa_type=String(20))
    currency: str = Field(max_length=3)
    subtotal: Decimal = Field(max_digits=12, decimal_places=2)
    discount: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    shipping: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    tax: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    total: Decimal = Field(max_digits=12, decimal_places=2)
    refunded_amount: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    voucher_code: str | None = Field(default=None, max_length=40)
    shipping_address: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    country: str | None = Field(default=None, max_length=2)
    payment_provider: str = Field(default="manual", max_length=20)
    idempotency_scope: str | None = Field(default=None, max_length=80)
    idempotency_key: str | None = Field(default=None, max_length=120)
    request_hash: str | None = Field(default=None, max_length=64)
    # The fraud check at checkout (all empty when no scorer is installed).
    risk_score: float | None = None
    risk_decision: RiskDecision | None = Field(default=None, sa_type=String(10))
    risk_model_version: str | None = Field(default=None, max_length=40)
    risk_reasons: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    risk_fallback: bool = False  # true when the fallback rule decided, not the model
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OrderLine(SQLModel, table=True):
    """A line of an order, priced at checkout."""

    __tablename__ = "order_line"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32, ondelete="CASCADE")
    variant_id: int | None = Field(default=None, foreign_key="variant.id")
    product_id: int | None = None
    sku: str = Field(max_length=64, index=True)
    product_name: str = Field(max_length=200)
    quantity: int
    unit_price: Decimal = Field(max_digits=12, decimal_places=2)
    line_total: Decimal = Field(max_digits=12, decimal_places=2)


class OrderTransition(SQLModel, table=True):
    """A recorded state change: who, when, from, to and why."""

    __tablename__ = "order_transition"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32, ondelete="CASCADE")
    from_status: OrderStatus | None = Field(default=None, sa_type=String(20))
    to_status: OrderStatus = Field(sa_type=String(20))
    actor_id: int | None = None
    actor: str = Field(default="system", max_length=40)
    reason: str = Field(default="", max_length=300)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CheckoutRequest(SQLModel):
    """Turn a cart into an order."""

    cart_id: str = Field(min_length=1, max_length=32)
    email: str | None = Field(default=None, max_length=254)
    shipping_address: AddressBase | None = None
    address_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    voucher_code: str | None = Field(default=None, min_length=3, max_length=40)


class OrderLinePublic(SQLModel):
    """An order line as the API shows it."""

    id: int
    sku: str
    product_id: int | None
    product_name: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal


class TransitionPublic(SQLModel):
    """A recorded transition."""

    from_status: OrderStatus | None
    to_status: OrderStatus
    actor: str
    actor_id: int | None
    reason: str
    created_at: datetime


class OrderRisk(SQLModel):
    """The fraud check of an order, as staff see it."""

    score: float | None
    decision: RiskDecision | None
    model_version: str | None
    reasons: list[dict[str, Any]] = []
    fallback: bool = False


class OrderPublic(SQLModel):
    """An order as the API shows it (``risk`` is filled for staff only, null for customers)."""

    id: str
    status: OrderStatus
    email: str
    currency: str
    subtotal: Decimal
    discount: Decimal
    shipping: Decimal
    tax: Decimal
    total: Decimal
    refunded_amount: Decimal
    voucher_code: str | None
    shipping_address: dict[str, Any]
    payment_provider: str
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLinePublic] = []
    transitions: list[TransitionPublic] = []
    risk: OrderRisk | None = None


class CheckoutResult(SQLModel):
    """The new order, plus what the client needs to pay it.

    An order held for fraud review has ``under_review`` true and no payment yet: it is
    collected once staff approve it.
    """

    order: OrderPublic
    payment_provider: str
    client_secret: str | None = None
    payment_intent_id: str | None = None
    under_review: bool = False


class TransitionRequest(SQLModel):
    """Staff move an order to another state."""

    to_status: OrderStatus
    reason: str = Field(default="", max_length=300)


class ReviewRequest(SQLModel):
    """Staff decide an order held for fraud review."""

    decision: ReviewDecision
    note: str = Field(default="", max_length=300)


class OrderPage(SQLModel):
    """A page of orders."""

    items: list[OrderPublic]
    total: int
    page: int
    page_size: int
