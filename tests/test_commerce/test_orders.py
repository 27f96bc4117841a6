"""Orders: listing, reading, cancellation, the staff state machine, its outbox and expiry."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from cartwise.commerce.inventory.models import MovementReason, StockMovement, StockReservation
from cartwise.commerce.orders.models import OrderTransition
from cartwise.commerce.orders.service import expire_pending_orders
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.commerce.payments.models import Payment
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    expire_reservations,
    make_variant,
    place_order,
    stock_of,
)


def _order_for(client: TestClient, account: Account, sku: str, quantity: int = 1) -> str:
    return place_order(client, account.headers, sku, quantity)


def _events(session: Session, order_id: str) -> list[str]:
    session.expire_all()
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.aggregate_id == order_id)
        .order_by(col(OutboxEvent.id))
    )
    return [e.event_type for e in session.exec(stmt)]


def _move(client: TestClient, staff: Account, order_id: str, to: str, reason: str = "") -> object:
    return client.post(
        f"/api/v1/orders/{order_id}/transitions",
        json={"to_status": to, "reason": reason},
        headers=staff.headers,
    )


def test_listing_is_own_for_customers_and_all_for_staff(
    client: TestClient, session: Session, make_user, staff: Account
) -> None:
    variant = make_variant(session, stock=50)
    a, b = make_user(), make_user()
    a_orders = [_order_for(client, a, variant.sku) for _ in range(3)]
    b_order = _order_for(client, b, variant.sku)

    page = client.get("/api/v1/orders?page_size=2", headers=a.headers).json()
    assert page["total"] == 3
    assert page["page_size"] == 2
    assert len(page["items"]) == 2
    second = client.get("/api/v1/orders?page=2&page_size=2", headers=a.headers).json()
    seen = {o["id"] for o in page["items"]} | {o["id"] for o in second["items"]}
    assert seen == set(a_orders)
    assert page["items"][0]["lines"][0]["sku"] == variant.sku

    everyone = client.get("/api/v1/orders", headers=staff.headers).json()
    assert everyone["total"] == 4
    assert_problem(client.get("/api/v1/orders?scope=all", headers=a.headers), 403)
    assert client.get("/api/v1/orders?scope=mine", headers=staff.headers).json()["total"] == 0

    assert _move(client, staff, b_order, "paid").status_code == 200  # type: ignore[attr-defined]
    paid = client.get("/api/v1/orders?status=paid", headers=staff.headers).json()
    assert [o["id"] for o in paid["items"]] == [b_order]
    assert client.get("/api/v1/orders?status=paid", headers=a.headers).json()["total"] == 0
    assert_problem(client.get("/api/v1/orders?status=bogus", headers=staff.headers), 422)
    assert_problem(client.get("/api/v1/orders?page=0", headers=a.headers), 422)
    assert_problem(client.get("/api/v1/orders?page_size=1000", headers=a.headers), 422)
    assert_problem(client.get("/api/v1/orders"), 401)


def test_read_order_owner_staff_and_others(
    client: TestClient, session: Session, make_user, staff: Account
) -> None:
    variant = make_variant(session)
    a, b = make_user(), make_user()
    order_id = _order_for(client, a, variant.sku)
    r = client.get(f"/api/v1/orders/{order_id}", headers=a.headers)
    assert r.status_code == 200
    assert r.json()["lines"][0]["quantity"] == 1
    assert client.get(f"/api/v1/orders/{order_id}", headers=staff.headers).status_code == 200
    assert_problem(client.get(f"/api/v1/orders/{order_id}", headers=b.headers), 404)
    assert_problem(client.get(f"/api/v1/orders/{order_id}"), 404)
    assert_problem(client.get("/api/v1/orders/" + "0" * 32, headers=a.headers), 404)


def test_customer_cancel_releases_reservation(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    order_id = _order_for(client, customer, variant.sku, 3)
    assert stock_of(session, variant.sku) == (10, 3)
    r = client.post(f"/api/v1/orders/{order_id}/cancel", headers=customer.headers)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["status"] == "cancelled"
    last = order["transitions"][-1]
    assert (last["from_status"], last["to_status"], last["actor"], last["actor_id"]) == (
        "pending_payment",
        "cancelled",
        "customer",
        customer.id,
    )
    assert last["created_at"]
    assert stock_of(session, variant.sku) == (10, 0)
    assert session.exec(select(StockReservation)).one().status == "released"
    assert _events(session, order_id) == ["order.created", "order.cancelled"]
    # Cancelling twice is an invalid move.
    assert_problem(client.post(f"/api/v1/orders/{order_id}/cancel", headers=customer.headers), 409)


def test_customer_cannot_cancel_paid_but_staff_can(
    client: TestClient, session: Session, customer: Account, staff: Account
) -> None:
    variant = make_variant(session, stock=10)
    order_id = _order_for(client, customer, variant.sku, 2)
    assert _move(client, staff, order_id, "paid").status_code == 200  # type: ignore[attr-defined]
    assert stock_of(session, variant.sku) == (8, 0)
    body = assert_problem(
        client.post(f"/api/v1/orders/{order_id}/cancel", headers=customer.headers), 409
    )
    assert "no longer be cancelled" in body["detail"]
    r = client.post(f"/api/v1/orders/{order_id}/cancel", headers=staff.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    # A paid order's units go back on hand.
    assert stock_of(session, variant.sku) == (10, 0)


def test_state_machine_records_every_move_with_outbox(
    client: TestClient, session: Session, customer: Account, staff: Account
) -> None:
    variant = make_variant(session, stock=5)
    order_id = _order_for(client, customer, variant.sku, 2)
    # Forbidden moves are 409 and change nothing.
    for bad in ("shipped", "delivered", "fulfilled", "refunded", "pending_payment"):
        body = assert_problem(_move(client, staff, order_id, bad), 409)
        assert body["type"].endswith("invalid-transition")
    assert _events(session, order_id) == ["order.created"]
    assert stock_of(session, variant.sku) == (5, 2)

    r = _move(client, staff, order_id, "paid", "bank transfer received")
    assert r.status_code == 200  # type: ignore[attr-defined]
    assert stock_of(session, variant.sku) == (3, 0)
    sales = session.exec(
        select(StockMovement).where(StockMovement.reason == MovementReason.sale)
    ).all()
    assert [(m.delta_on_hand, m.order_id) for m in sales] == [(-2, order_id)]
    # Marking a manual order paid records a succeeded payment (refunds need it).
    payment = session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    assert (payment.status, payment.amount) == ("succeeded", Decimal("35.94"))
    for to in ("fulfilled", "shipped", "delivered"):
        assert _move(client, staff, order_id, to).status_code == 200  # type: ignore[attr-defined]
    for bad in ("paid", "cancelled", "shipped"):
        assert_problem(_move(client, staff, order_id, bad), 409)
    assert_problem(_move(client, staff, order_id, "teleported"), 422)
    assert_problem(_move(client, staff, "0" * 32, "paid"), 404)

    order = client.get(f"/api/v1/orders/{order_id}", headers=customer.headers).json()
    assert order["status"] == "delivered"
    moves = [(t["from_status"], t["to_status"], t["actor"]) for t in order["transitions"]]
    assert moves == [
        (None, "pending_payment", "customer"),
        ("pending_payment", "paid", "staff"),
        ("paid", "fulfilled", "staff"),
        ("fulfilled", "shipped", "staff"),
        ("shipped", "delivered", "staff"),
    ]
    stored = session.exec(
        select(OrderTransition)
        .where(OrderTransition.order_id == order_id)
        .order_by(col(OrderTransition.id))
    ).all()
    assert all(t.created_at is not None for t in stored)
    assert [t.actor_id for t in stored[1:]] == [staff.id] * 4
    assert stored[1].reason == "bank transfer received"
    assert _events(session, order_id) == [
        "order.created",
        "order.paid",
        "order.fulfilled",
        "order.shipped",
        "order.delivered",
    ]


def test_transitions_are_staff_only(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    order_id = _order_for(client, customer, variant.sku)
    assert_problem(_move(client, customer, order_id, "paid"), 403)
    assert_problem(
        client.post(f"/api/v1/orders/{order_id}/transitions", json={"to_status": "paid"}), 401
    )
    assert stock_of(session, variant.sku) == (10, 1)


def test_expired_reservations_cancel_pending_orders(
    client: TestClient, session: Session, customer: Account, staff: Account
) -> None:
    variant = make_variant(session, stock=10)
    stale = _order_for(client, customer, variant.sku, 2)
    fresh = _order_for(client, customer, variant.sku, 3)
    assert stock_of(session, variant.sku) == (10, 5)
    expire_reservations(session, stale)
    assert expire_pending_orders(session=session) == 1
    assert stock_of(session, variant.sku) == (10, 3)
    mine = {
        o["id"]: o["status"]
        for o in client.get("/api/v1/orders", headers=customer.headers).json()["items"]
    }
    assert mine == {stale: "cancelled", fresh: "pending_payment"}
    last = client.get(f"/api/v1/orders/{stale}", headers=customer.headers).json()["transitions"][-1]
    assert (last["actor"], last["reason"]) == ("system", "reservation expired")
    assert _events(session, stale) == ["order.created", "order.cancelled"]
    # Running it again finds nothing more to do.
    assert expire_pending_orders(session=session) == 0
