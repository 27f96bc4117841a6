"""Categories (a tree), products, variants and images, with their API schemas."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlmodel import Field, SQLModel

from cartwise.commerce.money import Amount, Currency
from cartwise.platform.types import UTCDateTime, utcnow

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
SKU = r"^[A-Za-z0-9._-]+$"
# SQLModel's Field(regex=...) is silently ignored under pydantic 2; a pattern passed through
# schema_extra reaches pydantic (validation and OpenAPI) and leaves the table untouched.


class ProductStatus(StrEnum):
    """Whether a product is for sale."""

    active = "active"
    draft = "draft"
    archived = "archived"


class CategoryBase(SQLModel):
    """Fields shared by category schemas."""

    name: str = Field(min_length=1, max_length=120)
    slug: str = Field(
        min_length=1,
        max_length=140,
        unique=True,
        index=True,
        schema_extra={"pattern": SLUG},
    )
    description: str = Field(default="", max_length=2000)
    parent_id: int | None = Field(default=None, foreign_key="category.id", index=True)


class Category(CategoryBase, table=True):
    """A node of the category tree."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CategoryCreate(CategoryBase):
    """A new category."""


class CategoryUpdate(SQLModel):
    """A partial update of a category; moving it under a new parent is checked for cycles."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    parent_id: int | None = None


class CategoryPublic(CategoryBase):
    """A category as the API shows it, with its ancestors' path."""

    id: int
    path: list[str] = []


class ProductBase(SQLModel):
    """Fields shared by product schemas."""

    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(
        min_length=1,
        max_length=220,
        unique=True,
        index=True,
        schema_extra={"pattern": SLUG},
    )
    description: str = Field(default="", max_length=10_000)
    category_id: int | None = Field(default=None, foreign_key="category.id", index=True)


class Product(ProductBase, table=True):
    """A sellable product; variants carry SKU and price."""

    __table_args__ = (Index("ix_product_status_created", "status", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    status: ProductStatus = Field(default=ProductStatus.active, sa_type=String(16))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VariantBase(SQLModel):
    """Fields shared by variant schemas."""

    sku: str = Field(min_length=1, max_length=64, schema_extra={"pattern": SKU})
    attributes: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    price: Amount
    currency: Currency = "GBP"


class Variant(VariantBase, table=True):
    """One SKU of a product, with its price."""

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="product.id", index=True, ondelete="CASCADE")
    sku: str = Field(max_length=64, unique=True, index=True)
    price: Decimal = Field(max_digits=12, decimal_places=2, index=True)
    currency: str = Field(default="GBP", max_length=3)
    is_active: bool = True


class VariantCreate(VariantBase):
    """A new variant, optionally with its starting stock."""

    initial_stock: int = Field(default=0, ge=0, le=1_000_000)


class VariantUpdate(SQLModel):
    """A partial update of a variant: price, currency, attributes or whether it is sold."""

    price: Amount | None = None
    currency: Currency | None = None
    attributes: dict[str, str] | None = None
    is_active: bool | None = None


class VariantPublic(VariantBase):
    """A variant as the API shows it."""

    id: int
    is_active: bool
    available: int = 0
    in_stock: bool = False


class ProductImage(SQLModel, table=True):
    """An uploaded image and its WebP thumbnails in object storage."""

    __tablename__ = "product_image"

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="product.id", index=True, ondelete="CASCADE")
    key: str = Field(max_length=300)
    thumb_small_key: str = Field(max_length=300)
    thumb_large_key: str = Field(max_length=300)
    content_type: str = Field(max_length=50)
    width: int
    height: int
    position: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ImagePublic(SQLModel):
    """An image with the URLs of its original and thumbnails."""

    id: int
    url: str
    thumb_small_url: str
    thumb_large_url: str
    width: int
    height: int
    content_type: str


class ProductCreate(ProductBase):
    """A new product with at least one variant."""

    status: ProductStatus = ProductStatus.active
    variants: list[VariantCreate] = Field(min_length=1, max_length=100)


class ProductUpdate(SQLModel):
    """A partial update of a product (and optionally its variants' prices)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    category_id: int | None = None
    status: ProductStatus | None = None


class ProductPublic(ProductBase):
    """A product as the API shows it."""

    id: int
    status: ProductStatus
    created_at: datetime
    updated_at: datetime
    variants: list[VariantPublic] = []
    images: list[ImagePublic] = []
    price_min: Decimal | None = None
    currency: str | None = None
    in_stock: bool = False


class ProductPage(SQLModel):
    """A page of products."""

    items: list[ProductPublic]
    total: int
    page: int
    page_size: int
    extra: dict[str, Any] = {}
