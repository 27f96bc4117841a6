"""Deliver outbox events (mails, signed webhooks) exactly once per event and channel.

For each event: claim it (a row lock, SKIP LOCKED, on PostgreSQL), then for each of its
channels skip it if a delivery is already recorded as sent, else send it and commit the
delivery record at once, in a second session; when every channel is done, acknowledge the
event in the claiming transaction. A crash between a send and its record can repeat that one
send (its Message-ID / delivery id is stable, so the receiver can drop the copy); a crash
anywhere later repeats nothing, because the record is already committed.

The claim is ``FOR NO KEY UPDATE``: it still keeps other consumers off the event, but lets the
second session insert delivery rows whose foreign key points at it. On SQLite there are no
row locks: run one consumer at a time (the Prefect deployment has a concurrency limit of 1).

A failing channel is recorded (attempts, last error) and retried after an exponential
backoff; after ``outbox_max_attempts`` it is marked ``dead`` (the dead-letter list) and the
event is acknowledged, so one bad address does not hold the queue; :func:`requeue` revives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.outbox import notifications
from cartwise.commerce.outbox.models import DeliveryStatus, OutboxDelivery, OutboxEvent
from cartwise.commerce.outbox.service import record_failure
from cartwise.platform.mail import Mailer, get_mailer
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow
from cartwise.platform.webhooks import post_signed

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=1)


@dataclass
class DeliverySummary:
    """What one run did: events claimed and acknowledged, channels sent, skipped, failed."""

    claimed: int = 0
    acknowledged: int = 0
    sent: int = 0
    already_sent: int = 0
    failed: int = 0
    dead: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The counts, flat (for flow results and the CLI)."""
        counts = {
            "claimed": self.claimed,
            "acknowledged": self.acknowledged,
            "sent": self.sent,
            "already_sent": self.already_sent,
            "failed": self.failed,
            "dead": self.dead,
        }
        counts.update({f"sent:{k}": v for k, v in self.by_channel.items()})
        return counts


Sender = Callable[[notifications.Notice], None]


def make_sender(settings: Settings, mailer: Mailer | None = None) -> Sender:
    """The function that hands a rendered notice to its mailer or webhook receiver."""
    chosen = mailer or get_mailer(settings)

    def send(notice: notifications.Notice) -> None:
        if notice.mail is not None:
            chosen.send(notice.mail)
            return
        post_signed(
            settings.alert_webhook_url,
            notice.webhook,
            secret=settings.alert_webhook_secret.get_secret_value(),
            delivery_id=notice.delivery_id,
            timeout=settings.webhook_timeout_seconds,
        )

    return send


def backoff(attempts: int, base_seconds: float) -> timedelta:
    """Wait before the next try: base, 2x, 4x ... capped at an hour."""
    delay = timedelta(seconds=base_seconds * 2 ** max(attempts - 1, 0))
    return min(delay, MAX_BACKOFF)


def _claim_next(session: Session, *, after: int, now: datetime) -> OutboxEvent | None:
    """The oldest unacknowledged event after ``after`` that is not waiting out a backoff."""
    waiting = (
        select(OutboxDelivery.id)
        .where(
            col(OutboxDelivery.event_id) == col(OutboxEvent.id),
            col(OutboxDelivery.status) == DeliveryStatus.failed,
            col(OutboxDelivery.next_attempt_at) > now,
        )
        .correlate(OutboxEvent)
    )
    stmt = (
        select(OutboxEvent)
        .where(
            col(OutboxEvent.processed_at).is_(None),
            col(OutboxEvent.id) > after,
            ~exists(waiting),
        )
        .order_by(col(OutboxEvent.id))
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, key_share=True, of=OutboxEvent)
    return session.exec(stmt).first()


def _acknowledge(session: Session, event_id: int) -> None:
    """Mark the claimed event processed and end the claiming transaction."""
    session.execute(
        update(OutboxEvent)
        .where(col(OutboxEvent.id) == event_id, col(OutboxEvent.processed_at).is_(None))
        .values(processed_at=utcnow())
    )
    session.commit()


