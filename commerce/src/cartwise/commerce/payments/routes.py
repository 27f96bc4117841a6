"""HTTP routes of the payments domain: the Stripe webhook, refunds, manual payments, listing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response

from cartwise.commerce.deps import PrincipalDep, SessionDep, SettingsDep, StaffDep
from cartwise.commerce.orders.service import get_order_for
from cartwise.commerce.payments import service
from cartwise.commerce.payments.models import (
    ManualPaymentRequest,
    PaymentDetail,
    PaymentPublic,
    RefundPublic,
    RefundRequest,
    WebhookAck,
)
from cartwise.platform.errors import PROBLEM_JSON, PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["payments"], responses=PROBLEM_RESPONSES)

_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROVIDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    502: {
        "description": "The payment provider failed or could not be reached",
        "content": _PROBLEM,
    },
    503: {"description": "The payment provider is rate limiting us", "content": _PROBLEM},
}

OrderId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=80,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Makes a retried refund safe: the same key gives the same refund.",
    ),
]


async def _raw_body(request: Request) -> bytes:
    """The request body exactly as sent (signatures are computed over the bytes)."""
    return await request.body()


@router.post(
    "/payments/stripe/webhook",
    response_model=WebhookAck,
    summary="Receive a Stripe webhook",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A Stripe event, signed in the Stripe-Signature header.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
def stripe_webhook(
    session: SessionDep,
    settings: SettingsDep,
    payload: Annotated[bytes, Depends(_raw_body)],
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookAck:
    """Stripe events, checked by signature (no bearer token) and applied once per event id."""
    outcome = service.handle_stripe_webhook(
        session=session, settings=settings, payload=payload, signature=stripe_signature
    )
    return WebhookAck(event_id=outcome.event_id, outcome=outcome.outcome)


@router.post(
    "/orders/{order_id}/refunds",
    response_model=RefundPublic,
    status_code=201,
    summary="Refund part or all of an order (staff)",
    responses={
        200: {"description": "A replay of an earlier request with the same Idempotency-Key"},
        **PROVIDER_RESPONSES,
    },
)
def create_refund(
    order_id: OrderId,
    principal: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    body: RefundRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> RefundPublic:
    """Refund an amount (by default all that remains) through the order's payment provider."""
    request = body or RefundRequest()
    outcome = service.refund_order(
        session=session,
        settings=settings,
        order_id=order_id,
        amount=request.amount,
        reason=request.reason,
        idempotency_key=idempotency_key,
        actor_id=principal.subject,
    )
    if outcome.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return RefundPublic.model_validate(outcome.refund, from_attributes=True)


@router.post(
    "/orders/{order_id}/payments/manual",
    response_model=PaymentPublic,
    summary="Record a manual payment (staff)",
)
def record_manual_payment(
    order_id: OrderId,
    principal: StaffDep,
    session: SessionDep,
    body: ManualPaymentRequest | None = None,
) -> PaymentPublic:
    """Staff confirm a manual-provider order was paid (cash, transfer); it moves to paid."""
    request = body or ManualPaymentRequest()
    payment = service.record_manual_payment(
        session=session,
        order_id=order_id,
        actor_id=principal.subject,
        reference=request.reference,
        reason=request.reason,
    )
    return PaymentPublic.model_validate(payment, from_attributes=True)


@router.get(
    "/orders/{order_id}/payments",
    response_model=list[PaymentDetail],
    summary="List an order's payments and refunds",
)
def list_payments(order_id: OrderId, principal: PrincipalDep, session: SessionDep) -> Any:
    """The order's payments with their refunds (the owner or staff)."""
    order = get_order_for(session=session, order_id=order_id, principal=principal)
    return service.list_payments(session=session, order_id=order.id)
