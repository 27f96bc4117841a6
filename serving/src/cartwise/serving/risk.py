"""The checkout's fraud scorer: commerce's ``RiskScorer`` port, answered by the FraudScorer model.

Checkout is a sync route running in FastAPI's threadpool, while the ML client is async (it
awaits Serve handles on the app's event loop). :meth:`ServingRiskScorer.assess` hands the call
to that loop with ``anyio.from_thread.run`` and waits at most the deadline (0.25 s). A model
that is unavailable, too slow or failing never blocks a sale: commerce's fallback rule decides
instead, and the assessment says so (``fallback=True``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import anyio.from_thread

from cartwise.commerce.orders.risk import (
    RiskAssessment,
    RiskDecision,
    RiskRequest,
    fallback_assessment,
)
from cartwise.platform.settings import Settings
from cartwise.serving.fallback import FallbackCounter
from cartwise.serving.routes.common import DEADLINE_GRACE_S, DEADLINES, MLCaller
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable

log = logging.getLogger(__name__)

MAX_REASONS = 5


def score_payload(request: RiskRequest) -> dict[str, Any]:
    """The FraudService request: the order's request-time fields, as JSON values."""
    return {
        "order_id": request.order_id,
        "customer_id": request.customer_id,
        "order_amount": float(request.order_amount),
        "shipping_country": request.shipping_country,
        "orders_last_hour": int(request.orders_last_hour),
        "request_epoch": int(request.request_epoch),
    }


def to_assessment(result: dict[str, Any]) -> RiskAssessment:
    """A FraudService answer as a ``RiskAssessment`` (``ValueError`` when malformed)."""
    try:
        risk = float(result["risk"])
        decision = RiskDecision(result["decision"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed fraud answer: {exc}") from exc
    model = result.get("model") or {}
    version = model.get("version") if isinstance(model, dict) else None
    reasons = [r for r in result.get("reasons") or [] if isinstance(r, dict)][:MAX_REASONS]
    return RiskAssessment(
        risk=risk,
        decision=decision,
        model_version=str(version) if version is not None else None,
        reasons=reasons,
    )


class ServingRiskScorer:
    """``RiskScorer`` backed by the fraud model, with commerce's rule as the fallback."""

    def __init__(
        self,
        ml: MLCaller,
        settings: Settings | None = None,
        *,
        deadline_s: float = DEADLINES["fraud"],
        fallbacks: FallbackCounter | None = None,
    ) -> None:
        self.ml = ml
        self.settings = settings
        self.deadline_s = deadline_s
        self.fallbacks = fallbacks

    async def ascore(self, request: RiskRequest) -> RiskAssessment:
        """Score on the event loop; raises ModelUnavailable, Deadline or ValueError."""
        try:
            result = await asyncio.wait_for(
                self.ml.call(
                    "fraud",
                    "score",
                    timeout_s=self.deadline_s,
                    request=score_payload(request),
                ),
                self.deadline_s + DEADLINE_GRACE_S,
            )
        except TimeoutError as exc:
            raise Deadline(f"fraud scoring took over {self.deadline_s} s") from exc
        return to_assessment(result)

    def _run(self, request: RiskRequest) -> RiskAssessment:
        try:
            # From a threadpool worker of the app: run on the app's own loop, where the
            # client's connections (Serve handles) live.
            return anyio.from_thread.run(self.ascore, request)
        except (anyio.NoEventLoopError, anyio.RunFinishedError):
            pass
        # Not called from a worker thread of a running loop (a script, a CLI command): a
        # private loop serves an in-process client just as well.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore(request))
        raise ModelUnavailable("fraud scoring cannot block a running event loop")

    def assess(self, request: RiskRequest) -> RiskAssessment:
        """Score an order before it is written; the fallback rule answers any failure."""
        try:
            return self._run(request)
        except ModelUnavailable as exc:
            reason = f"model unavailable: {exc}"
            kind = "model_unavailable"
        except Deadline as exc:
            reason = f"deadline: {exc}"
            kind = "deadline"
        except ValueError as exc:
            reason = f"invalid request: {exc}"
            kind = "invalid_request"
        except Exception as exc:
            log.exception("fraud scoring failed for order %s", request.order_id)
            reason = f"error: {type(exc).__name__}"
            kind = "error"
        if self.fallbacks is not None:
            self.fallbacks.record("fraud", kind)
        log.warning("fraud fallback rule for order %s (%s)", request.order_id, reason)
        return fallback_assessment(request, self.settings, reason=reason)


__all__ = ["ServingRiskScorer", "score_payload", "to_assessment"]
