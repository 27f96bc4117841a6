"""Fraud in checkout: the RiskScorer port, block / review / allow, fallback, staff review."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col, select

# Registers the alert table in the metadata the fixtures create (until tables.py imports it).
from cartwise.commerce.alerts import models as _alert_models  # noqa: F401
from cartwise.commerce.alerts.models import Alert
from cartwise.commerce.carts.models import Cart
from cartwise.commerce.inventory.models import StockReservation
from cartwise.commerce.orders.models import Order, OrderStatus, RiskDecision
from cartwise.commerce.orders.risk import (
    FALLBACK_REVIEW_AMOUNT,
    FALLBACK_VELOCITY,
    RiskAssessment,
    RiskRequest,
    assess_safely,
    fallback_assessment,
)
from cartwise.commerce.orders.service import expire_pending_orders
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.commerce.payments.models import Payment
from cartwise.platform.types import utcnow
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    checkout_body,
    guest_cart,
    make_variant,
    order_count,
    stock_of,
    user_cart,
)

REASONS = [
    {"feature": "amount_vs_avg", "contribution": 1.7, "text": "amount far above usual"},
    {"feature": "is_new_country", "contribution": 0.9},
]


class FixedScorer:
    """A RiskScorer port double: answers the decision it is told to, and records requests."""

    def __init__(
        self, decision: str = "allow", risk: float = 0.1, version: str | None = "7"
    ) -> None:
        self.decision = RiskDecision(decision)
        self.risk = risk
        self.version = version
        self.calls: list[RiskRequest] = []

    def assess(self, request: RiskRequest) -> RiskAssessment:
        self.calls.append(request)
        return RiskAssessment(
            risk=self.risk,
            decision=self.decision,
            model_version=self.version,
            reasons=list(REASONS),
        )


class BrokenScorer:
    """A scorer whose model is down."""

    def assess(self, request: RiskRequest) -> RiskAssessment:
        raise RuntimeError("model unavailable")


class StuckScorer:
    """A scorer that hangs until released (then would allow everything, unscored)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def assess(self, request: RiskRequest) -> RiskAssessment:
        self.release.wait(10)
        return RiskAssessment(risk=0.0, decision=RiskDecision.allow, model_version="9", reasons=[])


class LoopScorer:
    """A scorer like the serving adapter: it hops back onto the app's event loop to await."""

    def __init__(self) -> None:
        self.loop_threads: list[int] = []

    async def _score(self, request: RiskRequest) -> RiskAssessment:
        self.loop_threads.append(threading.get_ident())
        await anyio.lowlevel.checkpoint()
        return RiskAssessment(
            risk=0.2, decision=RiskDecision.allow, model_version="loop", reasons=[]
        )

    def assess(self, request: RiskRequest) -> RiskAssessment:
        assert threading.get_ident() not in self.loop_threads
        return anyio.from_thread.run(self._score, request)


def _request(amount: str = "20.00", velocity: int = 0) -> RiskRequest:
    return RiskRequest(
        order_id="o1",
        customer_id=5,
        email="a@example.com",
        order_amount=Decimal(amount),
        currency="GBP",
        shipping_country="GB",
        orders_last_hour=velocity,
        request_epoch=1_700_000_000,
    )


def _shop(client: TestClient, session: Session, shopper: Account, price: str = "12.50") -> Any:
    variant = make_variant(session, price=price, stock=10)
    cart_id = user_cart(client, shopper.headers)
    add_item(client, cart_id, shopper.headers, variant.sku, 2)
    return variant, cart_id


def _checkout(client: TestClient, shopper: Account, cart_id: str, key: str | None = None) -> Any:
    headers = dict(shopper.headers)
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)


def _order(session: Session, order_id: str) -> Order:
    session.expire_all()
    order = session.get(Order, order_id)
    assert order is not None
    return order


def _events(session: Session, order_id: str) -> list[OutboxEvent]:
    session.expire_all()
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.aggregate_id == order_id)
        .order_by(col(OutboxEvent.id))
    )
    return list(session.exec(stmt))