def _record(
    records: Session,
    row: OutboxDelivery | None,
    *,
    event_id: int,
    channel: str,
    error: str | None,
    settings: Settings,
    now: datetime,
) -> DeliveryStatus:
    """Commit the outcome of one send attempt; returns the channel's new status."""
    if row is None:
        row = OutboxDelivery(event_id=event_id, channel=channel, status=DeliveryStatus.failed)
    row.attempts += 1
    row.updated_at = now
    if error is None:
        row.status, row.sent_at, row.next_attempt_at, row.last_error = (
            DeliveryStatus.sent,
            now,
            None,
            None,
        )
    else:
        row.last_error = error[:1000]
        if row.attempts >= settings.outbox_max_attempts:
            row.status, row.next_attempt_at = DeliveryStatus.dead, None
        else:
            row.status = DeliveryStatus.failed
            row.next_attempt_at = now + backoff(row.attempts, settings.outbox_retry_base_seconds)
    records.add(row)
    try:
        records.commit()
    except IntegrityError:
        # Another consumer (SQLite has no row locks) recorded this channel first.
        records.rollback()
        return DeliveryStatus.sent if error is None else DeliveryStatus.failed
    return row.status


def _deliver(
    event: OutboxEvent,
    channels: list[str],
    *,
    engine: Engine,
    claim: Session,
    settings: Settings,
    send: Sender,
    now: datetime,
    summary: DeliverySummary,
) -> bool:
    """Send the channels not yet sent; True when none is left to retry."""
    assert event.id is not None
    finished = True
    with Session(engine, expire_on_commit=False) as records:
        for channel in channels:
            row = records.exec(
                select(OutboxDelivery).where(
                    OutboxDelivery.event_id == event.id, OutboxDelivery.channel == channel
                )
            ).first()
            if row is not None and row.status == DeliveryStatus.sent:
                summary.already_sent += 1
                continue
            if row is not None and row.status == DeliveryStatus.dead:
                summary.dead += 1
                continue
            error: str | None = None
            try:
                send(notifications.render(event, channel, session=claim, settings=settings))
            except Exception as exc:  # any failure of one channel is recorded and retried
                error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox event %s %s failed: %s", event.id, channel, error)
            status = _record(
                records,
                row,
                event_id=event.id,
                channel=channel,
                error=error,
                settings=settings,
                now=now,
            )
            if status == DeliveryStatus.sent:
                summary.sent += 1
                summary.by_channel[channel] = summary.by_channel.get(channel, 0) + 1
            elif status == DeliveryStatus.dead:
                summary.dead += 1
                log.error("outbox event %s %s gave up: %s", event.id, channel, error)
            else:
                summary.failed += 1
                finished = False
    return finished


def process_outbox(
    *,
    session: Session,
    settings: Settings,
    mailer: Mailer | None = None,
    send: Sender | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> DeliverySummary:
    """Deliver up to ``limit`` pending events, each channel exactly once; returns counts."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    sender = send or make_sender(settings, mailer)
    limit = limit or settings.outbox_batch_size
    summary = DeliverySummary()
    last_id = 0
    while summary.claimed < limit:
        moment = now or utcnow()
        event = _claim_next(session, after=last_id, now=moment)
        if event is None:
            session.rollback()
            break
        assert event.id is not None
        last_id = event.id
        summary.claimed += 1
        channels = notifications.channels_for(event, settings)
        done = not channels or _deliver(
            event,
            channels,
            engine=engine,
            claim=session,
            settings=settings,
            send=sender,
            now=moment,
            summary=summary,
        )
        if done:
            _acknowledge(session, event.id)
            summary.acknowledged += 1
        else:
            record_failure(session=session, event_id=event.id)  # commits: the lock goes
    return summary


def dead_letters(*, session: Session, limit: int = 100) -> list[OutboxDelivery]:
    """Deliveries that gave up, newest first (the dead-letter list)."""
    return list(
        session.exec(
            select(OutboxDelivery)
            .where(OutboxDelivery.status == DeliveryStatus.dead)
            .order_by(col(OutboxDelivery.updated_at).desc())
            .limit(limit)
        )
    )


def requeue(*, session: Session, event_id: int) -> int:
    """Give an event's dead deliveries a fresh start and make it pending again (commits)."""
    revived = session.execute(
        update(OutboxDelivery)
        .where(
            col(OutboxDelivery.event_id) == event_id,
            col(OutboxDelivery.status) == DeliveryStatus.dead,
        )
        .values(status=DeliveryStatus.failed, attempts=0, next_attempt_at=None)
    )
    count = int(revived.rowcount)  # type: ignore[attr-defined]
    if count:
        session.execute(
            update(OutboxEvent).where(col(OutboxEvent.id) == event_id).values(processed_at=None)
        )
    session.commit()
    return count
