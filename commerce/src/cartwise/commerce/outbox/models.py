"""The transactional outbox: order events written with the change that caused them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlmodel import Field, Session, SQLModel

from cartwise.platform.types import UTCDateTime, utcnow


class OutboxEvent(SQLModel, table=True):
    """An event for consumers; ``processed_at`` stays empty until one acknowledges it."""

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_unprocessed", "processed_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    aggregate_type: str = Field(max_length=40)
    aggregate_id: str = Field(max_length=64, index=True)
    event_type: str = Field(max_length=60)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0


class DeliveryStatus(StrEnum):
    """Where one channel of an event stands: sent, failing (retried later) or given up."""

    sent = "sent"
    failed = "failed"
    dead = "dead"


class OutboxDelivery(SQLModel, table=True):
    """One channel (customer mail, staff mail, webhook) of one event: sent at most once.

    The sender commits this row right after a send, before the event is acknowledged, so a
    consumer that crashes in between finds the channel done and does not send it again.
    """

    __tablename__ = "outbox_delivery"
    __table_args__ = (UniqueConstraint("event_id", "channel", name="uq_outbox_delivery_channel"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="outbox_event.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=40)
    status: DeliveryStatus = Field(sa_type=String(20), index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def emit(
    session: Session,
    aggregate_type: str,
    aggregate_id: str,
    event_type: str,
    payload: dict[str, Any],
) -> OutboxEvent:
    """Add an outbox event to the caller's transaction (the caller commits)."""
    event = OutboxEvent(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        payload=payload,
    )
    session.add(event)
    return event
