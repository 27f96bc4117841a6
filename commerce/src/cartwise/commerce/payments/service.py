"""Payment services: start collecting an order, record provider outcomes."""

from __future__ import annotations

from sqlmodel import Session, col, select

from cartwise.commerce.orders.models import Order
from cartwise.commerce.payments.models import Payment, PaymentStatus
from cartwise.commerce.payments.port import PaymentIntentResult, get_provider
from cartwise.platform.settings import Settings


def start_payment(*, session: Session, settings: Settings, order: Order) -> PaymentIntentResult:
    """Ask the configured provider to collect the order total; records a pending Payment.

    Called after the checkout transaction commits, so no database locks are held while the
    provider is called. Idempotent per order: a retry reuses the provider's idempotency key.
    """
    provider = get_provider(settings)
    result = provider.create_intent(order_id=order.id, amount=order.total,
                                    currency=order.currency, email=order.email,
                                    idempotency_key=f"order-{order.id}-intent")
    existing = session.exec(
        select(Payment).where(Payment.order_id == order.id, Payment.provider == provider.name)
        .order_by(col(Payment.id).desc())
    ).first()
    if existing is None:
        session.add(Payment(order_id=order.id, provider=provider.name,
                            provider_ref=result.provider_ref, amount=order.total,
                            currency=order.currency, status=PaymentStatus.pending))
        session.commit()
    return result
