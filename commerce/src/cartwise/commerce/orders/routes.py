"""HTTP routes of the orders domain: checkout, order reads, cancellation and staff transitions.

Checkout answers 201 with the new order; a retry with the same ``Idempotency-Key`` and body
answers 200 with the same order as it stands now (same id, lines and totals; ``status`` and
``updated_at`` show what happened since) and the header ``Idempotent-Replayed: true``. While
the order still awaits payment the retry also resumes the payment, so a Stripe client secret
comes back again.

When a fraud scorer is installed (``app.state.risk_scorer``), checkout answers 403
``order-blocked`` for a blocked order, and 201 with ``under_review: true`` (status ``review``,
no payment yet) for one held for review; staff decide it with ``POST /orders/{id}/review``.
Only staff see an order's ``risk``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from sqlalchemy import ColumnElement
from sqlmodel import Session, col, func, select

from cartwise.commerce.carts import service as carts
from cartwise.commerce.carts.models import Cart
from cartwise.commerce.deps import (
    IdempotencyKey,
    OptionalPrincipalDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    StaffDep,
)
from cartwise.commerce.orders import checkout as checkout_service
from cartwise.commerce.orders.models import (
    CheckoutRequest,
    CheckoutResult,
    Order,
    OrderLine,
    OrderLinePublic,
    OrderPage,
    OrderPublic,
    OrderStatus,
    ReviewRequest,
    TransitionRequest,
)
from cartwise.commerce.orders.service import (
    InvalidTransition,
    decide_review,
    get_order_for,
    order_public,
    order_risk,
    transition,
)
from cartwise.platform.auth import Principal
from cartwise.platform.errors import PROBLEM_RESPONSES, Forbidden

router = APIRouter(prefix="/api/v1", tags=["orders"], responses=PROBLEM_RESPONSES)

OrderId = Annotated[str, Path(min_length=1, max_length=32)]
CartToken = Annotated[
    str | None,
    Header(max_length=128, description="The token of the guest cart the order came from."),
]
CUSTOMER_CANCELLABLE = frozenset({OrderStatus.pending_payment, OrderStatus.review})


@router.post(
    "/checkout",
    response_model=CheckoutResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": CheckoutResult,
            "description": "A retry with the same Idempotency-Key: the order placed before",
        }
    },
)
def checkout(
    data: CheckoutRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: OptionalPrincipalDep,
    x_cart_token: CartToken = None,
    idempotency_key: IdempotencyKey = None,
) -> CheckoutResult:
    """Place an order from a cart (signed in, or a guest with X-Cart-Token) and start payment."""
    outcome = checkout_service.checkout(
        session=session,
        settings=settings,
        data=data,
        principal=principal,
        cart_token=x_cart_token,
        idempotency_key=idempotency_key,
        risk_scorer=getattr(request.app.state, "risk_scorer", None),
    )
    if outcome.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.result


def _page(
    session: Session,
    filters: list[ColumnElement[bool]],
    page: int,
    page_size: int,
    *,
    staff: bool = False,
) -> OrderPage:
    total = session.exec(select(func.count()).select_from(Order).where(*filters)).one()
    orders = list(
        session.exec(
            select(Order)
            .where(*filters)
            .order_by(col(Order.created_at).desc(), col(Order.id))
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
    )
    lines_by_order: dict[str, list[OrderLinePublic]] = {o.id: [] for o in orders}
    if orders:
        for line in session.exec(
            select(OrderLine)
            .where(col(OrderLine.order_id).in_(list(lines_by_order)))
            .order_by(col(OrderLine.id))
        ):
            lines_by_order[line.order_id].append(
                OrderLinePublic.model_validate(line, from_attributes=True)
            )
    items = [
        OrderPublic.model_validate(
            o.model_dump(warnings=False)
            | {"lines": lines_by_order[o.id], "risk": order_risk(o) if staff else None}
        )
        for o in orders
    ]
    return OrderPage(items=items, total=total, page=page, page_size=page_size)


@router.get("/orders", response_model=OrderPage)
def list_orders(
    principal: PrincipalDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    status_filter: Annotated[OrderStatus | None, Query(alias="status")] = None,
    scope: Annotated[
        Literal["mine", "all"] | None,
        Query(description="Staff default to all orders, customers to their own."),
    ] = None,
) -> OrderPage:
    """Orders, newest first: a customer's own; staff see everyone's (``scope=all``)."""
    scope = scope or ("all" if principal.is_staff else "mine")
    if scope == "all" and not principal.is_staff:
        raise Forbidden("Only staff may list every order.")
    filters: list[ColumnElement[bool]] = []
    if scope == "mine":
        filters.append(col(Order.user_id) == principal.subject)
    if status_filter is not None:
        filters.append(col(Order.status) == status_filter)
    return _page(session, filters, page, page_size, staff=principal.is_staff)


def _visible_order(
    session: Session, order_id: str, principal: Principal | None, token: str | None
) -> Order:
    """The order if the caller may see it (a guest proves it with the cart's token); else 404."""
    cart_id: str | None = None
    if principal is None and token:
        order = session.get(Order, order_id)
        if order is not None and order.cart_id is not None:
            cart = session.get(Cart, order.cart_id)
            if cart is not None and carts.token_matches(cart, token):
                cart_id = cart.id
    return get_order_for(session=session, order_id=order_id, principal=principal, cart_id=cart_id)


@router.get("/orders/{order_id}", response_model=OrderPublic)
def read_order(
    order_id: OrderId,
    session: SessionDep,
    principal: OptionalPrincipalDep,
    x_cart_token: CartToken = None,
) -> OrderPublic:
    """An order with its lines and history (owner, staff, or the guest holding the cart token)."""
    order = _visible_order(session, order_id, principal, x_cart_token)
    return order_public(session, order, staff=principal is not None and principal.is_staff)


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic)
def cancel_order(
    order_id: OrderId,
    session: SessionDep,
    principal: OptionalPrincipalDep,
    x_cart_token: CartToken = None,
) -> OrderPublic:
    """Cancel an order: its owner while it awaits payment or review; staff when allowed."""
    order = _visible_order(session, order_id, principal, x_cart_token)
    is_staff = principal is not None and principal.is_staff
    if not is_staff and OrderStatus(order.status) not in CUSTOMER_CANCELLABLE:
        raise InvalidTransition(
            f"An order that is {order.status} can no longer be cancelled by the customer.",
            current=str(order.status),
            target=str(OrderStatus.cancelled),
        )
    actor = str(principal.role) if principal is not None else "guest"
    order = transition(
        session=session,
        order_id=order.id,
        to_status=OrderStatus.cancelled,
        actor=actor,
        actor_id=principal.subject if principal is not None else None,
        reason=f"cancelled by {actor}",
    )
    return order_public(session, order, staff=is_staff)


