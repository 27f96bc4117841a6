"""The payments port: what checkout, refunds and webhooks need from a provider."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from cartwise.platform.errors import Problem
from cartwise.platform.settings import Settings


@dataclass(frozen=True)
class PaymentIntentResult:
    """What the provider returns when asked to collect an amount."""

    provider_ref: str | None
    client_secret: str | None
    status: str


@dataclass(frozen=True)
class RefundResult:
    """What the provider returns for a refund."""

    provider_ref: str | None
    status: str


class PaymentProviderError(Problem):
    """The provider refused the request or could not be reached.

    ``definitive`` is True when the provider certainly did not act (a refusal), False when the
    outcome is unknown (a timeout or a 5xx), in which case a retry with the same idempotency key
    settles it.
    """

    status, slug, title = 502, "payment-provider-error", "Payment provider error"

    def __init__(self, detail: str, *, definitive: bool, status: int | None = None) -> None:
        super().__init__(detail, status=status)
        self.definitive = definitive


class PaymentProvider(Protocol):
    """A payment gateway adapter (``manual`` or ``stripe``)."""

    name: str

    def create_intent(
        self, *, order_id: str, amount: Decimal, currency: str, email: str, idempotency_key: str
    ) -> PaymentIntentResult:
        """Ask the provider to collect an order's total."""

    def refund(
        self,
        *,
        provider_ref: str | None,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        reason: str = "",
    ) -> RefundResult:
        """Refund part or all of a collected payment."""


class ManualProvider:
    """No money moves: staff mark orders paid; refunds are recorded only."""

    name = "manual"

    def create_intent(
        self, *, order_id: str, amount: Decimal, currency: str, email: str, idempotency_key: str
    ) -> PaymentIntentResult:
        """Nothing to create; the order waits for staff."""
        return PaymentIntentResult(provider_ref=None, client_secret=None, status="pending")

    def refund(
        self,
        *,
        provider_ref: str | None,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        reason: str = "",
    ) -> RefundResult:
        """Recorded only."""
        return RefundResult(provider_ref=None, status="succeeded")


def get_provider(settings: Settings) -> PaymentProvider:
    """The provider chosen by ``CARTWISE_PAYMENT_PROVIDER``."""
    if settings.payment_provider == "stripe":
        from cartwise.commerce.payments.stripe_adapter import StripeProvider

        return StripeProvider(settings)
    return ManualProvider()
