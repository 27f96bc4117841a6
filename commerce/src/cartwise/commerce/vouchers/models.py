"""Vouchers: percent or fixed discounts with minimum spend, expiry and a usage limit."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import field_validator
from sqlalchemy import CheckConstraint, String
from sqlmodel import Field, SQLModel

from cartwise.commerce.money import Amount
from cartwise.platform.types import UTCDateTime, utcnow


class VoucherKind(StrEnum):
    """How a voucher discounts."""

    percent = "percent"
    fixed = "fixed"


class VoucherBase(SQLModel):
    """Fields shared by voucher schemas."""

    # SQLModel ignores Field(regex=...) under pydantic 2; a schema_extra pattern is enforced.
    code: str = Field(min_length=3, max_length=40, schema_extra={"pattern": r"^[A-Z0-9_-]+$"})
    kind: VoucherKind = Field(sa_type=String(16))
    value: Amount
    min_spend: Amount = Decimal("0")
    starts_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    usage_limit: int | None = Field(default=None, ge=1, le=10_000_000)


class Voucher(VoucherBase, table=True):
    """A discount code; ``times_used`` never passes ``usage_limit``."""

    __table_args__ = (
        CheckConstraint(
            "usage_limit IS NULL OR times_used <= usage_limit", name="ck_voucher_usage"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    value: Decimal = Field(max_digits=12, decimal_places=2)
    min_spend: Decimal = Field(default=Decimal("0"), max_digits=12, decimal_places=2)
    times_used: int = 0
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VoucherCreate(VoucherBase):
    """A new voucher; the code is case-insensitive on input and stored upper-case."""

    @field_validator("code", mode="before")
    @classmethod
    def _upper_code(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value


class VoucherPublic(VoucherBase):
    """A voucher as staff see it."""

    id: int
    times_used: int
    is_active: bool
    created_at: datetime
