"""Order reads and the state machine: every transition recorded, with its side effects."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from cartwise.commerce.alerts import service as alerts
from cartwise.commerce.alerts.models import FRAUD_REVIEW
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import MovementReason, ReservationStatus, StockReservation
from cartwise.commerce.orders.models import (
    Order,
    OrderLine,
    OrderLinePublic,
    OrderPublic,
    OrderRisk,
    OrderStatus,
    OrderTransition,
    ReviewDecision,
    TransitionPublic,
    can_transition,
)
from cartwise.commerce.outbox.models import emit
from cartwise.platform.auth import Principal
from cartwise.platform.errors import Conflict, NotFound
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

# How long an order held for fraud review keeps its stock reserved. Expiry skips orders in
# review anyway (staff decide, not the clock); this bounds the hold if one is forgotten and
# moved out of review by other means. Approval restarts the normal payment window.
REVIEW_HOLD = timedelta(days=7)

# Transitions that announce themselves to outbox consumers (mails, webhooks, pipelines).
OUTBOX_EVENTS = {
    OrderStatus.paid: "order.paid",
    OrderStatus.shipped: "order.shipped",
    OrderStatus.delivered: "order.delivered",
    OrderStatus.cancelled: "order.cancelled",
    OrderStatus.refunded: "order.refunded",
    OrderStatus.review: "order.review",
    OrderStatus.fulfilled: "order.fulfilled",
}


class InvalidTransition(Conflict):
    """The state machine does not allow this move."""

    slug = "invalid-transition"
    title = "Invalid order transition"


class NotInReview(Conflict):
    """The order is not (or no longer) waiting for a review decision."""

    slug = "not-in-review"
    title = "Order not in review"


def get_order_for(
    *, session: Session, order_id: str, principal: Principal | None, cart_id: str | None = None
) -> Order:
    """An order the caller may see: staff see all, customers their own; otherwise 404."""
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound("Order not found.")
    if principal is not None and principal.is_staff:
        return order
    if principal is not None and order.user_id == principal.subject:
        return order
    if principal is None and order.user_id is None and cart_id and order.cart_id == cart_id:
        return order
    raise NotFound("Order not found.")


def order_risk(order: Order) -> OrderRisk | None:
    """The staff view of the order's fraud check; None when it was not scored."""
    if order.risk_decision is None and order.risk_score is None:
        return None
    return OrderRisk(
        score=order.risk_score,
        decision=order.risk_decision,
        model_version=order.risk_model_version,
        reasons=list(order.risk_reasons or []),
        fallback=bool(order.risk_fallback),
    )


def order_public(
    session: Session, order: Order, *, with_transitions: bool = True, staff: bool = False
) -> OrderPublic:
    """The API view of an order, with its lines, (optionally) its history, and for staff its
    fraud check (customers never see risk details)."""
    lines = session.exec(
        select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.id))
    ).all()
    transitions: list[OrderTransition] = []
    if with_transitions:
        transitions = list(
            session.exec(
                select(OrderTransition)
                .where(OrderTransition.order_id == order.id)
                .order_by(col(OrderTransition.id))
            )
        )
    data = order.model_dump(warnings=False)  # statuses come back from the database as str
    data["lines"] = [OrderLinePublic.model_validate(line, from_attributes=True) for line in lines]
    data["transitions"] = [
        TransitionPublic.model_validate(t, from_attributes=True) for t in transitions
    ]
    data["risk"] = order_risk(order) if staff else None
    return OrderPublic.model_validate(data)


def record_transition(
    session: Session,
    order: Order,
    from_status: OrderStatus | None,
    to_status: OrderStatus,
    *,
    actor: str,
    actor_id: int | None,
    reason: str = "",
) -> None:
    """Append a transition row (caller commits)."""
    session.add(
        OrderTransition(
            order_id=order.id,
            from_status=from_status,
            to_status=to_status,
            actor=actor,
            actor_id=actor_id,
            reason=reason,
        )
    )


