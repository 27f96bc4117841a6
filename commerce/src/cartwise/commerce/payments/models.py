"""Payments, refunds and processed webhook events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import String
from sqlmodel import Field, SQLModel

from cartwise.commerce.money import Amount
from cartwise.platform.types import UTCDateTime, utcnow


class PaymentStatus(StrEnum):
    """The life of a payment."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


class Payment(SQLModel, table=True):
    """One attempt to collect an order's total through a provider."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    provider: str = Field(max_length=20)
    provider_ref: str | None = Field(default=None, max_length=120, index=True)
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    refunded_amount: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    currency: str = Field(max_length=3)
    status: PaymentStatus = Field(default=PaymentStatus.pending, sa_type=String(20))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Refund(SQLModel, table=True):
    """A full or partial refund of a payment."""

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(foreign_key="payment.id", index=True)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    reason: str = Field(default="", max_length=300)
    provider_ref: str | None = Field(default=None, max_length=120)
    idempotency_key: str | None = Field(default=None, max_length=120, unique=True)
    created_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ChargebackStatus(StrEnum):
    """Where a dispute stands: open until the card network decides it (won or lost)."""

    open = "open"
    won = "won"
    lost = "lost"


class Chargeback(SQLModel, table=True):
    """A dispute (chargeback) of a payment, as the provider reported it; one row per dispute.

    ``reason`` is the provider's dispute reason (Stripe: ``fraudulent``,
    ``product_not_received``, ...); ``fraudulent`` is the card holder saying they did not
    make the order, the fraud label the models learn from.
    """

    id: int | None = Field(default=None, primary_key=True)
    dispute_id: str = Field(max_length=120, unique=True)
    provider: str = Field(default="stripe", max_length=20)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    payment_id: int = Field(foreign_key="payment.id", index=True)
    reason: str = Field(default="general", max_length=60)
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    currency: str = Field(max_length=3)
    status: ChargebackStatus = Field(default=ChargebackStatus.open, sa_type=String(10))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookEvent(SQLModel, table=True):
    """A provider event already processed; its id makes replays no-ops."""

    __tablename__ = "webhook_event"

    id: str = Field(primary_key=True, max_length=120)
    provider: str = Field(max_length=20)
    type: str = Field(max_length=80)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RefundRequest(SQLModel):
    """Staff refund part or all of an order."""

    amount: Amount | None = Field(default=None, gt=0)
    reason: str = Field(default="", max_length=300)


class RefundPublic(SQLModel):
    """A refund as the API shows it."""

    id: int
    order_id: str
    amount: Decimal
    reason: str
    provider_ref: str | None
    created_at: datetime


class PaymentPublic(SQLModel):
    """A payment as the API shows it."""

    id: int
    order_id: str
    provider: str
    provider_ref: str | None
    amount: Decimal
    refunded_amount: Decimal
    currency: str
    status: PaymentStatus


class PaymentDetail(PaymentPublic):
    """A payment with the refunds made against it."""

    refunds: list[RefundPublic] = []


class ManualPaymentRequest(SQLModel):
    """Staff record that an order was paid outside any provider (cash, bank transfer)."""

    reference: str = Field(default="", max_length=120)
    reason: str = Field(default="", max_length=300)


class WebhookAck(SQLModel):
    """The answer to a provider's webhook: received, and what was done with it."""

    received: bool = True
    event_id: str
    outcome: str
