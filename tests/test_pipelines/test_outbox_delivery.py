"""Outbox delivery: mails over real SMTP, signed webhooks to a real HTTP server, exactly once."""

from __future__ import annotations

import email
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import Session, select

from cartwise.commerce.orders.models import Order, OrderLine
from cartwise.commerce.outbox import delivery
from cartwise.commerce.outbox.models import DeliveryStatus, OutboxDelivery, OutboxEvent, emit
from cartwise.platform.db import get_engine
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow
from cartwise.platform.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from tests.test_pipelines.outbox_peers import HookSink, SmtpSink, smtp_server, webhook_server

SECRET = "s3cret-for-the-webhook-test-0123456789"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    """One SMTP server for the module, emptied per test."""
    with smtp_server() as sink:
        yield sink


@pytest.fixture(scope="module")
def hooks() -> Iterator[HookSink]:
    """One webhook receiver for the module, emptied per test."""
    with webhook_server() as sink:
        yield sink


@pytest.fixture
def peers(smtp: SmtpSink, hooks: HookSink) -> tuple[SmtpSink, HookSink]:
    """Both peers, empty and answering normally."""
    smtp.messages.clear()
    smtp.fail = False
    hooks.requests.clear()
    hooks.status = 204
    return smtp, hooks


@pytest.fixture
def outbox_settings(
    make_settings: Callable[..., Settings], db_url: str, peers: tuple[SmtpSink, HookSink]
) -> Settings:
    """SMTP to the test server, webhooks to the test receiver, on each database."""
    smtp, hooks = peers
    return make_settings(
        database_url=db_url,
        mail_backend="smtp",
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_timeout_seconds=5,
        mail_from="Cartwise <shop@cartwise.test>",
        staff_alert_email="fraud-desk@cartwise.test",
        alert_webhook_url=hooks.url,
        alert_webhook_secret=SECRET,
        webhook_timeout_seconds=5,
        outbox_max_attempts=3,
        outbox_retry_base_seconds=60,
    )


@pytest.fixture
def db(outbox_settings: Settings) -> Iterator[Session]:
    """A session on the test database."""
    with Session(get_engine(outbox_settings), expire_on_commit=False) as s:
        yield s


def _order(session: Session, order_id: str, email_: str) -> None:
    session.add(
        Order(
            id=order_id,
            email=email_,
            currency="GBP",
            subtotal=Decimal("20.00"),
            total=Decimal("24.95"),
        )
    )
    session.flush()
    session.add(
        OrderLine(
            order_id=order_id,
            sku="85123A",
            product_name="White hanging heart t-light holder",
            quantity=2,
            unit_price=Decimal("10.00"),
            line_total=Decimal("20.00"),
        )
    )


def _emit_shop_events(session: Session) -> dict[str, int]:
    """One event of each kind, as the commerce services emit them; returns their ids."""
    _order(session, "o1", "ann@example.com")
    common = {"total": "24.95", "currency": "GBP"}
    events = {
        "order.created": {"order_id": "o1", "email": "ann@example.com", **common},
        "order.paid": {"order_id": "o1", "email": "ann@example.com", **common},
        "order.shipped": {"order_id": "o1", "email": "ann@example.com", **common},
        "order.delivered": {"order_id": "o1", "email": "ann@example.com", **common},
        "order.partially_refunded": {
            "order_id": "o2",
            "email": "bob@example.com",
            "amount": "5.00",
            "refunded_amount": "5.00",
            **common,
        },
        "order.refunded": {"order_id": "o3", "email": "cy@example.com", **common},
        "fraud.review_required": {
            "order_id": "o4",
            "alert_id": 7,
            "risk": 0.93,
            "reasons": ["new account", "country mismatch"],
            "model_version": "fraud/3",
            "email": "mallory@example.com",
            **common,
        },
    }
    made = {
        kind: emit(session, "order", str(payload["order_id"]), kind, payload)
        for kind, payload in events.items()
    }
    session.commit()
    return {kind: e.id or 0 for kind, e in made.items()}


def _unacknowledged(session: Session) -> list[int]:
    session.expire_all()
    rows = session.exec(select(OutboxEvent).where(OutboxEvent.processed_at == None))  # noqa: E711
    return [e.id or 0 for e in rows]


def _deliveries(session: Session) -> dict[tuple[int, str], OutboxDelivery]:
    session.expire_all()
    return {(d.event_id, d.channel): d for d in session.exec(select(OutboxDelivery))}


def _run(session: Session, settings: Settings, **kwargs: Any) -> delivery.DeliverySummary:
    return delivery.process_outbox(session=session, settings=settings, **kwargs)


