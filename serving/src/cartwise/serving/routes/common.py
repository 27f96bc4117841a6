"""What every ML route shares: the ingress state, the guarded ML call, experiments, schemas.

A shopper route never turns a model failure into an error: :func:`call_ml` answers
``MLOutcome(result=None, reason=...)`` for an unavailable model, a missed deadline, a rejected
input or any other exception, and the route serves its baseline with ``fallback: true``.
Staff analytics use :func:`staff_call` instead, where a missing model is a 503 problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.to_thread
from fastapi import Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cartwise.platform.errors import NotFound, Problem, Unprocessable
from cartwise.platform.logging import request_id_var
from cartwise.serving.fallback import Bm25Fallback, FallbackCounter, Popularity
from cartwise.serving.metrics import observe_ml_call
from cartwise.serving.routes.catalog import CatalogView, ProductCard
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable

if TYPE_CHECKING:
    from cartwise.commerce.experiments.models import Experiment

log = logging.getLogger(__name__)

T = TypeVar("T")

# Deadlines of the ML calls, in seconds (the budgets for each route).
DEADLINES: dict[str, float] = {
    "recommend": 0.15,
    "search": 0.3,
    "suggest": 0.05,
    "fraud": 0.25,
    "staff": 10.0,
}
# Beyond the client's own deadline: a client that hangs anyway is cut off this much later.
DEADLINE_GRACE_S = 0.05
VERSION_CHECK_TIMEOUT_S = 2.0
AREAS = ("recommend", "search", "fraud", "customers", "demand")


class MLCaller(Protocol):
    """The port to the model services (``cartwise.serving.runtime.client.MLClient``)."""

    async def call(
        self, area: str, method: str, *, timeout_s: float, **kwargs: Any
    ) -> dict[str, Any]:
        """Call ``method`` of the ``area`` service; raises ModelUnavailable or Deadline."""
        ...


class AnswerCache:
    """A small in-process TTL cache of model answers at the ingress (autocomplete).

    Autocomplete traffic repeats the same few thousand prefixes, and its 20 ms budget leaves
    no room for the hop to the Search replica. A promotion reaches suggestions within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 20_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[Any, tuple[float, dict[str, Any]]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> dict[str, Any] | None:
        """The answer stored under ``key`` if it has not expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: Any, value: dict[str, Any]) -> None:
        """Store an answer; the whole cache is dropped when full (cheap, and rare)."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_s, value)


def _version_of(result: dict[str, Any] | None) -> int | None:
    raw = (result or {}).get("model")
    try:
        return int(raw["version"]) if isinstance(raw, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


class ChampionAnswers:
    """The champion models' answers, reused at the ingress while the area serves that version.

    A repeated question (the same shopper's home page, a product's similar items, a popular
    query, with the same filters and allowed products) is answered without the hop to the
    model deployment, which costs more CPU than the rest of the request under Serve. An entry
    is reused only while its model version is the one the area serves, as a ``version`` call
    to the deployment said at most ``check_s`` ago (made in the background, it also keeps the
    replicas' hot reload checking when every request is answered here). So after a promotion
    the ingress stops reusing the old version's answers within about ``check_s`` of the
    replica's swap, and an area whose deployment does not answer ``version`` (down, no model)
    reuses nothing. Only champion calls whose answer does not depend on live session features
    are reused (the routes decide), and entries live ``ttl_s`` at most.
    """

    def __init__(self, ttl_s: float = 60.0, check_s: float = 1.0, max_entries: int = 20_000):
        self.ttl_s = ttl_s
        self.check_s = check_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str, str], tuple[float, int, dict[str, Any]]] = {}
        self._versions: dict[str, int | None] = {}
        self._checked: dict[str, float] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(area: str, method: str, kwargs: dict[str, Any]) -> tuple[str, str, str]:
        """The entry of a call: the sha1 of its arguments as canonical JSON."""
        raw = json.dumps(kwargs, sort_keys=True, separators=(",", ":"), default=str)
        return area, method, hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()

    def version(self, area: str) -> int | None:
        """The version the area serves, as last seen (None: unknown, reuse nothing)."""
        return self._versions.get(area)

    def get(self, ml: MLCaller, key: tuple[str, str, str]) -> dict[str, Any] | None:
        """A reusable answer (marked ``cached``), or None."""
        version = self._current(ml, key[0])
        entry = self._entries.get(key)
        if version is None or entry is None or entry[1] != version or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return {**entry[2], "cached": True}

    def put(self, key: tuple[str, str, str], result: dict[str, Any]) -> None:
        """Keep a deployment's answer under the version that gave it."""
        version = _version_of(result)
        if version is None:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_s, version, result)

    def _current(self, ml: MLCaller, area: str) -> int | None:
        now = time.monotonic()
        if now - self._checked.get(area, -math.inf) >= self.check_s:
            loop = asyncio.get_running_loop()
            running = self._checks.get(area)
            # One check per area at a time (a check of a loop that has closed, as a test
            # client's per-request loop does, is forgotten).
            if running is None or running.done() or running.get_loop() is not loop:
                self._checked[area] = now
                self._checks[area] = loop.create_task(self._check(ml, area))
        return self._versions.get(area)

    async def _check(self, ml: MLCaller, area: str) -> None:
        try:
            answer = await ml.call(area, "version", timeout_s=VERSION_CHECK_TIMEOUT_S)
        except Exception:
            # No model, or the deployment is unreachable: reuse nothing until it answers.
            self._versions[area] = None
            return
        self._versions[area] = _version_of(answer)