def _alerts(session: Session) -> list[Alert]:
    session.expire_all()
    return list(session.exec(select(Alert).order_by(col(Alert.id))))


def _review_order(
    client: TestClient, app: FastAPI, session: Session, shopper: Account
) -> tuple[str, str]:
    """An order held for review; returns (order id, sku)."""
    variant, cart_id = _shop(client, session, shopper)
    app.state.risk_scorer = FixedScorer("review", risk=0.83)
    r = _checkout(client, shopper, cart_id)
    assert r.status_code == 201, r.text
    assert r.json()["order"]["status"] == "review"
    return r.json()["order"]["id"], variant.sku


# --- the port, without HTTP ---------------------------------------------------------------


def test_fallback_rule_reviews_big_or_rapid_orders() -> None:
    small = fallback_assessment(_request("20.00"))
    assert (small.decision, small.fallback, small.model_version) == ("allow", True, None)
    assert small.risk < 0.5
    big = fallback_assessment(_request(str(FALLBACK_REVIEW_AMOUNT)), reason="timeout")
    assert (big.decision, big.fallback, big.reason) == ("review", True, "timeout")
    assert big.risk == 0.5
    assert [r["feature"] for r in big.reasons] == ["order_amount", "model"]
    assert big.reasons[-1]["text"] == "fraud model not used: timeout"
    rapid = fallback_assessment(_request("20.00", velocity=FALLBACK_VELOCITY))
    assert rapid.decision == "review"
    assert [r["feature"] for r in rapid.reasons] == ["orders_last_hour"]
    assert fallback_assessment(_request("20.00", velocity=FALLBACK_VELOCITY - 1)).decision == (
        "allow"
    )


def test_request_payload_is_json_ready() -> None:
    payload = _request("612.40", velocity=2).to_payload()
    assert payload == {
        "order_id": "o1",
        "customer_id": 5,
        "email": "a@example.com",
        "order_amount": 612.4,
        "currency": "GBP",
        "shipping_country": "GB",
        "orders_last_hour": 2,
        "request_epoch": 1_700_000_000,
    }


def test_assess_safely_outside_an_event_loop() -> None:
    good = assess_safely(FixedScorer("review", risk=0.7), _request())
    assert (good.decision, good.risk, good.fallback, good.model_version) == (
        "review",
        0.7,
        False,
        "7",
    )
    broken = assess_safely(BrokenScorer(), _request("900.00"))
    assert (broken.decision, broken.fallback, broken.reason) == (
        "review",
        True,
        "error: RuntimeError",
    )
    # Nonsense (a risk outside [0, 1]) is not trusted either.
    silly = assess_safely(FixedScorer("allow", risk=1.5), _request())
    assert (silly.fallback, silly.reason) == (True, "invalid assessment")
    stuck = StuckScorer()
    try:
        late = assess_safely(stuck, _request(), deadline_s=0.2)
    finally:
        stuck.release.set()
    assert (late.decision, late.fallback, late.reason) == ("allow", True, "timeout")


# --- checkout over HTTP -------------------------------------------------------------------


def test_without_a_scorer_nothing_is_scored(
    client: TestClient, session: Session, customer: Account, staff: Account
) -> None:
    _, cart_id = _shop(client, session, customer)
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    order = _order(session, r.json()["order"]["id"])
    assert (order.risk_score, order.risk_decision, order.risk_reasons) == (None, None, None)
    assert order.risk_fallback is False
    staff_view = client.get(f"/api/v1/orders/{order.id}", headers=staff.headers).json()
    assert staff_view["risk"] is None
    assert _alerts(session) == []


