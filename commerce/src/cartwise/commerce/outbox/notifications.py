"""What each outbox event tells whom: the channels of an event and their rendered messages.

The order confirmation goes out on ``order.paid``, not ``order.created``: an order is created
before its payment, and may then fail to pay, expire (its reservation released) or be held
for fraud review. A shopper is told the order is confirmed only once the money is collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from typing import Any

from sqlmodel import Session, col, select

from cartwise.commerce.orders.models import OrderLine
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.platform.mail import build_message, mail_domain, message_id
from cartwise.platform.settings import Settings

CUSTOMER_MAIL = "customer_mail"
STAFF_MAIL = "staff_mail"
WEBHOOK = "webhook"

# Event type -> the channels it goes to; anything not listed needs no delivery.
CHANNELS: dict[str, tuple[str, ...]] = {
    "order.paid": (CUSTOMER_MAIL,),
    "order.shipped": (CUSTOMER_MAIL,),
    "order.refunded": (CUSTOMER_MAIL,),
    "order.partially_refunded": (CUSTOMER_MAIL,),
    "fraud.review_required": (STAFF_MAIL, WEBHOOK),
    "order.chargeback": (STAFF_MAIL, WEBHOOK),
}


@dataclass(frozen=True)
class Notice:
    """One rendered delivery: a mail, or a webhook payload."""

    channel: str
    delivery_id: str
    mail: EmailMessage | None = None
    webhook: dict[str, Any] = field(default_factory=dict)


def channels_for(event: OutboxEvent, settings: Settings) -> list[str]:
    """The channels an event goes to under these settings (no webhook without a URL)."""
    channels = list(CHANNELS.get(event.event_type, ()))
    if WEBHOOK in channels and not settings.alert_webhook_url:
        channels.remove(WEBHOOK)
    if CUSTOMER_MAIL in channels and not event.payload.get("email"):
        channels.remove(CUSTOMER_MAIL)
    return channels


def delivery_key(event_id: int, channel: str) -> str:
    """The stable id of one channel of one event (Message-ID, webhook delivery header)."""
    return f"outbox-{event_id}-{channel.replace('_', '-')}"


def _money(value: Any, currency: str) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return f"{value} {currency}"
    return f"{amount:,.2f} {currency}"


def _lines_text(session: Session, order_id: str, currency: str) -> str:
    lines = session.exec(
        select(OrderLine).where(OrderLine.order_id == order_id).order_by(col(OrderLine.id))
    ).all()
    return "\n".join(
        f"  {ln.quantity} x {ln.product_name} ({ln.sku})  {_money(ln.line_total, currency)}"
        for ln in lines
    )


def _customer_mail(event: OutboxEvent, session: Session) -> tuple[str, str]:
    p = event.payload
    order_id = str(p.get("order_id") or event.aggregate_id)
    currency = str(p.get("currency") or "")
    total = _money(p.get("total", "?"), currency)
    if event.event_type == "order.paid":
        lines = _lines_text(session, order_id, currency)
        body = (
            f"Thank you! Your order {order_id} is confirmed and paid.\n\n"
            + (f"{lines}\n\n" if lines else "")
            + f"Total: {total}\n\nWe will mail you again when it ships.\n"
        )
        return f"Order {order_id} confirmed", body
    if event.event_type == "order.shipped":
        return (
            f"Order {order_id} has shipped",
            f"Good news: your order {order_id} ({total}) is on its way.\n",
        )
    if event.event_type == "order.partially_refunded":
        amount = _money(p.get("amount", "?"), currency)
        refunded = _money(p.get("refunded_amount", "?"), currency)
        return (
            f"Partial refund for order {order_id}",
            f"We refunded {amount} of your order {order_id} "
            f"(refunded so far: {refunded} of {total}).\n",
        )
    return (
        f"Refund for order {order_id}",
        f"Your order {order_id} has been refunded in full ({total}).\n",
    )


def _chargeback_mail(event: OutboxEvent) -> tuple[str, str]:
    p = event.payload
    order_id = str(p.get("order_id") or event.aggregate_id)
    amount = _money(p.get("amount", "?"), str(p.get("currency") or ""))
    body = (
        f"A chargeback was opened on order {order_id}.\n\n"
        f"reason:    {p.get('reason', '?')}\n"
        f"amount:    {amount}\n"
        f"status:    {p.get('status', '?')}\n"
        f"dispute:   {p.get('dispute_id', '?')}\n"
        f"customer:  {p.get('email', '?')}\n"
        f"alert id:  {p.get('alert_id')}\n\n"
        "Answer the dispute with the payment provider; a 'fraudulent' chargeback also becomes "
        "a fraud label for the next training and drift check.\n"
    )
    return f"[chargeback] order {order_id}: {p.get('reason', '?')} ({amount})", body


def _staff_mail(event: OutboxEvent) -> tuple[str, str]:
    if event.event_type == "order.chargeback":
        return _chargeback_mail(event)
    p = event.payload
    order_id = str(p.get("order_id") or event.aggregate_id)
    risk = p.get("risk")
    risk_text = f"{float(risk):.2f}" if isinstance(risk, int | float) else "?"
    reasons = p.get("reasons") or []
    reason_lines = "\n".join(f"  - {r}" for r in reasons) or "  (none given)"
    body = (
        f"Order {order_id} is held for fraud review.\n\n"
        f"risk:      {risk_text}\n"
        f"customer:  {p.get('email', '?')}\n"
        f"total:     {_money(p.get('total', '?'), str(p.get('currency') or ''))}\n"
        f"model:     {p.get('model_version') or 'fallback rule'}\n"
        f"alert id:  {p.get('alert_id')}\n"
        f"reasons:\n{reason_lines}\n\n"
        f"Approve or reject it: POST /api/v1/orders/{order_id}/review\n"
    )
    return f"[fraud review] order {order_id} (risk {risk_text})", body


def render(event: OutboxEvent, channel: str, *, session: Session, settings: Settings) -> Notice:
    """The message one channel of an event sends (mail or webhook payload)."""
    assert event.id is not None
    key = delivery_key(event.id, channel)
    if channel == WEBHOOK:
        payload = {
            "id": key,
            "type": event.event_type,
            "event_id": event.id,
            "created_at": event.created_at.isoformat(),
            "data": event.payload,
        }
        return Notice(channel=channel, delivery_id=key, webhook=payload)
    if channel == STAFF_MAIL:
        subject, text = _staff_mail(event)
        to = [settings.staff_alert_email]
    elif channel == CUSTOMER_MAIL:
        subject, text = _customer_mail(event, session)
        to = [str(event.payload["email"])]
    else:
        raise ValueError(f"unknown channel {channel!r}")
    mail = build_message(
        sender=settings.mail_from,
        to=to,
        subject=subject,
        text=text,
        msg_id=message_id(key, mail_domain(settings.mail_from)),
        headers={"X-Cartwise-Event": f"{event.event_type} {event.id}"},
    )
    return Notice(channel=channel, delivery_id=key, mail=mail)
