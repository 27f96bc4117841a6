"""Checkout: turn a cart into an order in one unit of work.

One transaction claims the cart, re-reads every price, computes the totals, writes the order
and its lines, reserves the stock of each line, redeems the voucher, records the first
transition and emits ``order.created`` to the outbox. Any failure rolls all of it back. Only
after the commit is the payment provider called, so no lock is held across a network call.

Totals (all ``Decimal``, rounded half-up to pennies; catalog prices exclude tax):

- ``subtotal`` = sum of ``unit_price * quantity`` per line, at the prices read now;
- ``discount`` = the voucher's discount on the subtotal (never more than the subtotal);
- ``shipping`` = ``settings.shipping_flat``, or 0 when ``settings.free_shipping_over`` is set
  and ``subtotal - discount`` reaches it;
- ``tax`` = ``settings.tax_rate * (subtotal - discount + shipping)``: the tax base is what the
  customer pays before tax, shipping included and the discount taken off;
- ``total`` = ``subtotal - discount + shipping + tax``.

Idempotency: with an ``Idempotency-Key`` the order stores ``(idempotency_scope,
idempotency_key)`` under a unique constraint, scope ``u:<user_id>`` or ``c:<cart_id>``, and
a hash of the request. A retry with the same key and body returns the same order as it stands
now, resuming its payment if it still awaits one (the route answers 200 instead of 201); the
same key with another body is a 422. Correctness comes from
the database: a concurrent duplicate either waits on the cart claim and then finds the
committed order, or fails on the unique constraint, rolls back and finds it.

Lock order (PostgreSQL, to avoid deadlocks): the cart row, the order row, the stock rows in
SKU order, then the voucher row. On SQLite the transaction starts with ``BEGIN IMMEDIATE`` so
it holds the single write lock from its first read, and waits (busy timeout) rather than
failing with "database is locked" when it has to upgrade a read snapshot.

Fraud (when ``app.state.risk_scorer`` is set): before the transaction, a read-only preview of
the cart gives the total the scorer sees, and :func:`~cartwise.commerce.orders.risk.assess_safely`
asks it (no lock is held meanwhile; a scorer that fails or is too slow yields the fallback
rule). ``block`` writes nothing but an alert and answers 403 ``order-blocked``; ``review`` places
the order in state ``review`` with its stock held until staff decide, raises an alert and emits
``fraud.review_required`` in the same transaction, and starts no payment; ``allow`` carries on.
Every decision is stored on the order. An idempotent replay is answered before any scoring.
The preview's total can differ from the placed one only if a price changes in between; the
order keeps the score of the preview.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.alerts import service as alerts
from cartwise.commerce.alerts.models import FRAUD_BLOCKED, FRAUD_REVIEW, AlertSeverity
from cartwise.commerce.carts import service as carts
from cartwise.commerce.carts.models import Cart, CartStatus
from cartwise.commerce.customers import service as customers
from cartwise.commerce.customers.models import AddressBase, User
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.money import quantize
from cartwise.commerce.orders.models import (
    CheckoutRequest,
    CheckoutResult,
    Order,
    OrderLine,
    OrderStatus,
    RiskDecision,
)
from cartwise.commerce.orders.risk import (
    RiskAssessment,
    RiskRequest,
    RiskScorer,
    assess_safely,
    orders_last_hour,
)
from cartwise.commerce.orders.service import REVIEW_HOLD, order_public, record_transition
from cartwise.commerce.outbox.models import emit
from cartwise.commerce.vouchers import service as vouchers
from cartwise.commerce.vouchers.models import Voucher
from cartwise.platform.auth import Principal
from cartwise.platform.errors import Conflict, Forbidden, Unprocessable
from cartwise.platform.metrics import CHECKOUT_FAILURES, counts_failures
from cartwise.platform.settings import Settings
from cartwise.platform.types import new_uuid, utcnow

log = logging.getLogger(__name__)

ZERO = Decimal("0.00")
_email = TypeAdapter(EmailStr)


class OrderBlocked(Forbidden):
    """The fraud check refused the order."""

    slug = "order-blocked"
    title = "Order blocked"


class IdempotencyKeyReused(Unprocessable):
    """The key was already used for a different request."""

    slug = "idempotency-key-reused"
    title = "Idempotency key reused"


@dataclass(frozen=True, slots=True)
class Totals:
    """An order's money, computed at checkout."""

    subtotal: Decimal
    discount: Decimal
    shipping: Decimal
    tax: Decimal
    total: Decimal


