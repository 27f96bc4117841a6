"""Carts (guest by secret token, or owned by a user) and their items."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import String, UniqueConstraint
from sqlmodel import Field, SQLModel

from cartwise.platform.types import UTCDateTime, new_uuid, utcnow


class CartStatus(StrEnum):
    """The life of a cart."""

    active = "active"
    merged = "merged"
    converted = "converted"


class Cart(SQLModel, table=True):
    """A shopping cart; guests prove ownership with a token whose hash is stored."""

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    token_hash: str | None = Field(default=None, max_length=64)
    status: CartStatus = Field(default=CartStatus.active, sa_type=String(16))
    currency: str = Field(default="GBP", max_length=3)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CartItem(SQLModel, table=True):
    """A line of a cart."""

    __tablename__ = "cart_item"
    __table_args__ = (UniqueConstraint("cart_id", "variant_id", name="uq_cart_item_variant"),)

    id: int | None = Field(default=None, primary_key=True)
    cart_id: str = Field(foreign_key="cart.id", index=True, max_length=32, ondelete="CASCADE")
    variant_id: int = Field(foreign_key="variant.id")
    quantity: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CartItemAdd(SQLModel):
    """Add a SKU (or a variant id) to a cart."""

    sku: str | None = Field(default=None, min_length=1, max_length=64)
    variant_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    quantity: int = Field(default=1, ge=1, le=1000)


class CartItemUpdate(SQLModel):
    """Change the quantity of a line."""

    quantity: int = Field(ge=1, le=1000)


class CartItemPublic(SQLModel):
    """A cart line with its current price."""

    id: int
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal
    available: int


class CartPublic(SQLModel):
    """A cart with its lines and subtotal at current prices."""

    id: str
    status: CartStatus
    currency: str
    items: list[CartItemPublic]
    subtotal: Decimal
    item_count: int
    token: str | None = None
