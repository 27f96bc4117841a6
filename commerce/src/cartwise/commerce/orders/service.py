"""Order reads and the state machine: every transition recorded, with its side effects."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import MovementReason
from cartwise.commerce.orders.models import (
    Order,
    OrderLine,
    OrderLinePublic,
    OrderPublic,
    OrderStatus,
    OrderTransition,
    TransitionPublic,
    can_transition,
)
from cartwise.commerce.outbox.models import emit
from cartwise.platform.auth import Principal
from cartwise.platform.errors import Conflict, NotFound
from cartwise.platform.types import utcnow

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


def order_public(session: Session, order: Order, *, with_transitions: bool = True) -> OrderPublic:
    """The API view of an order, with its lines and (optionally) its history."""
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


def expire_pending_orders(*, session: Session, limit: int = 500) -> int:
    """Cancel unpaid orders whose reservations have expired; returns how many."""
    count = 0
    for order_id in inventory.expired_order_ids(session=session, limit=limit):
        order = session.get(Order, order_id)
        if order is None:
            continue
        if order.status in (OrderStatus.pending_payment, OrderStatus.review):
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