@dataclass(frozen=True, slots=True)
class CheckoutOutcome:
    """The result to return, and whether it replays an earlier request."""

    result: CheckoutResult
    replayed: bool


def compute_totals(*, settings: Settings, subtotal: Decimal, discount: Decimal = ZERO) -> Totals:
    """Shipping, tax and total for a subtotal and discount (see the module docstring)."""
    subtotal = quantize(subtotal)
    discount = quantize(min(discount, subtotal))
    goods = subtotal - discount
    free_over = settings.free_shipping_over
    shipping = ZERO if free_over is not None and goods >= free_over else settings.shipping_flat
    shipping = quantize(shipping)
    tax = quantize((goods + shipping) * settings.tax_rate)
    return Totals(subtotal, discount, shipping, tax, quantize(goods + shipping + tax))


def request_hash(data: CheckoutRequest) -> str:
    """A stable fingerprint of a checkout request, to detect a key reused for another body."""
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def idempotency_scope(principal: Principal | None, cart_id: str) -> str:
    """Keys are unique per user, or per guest cart."""
    return f"u:{principal.subject}" if principal is not None else f"c:{cart_id}"


def _begin(session: Session) -> None:
    """Start the checkout transaction; on SQLite take the write lock up front."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi = connection.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _find_existing(session: Session, scope: str, key: str) -> Order | None:
    stmt = select(Order).where(Order.idempotency_scope == scope, Order.idempotency_key == key)
    return session.exec(stmt).first()


def _check_replay(order: Order, fingerprint: str) -> Order:
    if order.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request."
        )
    return order


def _email_for(session: Session, data: CheckoutRequest, principal: Principal | None) -> str:
    raw = data.email
    if raw is None and principal is not None:
        user = session.get(User, principal.subject)
        raw = user.email if user is not None else None
    if raw is None:
        raise Unprocessable("An email address is required for a guest checkout.")
    try:
        return str(_email.validate_python(raw.strip()))
    except ValidationError as exc:
        raise Unprocessable("The email address is not valid.") from exc


def _address_for(
    session: Session, data: CheckoutRequest, principal: Principal | None
) -> AddressBase:
    if data.shipping_address is not None:
        return data.shipping_address
    if principal is None:
        raise Unprocessable("A shipping_address is required for a guest checkout.")
    if data.address_id is not None:
        saved = customers.get_address(
            session=session, user_id=principal.subject, address_id=data.address_id
        )
        return AddressBase.model_validate(saved, from_attributes=True)
    for saved in customers.list_addresses(session=session, user_id=principal.subject):
        return AddressBase.model_validate(saved, from_attributes=True)
    raise Unprocessable("A shipping_address (or a saved address_id) is required.")


def _claim_cart(session: Session, cart: Cart) -> None:
    result = session.execute(
        update(Cart)
        .where(col(Cart.id) == cart.id, col(Cart.status) == CartStatus.active)
        .values(status=CartStatus.converted, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise carts.CartNotActive("This cart has already been checked out or merged.")


def _place_order(
    *,
    session: Session,
    settings: Settings,
    data: CheckoutRequest,
    principal: Principal | None,
    cart: Cart,
    scope: str | None,
    key: str | None,
    fingerprint: str | None,
    order_id: str | None = None,
    assessment: RiskAssessment | None = None,
) -> Order:
    if cart.status != CartStatus.active:
        raise carts.CartNotActive("This cart has already been checked out or merged.")
    _claim_cart(session, cart)
    lines = carts.cart_lines(session, cart.id)
    if not lines:
        raise Unprocessable("The cart is empty.", slug="empty-cart")
    for line in lines:
        if not line.purchasable:
            raise Unprocessable(
                f"{line.variant.sku} is no longer for sale; remove it from the cart.",
                slug="not-for-sale",
                sku=line.variant.sku,
            )
        if line.variant.currency != cart.currency:
            raise Unprocessable(
                f"{line.variant.sku} is priced in {line.variant.currency}, "
                f"the cart in {cart.currency}.",
                slug="currency-mismatch",
            )
        if line.item.quantity > settings.max_line_quantity:
            raise Unprocessable(
                f"At most {settings.max_line_quantity} units of {line.variant.sku} per order.",
                slug="quantity-limit",
                sku=line.variant.sku,
            )
    voucher, totals = _price(session, settings, data, lines)
    email = _email_for(session, data, principal)
    address = _address_for(session, data, principal)

    under_review = assessment is not None and assessment.decision == RiskDecision.review
    order = Order(
        id=order_id or new_uuid(),
        user_id=principal.subject if principal is not None else None,
        cart_id=cart.id,
        email=email,
        status=OrderStatus.pending_payment,
        currency=cart.currency,
        subtotal=totals.subtotal,
        discount=totals.discount,
        shipping=totals.shipping,
        tax=totals.tax,
        total=totals.total,
        voucher_code=voucher.code if voucher is not None else None,
        shipping_address=address.model_dump(mode="json"),
        country=address.country,
        payment_provider=settings.payment_provider,
        idempotency_scope=scope,
        idempotency_key=key,
        request_hash=fingerprint,
    )
    if assessment is not None:
        order.risk_score = assessment.risk
        order.risk_decision = assessment.decision
        order.risk_model_version = assessment.model_version
        order.risk_reasons = assessment.reasons
        order.risk_fallback = assessment.fallback
    if under_review:
        order.status = OrderStatus.review
    session.add(order)
    session.flush()  # the idempotency constraint fires here, before any stock is touched
    for line in lines:
        unit_price = quantize(line.variant.price)
        session.add(
            OrderLine(
                order_id=order.id,
                variant_id=line.variant.id,
                product_id=line.product.id,
                sku=line.variant.sku,
                product_name=line.product.name,
                quantity=line.item.quantity,
                unit_price=unit_price,
                line_total=quantize(unit_price * line.item.quantity),
            )
        )
    # An order under review keeps its stock until staff decide (approval restarts the clock).
    hold = REVIEW_HOLD if under_review else timedelta(minutes=settings.reservation_minutes)
    expires_at = utcnow() + hold
    for line in sorted(lines, key=lambda ln: ln.variant.sku):
        inventory.reserve(
            session=session,
            sku=line.variant.sku,
            quantity=line.item.quantity,
            order_id=order.id,
            expires_at=expires_at,
        )
    if voucher is not None:
        vouchers.redeem(session=session, voucher=voucher)
    actor = str(principal.role) if principal is not None else "guest"
    record_transition(
        session,
        order,
        None,
        OrderStatus.pending_payment,
        actor=actor,
        actor_id=principal.subject if principal is not None else None,
        reason="checkout",
    )
    emit(session, "order", order.id, "order.created", _created_payload(order, lines))
    if under_review:
        assert assessment is not None
        _hold_for_review(session, order, assessment)
    return order


def _subtotal(lines: list[carts.CartLine]) -> Decimal:
    return sum((quantize(quantize(ln.variant.price) * ln.item.quantity) for ln in lines), ZERO)


def _price(
    session: Session, settings: Settings, data: CheckoutRequest, lines: list[carts.CartLine]
) -> tuple[Voucher | None, Totals]:
    """The voucher (validated against the subtotal) and the order's money, for these lines."""
    subtotal = _subtotal(lines)
    voucher: Voucher | None = None
    discount = ZERO
    if data.voucher_code is not None:
        voucher, discount = vouchers.validate_voucher(
            session=session, code=data.voucher_code, subtotal=subtotal
        )
    return voucher, compute_totals(settings=settings, subtotal=subtotal, discount=discount)


