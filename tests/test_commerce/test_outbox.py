"""The outbox keeps events until a consumer acknowledges them; nothing is lost on a crash."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session

from cartwise.commerce.outbox import service as outbox
from cartwise.commerce.outbox.models import OutboxEvent, emit


def _emit(session: Session, n: int) -> None:
    for i in range(n):
        emit(session, "order", f"o{i}", "order.created", {"i": i})
    session.commit()


def test_event_written_only_with_its_transaction(session: Session) -> None:
    emit(session, "order", "o1", "order.created", {"x": 1})
    session.rollback()
    assert outbox.pending(session=session) == []
    _emit(session, 1)
    events = outbox.pending(session=session)
    assert [e.event_type for e in events] == ["order.created"]


def test_crash_before_ack_redelivers(session: Session) -> None:
    _emit(session, 3)
    batch = outbox.pending(session=session)
    assert len(batch) == 3
    # The consumer handles the first event, then crashes before acknowledging the rest.
    outbox.acknowledge(session=session, event_ids=[batch[0].id or 0])
    session.rollback()
    again = outbox.pending(session=session)
    assert [e.aggregate_id for e in again] == ["o1", "o2"]
    outbox.record_failure(session=session, event_id=again[0].id or 0)
    assert session.get(OutboxEvent, again[0].id).attempts == 1
    assert outbox.acknowledge(session=session, event_ids=[e.id or 0 for e in again]) == 2
    assert outbox.acknowledge(session=session, event_ids=[e.id or 0 for e in again]) == 0
    assert outbox.pending(session=session) == []


def test_concurrent_consumers_do_not_share_events(app, session: Session) -> None:
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks; one consumer at a time is its deployment model")
    _emit(session, 20)
    seen: list[list[str]] = []
    barrier = threading.Barrier(2)

    def consume() -> None:
        with Session(app.state.engine) as s:
            batch = outbox.pending(session=s, limit=10)
            barrier.wait(timeout=10)
            seen.append([e.aggregate_id for e in batch])
            outbox.acknowledge(session=s, event_ids=[e.id or 0 for e in batch])

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = seen
    assert set(first).isdisjoint(second)
    assert len(first) + len(second) == 20
