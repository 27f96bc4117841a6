"""Stock levels per SKU, reservations and the stock-movement ledger."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, String
from sqlmodel import Field, SQLModel

from cartwise.platform.types import UTCDateTime, utcnow


class StockLevel(SQLModel, table=True):
    """On-hand and reserved units of a SKU; available = on_hand - reserved, never negative."""

    __tablename__ = "stock_level"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_nonneg"),
        CheckConstraint("reserved >= 0", name="ck_stock_reserved_nonneg"),
        CheckConstraint("reserved <= on_hand", name="ck_stock_reserved_le_on_hand"),
    )

    sku: str = Field(primary_key=True, max_length=64, foreign_key="variant.sku")
    on_hand: int = 0
    reserved: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReservationStatus(StrEnum):
    """The life of a reservation."""

    active = "active"
    committed = "committed"
    released = "released"


class StockReservation(SQLModel, table=True):
    """Units held for an order until it is paid, cancelled or the hold expires."""

    __tablename__ = "stock_reservation"
    __table_args__ = (Index("ix_reservation_status_expires", "status", "expires_at"),)

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=64, index=True)
    order_id: str = Field(max_length=32, index=True)
    quantity: int
    status: ReservationStatus = Field(default=ReservationStatus.active, sa_type=String(16))
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MovementReason(StrEnum):
    """Why stock changed."""

    set = "set"
    reserve = "reserve"
    release = "release"
    expire = "expire"
    sale = "sale"
    restock = "restock"
    refund = "refund"


class StockMovement(SQLModel, table=True):
    """One line of the append-only stock ledger."""

    __tablename__ = "stock_movement"
    __table_args__ = (Index("ix_movement_sku_created", "sku", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=64)
    reason: MovementReason = Field(sa_type=String(16))
    delta_on_hand: int = 0
    delta_reserved: int = 0
    on_hand_after: int
    reserved_after: int
    order_id: str | None = Field(default=None, max_length=32, index=True)
    # Deliveries name the supplier purchase order they came with (restock movements).
    purchase_order_id: str | None = Field(default=None, max_length=32, index=True)
    actor_id: int | None = None
    note: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StockSet(SQLModel):
    """Staff set the on-hand level of a SKU."""

    on_hand: int = Field(ge=0, le=10_000_000)
    note: str = Field(default="", max_length=200)


class StockPublic(SQLModel):
    """Stock of a SKU as the API shows it."""

    sku: str
    on_hand: int
    reserved: int
    available: int
    updated_at: datetime


class StockAvailability(SQLModel):
    """What the public may see of a SKU's stock: only what can be bought."""

    sku: str
    available: int
    in_stock: bool


class MovementPublic(SQLModel):
    """A ledger line."""

    id: int
    reason: MovementReason
    delta_on_hand: int
    delta_reserved: int
    on_hand_after: int
    reserved_after: int
    order_id: str | None
    purchase_order_id: str | None = None
    actor_id: int | None = None
    note: str = ""
    created_at: datetime
