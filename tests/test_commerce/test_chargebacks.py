"""Stripe disputes become chargebacks, on SQLite and PostgreSQL.

Real: the app verifying signatures with ``stripe.Webhook.construct_event``, signatures from
``stripe.WebhookSignature``, the databases, the payment made through the local Stripe peer.
The dispute objects are built here in the shape of Stripe's ``Dispute`` (the peer has no
dispute API: disputes are raised by the card network, not by API calls).
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.alerts.models import CHARGEBACK, Alert
from cartwise.commerce.orders.models import Order
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.commerce.payments import service
from cartwise.commerce.payments.models import Chargeback, Payment, WebhookEvent
from tests.conftest import assert_problem
from tests.payments_support import count, place_order, post_event
from tests.stripe_peer import StripePeer


@pytest.fixture
def settings(stripe_settings: Any) -> Any:
    """The app's settings in this module: Stripe pointed at the local peer."""
    return stripe_settings


def _paid(client: TestClient, app: FastAPI, peer: StripePeer) -> tuple[str, dict[str, Any]]:
    """An order paid through Stripe (intent, confirmation, webhook); its id and its intent."""
    order_id, _ = place_order(app.state.engine)  # total 25.00 GBP
    with Session(app.state.engine) as s:
        order = s.get(Order, order_id)
        assert order is not None
        result = service.start_payment(session=s, settings=app.state.settings, order=order)
    assert result.provider_ref is not None
    intent = peer.confirm(result.provider_ref)
    r = post_event(client, peer.event("payment_intent.succeeded", intent))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "paid"
    return order_id, intent


