"""Refunds, manual payments and payment listings, on SQLite and PostgreSQL.

Stripe refunds go through the real ``stripe`` library to ``tests/stripe_peer.py``, a local
stand-in for api.stripe.com; orders are paid with webhooks signed and verified by the real
library. Manual-provider tests move no money anywhere, as in the embedded default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.inventory.models import StockLevel
from cartwise.commerce.orders.models import Order
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.commerce.payments import service
from cartwise.commerce.payments.models import Payment, Refund
from tests.conftest import Account, assert_problem
from tests.payments_support import count, fresh, place_order, post_event
from tests.stripe_peer import StripePeer


@pytest.fixture
def settings(stripe_settings: Any) -> Any:
    """The app's settings in this module: Stripe pointed at the local peer."""
    return stripe_settings


def _paid_stripe_order(client: TestClient, app: FastAPI, peer: StripePeer, **kw: Any) -> str:
    """An order paid through the peer and a signed webhook; returns its id."""
    order_id, _ = place_order(app.state.engine, **kw)
    with Session(app.state.engine) as s:
        order = s.get(Order, order_id)
        assert order is not None
        intent = service.start_payment(session=s, settings=app.state.settings, order=order)
    assert intent.provider_ref is not None
    r = post_event(
        client, peer.event("payment_intent.succeeded", peer.confirm(intent.provider_ref))
    )
    assert r.json()["outcome"] == "paid", r.text
    return order_id


def _intent_of(session: Session, order_id: str) -> str:
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    assert payment.provider_ref is not None
    return payment.provider_ref


def _events(session: Session, order_id: str, event_type: str) -> int:
    return count(
        session,
        OutboxEvent,
        OutboxEvent.aggregate_id == order_id,
        OutboxEvent.event_type == event_type,
    )


