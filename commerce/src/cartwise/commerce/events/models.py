"""Shopper events: the append-only table and the ingestion schemas."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from cartwise.platform.types import UTCDateTime, utcnow

MAX_BATCH = 500
MAX_PROPERTIES_BYTES = 4096
MAX_FUTURE = timedelta(days=1)
# Older client clocks are surely wrong, and far-past offsets would overflow on conversion.
MIN_CLIENT_TS = datetime(2000, 1, 1, tzinfo=UTC)


class EventType(StrEnum):
    """What the shopper did."""

    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    remove_from_cart = "remove_from_cart"
    search = "search"
    purchase = "purchase"


# Event types that are about one product, so they must name it (by id or SKU).
PRODUCT_EVENTS = frozenset(
    {EventType.view, EventType.click, EventType.add_to_cart, EventType.remove_from_cart}
)


class ShopperEvent(SQLModel, table=True):
    """One shopper event as received; rows are only ever inserted."""

    __tablename__ = "shopper_event"
    __table_args__ = (
        Index("ix_shopper_event_received_at", "received_at"),
        Index("ix_shopper_event_session_received", "session_id", "received_at"),
    )

    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER primary key.
    id: int | None = SQLField(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    event_id: str = SQLField(max_length=36, unique=True)
    type: EventType = SQLField(sa_type=String(20))
    session_id: str = SQLField(max_length=128)
    # No foreign key: the event log is append-only and outlives the users it mentions.
    user_id: int | None = None
    product_id: int | None = None
    sku: str | None = SQLField(default=None, max_length=64)
    query: str | None = SQLField(default=None, max_length=200)
    position: int | None = None
    properties: dict[str, Any] = SQLField(default_factory=dict, sa_type=JSON)
    client_ts: datetime = SQLField(sa_type=UTCDateTime)
    received_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


NoNul = StringConstraints(strip_whitespace=True, pattern=r"^[^\x00]*$")
SessionId = Annotated[str, NoNul, StringConstraints(min_length=1, max_length=128)]
Sku = Annotated[str, NoNul, StringConstraints(min_length=1, max_length=64)]
SearchQuery = Annotated[str, NoNul, StringConstraints(min_length=1, max_length=200)]


class EventIn(BaseModel):
    """One event as the storefront sends it; any ``user_id`` sent is ignored."""

    event_id: uuid.UUID | None = Field(
        default=None, description="Client-generated UUID; a retried event is stored once."
    )
    type: EventType
    session_id: SessionId
    product_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    sku: Sku | None = None
    query: SearchQuery | None = None
    position: int | None = Field(default=None, ge=0, le=1000)
    client_ts: AwareDatetime
    properties: dict[str, Any] = Field(
        default_factory=dict, description=f"Free properties, at most {MAX_PROPERTIES_BYTES} bytes."
    )

    @field_validator("client_ts")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if value < MIN_CLIENT_TS:
            raise ValueError("client_ts is before 2000-01-01")
        if value > utcnow() + MAX_FUTURE:
            raise ValueError("client_ts is more than one day in the future")
        return value.astimezone(UTC)

    @field_validator("properties")
    @classmethod
    def _bounded_properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_PROPERTIES_BYTES:
            raise ValueError(f"properties exceed {MAX_PROPERTIES_BYTES} bytes when serialized")
        return value

    @model_validator(mode="after")
    def _fields_for_type(self) -> EventIn:
        if self.type in PRODUCT_EVENTS and self.product_id is None and self.sku is None:
            raise ValueError(f"a {self.type} event needs sku or product_id")
        if self.type is EventType.search and self.query is None:
            raise ValueError("a search event needs query")
        return self


class EventBatch(BaseModel):
    """A batch of 1 to 500 events, accepted or rejected as a whole."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestResult(BaseModel):
    """How many events were stored, and how many were retries already stored."""

    accepted: int
    duplicates: int