def test_allow_stores_the_risk_and_only_staff_see_it(
    client: TestClient, app: FastAPI, session: Session, customer: Account, staff: Account
) -> None:
    scorer = FixedScorer("allow", risk=0.12, version="7")
    app.state.risk_scorer = scorer
    variant, cart_id = _shop(client, session, customer)
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["order"]["status"], body["under_review"]) == ("pending_payment", False)
    assert body["order"]["risk"] is None  # the shopper never sees the score
    order_id = body["order"]["id"]

    order = _order(session, order_id)
    assert order.risk_score == pytest.approx(0.12)
    assert (order.risk_decision, order.risk_model_version, order.risk_fallback) == (
        "allow",
        "7",
        False,
    )
    assert order.risk_reasons == REASONS
    # The scorer saw this very order, with its total, before it existed.
    [request] = scorer.calls
    assert request.order_id == order_id
    assert request.order_amount == order.total
    assert (request.customer_id, request.shipping_country, request.orders_last_hour) == (
        customer.id,
        "GB",
        0,
    )
    assert abs(request.request_epoch - time.time()) < 60
    assert stock_of(session, variant.sku) == (10, 2)
    assert len(session.exec(select(Payment).where(Payment.order_id == order_id)).all()) == 1

    mine = client.get(f"/api/v1/orders/{order_id}", headers=customer.headers).json()
    assert mine["risk"] is None
    assert "risk_score" not in mine
    listed = client.get("/api/v1/orders", headers=customer.headers).json()["items"]
    assert [o["risk"] for o in listed] == [None]

    seen = client.get(f"/api/v1/orders/{order_id}", headers=staff.headers).json()["risk"]
    assert seen == {
        "score": pytest.approx(0.12),
        "decision": "allow",
        "model_version": "7",
        "reasons": REASONS,
        "fallback": False,
    }
    everyone = client.get("/api/v1/orders", headers=staff.headers).json()["items"]
    assert [o["risk"]["decision"] for o in everyone] == ["allow"]
    assert _alerts(session) == []


def test_review_holds_the_order_raises_an_alert_and_keeps_the_stock(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    variant, cart_id = _shop(client, session, customer)
    app.state.risk_scorer = FixedScorer("review", risk=0.83, version="4")
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["order"]["status"], body["under_review"], body["client_secret"]) == (
        "review",
        True,
        None,
    )
    order_id = body["order"]["id"]
    assert [
        (t["from_status"], t["to_status"], t["reason"]) for t in body["order"]["transitions"]
    ] == [
        (None, "pending_payment", "checkout"),
        ("pending_payment", "review", "fraud review: risk 0.83"),
    ]
    # No payment is started while the order waits for staff.
    assert session.exec(select(Payment).where(Payment.order_id == order_id)).all() == []
    assert stock_of(session, variant.sku) == (10, 2)

    [alert] = _alerts(session)
    assert (alert.kind, alert.severity, alert.status, alert.order_id) == (
        "fraud.review",
        "high",
        "open",
        order_id,
    )
    assert alert.detail["risk"] == pytest.approx(0.83)
    assert alert.detail["reasons"] == REASONS
    events = _events(session, order_id)
    assert [e.event_type for e in events] == ["order.created", "fraud.review_required"]
    review_event = events[1].payload
    assert (review_event["order_id"], review_event["alert_id"]) == (order_id, alert.id)
    assert review_event["risk"] == pytest.approx(0.83)
    assert review_event["reasons"] == REASONS

    # Expiry does not cancel an order in review, even with its reservation past due.
    session.execute(
        update(StockReservation)
        .where(col(StockReservation.order_id) == order_id)
        .values(expires_at=utcnow() - timedelta(minutes=5))
    )
    session.commit()
    assert expire_pending_orders(session=session) == 0
    assert _order(session, order_id).status == OrderStatus.review
    assert stock_of(session, variant.sku) == (10, 2)