def test_partial_then_full_refund_through_peer(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer, staff: Account
) -> None:
    order_id = _paid_stripe_order(client, app, peer)  # total 25.00
    url = f"/api/v1/orders/{order_id}/refunds"
    headers = {**staff.headers, "Idempotency-Key": "refund-1"}
    first = client.post(url, json={"amount": "10.00", "reason": "chipped"}, headers=headers)
    assert first.status_code == 201, first.text
    again = client.post(url, json={"amount": "10.00", "reason": "chipped"}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    reused = client.post(url, json={"amount": "11.00"}, headers=headers)
    assert_problem(reused, 409)
    intent_id = _intent_of(session, order_id)
    assert [r["amount"] for r in peer.refunds_for(intent_id)] == [1000]
    order = fresh(session, Order, order_id)
    assert (order.status, order.refunded_amount) == ("paid", Decimal("10.00"))
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    assert (payment.status, payment.refunded_amount) == ("partially_refunded", Decimal("10.00"))
    assert _events(session, order_id, "order.partially_refunded") == 1

    over = client.post(url, json={"amount": "15.01"}, headers=staff.headers)
    assert assert_problem(over, 409)["remaining"] == "15.00"

    full = client.post(url, json={}, headers={**staff.headers, "Idempotency-Key": "refund-2"})
    assert full.status_code == 201, full.text
    assert Decimal(full.json()["amount"]) == Decimal("15.00")
    assert full.json()["provider_ref"].startswith("re_")
    assert [r["amount"] for r in peer.refunds_for(intent_id)] == [1000, 1500]
    order = fresh(session, Order, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", Decimal("25.00"))
    assert fresh(session, Payment, payment.id).status == "refunded"
    assert _events(session, order_id, "order.refunded") == 1
    assert _events(session, order_id, "order.partially_refunded") == 1
    assert_problem(client.post(url, json={"amount": "1.00"}, headers=staff.headers), 409)
    assert count(session, Refund, Refund.order_id == order_id) == 2


def test_concurrent_refunds_never_over_refund(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer, staff: Account
) -> None:
    order_id = _paid_stripe_order(client, app, peer)  # 25.00: two 10.00 refunds fit, not three
    barrier = threading.Barrier(3)
    statuses: list[int] = []

    def refund() -> None:
        barrier.wait(timeout=10)
        r = client.post(
            f"/api/v1/orders/{order_id}/refunds", json={"amount": "10.00"}, headers=staff.headers
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=refund) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [201, 201, 409]
    assert sum(r["amount"] for r in peer.refunds_for(_intent_of(session, order_id))) == 2000
    assert fresh(session, Order, order_id).refunded_amount == Decimal("20.00")


def test_unknown_outcome_is_held_and_settled_by_retry(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer, staff: Account
) -> None:
    order_id = _paid_stripe_order(client, app, peer)
    url = f"/api/v1/orders/{order_id}/refunds"
    headers = {**staff.headers, "Idempotency-Key": "flaky-1"}
    peer.lose_next_response("/v1/refunds")  # Stripe refunds, but the answer is lost
    lost = client.post(url, json={"amount": "5.00"}, headers=headers)
    assert assert_problem(lost, 502)["idempotency_key"] == "flaky-1"
    pending = session.exec(select(Refund).where(Refund.order_id == order_id)).one()
    assert pending.provider_ref is None
    assert fresh(session, Order, order_id).refunded_amount == 0
    # Stripe's charge.refunded webhook arrives meanwhile: already held, nothing is added.
    intent_id = _intent_of(session, order_id)
    r = post_event(client, peer.event("charge.refunded", peer.charge_of(intent_id)))
    assert r.json()["outcome"] == "in-sync"
    retry = client.post(url, json={"amount": "5.00"}, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["provider_ref"].startswith("re_")
    assert len(peer.refunds_for(intent_id)) == 1
    assert fresh(session, Order, order_id).refunded_amount == Decimal("5.00")


def test_provider_refusal_releases_the_hold(
    client: TestClient, app: FastAPI, session: Session, peer: StripePeer, staff: Account
) -> None:
    order_id = _paid_stripe_order(client, app, peer)
    intent_id = _intent_of(session, order_id)
    peer.refund_in_dashboard(intent_id, 2500)  # Cartwise has not heard of it yet
    refused = client.post(
        f"/api/v1/orders/{order_id}/refunds", json={"amount": "5.00"}, headers=staff.headers
    )
    assert assert_problem(refused, 409)["type"].endswith("payment-provider-error")
    assert count(session, Refund, Refund.order_id == order_id) == 0
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    assert payment.refunded_amount == 0
    # Then the dashboard refund's webhook syncs it.
    r = post_event(client, peer.event("charge.refunded", peer.charge_of(intent_id)))
    assert r.json()["outcome"] == "refund-synced"
    order = fresh(session, Order, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", Decimal("25.00"))


def test_refund_access_and_validation(
    client: TestClient, app: FastAPI, peer: StripePeer, staff: Account, customer: Account
) -> None:
    order_id = _paid_stripe_order(client, app, peer, user_id=customer.id)
    url = f"/api/v1/orders/{order_id}/refunds"
    assert_problem(client.post(url, json={"amount": "1.00"}, headers=customer.headers), 403)
    assert_problem(client.post(url, json={"amount": "1.00"}), 401)
    missing = "/api/v1/orders/0123456789abcdef0123456789abcdef/refunds"
    assert_problem(client.post(missing, json={"amount": "1.00"}, headers=staff.headers), 404)
    for amount in ("-1", "0", "1.001", "x", "1e40"):
        assert_problem(client.post(url, json={"amount": amount}, headers=staff.headers), 422)
    bad_key = {**staff.headers, "Idempotency-Key": "x" * 81}
    assert_problem(client.post(url, json={"amount": "1.00"}, headers=bad_key), 422)
    unpaid, _ = place_order(app.state.engine)
    r = client.post(f"/api/v1/orders/{unpaid}/refunds", json={}, headers=staff.headers)
    assert assert_problem(r, 409)["type"].endswith("not-refundable")


def test_payments_listing_owner_or_staff(
    client: TestClient, app: FastAPI, peer: StripePeer, staff: Account, make_user: Callable
) -> None:
    owner, stranger = make_user(), make_user()
    order_id = _paid_stripe_order(client, app, peer, user_id=owner.id)
    client.post(
        f"/api/v1/orders/{order_id}/refunds", json={"amount": "2.50"}, headers=staff.headers
    )
    url = f"/api/v1/orders/{order_id}/payments"
    for who in (owner, staff):
        r = client.get(url, headers=who.headers)
        assert r.status_code == 200, r.text
        [payment] = r.json()
        assert payment["status"] == "partially_refunded"
        assert [Decimal(x["amount"]) for x in payment["refunds"]] == [Decimal("2.50")]
    assert_problem(client.get(url, headers=stranger.headers), 404)
    assert_problem(client.get(url), 401)


def test_manual_provider_mark_paid_and_refund(
    client: TestClient, app: FastAPI, session: Session, staff: Account, customer: Account
) -> None:
    order_id, sku = place_order(app.state.engine, provider="manual", quantity=2, on_hand=6)
    url = f"/api/v1/orders/{order_id}/payments/manual"
    assert_problem(client.post(url, json={}, headers=customer.headers), 403)
    r = client.post(url, json={"reference": "bank transfer 42"}, headers=staff.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["provider"]) == ("succeeded", "manual")
    assert fresh(session, Order, order_id).status == "paid"
    assert fresh(session, StockLevel, sku).on_hand == 4
    assert_problem(client.post(url, json={}, headers=staff.headers), 409)
    refund = client.post(f"/api/v1/orders/{order_id}/refunds", headers=staff.headers)
    assert refund.status_code == 201, refund.text
    assert Decimal(refund.json()["amount"]) == Decimal("25.00")
    assert fresh(session, Order, order_id).status == "refunded"
    stripe_order, _ = place_order(app.state.engine, provider="stripe")
    r = client.post(f"/api/v1/orders/{stripe_order}/payments/manual", headers=staff.headers)
    assert assert_problem(r, 409)["type"].endswith("not-a-manual-order")


def test_manual_order_marked_paid_elsewhere_is_refundable(
    client: TestClient, app: FastAPI, session: Session, staff: Account
) -> None:
    """Staff may mark an order paid through the order transitions; refunds still work."""
    from cartwise.commerce.orders import service as orders
    from cartwise.commerce.orders.models import OrderStatus

    order_id, _ = place_order(app.state.engine, provider="manual")
    with Session(app.state.engine) as s:
        orders.transition(
            session=s, order_id=order_id, to_status=OrderStatus.paid, actor="staff", actor_id=1
        )
    r = client.post(
        f"/api/v1/orders/{order_id}/refunds", json={"amount": "5.00"}, headers=staff.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["provider_ref"].startswith("manual-refund-")
    assert fresh(session, Order, order_id).refunded_amount == Decimal("5.00")
