"""The Stripe adapter (to be completed)."""

from __future__ import annotations

from decimal import Decimal

from cartwise.commerce.payments.port import PaymentIntentResult, RefundResult
from cartwise.platform.settings import Settings


class StripeProvider:
    """Stripe PaymentIntents and refunds."""

    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def create_intent(
        self, *, order_id: str, amount: Decimal, currency: str, email: str, idempotency_key: str
    ) -> PaymentIntentResult:
        """Create a PaymentIntent."""
        raise NotImplementedError

    def refund(
        self,
        *,
        provider_ref: str | None,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        reason: str = "",
    ) -> RefundResult:
        """Refund a PaymentIntent."""
        raise NotImplementedError