def _risk_detail(assessment: RiskAssessment) -> dict[str, Any]:
    return {
        "risk": assessment.risk,
        "decision": str(assessment.decision),
        "model_version": assessment.model_version,
        "reasons": assessment.reasons,
        "fallback": assessment.fallback,
        "fallback_reason": assessment.reason,
    }


def _hold_for_review(session: Session, order: Order, assessment: RiskAssessment) -> None:
    """Record the move to review, raise the alert and emit the event: the order's transaction."""
    record_transition(
        session,
        order,
        OrderStatus.pending_payment,
        OrderStatus.review,
        actor="fraud",
        actor_id=None,
        reason=f"fraud review: risk {assessment.risk:.2f}",
    )
    alert = alerts.raise_alert(
        session,
        kind=FRAUD_REVIEW,
        severity=AlertSeverity.high,
        order_id=order.id,
        title=f"Order {order.id} held for fraud review (risk {assessment.risk:.2f})",
        detail={
            **_risk_detail(assessment),
            "customer_id": order.user_id,
            "email": order.email,
            "total": str(order.total),
            "currency": order.currency,
            "country": order.country,
        },
    )
    emit(
        session,
        "order",
        order.id,
        "fraud.review_required",
        {
            "order_id": order.id,
            "alert_id": alert.id,
            "risk": assessment.risk,
            "reasons": assessment.reasons,
            "model_version": assessment.model_version,
            "fallback": assessment.fallback,
            "email": order.email,
            "total": str(order.total),
            "currency": order.currency,
        },
    )