@dataclass
class IngressState:
    """The ML side of the ingress: the client, the catalogue snapshot and the baselines."""

    ml: MLCaller
    engine: Engine
    catalog: CatalogView
    popularity: Popularity
    bm25: Bm25Fallback
    fallbacks: FallbackCounter
    suggestions: AnswerCache = field(default_factory=AnswerCache)
    answers: ChampionAnswers = field(default_factory=ChampionAnswers)


def ingress(request: Request) -> IngressState:
    """The ingress state installed on the app by :func:`cartwise.serving.routes.install`."""
    state: IngressState = request.app.state.ml_ingress
    return state


# ------------------------------------------------------------------------------ schemas


class ModelRef(BaseModel):
    """Which model answered: registered name, version and the alias it was loaded by."""

    name: str
    version: int
    alias: str | None = None


class ExperimentRef(BaseModel):
    """The experiment and variant this response belongs to."""

    id: str
    name: str
    variant: str


class ProductItem(BaseModel):
    """A product in an ML answer, with what a storefront needs to show it."""

    product_id: int
    score: float
    name: str
    slug: str
    price: Decimal | None = None
    currency: str | None = None
    category: str | None = None
    category_slug: str | None = None
    image_url: str | None = None
    in_stock: bool = True


class MLAnswer(BaseModel):
    """Fields every ML response carries."""

    model: ModelRef | None = Field(
        default=None, description="The model that answered; null when a baseline did."
    )
    fallback: bool = Field(default=False, description="True when a baseline answered instead.")
    fallback_reason: str | None = Field(
        default=None,
        description="model_unavailable, deadline, invalid_request, error or empty.",
    )
    experiment: ExperimentRef | None = None


class ModelUnavailableProblem(Problem):
    """A staff analytics route whose model cannot answer right now."""

    status, slug, title = 503, "model-unavailable", "Model unavailable"


def card_fields(card: ProductCard, score: float) -> dict[str, Any]:
    """The fields every answer item takes from a catalogue card (``ProductItem``'s)."""
    return {
        "product_id": card.id,
        "score": round(float(score), 6),
        "name": card.name,
        "slug": card.slug,
        "price": card.price,
        "currency": card.currency,
        "category": card.category,
        "category_slug": card.category_slug,
        "image_url": card.image_url,
        "in_stock": card.in_stock,
    }