def _dispute(
    peer: StripePeer,
    intent: dict[str, Any],
    *,
    reason: str = "fraudulent",
    status: str = "needs_response",
    amount: int = 2500,
    dispute_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe ``Dispute`` of the intent's charge."""
    charge = peer.charge_of(intent["id"])
    return {
        "id": dispute_id or f"dp_{secrets.token_hex(12)}",
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": int(time.time()),
        "currency": "gbp",
        "evidence_details": {"due_by": int(time.time()) + 7 * 86400, "has_evidence": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": intent["id"],
        "reason": reason,
        "status": status,
    }


def _state(session: Session) -> tuple[int, int, int, list[tuple[str, str, str]]]:
    """Chargebacks, chargeback alerts, chargeback outbox events, (dispute, reason, status)."""
    session.expire_all()
    rows = session.exec(select(Chargeback).order_by(Chargeback.id)).all()  # type: ignore[arg-type]
    return (
        len(rows),
        count(session, Alert, Alert.kind == CHARGEBACK),
        count(session, OutboxEvent, OutboxEvent.event_type == "order.chargeback"),
        [(c.dispute_id, c.reason, c.status) for c in rows],
    )


def test_created_dispute_is_stored_alerted_and_emitted(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer
) -> None:
    order_id, intent = _paid(client, app, peer)
    dispute = _dispute(peer, intent, amount=1999)
    r = post_event(client, peer.event("charge.dispute.created", dispute))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "chargeback-recorded"

    chargeback = session.exec(select(Chargeback)).one()
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    assert chargeback.dispute_id == dispute["id"]
    assert (chargeback.order_id, chargeback.payment_id) == (order_id, payment.id)
    assert (chargeback.reason, chargeback.status) == ("fraudulent", "open")
    assert chargeback.amount == Decimal("19.99")
    assert isinstance(chargeback.amount, Decimal)
    assert chargeback.currency == "GBP"
    assert chargeback.closed_at is None

    alert = session.exec(select(Alert).where(Alert.kind == CHARGEBACK)).one()
    assert (alert.order_id, alert.status, alert.severity) == (order_id, "open", "high")
    assert alert.detail["dispute_id"] == dispute["id"]
    assert alert.detail["reason"] == "fraudulent"
    event = session.exec(
        select(OutboxEvent).where(OutboxEvent.event_type == "order.chargeback")
    ).one()
    assert (event.aggregate_type, event.aggregate_id) == ("order", order_id)
    assert event.payload["dispute_id"] == dispute["id"]
    assert event.payload["alert_id"] == alert.id
    assert event.payload["amount"] == "19.99"
    # The order itself is untouched: a dispute is not a refund.
    session.expire_all()
    order = session.get(Order, order_id)
    assert order is not None
    assert order.status == "paid"


def test_replays_change_nothing(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer
) -> None:
    _, intent = _paid(client, app, peer)
    dispute = _dispute(peer, intent)
    event = peer.event("charge.dispute.created", dispute)
    outcomes = [post_event(client, event).json()["outcome"] for _ in range(3)]
    assert outcomes == ["chargeback-recorded", "duplicate", "duplicate"]
    after_first = _state(session)
    assert after_first[:3] == (1, 1, 1)
    assert count(session, WebhookEvent, WebhookEvent.id == event["id"]) == 1

    # The same dispute state under another event id (a re-sent event): the handler itself is
    # idempotent by dispute id.
    again = post_event(client, peer.event("charge.dispute.created", dispute))
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "chargeback-unchanged"
    assert _state(session) == after_first
    updated = post_event(client, peer.event("charge.dispute.updated", dispute))
    assert updated.json()["outcome"] == "chargeback-unchanged"
    assert _state(session) == after_first


@pytest.mark.parametrize(("stripe_status", "ours"), [("lost", "lost"), ("won", "won")])
def test_closed_dispute_updates_status(
    client: TestClient,
    app: FastAPI,
    session: Session,
    peer: StripePeer,
    stripe_status: str,
    ours: str,
) -> None:
    _, intent = _paid(client, app, peer)
    dispute = _dispute(peer, intent, reason="product_not_received")
    assert post_event(client, peer.event("charge.dispute.created", dispute)).status_code == 200
    review = post_event(
        client, peer.event("charge.dispute.updated", {**dispute, "status": "under_review"})
    )
    assert review.json()["outcome"] == "chargeback-unchanged"  # still open
    closed = {**dispute, "status": stripe_status}
    r = post_event(client, peer.event("charge.dispute.closed", closed))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == f"chargeback-{ours}"
    chargebacks, alerts, events, rows = _state(session)
    assert (chargebacks, alerts, events) == (1, 1, 1)  # closing raises nothing new
    assert rows == [(dispute["id"], "product_not_received", ours)]
    chargeback = session.exec(select(Chargeback)).one()
    assert chargeback.closed_at is not None
    # A late "updated" (delivered out of order) does not reopen a closed dispute.
    late = post_event(
        client, peer.event("charge.dispute.updated", {**dispute, "status": "needs_response"})
    )
    assert late.json()["outcome"] == "chargeback-unchanged"
    assert _state(session)[3] == [(dispute["id"], "product_not_received", ours)]


def test_closed_event_first_records_the_dispute(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer
) -> None:
    _, intent = _paid(client, app, peer)
    dispute = _dispute(peer, intent, status="lost")
    r = post_event(client, peer.event("charge.dispute.closed", dispute))
    assert r.json()["outcome"] == "chargeback-recorded"
    chargebacks, alerts, events, rows = _state(session)
    assert (chargebacks, alerts, events) == (1, 1, 1)
    assert rows == [(dispute["id"], "fraudulent", "lost")]


def test_dispute_found_by_charge_alone(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer
) -> None:
    order_id, intent = _paid(client, app, peer)
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    # Older Stripe integrations: the dispute names only the charge, stored as the reference.
    payment.provider_ref = peer.charge_of(intent["id"])["id"]
    session.add(payment)
    session.commit()
    dispute = {**_dispute(peer, intent), "payment_intent": None}
    r = post_event(client, peer.event("charge.dispute.created", dispute))
    assert r.json()["outcome"] == "chargeback-recorded"
    assert session.exec(select(Chargeback)).one().order_id == order_id


def test_unknown_payment_is_acknowledged_and_ignored(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer
) -> None:
    _, intent = _paid(client, app, peer)
    stranger = {
        **_dispute(peer, intent),
        "payment_intent": "pi_not_ours",
        "charge": "ch_not_ours",
    }
    event = peer.event("charge.dispute.created", stranger)
    r = post_event(client, event)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "unknown-order"
    assert _state(session) == (0, 0, 0, [])
    # Recorded as processed, so Stripe's retries are no-ops.
    assert count(session, WebhookEvent, WebhookEvent.id == event["id"]) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"id": None},
        {"amount": "2500"},
        {"amount": -1},
        {"amount": True},
        {"currency": None},
        {"currency": "pounds"},
        {"payment_intent": None, "charge": None},
    ],
)
def test_malformed_dispute_is_a_400_problem(
    client: TestClient,
    app: FastAPI,
    session: Session,
    peer: StripePeer,
    change: dict[str, Any],
) -> None:
    _, intent = _paid(client, app, peer)
    event = peer.event("charge.dispute.created", {**_dispute(peer, intent), **change})
    body = assert_problem(post_event(client, event), 400)
    assert body["type"].endswith("invalid-webhook")
    assert _state(session) == (0, 0, 0, [])
    # Not recorded: a corrected delivery of the same event is still applied.
    assert count(session, WebhookEvent, WebhookEvent.id == event["id"]) == 0