def _created_payload(order: Order, lines: list[carts.CartLine]) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "status": str(order.status),
        "user_id": order.user_id,
        "email": order.email,
        "currency": order.currency,
        "subtotal": str(order.subtotal),
        "discount": str(order.discount),
        "shipping": str(order.shipping),
        "tax": str(order.tax),
        "total": str(order.total),
        "voucher_code": order.voucher_code,
        "country": order.country,
        "lines": [
            {
                "sku": ln.variant.sku,
                "product_id": ln.product.id,
                "quantity": ln.item.quantity,
                "unit_price": str(quantize(ln.variant.price)),
            }
            for ln in lines
        ],
    }


def _result(session: Session, settings: Settings, order: Order) -> CheckoutResult:
    """Start (or resume) the payment of a committed order and describe it."""
    client_secret: str | None = None
    intent_id: str | None = None
    if order.status == OrderStatus.pending_payment:
        from cartwise.commerce.payments.service import start_payment

        payment = start_payment(session=session, settings=settings, order=order)
        client_secret, intent_id = payment.client_secret, payment.provider_ref
    return CheckoutResult(
        order=order_public(session, order),
        payment_provider=order.payment_provider,
        client_secret=client_secret,
        payment_intent_id=intent_id,
        under_review=order.status == OrderStatus.review,
    )


def _preview_request(
    *,
    session: Session,
    settings: Settings,
    data: CheckoutRequest,
    principal: Principal | None,
    cart: Cart,
    order_id: str,
) -> RiskRequest:
    """What the scorer needs, read (not locked) from the cart as it is now."""
    lines = carts.cart_lines(session, cart.id)
    if not lines:
        raise Unprocessable("The cart is empty.", slug="empty-cart")
    _, totals = _price(session, settings, data, lines)
    email = _email_for(session, data, principal)
    address = _address_for(session, data, principal)
    customer_id = principal.subject if principal is not None else None
    return RiskRequest(
        order_id=order_id,
        customer_id=customer_id,
        email=email,
        order_amount=totals.total,
        currency=cart.currency,
        shipping_country=address.country,
        orders_last_hour=orders_last_hour(session, customer_id=customer_id, email=email),
        request_epoch=int(time.time()),
    )


def _assess(
    *,
    session: Session,
    settings: Settings,
    data: CheckoutRequest,
    principal: Principal | None,
    cart_token: str | None,
    scorer: RiskScorer,
    order_id: str,
) -> tuple[RiskRequest, RiskAssessment] | None:
    """Score the order about to be placed; None when there is nothing to score (cart used).

    Runs before the write transaction and ends its read transaction, so nothing is locked
    while the scorer thinks and the checkout transaction starts fresh (SQLite write lock).
    """
    try:
        cart = carts.get_cart_for(
            session=session, cart_id=data.cart_id, principal=principal, token=cart_token
        )
        if cart.status != CartStatus.active:
            return None  # the transaction reports it (or finds the order a retry placed)
        request = _preview_request(
            session=session,
            settings=settings,
            data=data,
            principal=principal,
            cart=cart,
            order_id=order_id,
        )
    finally:
        session.rollback()
    return request, assess_safely(scorer, request, settings)