def product_item(card: ProductCard, score: float) -> ProductItem:
    """An answer item built from a catalogue card."""
    return ProductItem(**card_fields(card, score))


def model_ref(result: dict[str, Any] | None) -> ModelRef | None:
    """The ``model`` of a service answer, if well formed."""
    raw = (result or {}).get("model")
    if not isinstance(raw, dict):
        return None
    try:
        return ModelRef(name=str(raw["name"]), version=int(raw["version"]), alias=raw.get("alias"))
    except (KeyError, TypeError, ValueError):
        return None


def baseline_ref(name: str) -> ModelRef:
    """The model reference shown when an experiment assigned a baseline the ingress serves."""
    return ModelRef(name=name, version=0, alias=None)


# --------------------------------------------------------------------------- the ML call


@dataclass(frozen=True, slots=True)
class MLOutcome:
    """A service answer, or why there is none (the fallback reason)."""

    result: dict[str, Any] | None
    reason: str | None = None
    detail: str | None = None


async def call_ml(
    state: IngressState,
    area: str,
    method: str,
    *,
    timeout_s: float,
    reuse: bool = False,
    reuse_key: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> MLOutcome:
    """Call a model service within its deadline; never raises (the reason says what failed).

    ``reuse``: the call is a champion's (no A/B variant) and its answer depends only on the
    arguments, so the ingress may answer it again from :class:`ChampionAnswers`. The entry is
    keyed by all ``kwargs``, or by ``reuse_key`` when only those arguments decide the answer
    (a product page's similar items do not depend on who asks, nor on their session).
    """
    started = time.perf_counter()
    key = (
        state.answers.key(area, method, dict(reuse_key if reuse_key is not None else kwargs))
        if reuse
        else None
    )
    found = state.answers.get(state.ml, key) if key is not None else None
    if found is not None:
        outcome = MLOutcome(found)
    else:
        outcome = await _guarded_call(state, area, method, timeout_s=timeout_s, **kwargs)
        if key is not None and outcome.result is not None:
            state.answers.put(key, outcome.result)
    # Predictions per model version, latency and cache hits, for /metrics (this replica).
    observe_ml_call(area, method, outcome.result, outcome.reason, time.perf_counter() - started)
    return outcome


async def _guarded_call(
    state: IngressState, area: str, method: str, *, timeout_s: float, **kwargs: Any
) -> MLOutcome:
    try:
        result = await asyncio.wait_for(
            state.ml.call(area, method, timeout_s=timeout_s, **kwargs),
            timeout_s + DEADLINE_GRACE_S,
        )
    except ModelUnavailable as exc:
        return MLOutcome(None, "model_unavailable", str(exc))
    except (Deadline, TimeoutError) as exc:
        return MLOutcome(None, "deadline", str(exc) or "deadline exceeded")
    except ValueError as exc:
        return MLOutcome(None, "invalid_request", str(exc))
    except Exception as exc:
        log.exception("%s.%s failed", area, method)
        return MLOutcome(None, "error", type(exc).__name__)
    if not isinstance(result, dict):
        log.error("%s.%s answered %s, not a dict", area, method, type(result).__name__)
        return MLOutcome(None, "error", "malformed answer")
    return MLOutcome(result)


async def staff_call(
    state: IngressState,
    area: str,
    method: str,
    *,
    not_found: bool = False,
    timeout_s: float = DEADLINES["staff"],
    **kwargs: Any,
) -> dict[str, Any]:
    """Call a model for a staff route: 503 when no model answers, 404/422 on rejected input."""
    outcome = await call_ml(state, area, method, timeout_s=timeout_s, **kwargs)
    if outcome.result is not None:
        return outcome.result
    if outcome.reason == "invalid_request":
        if not_found:
            raise NotFound(outcome.detail or "Not found.")
        raise Unprocessable(outcome.detail or "The model rejected the request.")
    state.fallbacks.record(area, outcome.reason or "error")
    raise ModelUnavailableProblem(
        f"The {area} model cannot answer right now ({outcome.reason}: {outcome.detail}). "
        "Staff analytics have no fallback; shopper routes keep serving their baselines. "
        "Retry later, or train and promote the model.",
        headers={"Retry-After": "30"},
    )


async def in_session(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run blocking database work in a worker thread with its own session."""

    def run() -> T:
        with Session(engine, expire_on_commit=False) as session:
            return work(session)

    return await anyio.to_thread.run_sync(run)


def request_id() -> str | None:
    """The id of the request being served (set by the platform middleware)."""
    return request_id_var.get()


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True, slots=True)
class Assignment:
    """The running experiment of a surface and the variant a unit was assigned to."""

    experiment: Experiment
    variant: str
    model: str
    unit: str

    def ref(self) -> ExperimentRef:
        """The response's ``experiment`` field."""
        return ExperimentRef(id=self.experiment.id, name=self.experiment.name, variant=self.variant)


def experiment_unit(user_id: int | None, session_id: str | None) -> str | None:
    """The assignment unit: the user when signed in, else the session; None without either."""
    from cartwise.commerce.experiments import service as experiments

    return experiments.unit_for(user_id, session_id)


def may_assign(engine: Engine, surface: str, unit: str | None) -> bool:
    """Whether :func:`assign` could find an experiment for ``unit``: not when there is no
    unit, nor when the experiments cache already knows none runs on the surface (then the
    request needs no session for it)."""
    if unit is None:
        return False
    from cartwise.commerce.experiments import service as experiments

    return not experiments.known_idle(engine, surface)


def assign(session: Session, surface: str, unit: str | None) -> Assignment | None:
    """The variant of the surface's running experiment for ``unit`` (None: no experiment)."""
    if unit is None:
        return None
    from cartwise.commerce.experiments import service as experiments

    try:
        # Cached in-process by the experiments service: no query on most requests.
        experiment = experiments.running_for(session, surface)
        if experiment is None:
            return None
        variant = experiments.assign(experiment, unit)
    except Exception:
        # The shopper still gets the default experience; a broken experiment is staff's news.
        log.exception("experiment assignment failed on %s; serving the default", surface)
        session.rollback()
        return None
    return Assignment(experiment, variant.name, variant.model, unit)


def log_exposure(
    engine: Engine,
    assignment: Assignment,
    *,
    user_id: int | None,
    session_id: str | None,
    request_id: str | None,
    items: list[int],
) -> None:
    """Record that the unit saw these items (run after the response, in its own transaction)."""
    from cartwise.commerce.experiments import service as experiments

    row = experiments.exposure_row(
        experiment=assignment.experiment,
        variant=assignment.variant,
        unit=assignment.unit,
        user_id=user_id,
        session_id=session_id,
        request_id=request_id,
        items=items,
    )
    try:
        with Session(engine) as session:
            experiments.log_exposures(session=session, rows=[row])
    except Exception:
        # A lost exposure is a smaller harm than a failed response; it is logged loudly.
        log.exception("exposure of experiment %s was not logged", assignment.experiment.id)


__all__ = [
    "AREAS",
    "DEADLINES",
    "Assignment",
    "ChampionAnswers",
    "ExperimentRef",
    "IngressState",
    "MLAnswer",
    "MLCaller",
    "MLOutcome",
    "ModelRef",
    "ModelUnavailableProblem",
    "ProductItem",
    "assign",
    "baseline_ref",
    "call_ml",
    "card_fields",
    "experiment_unit",
    "in_session",
    "ingress",
    "log_exposure",
    "model_ref",
    "product_item",
    "request_id",
    "staff_call",
]
