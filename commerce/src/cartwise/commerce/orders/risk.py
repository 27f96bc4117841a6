"""The fraud-risk port checkout calls, and the rule that decides when no model can.

Checkout asks a :class:`RiskScorer` (installed at ``app.state.risk_scorer``; the serving layer
provides one backed by the ``FraudScorer`` deployment) for a :class:`RiskAssessment` before it
opens its write transaction, so no lock is held while a model thinks. :func:`assess_safely`
wraps the call: a scorer that raises, answers nonsense or misses :data:`RISK_DEADLINE_S` is
replaced by :func:`fallback_assessment`, and checkout goes on.

Threading: checkout is a sync route, so it runs in an AnyIO worker thread. The scorer's
``assess`` runs in another AnyIO worker thread of the same event loop (with its own capacity
limiter, so busy checkouts cannot starve their own scorers of threads); an adapter that needs
the event loop can therefore use ``anyio.from_thread.run``. Outside an event loop (scripts,
the CLI) it runs in a plain thread pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import anyio
import anyio.from_thread
import anyio.to_thread
from sqlmodel import Session, col, func, select

from cartwise.commerce.orders.models import Order, RiskDecision
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_REVIEW_AMOUNT",
    "FALLBACK_VELOCITY",
    "RISK_DEADLINE_S",
    "RiskAssessment",
    "RiskDecision",
    "RiskRequest",
    "RiskScorer",
    "assess_safely",
    "fallback_assessment",
    "orders_last_hour",
]

# The fallback rule (no Settings field on purpose: the rule is a stop-gap for when the model
# cannot answer, not a tuning knob). An order total at or above this amount, in any currency,
# goes to review: a few large orders wait for a person rather than a fraudster getting a big
# basket through while the model is down.
FALLBACK_REVIEW_AMOUNT = Decimal("500")
# ... and so does a customer (or guest email) with this many orders in the hour before: the
# velocity pattern card testers show.
FALLBACK_VELOCITY = 3
# The backstop deadline of a scorer call. The serving adapter has its own, shorter one (the
# ML call's 0.25 s) and falls back itself; this one only catches a scorer that hangs.
RISK_DEADLINE_S = 0.5
# At most this many reasons are kept on the order: the top contributions are what staff read.
MAX_REASONS = 10
# Scorer threads per event loop; more concurrent checkouts wait (and may hit the deadline).
SCORER_THREADS = 32


@dataclass(frozen=True, slots=True)
class RiskRequest:
    """What checkout knows about an order before placing it."""

    order_id: str
    customer_id: int | None
    email: str
    order_amount: Decimal
    currency: str
    shipping_country: str | None
    orders_last_hour: int
    request_epoch: int

    def to_payload(self) -> dict[str, Any]:
        """The request as JSON-able values (the fraud service's ``score`` request)."""
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "email": self.email,
            "order_amount": float(self.order_amount),
            "currency": self.currency,
            "shipping_country": self.shipping_country,
            "orders_last_hour": int(self.orders_last_hour),
            "request_epoch": int(self.request_epoch),
        }


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """A risk score in [0, 1], the decision it leads to, and why.

    ``reasons`` are dicts ``{"feature", "contribution", "text"?}``, most important first.
    ``fallback`` says the fallback rule decided (``reason`` says why the model did not).
    """

    risk: float
    decision: RiskDecision
    model_version: str | None
    reasons: list[dict[str, Any]]
    fallback: bool = False
    reason: str | None = None


class RiskScorer(Protocol):
    """Scores an order's fraud risk; called synchronously from checkout (a worker thread)."""

    def assess(self, request: RiskRequest) -> RiskAssessment:
        """The assessment of one order; may raise (checkout then uses the fallback rule)."""
        ...


def fallback_assessment(
    request: RiskRequest, settings: Settings | None = None, *, reason: str | None = None
) -> RiskAssessment:
    """The rule used when no model answers: review big or rapid-fire orders, allow the rest.

    The risk reported is half the highest ratio of a signal to its threshold (capped at 1), so
    an order exactly at a threshold scores 0.5.
    """
    del settings  # the thresholds are module constants (see above), not settings
    reasons: list[dict[str, Any]] = []
    amount_ratio = float(request.order_amount / FALLBACK_REVIEW_AMOUNT)
    velocity_ratio = request.orders_last_hour / FALLBACK_VELOCITY
    if request.order_amount >= FALLBACK_REVIEW_AMOUNT:
        reasons.append(
            {
                "feature": "order_amount",
                "contribution": None,
                "text": f"fallback rule: order total {request.order_amount} "
                f"is at least {FALLBACK_REVIEW_AMOUNT}",
            }
        )
    if request.orders_last_hour >= FALLBACK_VELOCITY:
        reasons.append(
            {
                "feature": "orders_last_hour",
                "contribution": None,
                "text": f"fallback rule: {request.orders_last_hour} orders in the last hour "
                f"(at least {FALLBACK_VELOCITY})",
            }
        )
    decision = RiskDecision.review if reasons else RiskDecision.allow
    if not reasons:
        reasons.append(
            {
                "feature": "rule",
                "contribution": None,
                "text": f"fallback rule: below {FALLBACK_REVIEW_AMOUNT} and fewer than "
                f"{FALLBACK_VELOCITY} orders in the last hour",
            }
        )
    if reason:
        # Stored with the order: staff see why the model did not decide.
        reasons.append(
            {"feature": "model", "contribution": None, "text": f"fraud model not used: {reason}"}
        )
    risk = min(1.0, 0.5 * max(amount_ratio, velocity_ratio, 0.0))
    return RiskAssessment(
        risk=round(risk, 4),
        decision=decision,
        model_version=None,
        reasons=reasons,
        fallback=True,
        reason=reason,
    )


