"""The transactional outbox: order events written with the change that caused them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
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
