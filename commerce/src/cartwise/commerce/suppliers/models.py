"""Suppliers, their purchase orders (with lines) and the goods receipts against them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import model_validator
from sqlalchemy import JSON, CheckConstraint, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from cartwise.commerce.catalog.models import SKU
from cartwise.commerce.money import Amount, Currency
from cartwise.platform.types import UTCDateTime, new_uuid, utcnow


class SupplierBase(SQLModel):
    """Fields shared by supplier schemas."""

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(default="", max_length=254)
    lead_time_days: int = Field(default=7, ge=0, le=365)  # what the supplier promises
    is_active: bool = True


class Supplier(SupplierBase, table=True):
    """A company the shop buys stock from."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SupplierCreate(SupplierBase):
    """A new supplier."""


class SupplierUpdate(SQLModel):
    """A partial update of a supplier."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    lead_time_days: int | None = Field(default=None, ge=0, le=365)
    is_active: bool | None = None


class SupplierPublic(SupplierBase):
    """A supplier as the API shows it."""

    id: int
    created_at: datetime
    updated_at: datetime


class PurchaseOrderStatus(StrEnum):
    """Where a purchase order is in its life."""

    placed = "placed"
    partially_received = "partially_received"
    received = "received"
    cancelled = "cancelled"


# The one place the allowed transitions are written down. A partial receipt may be followed
# by more receipts (the status stays); cancelling a partly received order closes the rest.
TRANSITIONS: dict[PurchaseOrderStatus, frozenset[PurchaseOrderStatus]] = {
    PurchaseOrderStatus.placed: frozenset(
        {
            PurchaseOrderStatus.partially_received,
            PurchaseOrderStatus.received,
            PurchaseOrderStatus.cancelled,
        }
    ),
    PurchaseOrderStatus.partially_received: frozenset(
        {PurchaseOrderStatus.received, PurchaseOrderStatus.cancelled}
    ),
    PurchaseOrderStatus.received: frozenset(),
    PurchaseOrderStatus.cancelled: frozenset(),
}
# States in which goods may still arrive.
RECEIVABLE = frozenset({PurchaseOrderStatus.placed, PurchaseOrderStatus.partially_received})


def can_transition(current: PurchaseOrderStatus, target: PurchaseOrderStatus) -> bool:
    """Whether the state machine allows current → target."""
    return target in TRANSITIONS[current]


class PurchaseOrder(SQLModel, table=True):
    """An order of stock from a supplier."""

    __tablename__ = "purchase_order"
    __table_args__ = (
        Index("ix_purchase_order_status_placed", "status", "placed_at"),
        Index("ix_purchase_order_updated", "updated_at"),
    )

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    supplier_id: int = Field(foreign_key="supplier.id", index=True)
    status: PurchaseOrderStatus = Field(default=PurchaseOrderStatus.placed, sa_type=String(20))
    currency: str = Field(default="GBP", max_length=3)
    note: str = Field(default="", max_length=500)
    created_by: int | None = None
    idempotency_key: str | None = Field(default=None, max_length=120, unique=True)
    request_hash: str | None = Field(default=None, max_length=64)
    placed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expected_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PurchaseOrderLine(SQLModel, table=True):
    """One SKU of a purchase order: how many were ordered, how many have arrived, at what cost."""

    __tablename__ = "purchase_order_line"
    __table_args__ = (
        UniqueConstraint("purchase_order_id", "sku", name="uq_purchase_order_line_sku"),
        CheckConstraint("quantity_ordered > 0", name="ck_po_line_ordered_pos"),
        CheckConstraint("quantity_received >= 0", name="ck_po_line_received_nonneg"),
        CheckConstraint(
            "quantity_received <= quantity_ordered", name="ck_po_line_received_le_ordered"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    purchase_order_id: str = Field(
        foreign_key="purchase_order.id", index=True, max_length=32, ondelete="CASCADE"
    )
    variant_id: int | None = Field(default=None, foreign_key="variant.id")
    product_id: int | None = None
    sku: str = Field(max_length=64, index=True)
    quantity_ordered: int
    quantity_received: int = 0
    unit_cost: Decimal = Field(max_digits=12, decimal_places=2)


class PurchaseOrderReceipt(SQLModel, table=True):
    """One delivery booked against a purchase order; its key makes a replayed booking a no-op."""

    __tablename__ = "purchase_order_receipt"
    __table_args__ = (
        UniqueConstraint("purchase_order_id", "receipt_key", name="uq_po_receipt_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    purchase_order_id: str = Field(
        foreign_key="purchase_order.id", index=True, max_length=32, ondelete="CASCADE"
    )
    receipt_key: str = Field(max_length=120)
    request_hash: str = Field(max_length=64)
    quantities: dict[str, int] = Field(default_factory=dict, sa_type=JSON)  # SKU -> units
    actor_id: int | None = None
    note: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def _unique_skus(skus: list[str]) -> None:
    seen: set[str] = set()
    for sku in skus:
        if sku in seen:
            raise ValueError(f"SKU {sku} appears more than once")
        seen.add(sku)


class PurchaseOrderLineCreate(SQLModel):
    """A line of a new purchase order."""

    sku: str = Field(min_length=1, max_length=64, schema_extra={"pattern": SKU})
    quantity: int = Field(ge=1, le=1_000_000)
    unit_cost: Amount


class PurchaseOrderCreate(SQLModel):
    """A new purchase order; ``expected_at`` defaults to now plus the supplier's lead time."""

    supplier_id: int = Field(ge=1, le=2_147_483_647)
    currency: Currency = "GBP"
    expected_at: datetime | None = None
    note: str = Field(default="", max_length=500)
    lines: list[PurchaseOrderLineCreate] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _distinct_skus(self) -> PurchaseOrderCreate:
        _unique_skus([line.sku for line in self.lines])
        return self


