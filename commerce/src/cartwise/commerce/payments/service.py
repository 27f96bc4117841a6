"""Payment services: collect an order, apply provider webhooks once, refund, record manual pay.

Provider calls never happen inside a database transaction. A refund first reserves its amount
(a conditional UPDATE on ``Payment.refunded_amount`` plus a pending ``Refund`` row without a
``provider_ref``) and commits; then the provider is called with an idempotency key derived from
the request's key; then the outcome is recorded. Concurrent refunds therefore cannot exceed what
was paid, and a retry with the same ``Idempotency-Key`` completes a refund whose first attempt
ended in an unknown state.

Disputes (``charge.dispute.*``) become ``Chargeback`` rows, one per dispute id: the first event
of a dispute stores it, raises an ``order.chargeback`` alert and emits ``order.chargeback``;
later ones update its reason and status (open → won/lost).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.alerts import service as alerts
from cartwise.commerce.alerts.models import CHARGEBACK, AlertSeverity
from cartwise.commerce.money import quantize, to_minor_units
from cartwise.commerce.orders import service as orders
from cartwise.commerce.orders.models import Order, OrderStatus, can_transition
from cartwise.commerce.orders.service import InvalidTransition
from cartwise.commerce.outbox.models import emit
from cartwise.commerce.payments.models import (
    Chargeback,
    ChargebackStatus,
    Payment,
    PaymentDetail,
    PaymentStatus,
    Refund,
    RefundPublic,
    WebhookEvent,
)
from cartwise.commerce.payments.port import (
    ManualProvider,
    PaymentIntentResult,
    PaymentProvider,
    PaymentProviderError,
    get_provider,
)
from cartwise.platform.errors import Conflict, NotFound, Problem
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

REFUNDABLE = frozenset(
    {OrderStatus.paid, OrderStatus.fulfilled, OrderStatus.shipped, OrderStatus.delivered}
)
COLLECTED = frozenset(
    {PaymentStatus.succeeded, PaymentStatus.partially_refunded, PaymentStatus.refunded}
)
# How often a webhook or refund is re-applied when a concurrent request moved the order under it.
ATTEMPTS = 3


@dataclass(frozen=True)
class WebhookOutcome:
    """What a webhook delivery did: its event id and a short outcome code."""

    event_id: str
    outcome: str


@dataclass(frozen=True)
class RefundOutcome:
    """A refund, and whether it was an idempotent replay of an earlier request."""

    refund: Refund
    replayed: bool


def _lock_order(session: Session, order_id: str) -> Order:
    """Take the order's row lock (PostgreSQL) or the write lock (SQLite), then read it; or 404.

    Touching ``updated_at`` is the portable way to serialise writers on one order.
    """
    touched = session.execute(
        update(Order).where(col(Order.id) == order_id).values(updated_at=utcnow())
    )
    if touched.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise NotFound("Order not found.")
    order = session.get(Order, order_id, populate_existing=True)
    assert order is not None
    return order


def _latest_payment(session: Session, order_id: str, provider: str | None = None) -> Payment | None:
    stmt = select(Payment).where(Payment.order_id == order_id)
    if provider is not None:
        stmt = stmt.where(Payment.provider == provider)
    stmt = stmt.order_by(col(Payment.id).desc()).execution_options(populate_existing=True)
    return session.exec(stmt).first()


def _provider_named(name: str, settings: Settings) -> PaymentProvider:
    """The adapter that took a payment (not necessarily today's configured one)."""
    if name == "stripe":
        from cartwise.commerce.payments.stripe_adapter import StripeProvider

        return StripeProvider(settings)
    return ManualProvider()


def start_payment(*, session: Session, settings: Settings, order: Order) -> PaymentIntentResult:
    """Ask the configured provider to collect the order total; records a pending Payment.

    Called after the checkout transaction commits, so no database locks are held while the
    provider is called. Idempotent per order: a retry reuses the provider's idempotency key and
    the same Payment row. Raises PaymentProviderError (a 5xx/409 problem) when the provider
    refuses or cannot be reached; the order stays pending_payment and can be retried.
    """
    provider = get_provider(settings)
    result = provider.create_intent(
        order_id=order.id,
        amount=order.total,
        currency=order.currency,
        email=order.email,
        idempotency_key=f"order-{order.id}-intent",
    )
    _lock_order(session, order.id)
    payment = _latest_payment(session, order.id, provider.name)
    if payment is None:
        session.add(
            Payment(
                order_id=order.id,
                provider=provider.name,
                provider_ref=result.provider_ref,
                amount=order.total,
                currency=order.currency,
                status=PaymentStatus.pending,
            )
        )
    elif payment.provider_ref is None and result.provider_ref:
        payment.provider_ref = result.provider_ref
        payment.updated_at = utcnow()
        session.add(payment)
    session.commit()
    return result


def list_payments(*, session: Session, order_id: str) -> list[PaymentDetail]:
    """The order's payments, oldest first, each with its refunds."""
    payments = session.exec(
        select(Payment).where(Payment.order_id == order_id).order_by(col(Payment.id))
    ).all()
    refunds = session.exec(
        select(Refund).where(Refund.order_id == order_id).order_by(col(Refund.id))
    ).all()
    details = []
    for payment in payments:
        detail = PaymentDetail.model_validate(payment, from_attributes=True)
        detail.refunds = [
            RefundPublic.model_validate(r, from_attributes=True)
            for r in refunds
            if r.payment_id == payment.id
        ]
        details.append(detail)
    return details


def record_manual_payment(
    *, session: Session, order_id: str, actor_id: int | None, reference: str = "", reason: str = ""
) -> Payment:
    """Staff confirm a manual-provider order was paid; the order moves to paid. Commits."""
    order = _lock_order(session, order_id)
    if order.payment_provider != "manual":
        session.rollback()
        raise Conflict(
            f"This order is paid through {order.payment_provider}; the provider confirms it.",
            slug="not-a-manual-order",
        )
    current = OrderStatus(order.status)
    if not can_transition(current, OrderStatus.paid):
        session.rollback()
        raise InvalidTransition(
            f"An order cannot move from {current} to paid.", current=str(current), target="paid"
        )
    payment = _latest_payment(session, order_id, "manual")
    if payment is None or payment.status in COLLECTED:
        payment = Payment(
            order_id=order_id, provider="manual", amount=order.total, currency=order.currency
        )
    payment.status = PaymentStatus.succeeded
    payment.amount = order.total
    payment.provider_ref = reference or payment.provider_ref
    payment.updated_at = utcnow()
    session.add(payment)
    orders.transition(
        session=session,
        order_id=order_id,
        to_status=OrderStatus.paid,
        actor="staff",
        actor_id=actor_id,
        reason=reason or "payment recorded by staff",
        commit=False,
    )
    session.commit()
    session.refresh(payment)
    return payment


# --- webhooks -------------------------------------------------------------------------------


def _text(value: Any, max_length: int) -> str | None:
    """A non-empty string that fits its column, else None."""
    if isinstance(value, str) and 0 < len(value) <= max_length:
        return value
    return None


def _invalid(detail: str) -> Problem:
    return Problem(detail, status=400, slug="invalid-webhook", title="Invalid webhook")


def handle_stripe_webhook(
    *, session: Session, settings: Settings, payload: bytes, signature: str | None
) -> WebhookOutcome:
    """Verify a Stripe webhook with the library's signature check, then apply it once."""
    from cartwise.commerce.payments.stripe_adapter import verify_webhook

    event = verify_webhook(payload, signature, settings.stripe_webhook_secret.get_secret_value())
    return apply_event(session=session, provider="stripe", event=event)


def apply_event(*, session: Session, provider: str, event: dict[str, Any]) -> WebhookOutcome:
    """Apply a verified provider event exactly once: the event row commits with its effect."""
    # A replay (sequential or concurrent) hits the primary key of webhook_event and changes
    # nothing. Unknown event types and events for unknown orders are recorded and acknowledged,
    # since the provider would otherwise retry them for days.
    event_id = _text(event.get("id"), 120)
    event_type = _text(event.get("type"), 80)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if event_id is None or event_type is None or not isinstance(obj, dict):
        raise _invalid("The event lacks an id, a type or a data object.")
    handler = _HANDLERS.get(event_type, _ignored)
    for _ in range(ATTEMPTS):
        session.add(WebhookEvent(id=event_id, provider=provider, type=event_type))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            log.info("webhook %s already processed", event_id, extra={"event_id": event_id})
            return WebhookOutcome(event_id, "duplicate")
        try:
            outcome = handler(session, obj)
        except InvalidTransition:
            # A concurrent request moved the order (and this transaction was rolled back).
            session.rollback()
            continue
        session.commit()
        log.info(
            "webhook %s (%s): %s",
            event_id,
            event_type,
            outcome,
            extra={"event_id": event_id, "event_type": event_type, "outcome": outcome},
        )
        return WebhookOutcome(event_id, outcome)
    raise Conflict("The order kept changing while the event was applied; retry later.")


def _locate(
    session: Session, intent_id: str | None, order_id: str | None
) -> tuple[Payment | None, Order | None]:
    """The Stripe payment of an intent and its order (by intent id, else by metadata)."""
    payment = None
    if intent_id is not None:
        payment = session.exec(
            select(Payment)
            .where(Payment.provider == "stripe", Payment.provider_ref == intent_id)
            .order_by(col(Payment.id).desc())
            .execution_options(populate_existing=True)
        ).first()
    target = payment.order_id if payment is not None else order_id
    order = session.get(Order, target, populate_existing=True) if target else None
    if order is not None and payment is None:
        latest = _latest_payment(session, order.id, "stripe")
        if latest is not None and latest.provider_ref is None:
            payment = latest
            payment.provider_ref = intent_id
        else:
            payment = Payment(
                order_id=order.id,
                provider="stripe",
                provider_ref=intent_id,
                amount=order.total,
                currency=order.currency,
            )
        session.add(payment)
    return payment, order


def _intent_refs(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    metadata = obj.get("metadata")
    order_id = _text(metadata.get("order_id"), 32) if isinstance(metadata, dict) else None
    return _text(obj.get("id"), 120), order_id


def _unknown(obj: dict[str, Any], what: str) -> str:
    log.warning(
        "Stripe %s for an unknown order; recorded and ignored",
        what,
        extra={"stripe_object": _text(obj.get("id"), 120)},
    )
    return "unknown-order"


def _on_intent_succeeded(session: Session, obj: dict[str, Any]) -> str:
    intent_id, order_id = _intent_refs(obj)
    payment, order = _locate(session, intent_id, order_id)
    if payment is None or order is None:
        return _unknown(obj, "payment_intent.succeeded")
    if payment.status in (PaymentStatus.pending, PaymentStatus.failed):
        payment.status = PaymentStatus.succeeded
        payment.updated_at = utcnow()
        session.add(payment)
    current = OrderStatus(order.status)
    received = obj.get("amount_received", obj.get("amount"))
    currency = obj.get("currency")
    if received != to_minor_units(order.total) or str(currency).upper() != order.currency:
        log.error(
            "Stripe collected %s %s for order %s whose total is %s %s",
            received,
            currency,
            order.id,
            order.total,
            order.currency,
            extra={"order_id": order.id},
        )
        if can_transition(current, OrderStatus.review):
            orders.transition(
                session=session,
                order_id=order.id,
                to_status=OrderStatus.review,
                actor="stripe",
                reason=f"PaymentIntent {intent_id} amount or currency differs from the order",
                commit=False,
            )
        return "amount-mismatch"
    if current in (OrderStatus.pending_payment, OrderStatus.review):
        # An order under review still moves to paid: its reservation would otherwise expire
        # and cancel an order whose money was taken; staff can still cancel (and restock) it.
        note = " while under review" if current == OrderStatus.review else ""
        orders.transition(
            session=session,
            order_id=order.id,
            to_status=OrderStatus.paid,
            actor="stripe",
            reason=f"PaymentIntent {intent_id} succeeded{note}",
            commit=False,
        )
        return "paid"
    if current == OrderStatus.cancelled:
        log.error(
            "Stripe collected a payment for cancelled order %s; refund it in Stripe",
            order.id,
            extra={"order_id": order.id},
        )
        return "paid-after-cancel"
    return "already-paid"


def _on_intent_failed(session: Session, obj: dict[str, Any]) -> str:
    intent_id, order_id = _intent_refs(obj)
    payment, order = _locate(session, intent_id, order_id)
    if payment is None or order is None:
        return _unknown(obj, "payment_intent.payment_failed")
    if payment.status == PaymentStatus.pending:
        payment.status = PaymentStatus.failed
        payment.updated_at = utcnow()
        session.add(payment)
    error = obj.get("last_payment_error")
    message = error.get("message") if isinstance(error, dict) else None
    log.info("payment failed for order %s: %s", order.id, message, extra={"order_id": order.id})
    return "payment-failed"


def _on_charge_refunded(session: Session, obj: dict[str, Any]) -> str:
    """Sync refunds made outside Cartwise (the Stripe dashboard); ours are already counted."""
    intent_id = _text(obj.get("payment_intent"), 120)
    refunded_minor = obj.get("amount_refunded")
    if intent_id is None or not isinstance(refunded_minor, int) or refunded_minor < 0:
        return "ignored"
    payment, order = _locate(session, intent_id, None)
    if payment is None or order is None or payment.id is None:
        return _unknown(obj, "charge.refunded")
    payment = session.get(Payment, payment.id, with_for_update=True, populate_existing=True)
    assert payment is not None
    assert payment.id is not None
    target = min(quantize(Decimal(refunded_minor) / 100), payment.amount)
    # Payment.refunded_amount includes refunds in flight through our own API, so a webhook
    # about one of ours finds nothing new.
    delta = quantize(target - payment.refunded_amount)
    if delta <= 0:
        return "in-sync"
    payment.refunded_amount = target
    payment.updated_at = utcnow()
    session.add(payment)
    session.add(
        Refund(
            payment_id=payment.id,
            order_id=order.id,
            amount=delta,
            reason="refunded in Stripe",
            provider_ref=_text(obj.get("id"), 120) or intent_id,
        )
    )
    session.flush()
    _confirm_refund(
        session,
        order_id=order.id,
        payment_id=payment.id,
        amount=delta,
        actor="stripe",
        actor_id=None,
        reason="refunded in Stripe",
    )
    return "refund-synced"


# --- disputes (chargebacks) ------------------------------------------------------------------

# Stripe dispute statuses → ours. ``warning_closed`` is an inquiry closed without a chargeback.
_DISPUTE_STATUS = {
    "won": ChargebackStatus.won,
    "warning_closed": ChargebackStatus.won,
    "lost": ChargebackStatus.lost,
}


def _ref(value: Any) -> str | None:
    """An object id given as a string, or as an expanded object with an ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return _text(value, 120)


def _dispute_fields(obj: dict[str, Any]) -> tuple[str, str, Decimal, str, ChargebackStatus]:
    """Dispute id, reason, amount, currency and status of a dispute object; 400 if malformed."""
    dispute_id = _text(obj.get("id"), 120)
    amount = obj.get("amount")
    currency = obj.get("currency")
    if (
        dispute_id is None
        or isinstance(amount, bool)
        or not isinstance(amount, int)
        or amount < 0
        or not isinstance(currency, str)
        or len(currency) != 3
        or not currency.isalpha()
    ):
        raise _invalid("The dispute lacks an id, a non-negative amount or a currency.")
    if _ref(obj.get("payment_intent")) is None and _ref(obj.get("charge")) is None:
        raise _invalid("The dispute names neither a payment intent nor a charge.")
    reason = _text(obj.get("reason"), 60) or "general"
    status = _DISPUTE_STATUS.get(str(obj.get("status")), ChargebackStatus.open)
    return dispute_id, reason, quantize(Decimal(amount) / 100), currency.upper(), status


def _disputed_payment(session: Session, obj: dict[str, Any]) -> Payment | None:
    """The Stripe payment a dispute is about: by its payment intent, else by its charge id."""
    for ref in (_ref(obj.get("payment_intent")), _ref(obj.get("charge"))):
        if ref is None:
            continue
        payment = session.exec(
            select(Payment)
            .where(Payment.provider == "stripe", Payment.provider_ref == ref)
            .order_by(col(Payment.id).desc())
        ).first()
        if payment is not None:
            return payment
    return None


def _on_dispute(session: Session, obj: dict[str, Any], what: str) -> str:
    """Record a dispute once per dispute id, and keep its reason and status current.

    The first event seen for a dispute (normally ``charge.dispute.created``, but any of them if
    an earlier one was lost) stores the chargeback, raises a staff alert and emits
    ``order.chargeback``; later ones only update what changed, so applying the same dispute
    state again changes nothing.
    """
    try:
        dispute_id, reason, amount, currency, status = _dispute_fields(obj)
    except Problem:
        session.rollback()  # drop the webhook_event row: a corrected delivery may be applied
        raise
    found = _disputed_payment(session, obj)
    if found is None or found.id is None:
        return _unknown(obj, what)
    # The payment's row lock (PostgreSQL; SQLite holds the write lock already) serialises
    # two events of the same dispute, so the second finds the first one's row.
    payment = session.get(Payment, found.id, with_for_update=True, populate_existing=True)
    assert payment is not None
    assert payment.id is not None
    now = utcnow()
    closed = status != ChargebackStatus.open
    existing = session.exec(
        select(Chargeback)
        .where(Chargeback.dispute_id == dispute_id)
        .execution_options(populate_existing=True)
    ).first()
    if existing is not None:
        if status == ChargebackStatus.open and existing.status != ChargebackStatus.open:
            status = ChargebackStatus(existing.status)  # a late update never reopens it
            closed = True
        changes = {
            "reason": reason,
            "amount": amount,
            "currency": currency,
            "status": status,
        }
        changed = {k: v for k, v in changes.items() if getattr(existing, k) != v}
        if not changed:
            return "chargeback-unchanged"
        for name, value in changed.items():
            setattr(existing, name, value)
        existing.updated_at = now
        if closed and existing.closed_at is None:
            existing.closed_at = now
        session.add(existing)
        log.info(
            "chargeback %s of order %s: %s",
            dispute_id,
            existing.order_id,
            ", ".join(sorted(changed)),
            extra={"order_id": existing.order_id, "dispute_id": dispute_id},
        )
        return f"chargeback-{status}" if "status" in changed else "chargeback-updated"
    chargeback = Chargeback(
        dispute_id=dispute_id,
        provider="stripe",
        order_id=payment.order_id,
        payment_id=payment.id,
        reason=reason,
        amount=amount,
        currency=currency,
        status=status,
        created_at=now,
        updated_at=now,
        closed_at=now if closed else None,
    )
    session.add(chargeback)
    session.flush()
    order = session.get(Order, payment.order_id)
    detail = {
        "dispute_id": dispute_id,
        "chargeback_id": chargeback.id,
        "payment_id": payment.id,
        "reason": reason,
        "status": str(status),
        "amount": str(amount),
        "currency": currency,
        "customer_id": order.user_id if order is not None else None,
        "email": order.email if order is not None else None,
    }
    alert = alerts.raise_alert(
        session,
        kind=CHARGEBACK,
        severity=AlertSeverity.high,
        order_id=payment.order_id,
        title=f"Chargeback on order {payment.order_id}: {reason} ({amount} {currency})",
        detail=detail,
    )
    emit(
        session,
        "order",
        payment.order_id,
        "order.chargeback",
        {"order_id": payment.order_id, "alert_id": alert.id, **detail},
    )
    log.warning(
        "chargeback %s (%s) on order %s",
        dispute_id,
        reason,
        payment.order_id,
        extra={"order_id": payment.order_id, "dispute_id": dispute_id},
    )
    return "chargeback-recorded"


def _on_dispute_created(session: Session, obj: dict[str, Any]) -> str:
    return _on_dispute(session, obj, "charge.dispute.created")


def _on_dispute_updated(session: Session, obj: dict[str, Any]) -> str:
    return _on_dispute(session, obj, "charge.dispute.updated")


def _on_dispute_closed(session: Session, obj: dict[str, Any]) -> str:
    return _on_dispute(session, obj, "charge.dispute.closed")


def _ignored(session: Session, obj: dict[str, Any]) -> str:
    return "ignored"


_HANDLERS: dict[str, Callable[[Session, dict[str, Any]], str]] = {
    "payment_intent.succeeded": _on_intent_succeeded,
    "payment_intent.payment_failed": _on_intent_failed,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute_created,
    "charge.dispute.updated": _on_dispute_updated,
    "charge.dispute.closed": _on_dispute_closed,
}


# --- refunds --------------------------------------------------------------------------------


def _confirm_refund(
    session: Session,
    *,
    order_id: str,
    payment_id: int,
    amount: Decimal,
    actor: str,
    actor_id: int | None,
    reason: str,
) -> None:
    """Count a confirmed refund on the order; a full one moves it to refunded (caller commits)."""
    session.execute(
        update(Order)
        .where(col(Order.id) == order_id)
        .values(
            refunded_amount=func.round(col(Order.refunded_amount) + amount, 2),
            updated_at=utcnow(),
        )
    )
    order = session.get(Order, order_id, populate_existing=True)
    payment = session.get(Payment, payment_id, populate_existing=True)
    assert order is not None
    assert payment is not None
    full = order.refunded_amount >= payment.amount
    payment.status = PaymentStatus.refunded if full else PaymentStatus.partially_refunded
    payment.updated_at = utcnow()
    session.add(payment)
    current = OrderStatus(order.status)
    if full and can_transition(current, OrderStatus.refunded):
        orders.transition(
            session=session,
            order_id=order_id,
            to_status=OrderStatus.refunded,
            actor=actor,
            actor_id=actor_id,
            reason=reason or "refunded in full",
            commit=False,
        )
        return
    if full:
        log.warning(
            "order %s is fully refunded but is %s", order_id, current, extra={"order_id": order_id}
        )
        return
    emit(
        session,
        "order",
        order_id,
        "order.partially_refunded",
        {
            "order_id": order_id,
            "amount": str(amount),
            "refunded_amount": str(order.refunded_amount),
            "total": str(order.total),
            "currency": order.currency,
            "email": order.email,
            "reason": reason,
        },
    )


def _collected_payment(session: Session, order: Order) -> Payment:
    """The payment a refund draws on (flushes a manual one if staff marked the order paid)."""
    payments = list(
        session.exec(
            select(Payment)
            .where(Payment.order_id == order.id)
            .order_by(col(Payment.id).desc())
            .execution_options(populate_existing=True)
        )
    )
    for payment in payments:
        if payment.status in COLLECTED:
            return payment
    latest = payments[0] if payments else None
    if latest is not None and latest.provider != "manual":
        # Paid per the order (e.g. a missed webhook); the provider has the final word.
        return latest
    if latest is None:
        if order.payment_provider != "manual":
            raise Conflict("No payment is recorded for this order.", slug="no-payment")
        latest = Payment(
            order_id=order.id, provider="manual", amount=order.total, currency=order.currency
        )
    # A manual order in a paid state: staff confirmed the money arrived.
    latest.status = PaymentStatus.succeeded
    latest.updated_at = utcnow()
    session.add(latest)
    session.flush()
    return latest


def _refund_by_key(session: Session, scoped_key: str) -> Refund | None:
    return session.exec(
        select(Refund)
        .where(Refund.idempotency_key == scoped_key)
        .execution_options(populate_existing=True)
    ).first()


def _reserve(
    session: Session,
    *,
    order_id: str,
    amount: Decimal | None,
    reason: str,
    scoped_key: str,
    actor_id: int | None,
) -> Refund | None:
    """Hold the amount against the payment and commit a pending Refund; None on a key race."""
    order = _lock_order(session, order_id)
    try:
        current = OrderStatus(order.status)
        if current not in REFUNDABLE:
            raise Conflict(
                f"Only paid, fulfilled, shipped or delivered orders can be refunded; "
                f"this one is {current}.",
                slug="not-refundable",
            )
        payment = _collected_payment(session, order)
        remaining = quantize(payment.amount - payment.refunded_amount)
        if remaining <= 0:
            raise Conflict("This order is already refunded in full.", slug="fully-refunded")
        value = remaining if amount is None else quantize(amount)
        if value <= 0:
            raise Conflict("A refund must be positive.", slug="refund-not-positive")
        if value > remaining:
            raise Conflict(
                f"At most {remaining} {payment.currency} can still be refunded.",
                slug="refund-exceeds-remaining",
                remaining=str(remaining),
            )
    except Problem:
        session.rollback()
        raise
    new_total = func.round(col(Payment.refunded_amount) + value, 2)
    claimed = session.execute(
        update(Payment)
        .where(col(Payment.id) == payment.id, new_total <= col(Payment.amount))
        .values(refunded_amount=new_total, updated_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Conflict(
            "A concurrent refund changed what can be refunded; reload and retry.",
            slug="refund-exceeds-remaining",
        )
    assert payment.id is not None
    refund = Refund(
        payment_id=payment.id,
        order_id=order_id,
        amount=value,
        reason=reason,
        provider_ref=None,
        idempotency_key=scoped_key,
        created_by=actor_id,
    )
    session.add(refund)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return refund


def _release(session: Session, refund_id: int, payment_id: int, amount: Decimal) -> None:
    """Undo a reservation the provider definitively refused. Commits."""
    removed = session.execute(
        delete(Refund).where(col(Refund.id) == refund_id, col(Refund.provider_ref).is_(None))
    )
    if removed.rowcount == 1:  # type: ignore[attr-defined]
        session.execute(
            update(Payment)
            .where(col(Payment.id) == payment_id)
            .values(
                refunded_amount=func.round(col(Payment.refunded_amount) - amount, 2),
                updated_at=utcnow(),
            )
        )
    session.commit()


def _finalize(session: Session, refund_id: int, provider_ref: str, actor_id: int | None) -> Refund:
    """Record the provider's confirmation once, with its order effects. Commits."""
    for _ in range(ATTEMPTS):
        claimed = session.execute(
            update(Refund)
            .where(col(Refund.id) == refund_id, col(Refund.provider_ref).is_(None))
            .values(provider_ref=provider_ref)
        )
        refund = session.get(Refund, refund_id, populate_existing=True)
        if refund is None:
            session.rollback()
            log.error("refund %s succeeded at the provider but its reservation is gone", refund_id)
            raise Conflict("The refund was withdrawn concurrently.", slug="concurrent-update")
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()  # a concurrent retry with the same key recorded it
            return refund
        try:
            _confirm_refund(
                session,
                order_id=refund.order_id,
                payment_id=refund.payment_id,
                amount=refund.amount,
                actor="staff",
                actor_id=actor_id,
                reason=refund.reason,
            )
        except InvalidTransition:
            session.rollback()
            continue
        session.commit()
        return refund
    raise Conflict(
        "The order kept changing while the refund was recorded; retry with the same "
        "Idempotency-Key.",
        slug="concurrent-update",
    )


def _execute(session: Session, settings: Settings, refund: Refund, key: str) -> Refund:
    """Call the provider for a reserved refund (outside any transaction), then record it."""
    refund_id, payment_id, amount = refund.id, refund.payment_id, refund.amount
    order_id, reason, actor_id = refund.order_id, refund.reason, refund.created_by
    payment = session.get(Payment, payment_id, populate_existing=True)
    assert refund_id is not None
    assert payment is not None
    provider = _provider_named(payment.provider, settings)
    provider_ref, currency = payment.provider_ref, payment.currency
    session.commit()  # end the read transaction before the network call
    try:
        result = provider.refund(
            provider_ref=provider_ref,
            amount=amount,
            currency=currency,
            idempotency_key=f"order-{order_id}-refund-{key}",
            reason=reason,
        )
    except PaymentProviderError as exc:
        if exc.definitive:
            _release(session, refund_id, payment_id, amount)
        else:
            exc.detail += " The refund is held; retry with the same Idempotency-Key."
            exc.extra["idempotency_key"] = key
        raise
    ref = result.provider_ref or f"{provider.name}-refund-{refund_id}"
    return _finalize(session, refund_id, ref, actor_id)


def refund_order(
    *,
    session: Session,
    settings: Settings,
    order_id: str,
    amount: Decimal | None = None,
    reason: str = "",
    idempotency_key: str | None = None,
    actor_id: int | None = None,
) -> RefundOutcome:
    """Refund part of an order, or without an amount all that remains, through its provider."""
    key = idempotency_key or uuid.uuid4().hex
    scoped_key = f"{order_id}:{key}"
    refund = _refund_by_key(session, scoped_key)
    replayed = refund is not None
    if refund is None:
        refund = _reserve(
            session,
            order_id=order_id,
            amount=amount,
            reason=reason,
            scoped_key=scoped_key,
            actor_id=actor_id,
        )
        if refund is None:  # a concurrent request with the same key won the race
            refund = _refund_by_key(session, scoped_key)
            replayed = True
            assert refund is not None
    if replayed:
        if amount is not None and quantize(amount) != refund.amount:
            raise Conflict(
                "This Idempotency-Key was already used for a refund of a different amount.",
                slug="idempotency-key-reused",
            )
        if refund.provider_ref is not None:
            return RefundOutcome(refund, replayed=True)
    return RefundOutcome(_execute(session, settings, refund, key), replayed=replayed)