class _ScorerFailed(Exception):
    """Carries the scorer's own exception across the thread hop, told apart from AnyIO's."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


# One capacity limiter per event loop: AnyIO limiters belong to the loop that first uses them,
# and test clients (or several apps) may each run their own loop.
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)
_limiters_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    with _limiters_lock:  # loops in several threads (test clients) may ask at once
        limiter = _limiters.get(loop)
        if limiter is None:
            limiter = anyio.CapacityLimiter(SCORER_THREADS)
            _limiters[loop] = limiter
        return limiter


def _guarded(assess: Callable[[RiskRequest], RiskAssessment], request: RiskRequest) -> Any:
    try:
        return assess(request)
    except Exception as exc:
        raise _ScorerFailed(exc) from exc


async def _in_worker(
    assess: Callable[[RiskRequest], RiskAssessment], request: RiskRequest, deadline_s: float
) -> Any:
    with anyio.fail_after(deadline_s):
        # Abandoned on timeout: the thread finishes on its own and its answer is dropped.
        return await anyio.to_thread.run_sync(
            _guarded, assess, request, abandon_on_cancel=True, limiter=_limiter()
        )


def _in_pool(
    assess: Callable[[RiskRequest], RiskAssessment], request: RiskRequest, deadline_s: float
) -> Any:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="risk-scorer")
        pool = _pool
    return pool.submit(_guarded, assess, request).result(timeout=deadline_s)


def _call(scorer: RiskScorer, request: RiskRequest, deadline_s: float) -> Any:
    """Run ``scorer.assess`` within the deadline; raises TimeoutError or _ScorerFailed."""
    try:
        return anyio.from_thread.run(_in_worker, scorer.assess, request, deadline_s)
    except (anyio.NoEventLoopError, anyio.RunFinishedError):
        pass  # not in an event loop's worker thread: use a plain thread
    return _in_pool(scorer.assess, request, deadline_s)


def _valid(result: Any) -> RiskAssessment | None:
    """The assessment if it is well-formed, with JSON-safe reasons; None otherwise."""
    if not isinstance(result, RiskAssessment):
        return None
    try:
        risk = float(result.risk)
        decision = RiskDecision(result.decision)
        reasons = json.loads(json.dumps(list(result.reasons)[:MAX_REASONS], default=str))
    except (TypeError, ValueError):
        return None
    if not math.isfinite(risk) or not 0.0 <= risk <= 1.0:
        return None
    if not all(isinstance(r, dict) for r in reasons):
        return None
    version = None if result.model_version is None else str(result.model_version)[:40]
    return RiskAssessment(
        risk=risk,
        decision=decision,
        model_version=version,
        reasons=reasons,
        fallback=bool(result.fallback),
        reason=result.reason,
    )


def assess_safely(
    scorer: RiskScorer,
    request: RiskRequest,
    settings: Settings | None = None,
    *,
    deadline_s: float = RISK_DEADLINE_S,
) -> RiskAssessment:
    """Ask the scorer, within the deadline; any failure gives the fallback rule's answer."""
    try:
        result = _call(scorer, request, deadline_s)
    except TimeoutError:
        log.warning(
            "fraud scorer missed its %.2fs deadline for order %s; using the fallback rule",
            deadline_s,
            request.order_id,
            extra={"order_id": request.order_id},
        )
        return fallback_assessment(request, settings, reason="timeout")
    except _ScorerFailed as failed:
        log.warning(
            "fraud scorer failed for order %s (%r); using the fallback rule",
            request.order_id,
            failed.error,
            extra={"order_id": request.order_id},
        )
        return fallback_assessment(
            request, settings, reason=f"error: {type(failed.error).__name__}"
        )
    except Exception:
        log.exception("fraud scoring could not run for order %s", request.order_id)
        return fallback_assessment(request, settings, reason="error")
    assessment = _valid(result)
    if assessment is None:
        log.warning(
            "fraud scorer answered %r for order %s; using the fallback rule",
            result,
            request.order_id,
            extra={"order_id": request.order_id},
        )
        return fallback_assessment(request, settings, reason="invalid assessment")
    return assessment


def orders_last_hour(
    session: Session,
    *,
    customer_id: int | None,
    email: str,
    now: datetime | None = None,
) -> int:
    """The customer's orders (a guest's, by email) placed in the hour before ``now``."""
    since = (now or utcnow()) - timedelta(hours=1)
    stmt = select(func.count()).select_from(Order).where(col(Order.created_at) >= since)
    if customer_id is not None:
        stmt = stmt.where(col(Order.user_id) == customer_id)
    else:
        stmt = stmt.where(col(Order.email) == email)
    return int(session.exec(stmt).one())