def test_each_event_goes_to_its_recipients_once(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    smtp, hooks = peers
    ids = _emit_shop_events(db)

    summary = _run(db, outbox_settings)

    assert summary.claimed == 7
    assert summary.acknowledged == 7
    assert summary.sent == 6  # 4 customer mails + staff mail + webhook
    received = {str(m["Subject"]): (rcpt, m) for rcpt, m in smtp.messages}
    assert len(smtp.messages) == 5
    assert set(received) == {
        "Order o1 confirmed",
        "Order o1 has shipped",
        "Partial refund for order o2",
        "Refund for order o3",
        "[fraud review] order o4 (risk 0.93)",
    }
    assert received["Order o1 confirmed"][0] == ["ann@example.com"]
    confirmation = received["Order o1 confirmed"][1]
    body = confirmation.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "2 x White hanging heart t-light holder (85123A)" in body
    assert "24.95 GBP" in body
    assert confirmation["Message-ID"] == f"<outbox-{ids['order.paid']}-customer-mail@cartwise.test>"
    assert received["Partial refund for order o2"][0] == ["bob@example.com"]
    assert received["Refund for order o3"][0] == ["cy@example.com"]
    staff_rcpt, staff_mail = received["[fraud review] order o4 (risk 0.93)"]
    assert staff_rcpt == ["fraud-desk@cartwise.test"]
    assert "country mismatch" in str(staff_mail.get_payload())

    assert len(hooks.requests) == 1
    headers, raw = hooks.requests[0]
    verify(SECRET, headers[SIGNATURE_HEADER], raw)
    with pytest.raises(ValueError, match="does not match"):
        verify("another-secret", headers[SIGNATURE_HEADER], raw)
    payload = json.loads(raw)
    assert payload["type"] == "fraud.review_required"
    assert payload["data"]["order_id"] == "o4"
    assert headers[DELIVERY_HEADER] == f"outbox-{ids['fraud.review_required']}-webhook"

    assert _unacknowledged(db) == []
    again = _run(db, outbox_settings)
    assert again.claimed == 0
    assert len(smtp.messages) == 5
    assert len(hooks.requests) == 1


def test_a_chargeback_goes_to_the_fraud_desk_and_the_webhook_never_to_the_customer(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    smtp, hooks = peers
    _order(db, "o9", "mallory@example.com")
    payload = {
        "order_id": "o9",
        "alert_id": 11,
        "dispute_id": "dp_1",
        "reason": "fraudulent",
        "status": "open",
        "amount": "24.95",
        "currency": "GBP",
        "email": "mallory@example.com",  # the customer's: not a recipient
    }
    event = emit(db, "order", "o9", "order.chargeback", payload)
    db.commit()

    summary = _run(db, outbox_settings)

    assert summary.sent == 2
    ((rcpt, mail),) = smtp.messages
    assert rcpt == ["fraud-desk@cartwise.test"]
    assert str(mail["Subject"]) == "[chargeback] order o9: fraudulent (24.95 GBP)"
    assert "dp_1" in str(mail.get_payload())
    ((headers, raw),) = hooks.requests
    verify(SECRET, headers[SIGNATURE_HEADER], raw)
    body = json.loads(raw)
    assert body["type"] == "order.chargeback"
    assert body["data"]["dispute_id"] == "dp_1"
    assert headers[DELIVERY_HEADER] == f"outbox-{event.id}-webhook"
    assert _unacknowledged(db) == []


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def test_crash_between_send_and_acknowledge_sends_nothing_twice(
    db: Session,
    outbox_settings: Settings,
    peers: tuple[SmtpSink, HookSink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp, hooks = peers
    ids = _emit_shop_events(db)
    real_ack = delivery._acknowledge
    acked: list[int] = []

    def dies_at_the_fraud_ack(session: Session, event_id: int) -> None:
        if event_id == ids["fraud.review_required"]:
            raise Crash  # after the staff mail and webhook were sent and recorded
        real_ack(session, event_id)
        acked.append(event_id)

    monkeypatch.setattr(delivery, "_acknowledge", dies_at_the_fraud_ack)
    with (
        pytest.raises(Crash),
        Session(get_engine(outbox_settings), expire_on_commit=False) as crashing,
    ):
        _run(crashing, outbox_settings)
    assert len(smtp.messages) == 5
    assert len(hooks.requests) == 1
    assert _unacknowledged(db) == [ids["fraud.review_required"]]

    monkeypatch.setattr(delivery, "_acknowledge", real_ack)
    rerun = _run(db, outbox_settings)

    assert rerun.claimed == 1
    assert rerun.sent == 0
    assert rerun.already_sent == 2
    assert rerun.acknowledged == 1
    assert sorted(smtp.ids()) == sorted(set(smtp.ids()))  # each mail exactly once
    assert len(smtp.messages) == 5
    assert len(hooks.requests) == 1
    assert _unacknowledged(db) == []
    sent = _deliveries(db)
    assert all(d.status == DeliveryStatus.sent and d.attempts == 1 for d in sent.values())


def test_failing_smtp_is_retried_after_backoff_then_delivered_once(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    smtp, hooks = peers
    emit(db, "order", "o9", "order.shipped", {"order_id": "o9", "email": "dee@example.com"})
    emit(
        db,
        "order",
        "o8",
        "fraud.review_required",
        {"order_id": "o8", "risk": 0.8, "reasons": [], "email": "x@example.com"},
    )
    db.commit()
    smtp.fail = True

    first = _run(db, outbox_settings)
    assert (first.claimed, first.sent, first.failed, first.acknowledged) == (2, 1, 2, 0)
    assert len(hooks.requests) == 1  # the webhook channel does not wait for the mail
    events = {e.event_type: e for e in db.exec(select(OutboxEvent))}
    shipped, fraud = events["order.shipped"], events["fraud.review_required"]
    assert _unacknowledged(db) == [shipped.id, fraud.id]
    rows = _deliveries(db)
    failed = rows[(shipped.id or 0, "customer_mail")]
    assert failed.status == DeliveryStatus.failed
    assert failed.attempts == 1
    assert "451" in (failed.last_error or "")
    assert failed.next_attempt_at is not None
    assert db.get(OutboxEvent, shipped.id).attempts == 1  # type: ignore[union-attr]

    # Within the backoff nothing is tried again, even once the server is back.
    smtp.fail = False
    assert _run(db, outbox_settings).claimed == 0
    assert smtp.messages == []

    later = _run(db, outbox_settings, now=utcnow() + timedelta(minutes=5))
    assert (later.claimed, later.sent, later.already_sent, later.acknowledged) == (2, 2, 1, 2)
    assert sorted(str(m["Subject"]) for _, m in smtp.messages) == [
        "Order o9 has shipped",
        "[fraud review] order o8 (risk 0.80)",
    ]
    assert len(hooks.requests) == 1
    assert _unacknowledged(db) == []
    assert _deliveries(db)[(shipped.id or 0, "customer_mail")].attempts == 2


def test_gives_up_after_max_attempts_then_requeue_delivers(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    smtp, _ = peers
    emit(db, "order", "o5", "order.refunded", {"order_id": "o5", "email": "eve@example.com"})
    db.commit()
    smtp.fail = True
    moment = utcnow()
    for step in range(3):  # outbox_max_attempts=3; each try after the previous backoff
        _run(db, outbox_settings, now=moment + timedelta(hours=2 * step))
    (row,) = _deliveries(db).values()
    assert row.status == DeliveryStatus.dead
    assert row.attempts == 3
    assert _unacknowledged(db) == []  # given up: the queue moves on
    assert [d.id for d in delivery.dead_letters(session=db)] == [row.id]

    smtp.fail = False
    assert delivery.requeue(session=db, event_id=row.event_id) == 1
    revived = _run(db, outbox_settings)
    assert revived.sent == 1
    assert [str(m["Subject"]) for _, m in smtp.messages] == ["Refund for order o5"]
    assert delivery.dead_letters(session=db) == []


def test_failing_webhook_is_retried_without_resending_the_mail(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    smtp, hooks = peers
    emit(db, "order", "o7", "fraud.review_required", {"order_id": "o7", "risk": 0.7})
    db.commit()
    hooks.status = 503
    first = _run(db, outbox_settings)
    assert (first.sent, first.failed, first.acknowledged) == (1, 1, 0)
    (event_id,) = _unacknowledged(db)
    assert "503" in (_deliveries(db)[(event_id, "webhook")].last_error or "")

    hooks.status = 204
    second = _run(db, outbox_settings, now=utcnow() + timedelta(minutes=5))
    assert (second.sent, second.already_sent, second.acknowledged) == (1, 1, 1)
    assert len(smtp.messages) == 1
    assert len(hooks.requests) == 1
    verify(SECRET, hooks.requests[0][0][SIGNATURE_HEADER], hooks.requests[0][1])


def test_file_mailer_writes_eml_once_per_message(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database_url=db_url, mail_from="shop@cartwise.test")
    assert settings.mail_backend == "file"
    with Session(get_engine(settings), expire_on_commit=False) as s:
        ids = _emit_shop_events(s)
        summary = _run(s, settings)
        assert summary.sent == 5  # no webhook without a URL
        # A resend (as after a crash before the record) overwrites the same file.
        s.execute(OutboxDelivery.__table__.delete())  # type: ignore[attr-defined]
        s.execute(OutboxEvent.__table__.update().values(processed_at=None))  # type: ignore[attr-defined]
        s.commit()
        _run(s, settings)
    files = sorted((settings.var_dir / "mail").glob("*.eml"))
    assert len(files) == 5
    assert not list((settings.var_dir / "mail").glob(".tmp-*"))
    paid = settings.var_dir / "mail" / f"outbox-{ids['order.paid']}-customer-mail@cartwise.test.eml"
    message = email.message_from_bytes(paid.read_bytes())
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Order o1 confirmed"


def test_concurrent_consumers_on_postgresql_send_each_mail_once(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    import threading

    if not outbox_settings.effective_database_url.startswith("postgresql"):
        pytest.skip("row locks (SKIP LOCKED) are PostgreSQL's; SQLite runs one consumer")
    smtp, _ = peers
    for i in range(30):
        emit(db, "order", f"c{i}", "order.shipped", {"order_id": f"c{i}", "email": "a@b.test"})
    db.commit()
    summaries: list[delivery.DeliverySummary] = []

    def consume() -> None:
        with Session(get_engine(outbox_settings), expire_on_commit=False) as s:
            summaries.append(_run(s, outbox_settings))

    workers = [threading.Thread(target=consume) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(s.acknowledged for s in summaries) == 30
    assert len(smtp.messages) == 30
    assert len(set(smtp.ids())) == 30
    assert _unacknowledged(db) == []


KILLED_AT_ACK = """
import os, sys
from sqlmodel import Session
from cartwise.commerce.outbox import delivery
from cartwise.platform.db import get_engine
from cartwise.platform.settings import Settings

def die(session, event_id):
    os._exit(3)  # no cleanup, no rollback: the connection just drops

delivery._acknowledge = die
settings = Settings()
with Session(get_engine(settings)) as s:
    delivery.process_outbox(session=s, settings=settings)
"""


def test_a_killed_process_leaves_the_event_to_the_next_run_without_resending(
    db: Session, outbox_settings: Settings, peers: tuple[SmtpSink, HookSink]
) -> None:
    """A real crash: the consumer process dies (``os._exit``) after sending, before the ack."""
    import os
    import subprocess
    import sys

    if not outbox_settings.effective_database_url.startswith("postgresql"):
        pytest.skip("the lock a dead process held is PostgreSQL's; SQLite: the test above")
    smtp, hooks = peers
    emit(
        db,
        "order",
        "o6",
        "fraud.review_required",
        {"order_id": "o6", "risk": 0.99, "reasons": ["velocity"], "email": "z@example.com"},
    )
    db.commit()
    env = {
        **os.environ,
        **{
            f"CARTWISE_{key.upper()}": str(value)
            for key, value in outbox_settings.model_dump(
                include={
                    "database_url",
                    "var_dir",
                    "mail_backend",
                    "smtp_host",
                    "smtp_port",
                    "mail_from",
                    "staff_alert_email",
                    "alert_webhook_url",
                }
            ).items()
        },
        "CARTWISE_ALERT_WEBHOOK_SECRET": SECRET,
        "CARTWISE_REDIS_URL": "",
    }
    died = subprocess.run(
        [sys.executable, "-c", KILLED_AT_ACK], env=env, capture_output=True, timeout=120
    )
    assert died.returncode == 3, died.stderr.decode()
    assert len(smtp.messages) == 1
    assert len(hooks.requests) == 1
    assert len(_unacknowledged(db)) == 1

    # The dead process's lock went with its connection: the next run claims the event at once.
    rerun = _run(db, outbox_settings)
    assert (rerun.claimed, rerun.sent, rerun.already_sent, rerun.acknowledged) == (1, 0, 2, 1)
    assert len(smtp.messages) == 1
    assert len(hooks.requests) == 1
    assert _unacknowledged(db) == []


def test_cli_shows_dead_letters_and_requeues_them(cli_env: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from cartwise.commerce.tables import metadata
    from cartwise.pipelines.cli import app

    settings = Settings(
        var_dir=cli_env["CARTWISE_VAR_DIR"], database_url="", redis_url="", env="development"
    )
    engine = get_engine(settings)
    metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as s:
        event = emit(s, "order", "o1", "order.refunded", {"order_id": "o1", "email": "a@b.test"})
        s.commit()
        s.add(
            OutboxDelivery(
                event_id=event.id or 0,
                channel="customer_mail",
                status=DeliveryStatus.dead,
                attempts=8,
                last_error="SMTPRecipientsRefused: 550 no such user",
            )
        )
        s.commit()
    runner = CliRunner()
    shown = runner.invoke(app, ["flows", "outbox"], env={**cli_env, "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "pending events: 1" in shown.output
    assert "550 no such user" in shown.output
    assert "dead" in shown.output

    again = runner.invoke(app, ["flows", "outbox", "--requeue", str(event.id)], env=cli_env)
    assert again.exit_code == 0, again.output
    assert f"event {event.id}: 1 dead deliver(ies) queued again" in again.output
    with Session(engine) as s:
        (row,) = s.exec(select(OutboxDelivery)).all()
        assert (row.status, row.attempts) == (DeliveryStatus.failed, 0)
