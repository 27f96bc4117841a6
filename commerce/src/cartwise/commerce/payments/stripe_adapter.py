"""The Stripe adapter: PaymentIntents, refunds and webhook verification via the official library."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import stripe

from cartwise.commerce.money import to_minor_units
from cartwise.commerce.payments.port import (
    PaymentIntentResult,
    PaymentProviderError,
    RefundResult,
)
from cartwise.platform.errors import Problem
from cartwise.platform.settings import Settings

# Connect and read timeouts (seconds): a checkout or refund must not hang on Stripe for 80 s.
HTTP_TIMEOUT = (5.0, 30.0)
# Safe because every mutating call carries an idempotency key.
MAX_NETWORK_RETRIES = 2

_clients: dict[tuple[str, str | None, int], stripe.StripeClient] = {}
_clients_lock = threading.Lock()


class InvalidWebhook(Problem):
    """A webhook whose signature, timestamp or payload does not check out."""

    status, slug, title = 400, "invalid-webhook", "Invalid webhook"


def get_client(
    settings: Settings, *, max_network_retries: int = MAX_NETWORK_RETRIES
) -> stripe.StripeClient:
    """A StripeClient for the configured key and API base, built on first use and reused."""
    if settings.stripe_api_key is None:
        raise PaymentProviderError(
            "Stripe is not configured (CARTWISE_STRIPE_API_KEY is unset).", definitive=True
        )
    api_key = settings.stripe_api_key.get_secret_value()
    cache_key = (api_key, settings.stripe_api_base, max_network_retries)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            base: dict[str, Any] = {}
            if settings.stripe_api_base:
                base["api"] = settings.stripe_api_base.rstrip("/")
            client = stripe.StripeClient(
                api_key,
                base_addresses=base,  # type: ignore[arg-type]
                max_network_retries=max_network_retries,
                http_client=stripe.RequestsClient(timeout=HTTP_TIMEOUT),
            )
            _clients[cache_key] = client
        return client


def _provider_error(exc: stripe.StripeError, action: str) -> PaymentProviderError:
    """Map a library error to a problem; refusals are definitive, transport failures are not."""
    message = exc.user_message or str(exc) or exc.__class__.__name__
    if isinstance(exc, stripe.APIConnectionError):
        return PaymentProviderError(
            f"Stripe could not be reached while trying to {action}.", definitive=False
        )
    if isinstance(exc, stripe.IdempotencyError):
        # The same key is in flight elsewhere, or was used with other parameters: the first
        # request's outcome stands, so this is not a refusal of it.
        return PaymentProviderError(
            f"Stripe is still handling this request ({action}): {message}",
            definitive=False,
            status=409,
        )
    if isinstance(exc, stripe.CardError | stripe.InvalidRequestError):
        return PaymentProviderError(
            f"Stripe refused to {action}: {message}", definitive=True, status=409
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return PaymentProviderError(
            f"Stripe rejected our credentials while trying to {action}.", definitive=True
        )
    if isinstance(exc, stripe.RateLimitError):
        return PaymentProviderError(
            f"Stripe is rate limiting us; could not {action}.", definitive=True, status=503
        )
    status = getattr(exc, "http_status", None)
    return PaymentProviderError(
        f"Stripe failed while trying to {action}: {message}",
        definitive=bool(status is not None and 400 <= status < 500),
    )


class StripeProvider:
    """Stripe PaymentIntents and refunds."""

    name = "stripe"

    def __init__(self, settings: Settings, *, max_network_retries: int = MAX_NETWORK_RETRIES):
        self.settings = settings
        self.max_network_retries = max_network_retries

    @property
    def client(self) -> stripe.StripeClient:
        """The shared library client."""
        return get_client(self.settings, max_network_retries=self.max_network_retries)

    def create_intent(
        self, *, order_id: str, amount: Decimal, currency: str, email: str, idempotency_key: str
    ) -> PaymentIntentResult:
        """Create a PaymentIntent for an order (minor units, lower-case currency)."""
        params: dict[str, Any] = {
            "amount": to_minor_units(amount),
            "currency": currency.lower(),
            "metadata": {"order_id": order_id},
            "automatic_payment_methods": {"enabled": True},
        }
        if email:
            params["receipt_email"] = email
        try:
            intent = self.client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc, "create a PaymentIntent") from exc
        return PaymentIntentResult(
            provider_ref=str(intent.id), client_secret=intent.client_secret, status=intent.status
        )

    def refund(
        self,
        *,
        provider_ref: str | None,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        reason: str = "",
    ) -> RefundResult:
        """Refund part or all of a PaymentIntent."""
        if not provider_ref:
            raise PaymentProviderError(
                "This payment has no Stripe PaymentIntent to refund.", definitive=True, status=409
            )
        params: dict[str, Any] = {
            "payment_intent": provider_ref,
            "amount": to_minor_units(amount),
            "metadata": {"reason": reason[:500]} if reason else {},
        }
        try:
            refund = self.client.v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc, "refund") from exc
        return RefundResult(provider_ref=str(refund.id), status=str(refund.status))


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Check a webhook's ``Stripe-Signature`` with the library and return the event as a dict."""
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook("The Stripe-Signature header does not verify.") from exc
    except (ValueError, AttributeError, TypeError) as exc:  # bad UTF-8 or JSON, not an object
        raise InvalidWebhook("The webhook payload is not a Stripe event.") from exc
    data: dict[str, Any] = event.to_dict()
    return data