def transition(
    *,
    session: Session,
    order_id: str,
    to_status: OrderStatus,
    actor: str,
    actor_id: int | None = None,
    reason: str = "",
    commit: bool = True,
) -> Order:
    """Move an order along the state machine, atomically, with its stock side effects.

    The UPDATE is conditional on the current status, so two concurrent moves (a replayed
    webhook, a double click) cannot both apply.
    """
    order = session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise NotFound("Order not found.")
    current = OrderStatus(order.status)
    target = OrderStatus(to_status)
    if not can_transition(current, target):
        raise InvalidTransition(
            f"An order cannot move from {current} to {target}.",
            current=str(current),
            target=str(target),
        )
    now = utcnow()
    result = session.execute(
        update(Order)
        .where(col(Order.id) == order_id, col(Order.status) == current)
        .values(status=target, updated_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InvalidTransition("The order changed concurrently; reload and retry.")
    if target == OrderStatus.paid:
        inventory.commit_reservations(session=session, order_id=order_id)
    elif target == OrderStatus.cancelled:
        inventory.release_reservations(session=session, order_id=order_id)
        if current != OrderStatus.pending_payment and current != OrderStatus.review:
            _restock_lines(session, order_id)
    if current == OrderStatus.review:
        # However an order leaves review (staff decision, customer cancel, a manual move),
        # nobody needs to look at its fraud alert any more.
        alerts.resolve_for_order(
            session=session, order_id=order_id, actor_id=actor_id, kinds=(FRAUD_REVIEW,)
        )
    record_transition(
        session, order, current, target, actor=actor, actor_id=actor_id, reason=reason
    )
    event = OUTBOX_EVENTS.get(target)
    if event:
        emit(
            session,
            "order",
            order_id,
            event,
            {
                "order_id": order_id,
                "from": str(current),
                "to": str(target),
                "email": order.email,
                "total": str(order.total),
                "currency": order.currency,
                "reason": reason,
            },
        )
    if commit:
        session.commit()
    session.refresh(order)
    return order


def _restock_lines(session: Session, order_id: str) -> None:
    for line in session.exec(select(OrderLine).where(OrderLine.order_id == order_id)):
        inventory.restock(
            session=session,
            sku=line.sku,
            quantity=line.quantity,
            order_id=order_id,
            reason=MovementReason.refund,
        )


def _expired_order_ids(session: Session, limit: int) -> list[str]:
    """Orders holding expired reservations, except those in review (they wait for staff).

    Filtering in SQL rather than skipping afterwards keeps a backlog of reviews from filling
    every batch and starving the orders that should expire.
    """
    stmt = (
        select(StockReservation.order_id)
        .join(Order, col(Order.id) == col(StockReservation.order_id), isouter=True)
        .where(
            col(StockReservation.status) == ReservationStatus.active,
            col(StockReservation.expires_at) < utcnow(),
            or_(col(Order.status).is_(None), col(Order.status) != OrderStatus.review),
        )
        .distinct()
        .limit(limit)
    )
    return [str(x) for x in session.exec(stmt)]


def expire_pending_orders(*, session: Session, limit: int = 500) -> int:
    """Cancel unpaid orders whose reservations have expired; returns how many.

    Orders in review keep their reservations until staff approve or reject them.
    """
    count = 0
    for order_id in _expired_order_ids(session, limit):
        order = session.get(Order, order_id)
        if order is None:
            continue
        if order.status == OrderStatus.review:
            continue  # moved into review since the query ran
        if order.status == OrderStatus.pending_payment:
            try:
                transition(
                    session=session,
                    order_id=order_id,
                    to_status=OrderStatus.cancelled,
                    actor="system",
                    reason="reservation expired",
                )
            except Conflict:
                session.rollback()
                continue
            count += 1
        else:
            inventory.release_reservations(
                session=session, order_id=order_id, reason=MovementReason.expire
            )
            session.commit()
    return count


def decide_review(
    *,
    session: Session,
    settings: Settings,
    order_id: str,
    decision: ReviewDecision,
    actor: str,
    actor_id: int,
    note: str = "",
) -> Order:
    """Staff approve (→ pending_payment, payment started) or reject (→ cancelled, stock back)
    an order held for review; resolves its fraud alerts. 404 unknown, 409 not in review.
    Commits.

    The first statement is an UPDATE conditional on the status, so it takes the order's row
    lock (PostgreSQL) or the write lock (SQLite) before anything is read: of two concurrent
    decisions the second waits, then finds the order no longer in review (409).
    """
    claimed = session.execute(
        update(Order)
        .where(col(Order.id) == order_id, col(Order.status) == OrderStatus.review)
        .values(updated_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        existing = session.get(Order, order_id, populate_existing=True)
        if existing is None:
            raise NotFound("Order not found.")
        raise NotInReview(
            f"The order is {existing.status}, not in review.", current=str(existing.status)
        )
    approve = ReviewDecision(decision) == ReviewDecision.approve
    verdict = "approved" if approve else "rejected"
    reason = f"fraud review {verdict}" + (f": {note}" if note else "")
    alert_ids = alerts.resolve_for_order(
        session=session, order_id=order_id, actor_id=actor_id, kinds=(FRAUD_REVIEW,)
    )
    order = transition(
        session=session,
        order_id=order_id,
        to_status=OrderStatus.pending_payment if approve else OrderStatus.cancelled,
        actor=actor,
        actor_id=actor_id,
        reason=reason[:300],
        commit=False,
    )
    if approve:
        # The customer gets the normal payment window from now, not from checkout.
        session.execute(
            update(StockReservation)
            .where(
                col(StockReservation.order_id) == order_id,
                col(StockReservation.status) == ReservationStatus.active,
            )
            .values(expires_at=utcnow() + timedelta(minutes=settings.reservation_minutes))
        )
    emit(
        session,
        "order",
        order_id,
        f"order.review_{verdict}",
        {
            "order_id": order_id,
            "decision": str(decision),
            "note": note,
            "actor_id": actor_id,
            "alert_ids": alert_ids,
            "email": order.email,
            "total": str(order.total),
            "currency": order.currency,
        },
    )
    session.commit()
    session.refresh(order)
    if approve:
        _start_payment(session, settings, order)
    return order


def _start_payment(session: Session, settings: Settings, order: Order) -> None:
    """Start collecting an approved order, as checkout does for one it allows."""
    from cartwise.commerce.payments.port import PaymentProviderError
    from cartwise.commerce.payments.service import start_payment

    try:
        start_payment(session=session, settings=settings, order=order)
    except PaymentProviderError:
        # The approval stands; the customer's checkout retry (same Idempotency-Key) resumes
        # the payment, as after any provider outage.
        session.rollback()
        log.warning(
            "payment could not start for approved order %s", order.id, extra={"order_id": order.id}
        )
    session.refresh(order)
