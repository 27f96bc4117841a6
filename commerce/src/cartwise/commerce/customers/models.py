"""Users, addresses and refresh tokens, with their API schemas."""

from __future__ import annotations

from datetime import datetime

from pydantic import EmailStr, field_validator
from sqlalchemy import String
from sqlmodel import Field, SQLModel

from cartwise.platform.auth import Role
from cartwise.platform.types import UTCDateTime, utcnow


class UserBase(SQLModel):
    """Fields shared by every user schema."""

    email: EmailStr = Field(max_length=254, unique=True, index=True)
    full_name: str = Field(default="", max_length=120)


class User(UserBase, table=True):
    """A shopper or a member of staff."""

    id: int | None = Field(default=None, primary_key=True)
    hashed_password: str = Field(max_length=255)
    role: Role = Field(default=Role.customer, sa_type=String(16))
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UserCreate(SQLModel):
    """What a shopper sends to register."""

    email: EmailStr = Field(max_length=254)
    password: str = Field(min_length=8, max_length=128)
    full_name: str = Field(default="", max_length=120)


class UserUpdate(SQLModel):
    """What a user may change about themselves."""

    full_name: str | None = Field(default=None, max_length=120)
    password: str | None = Field(default=None, min_length=8, max_length=128)


class UserPublic(UserBase):
    """A user as the API shows it."""

    id: int
    role: Role
    is_active: bool
    created_at: datetime


class AddressBase(SQLModel):
    """A postal address."""

    full_name: str = Field(min_length=1, max_length=120)
    line1: str = Field(min_length=1, max_length=200)
    line2: str = Field(default="", max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postcode: str = Field(min_length=1, max_length=20)
    # ISO 3166-1 alpha-2; upper-cased on input. (SQLModel ignores Field(regex=) under
    # pydantic 2, so the pattern goes through schema_extra.)
    country: str = Field(min_length=2, max_length=2, schema_extra={"pattern": r"^[A-Z]{2}$"})

    @field_validator("country", mode="before")
    @classmethod
    def _upper_country(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    phone: str = Field(default="", max_length=30)


class Address(AddressBase, table=True):
    """A saved address of a user."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    is_default: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AddressCreate(AddressBase):
    """A new address."""

    is_default: bool = False


class AddressPublic(AddressBase):
    """An address as the API shows it."""

    id: int
    is_default: bool


class RefreshToken(SQLModel, table=True):
    """An issued refresh token; rotation marks it used, reuse revokes its family."""

    __tablename__ = "refresh_token"

    jti: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    family: str = Field(max_length=64, index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TokenPair(SQLModel):
    """Access and refresh tokens (OAuth2 token response)."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_in: int


class RefreshRequest(SQLModel):
    """A refresh token to rotate or revoke."""

    refresh_token: str = Field(min_length=10, max_length=2048)