class ReceiveLine(SQLModel):
    """Units of one SKU that arrived."""

    sku: str = Field(min_length=1, max_length=64, schema_extra={"pattern": SKU})
    quantity: int = Field(ge=1, le=1_000_000)


class ReceiveRequest(SQLModel):
    """A delivery against a purchase order.

    ``receipt_id`` (or the ``Idempotency-Key`` header) names the delivery: booking it again
    changes nothing. Without either, every call books a new delivery.
    """

    receipt_id: str | None = Field(default=None, min_length=1, max_length=120)
    note: str = Field(default="", max_length=200)
    lines: list[ReceiveLine] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _distinct_skus(self) -> ReceiveRequest:
        _unique_skus([line.sku for line in self.lines])
        return self


class CancelRequest(SQLModel):
    """Why a purchase order is cancelled."""

    reason: str = Field(default="", max_length=300)


class PurchaseOrderLinePublic(SQLModel):
    """A purchase order line as the API shows it."""

    id: int
    sku: str
    variant_id: int | None
    product_id: int | None
    quantity_ordered: int
    quantity_received: int
    quantity_outstanding: int
    unit_cost: Decimal


class ReceiptPublic(SQLModel):
    """A booked delivery."""

    receipt_id: str
    quantities: dict[str, int]
    actor_id: int | None
    note: str
    created_at: datetime


class PurchaseOrderPublic(SQLModel):
    """A purchase order as the API shows it."""

    id: str
    supplier_id: int
    status: PurchaseOrderStatus
    currency: str
    note: str
    created_by: int | None
    placed_at: datetime
    expected_at: datetime
    received_at: datetime | None
    updated_at: datetime
    total_cost: Decimal
    lines: list[PurchaseOrderLinePublic] = []
    receipts: list[ReceiptPublic] = []


class PurchaseOrderPage(SQLModel):
    """A page of purchase orders."""

    items: list[PurchaseOrderPublic]
    total: int
    page: int
    page_size: int