def test_a_review_reservation_outlives_the_payment_window(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    order_id, _ = _review_order(client, app, session, customer)
    session.expire_all()
    reservation = session.exec(
        select(StockReservation).where(StockReservation.order_id == order_id)
    ).one()
    window = timedelta(minutes=app.state.settings.reservation_minutes)
    assert reservation.expires_at - reservation.created_at > 100 * window


def test_block_writes_nothing_but_an_alert(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    variant, cart_id = _shop(client, session, customer)
    app.state.risk_scorer = FixedScorer("block", risk=0.97)
    r = _checkout(client, customer, cart_id)
    body = assert_problem(r, 403)
    assert body["type"].endswith("/order-blocked")
    assert body["title"] == "Order blocked"
    for reason in REASONS:  # the model's reasons are not leaked to the shopper
        assert str(reason["feature"]) not in r.text
    assert "0.97" not in r.text

    assert order_count(session) == 0
    assert stock_of(session, variant.sku) == (10, 0)
    assert session.exec(select(StockReservation)).all() == []
    assert session.exec(select(OutboxEvent)).all() == []
    cart = session.get(Cart, cart_id, populate_existing=True)
    assert cart is not None
    assert cart.status == "active"
    [alert] = _alerts(session)
    assert (alert.kind, alert.order_id, alert.status) == ("fraud.blocked", None, "open")
    assert alert.detail["cart_id"] == cart_id
    assert alert.detail["risk"] == pytest.approx(0.97)
    assert (alert.detail["customer_id"], alert.detail["currency"]) == (customer.id, "GBP")
    assert alert.detail["total"] == "35.94"  # 2 x 12.50 + 4.95 shipping, 20% tax

    # The same cart checks out once the scorer allows it.
    app.state.risk_scorer = FixedScorer("allow")
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    assert r.json()["order"]["id"] != alert.detail["attempted_order_id"]
    assert stock_of(session, variant.sku) == (10, 2)


def test_a_broken_scorer_falls_back_to_the_rule(
    client: TestClient, app: FastAPI, session: Session, customer: Account, make_user: Any
) -> None:
    app.state.risk_scorer = BrokenScorer()
    _, cart_id = _shop(client, session, customer, price="300.00")  # 600 before shipping and tax
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    big = _order(session, r.json()["order"]["id"])
    assert (big.status, big.risk_decision, big.risk_fallback, big.risk_model_version) == (
        "review",
        "review",
        True,
        None,
    )
    assert big.risk_reasons is not None
    assert big.risk_reasons[0]["feature"] == "order_amount"
    assert [a.kind for a in _alerts(session)] == ["fraud.review"]

    shopper = make_user()
    _, small_cart = _shop(client, session, shopper)
    r = _checkout(client, shopper, small_cart)
    assert r.status_code == 201, r.text
    small = _order(session, r.json()["order"]["id"])
    assert (small.status, small.risk_decision, small.risk_fallback) == (
        "pending_payment",
        "allow",
        True,
    )


def test_a_stuck_scorer_misses_its_deadline_and_the_rule_decides(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    stuck = StuckScorer()
    app.state.risk_scorer = stuck
    _, cart_id = _shop(client, session, customer, price="300.00")
    try:
        r = _checkout(client, customer, cart_id)
    finally:
        stuck.release.set()
    assert r.status_code == 201, r.text
    order = _order(session, r.json()["order"]["id"])
    # Had checkout waited for the scorer, model "9" would have allowed it: the rule decided.
    assert (order.status, order.risk_fallback, order.risk_model_version) == ("review", True, None)


def test_a_scorer_can_await_on_the_apps_event_loop(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    scorer = LoopScorer()
    app.state.risk_scorer = scorer
    _, cart_id = _shop(client, session, customer)
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    order = _order(session, r.json()["order"]["id"])
    assert (order.risk_model_version, order.risk_fallback) == ("loop", False)
    assert len(scorer.loop_threads) == 1


def test_velocity_reaches_the_scorer_and_the_rule(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    for _ in range(FALLBACK_VELOCITY):
        _, cart_id = _shop(client, session, customer)
        assert _checkout(client, customer, cart_id).status_code == 201
    scorer = FixedScorer("allow")
    app.state.risk_scorer = scorer
    _, cart_id = _shop(client, session, customer)
    assert _checkout(client, customer, cart_id).status_code == 201
    assert scorer.calls[-1].orders_last_hour == FALLBACK_VELOCITY

    app.state.risk_scorer = BrokenScorer()
    _, cart_id = _shop(client, session, customer)
    r = _checkout(client, customer, cart_id)
    assert r.status_code == 201, r.text
    order = _order(session, r.json()["order"]["id"])
    assert (order.status, order.risk_fallback) == ("review", True)
    assert order.risk_reasons is not None
    assert order.risk_reasons[0]["feature"] == "orders_last_hour"


def test_guest_velocity_counts_by_email(client: TestClient, app: FastAPI, session: Session) -> None:
    variant = make_variant(session, stock=50)
    scorer = FixedScorer("allow")
    app.state.risk_scorer = scorer
    for expected in range(3):
        cart_id, headers = guest_cart(client)
        add_item(client, cart_id, headers, variant.sku, 1)
        r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
        assert r.status_code == 201, r.text
        assert (scorer.calls[-1].customer_id, scorer.calls[-1].orders_last_hour) == (
            None,
            expected,
        )


def test_an_idempotent_retry_neither_rescores_nor_raises_a_second_alert(
    client: TestClient, app: FastAPI, session: Session, customer: Account
) -> None:
    _, cart_id = _shop(client, session, customer)
    scorer = FixedScorer("review", risk=0.8)
    app.state.risk_scorer = scorer
    first = _checkout(client, customer, cart_id, key="retry-me")
    assert first.status_code == 201, first.text
    again = _checkout(client, customer, cart_id, key="retry-me")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["order"]["id"] == first.json()["order"]["id"]
    assert (again.json()["under_review"], again.json()["client_secret"]) == (True, None)
    assert len(scorer.calls) == 1
    assert order_count(session) == 1
    assert [a.kind for a in _alerts(session)] == ["fraud.review"]
    kinds = [e.event_type for e in _events(session, first.json()["order"]["id"])]
    assert kinds.count("fraud.review_required") == 1


# --- staff review ---------------------------------------------------------------------------


def test_staff_approve_starts_payment_and_resolves_the_alert(
    client: TestClient, app: FastAPI, session: Session, customer: Account, staff: Account
) -> None:
    order_id, sku = _review_order(client, app, session, customer)
    r = client.post(
        f"/api/v1/orders/{order_id}/review",
        json={"decision": "approve", "note": "called the customer"},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "pending_payment"
    assert body["risk"]["decision"] == "review"
    last = body["transitions"][-1]
    assert (last["from_status"], last["to_status"], last["actor_id"]) == (
        "review",
        "pending_payment",
        staff.id,
    )
    assert last["reason"] == "fraud review approved: called the customer"
    payments = session.exec(select(Payment).where(Payment.order_id == order_id)).all()
    assert [(p.status, p.amount) for p in payments] == [
        ("pending", _order(session, order_id).total)
    ]
    [alert] = _alerts(session)
    assert (alert.status, alert.resolved_by) == ("resolved", staff.id)
    assert alert.resolved_at is not None
    events = [e.event_type for e in _events(session, order_id)]
    assert events[-1] == "order.review_approved"
    approved = _events(session, order_id)[-1].payload
    assert approved["alert_ids"] == [alert.id]
    # The payment window starts now, like any new order's.
    reservation = session.exec(
        select(StockReservation).where(StockReservation.order_id == order_id)
    ).one()
    window = timedelta(minutes=app.state.settings.reservation_minutes)
    assert reservation.expires_at <= utcnow() + window
    assert stock_of(session, sku) == (10, 2)

    # Staff can then take the (manual) payment: the stock is sold.
    r = client.post(
        f"/api/v1/orders/{order_id}/transitions", json={"to_status": "paid"}, headers=staff.headers
    )
    assert r.status_code == 200, r.text
    assert stock_of(session, sku) == (8, 0)
    # A second decision finds nothing to decide.
    again = client.post(
        f"/api/v1/orders/{order_id}/review", json={"decision": "reject"}, headers=staff.headers
    )
    assert assert_problem(again, 409)["type"].endswith("/not-in-review")


def test_staff_reject_cancels_and_returns_the_stock(
    client: TestClient, app: FastAPI, session: Session, customer: Account, staff: Account
) -> None:
    order_id, sku = _review_order(client, app, session, customer)
    r = client.post(
        f"/api/v1/orders/{order_id}/review", json={"decision": "reject"}, headers=staff.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert stock_of(session, sku) == (10, 0)
    assert session.exec(select(Payment).where(Payment.order_id == order_id)).all() == []
    [alert] = _alerts(session)
    assert alert.status == "resolved"
    events = [e.event_type for e in _events(session, order_id)]
    assert events[-2:] == ["order.cancelled", "order.review_rejected"]
    mine = client.get(f"/api/v1/orders/{order_id}", headers=customer.headers).json()
    assert (mine["status"], mine["risk"]) == ("cancelled", None)


def test_a_customer_cancelling_a_held_order_closes_its_alert(
    client: TestClient, app: FastAPI, session: Session, customer: Account, staff: Account
) -> None:
    order_id, sku = _review_order(client, app, session, customer)
    r = client.post(f"/api/v1/orders/{order_id}/cancel", headers=customer.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["risk"]) == ("cancelled", None)
    assert stock_of(session, sku) == (10, 0)
    [alert] = _alerts(session)
    assert (alert.status, alert.resolved_by) == ("resolved", customer.id)
    late = client.post(
        f"/api/v1/orders/{order_id}/review", json={"decision": "approve"}, headers=staff.headers
    )
    assert_problem(late, 409)


def test_review_errors_and_access(
    client: TestClient, app: FastAPI, session: Session, customer: Account, staff: Account
) -> None:
    order_id, _ = _review_order(client, app, session, customer)
    url = f"/api/v1/orders/{order_id}/review"
    assert_problem(client.post(url, json={"decision": "approve"}, headers=customer.headers), 403)
    assert_problem(client.post(url, json={"decision": "approve"}), 401)
    assert_problem(
        client.post(
            "/api/v1/orders/nosuchorder/review", json={"decision": "approve"}, headers=staff.headers
        ),
        404,
    )
    assert_problem(client.post(url, json={"decision": "maybe"}, headers=staff.headers), 422)
    assert_problem(
        client.post(url, json={"decision": "reject", "note": "x" * 301}, headers=staff.headers),
        422,
    )
    assert _order(session, order_id).status == OrderStatus.review
    # An order that never went to review cannot be "approved".
    app.state.risk_scorer = FixedScorer("allow")
    _, cart_id = _shop(client, session, customer)
    allowed = _checkout(client, customer, cart_id).json()["order"]["id"]
    r = client.post(
        f"/api/v1/orders/{allowed}/review", json={"decision": "approve"}, headers=staff.headers
    )
    assert assert_problem(r, 409)["current"] == "pending_payment"


def _hold_row_lock(db_url: str, order_id: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://", 1))
    conn.execute('SELECT id FROM "order" WHERE id = %s FOR UPDATE', (order_id,))
    return conn


def _lock_waiters(db_url: str) -> int:
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_two_concurrent_decisions_one_wins(
    client: TestClient,
    app: FastAPI,
    session: Session,
    customer: Account,
    staff: Account,
    db_url: str,
) -> None:
    order_id, _ = _review_order(client, app, session, customer)
    session.rollback()
    url = f"/api/v1/orders/{order_id}/review"

    def decide(decision: str) -> Any:
        return client.post(url, json={"decision": decision}, headers=staff.headers)

    if db_url.startswith("postgresql"):
        # Hold the order's row lock so both requests queue on it, then let them race.
        holder = _hold_row_lock(db_url, order_id)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(decide, "approve"), pool.submit(decide, "approve")]
                deadline = time.monotonic() + 20
                while _lock_waiters(db_url) < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert _lock_waiters(db_url) == 2
                holder.rollback()
                responses = [f.result(timeout=30) for f in futures]
        finally:
            holder.close()
    else:
        barrier = threading.Barrier(2, timeout=10)

        def race(decision: str) -> Any:
            barrier.wait()
            return decide(decision)

        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(race, ["approve", "reject"]))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["type"].endswith("/not-in-review")
    kinds = [e.event_type for e in _events(session, order_id)]
    assert len([k for k in kinds if k.startswith("order.review_")]) == 1
    assert len(session.exec(select(Payment).where(Payment.order_id == order_id)).all()) <= 1