def _record_block(
    session: Session, data: CheckoutRequest, request: RiskRequest, assessment: RiskAssessment
) -> None:
    """Leave a trace of a blocked checkout for staff, in a transaction of its own."""
    log.warning(
        "checkout of cart %s blocked by the fraud check (risk %.3f, model %s)",
        data.cart_id,
        assessment.risk,
        assessment.model_version,
        extra={"order_id": request.order_id, "cart_id": data.cart_id},
    )
    try:
        alerts.raise_alert(
            session,
            kind=FRAUD_BLOCKED,
            severity=AlertSeverity.medium,
            title=f"Checkout blocked by the fraud check (risk {assessment.risk:.2f})",
            detail={
                **_risk_detail(assessment),
                "attempted_order_id": request.order_id,
                "cart_id": data.cart_id,
                "customer_id": request.customer_id,
                "email": request.email,
                "total": str(request.order_amount),
                "currency": request.currency,
                "country": request.shipping_country,
                "orders_last_hour": request.orders_last_hour,
            },
        )
        session.commit()
    except Exception:
        # The block stands even if its alert cannot be written; the log line keeps the trace.
        session.rollback()
        log.exception("could not record the alert of a blocked checkout")


# Failures leave no row behind, so they are counted per process (by problem type) for /metrics.
@counts_failures(CHECKOUT_FAILURES)
def checkout(
    *,
    session: Session,
    settings: Settings,
    data: CheckoutRequest,
    principal: Principal | None,
    cart_token: str | None,
    idempotency_key: str | None = None,
    risk_scorer: RiskScorer | None = None,
) -> CheckoutOutcome:
    """Place an order from a cart in one transaction, then start its payment. Commits.

    With a ``risk_scorer`` the order is scored first (see the module docstring): 403
    ``order-blocked`` on block, state ``review`` without payment on review.
    """
    scope = idempotency_scope(principal, data.cart_id) if idempotency_key else None
    fingerprint = request_hash(data) if idempotency_key else ""
    replay: Order | None = None
    placed: Order | None = None
    order_id = new_uuid()
    assessment: RiskAssessment | None = None
    if risk_scorer is not None:
        if scope is not None and idempotency_key is not None:
            replay = _find_existing(session, scope, idempotency_key)
            session.rollback()
        if replay is None:
            scored = _assess(
                session=session,
                settings=settings,
                data=data,
                principal=principal,
                cart_token=cart_token,
                scorer=risk_scorer,
                order_id=order_id,
            )
            if scored is not None:
                risk_request, assessment = scored
                if assessment.decision == RiskDecision.block:
                    _record_block(session, data, risk_request, assessment)
                    raise OrderBlocked(
                        "This order cannot be placed. If you think this is a mistake, "
                        "please contact customer support."
                    )
    if replay is not None:
        order = _check_replay(replay, fingerprint)
        return CheckoutOutcome(_result(session, settings, order), replayed=True)
    try:
        _begin(session)
        cart = carts.get_cart_for(
            session=session, cart_id=data.cart_id, principal=principal, token=cart_token
        )
        if scope is not None and idempotency_key is not None:
            replay = _find_existing(session, scope, idempotency_key)
        if replay is None:
            placed = _place_order(
                session=session,
                settings=settings,
                data=data,
                principal=principal,
                cart=cart,
                scope=scope,
                key=idempotency_key,
                fingerprint=fingerprint or None,
                order_id=order_id,
                assessment=assessment,
            )
            session.commit()
        else:
            session.rollback()
    except (IntegrityError, carts.CartNotActive) as exc:
        # Either a concurrent request with the same key won the race (answer with its order),
        # or the cart was already used.
        session.rollback()
        if scope is not None and idempotency_key is not None:
            replay = _find_existing(session, scope, idempotency_key)
        if replay is None:
            if isinstance(exc, carts.CartNotActive):
                raise
            raise Conflict("The order could not be placed; try again.", slug="conflict") from exc
    except BaseException:
        session.rollback()
        raise
    if replay is not None:
        order = _check_replay(replay, fingerprint)
        return CheckoutOutcome(_result(session, settings, order), replayed=True)
    assert placed is not None
    return CheckoutOutcome(_result(session, settings, placed), replayed=False)