@router.post("/orders/{order_id}/transitions", response_model=OrderPublic)
def transition_order(
    order_id: OrderId, data: TransitionRequest, staff: StaffDep, session: SessionDep
) -> OrderPublic:
    """Move an order along its state machine (staff); 409 when the move is not allowed."""
    existing = session.get(Order, order_id)
    if (
        data.to_status == OrderStatus.paid
        and existing is not None
        and existing.payment_provider == "manual"
    ):
        # Marking a manual order paid records the payment too, so it can be refunded later.
        from cartwise.commerce.payments.service import record_manual_payment

        record_manual_payment(
            session=session,
            order_id=order_id,
            actor_id=staff.subject,
            reason=data.reason or "marked paid by staff",
        )
        session.refresh(existing)
        return order_public(session, existing, staff=True)
    order = transition(
        session=session,
        order_id=order_id,
        to_status=data.to_status,
        actor=str(staff.role),
        actor_id=staff.subject,
        reason=data.reason,
    )
    return order_public(session, order, staff=True)


@router.post("/orders/{order_id}/review", response_model=OrderPublic)
def review_order(
    order_id: OrderId,
    data: ReviewRequest,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
) -> OrderPublic:
    """Decide an order held for fraud review (staff): approve starts payment, reject cancels
    it and releases its stock; 409 when the order is not in review."""
    order = decide_review(
        session=session,
        settings=settings,
        order_id=order_id,
        decision=data.decision,
        actor=str(staff.role),
        actor_id=staff.subject,
        note=data.note,
    )
    return order_public(session, order, staff=True)
