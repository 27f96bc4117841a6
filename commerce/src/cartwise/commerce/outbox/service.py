"""Claiming and acknowledging outbox events, for consumers that may crash at any point.

A consumer claims a batch, handles each event, then acknowledges it. An event is acknowledged
only after it was handled, so a crash in between means it is handled again (at-least-once);
consumers make their effects idempotent by the event id.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update
from sqlmodel import Session, col, select

from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.platform.types import utcnow


def pending(
    *, session: Session, limit: int = 100, event_types: Sequence[str] | None = None
) -> list[OutboxEvent]:
    """Unacknowledged events, oldest first; on PostgreSQL rows are locked (SKIP LOCKED).

    Holding the returned rows' locks until commit lets several consumers work side by side
    without handling the same event twice at the same time.
    """
    stmt = (
        select(OutboxEvent)
        .where(col(OutboxEvent.processed_at).is_(None))
        .order_by(col(OutboxEvent.id))
        .limit(limit)
    )
    if event_types:
        stmt = stmt.where(col(OutboxEvent.event_type).in_(list(event_types)))
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.exec(stmt))


def acknowledge(*, session: Session, event_ids: Sequence[int]) -> int:
    """Mark events processed (commits); acknowledging twice is harmless."""
    if not event_ids:
        return 0
    result = session.execute(
        update(OutboxEvent)
        .where(col(OutboxEvent.id).in_(list(event_ids)), col(OutboxEvent.processed_at).is_(None))
        .values(processed_at=utcnow())
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def record_failure(*, session: Session, event_id: int) -> None:
    """Count a failed attempt (commits); the event stays pending."""
    session.execute(
        update(OutboxEvent)
        .where(col(OutboxEvent.id) == event_id)
        .values(attempts=col(OutboxEvent.attempts) + 1)
    )
    session.commit()
