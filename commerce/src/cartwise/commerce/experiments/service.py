"""Experiments: create, stop, sticky assignment, exposure logging, attribution and the guard.

Assignment is a pure function of the experiment id, the unit (``u:<user_id>`` or
``s:<session_id>``) and which variants are still active: ``sha256("<id>:<unit>")`` picks a bucket
in [0, 10000) and each variant owns a fixed range of buckets in the order it was defined. A
stopped variant's range goes to the control, so stopping one variant moves only its own units.

Attribution runs in SQL on both SQLite and PostgreSQL. An exposure owns the events of its unit
from the moment it was served until the unit's next exposure in the same experiment, at most
``window`` later: clicks and add-to-carts on the items it showed, and conversions (orders of the
user, or ``purchase`` events of a session unit) with their revenue.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Table,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from cartwise.commerce.events.models import EventType, ShopperEvent
from cartwise.commerce.experiments import sql, stats
from cartwise.commerce.experiments.models import (
    MAX_ITEMS,
    Estimate,
    Experiment,
    ExperimentCreate,
    ExperimentExposure,
    ExperimentPublic,
    ExperimentResults,
    ExperimentStatus,
    GuardDecision,
    GuardReport,
    Lift,
    Surface,
    Variant,
    VariantResult,
    VariantStatus,
)
from cartwise.commerce.orders.models import Order, OrderStatus
from cartwise.platform.errors import Conflict, NotFound
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

BUCKETS = 10_000
WINDOW = timedelta(hours=24)
# Orders that count as a conversion: money was taken and not given back.
CONVERTING = (
    OrderStatus.paid.value,
    OrderStatus.fulfilled.value,
    OrderStatus.shipped.value,
    OrderStatus.delivered.value,
)
# running_for() is on every recommendation and search request: a few seconds of staleness after
# a create or stop (in another process) is the price of not querying the database each time.
RUNNING_TTL_S = 5.0

_experiment: Table = Experiment.__table__  # type: ignore[attr-defined]
_exposure: Table = ExperimentExposure.__table__  # type: ignore[attr-defined]
_event: Table = ShopperEvent.__table__  # type: ignore[attr-defined]
_order: Table = Order.__table__  # type: ignore[attr-defined]

_running: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
_running_lock = threading.Lock()


def _engine_key(engine: Engine) -> str:
    return str(engine.url)


def _db_key(session: Session) -> str:
    return _engine_key(session.get_bind().engine)


def _forget_running(session: Session) -> None:
    key = _db_key(session)
    with _running_lock:
        for cached in [k for k in _running if k[0] == key]:
            _running.pop(cached, None)


def clear_cache() -> None:
    """Forget every cached running experiment (tests, or after an out-of-band change)."""
    with _running_lock:
        _running.clear()


def get(*, session: Session, experiment_id: str) -> Experiment:
    """One experiment; 404 when unknown."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise NotFound(f"Experiment {experiment_id} does not exist.")
    return experiment


def list_experiments(
    *, session: Session, surface: Surface | None = None, status: ExperimentStatus | None = None
) -> list[Experiment]:
    """Experiments, newest first, optionally of one surface or status."""
    stmt = select(Experiment).order_by(col(Experiment.created_at).desc(), col(Experiment.id))
    if surface is not None:
        stmt = stmt.where(col(Experiment.surface) == surface.value)
    if status is not None:
        stmt = stmt.where(col(Experiment.status) == status.value)
    return list(session.scalars(stmt))


def _running_row(session: Session, surface: Surface) -> Experiment | None:
    stmt = select(Experiment).where(
        col(Experiment.surface) == surface.value,
        col(Experiment.status) == ExperimentStatus.running.value,
    )
    return session.scalars(stmt).first()


def create(*, session: Session, data: ExperimentCreate, actor_id: int | None) -> Experiment:
    """Start an experiment; 409 when the name is taken or the surface already has one running."""
    if session.scalars(select(col(Experiment.id)).where(col(Experiment.name) == data.name)).first():
        raise Conflict(f"An experiment named {data.name!r} already exists.")
    running = _running_row(session, data.surface)
    if running is not None:
        raise Conflict(
            f"Experiment {running.name!r} is already running on {data.surface.value}; "
            "stop it first.",
            running_experiment_id=running.id,
        )
    experiment = Experiment(
        name=data.name,
        surface=data.surface,
        description=data.description,
        variants=[Variant(**v.model_dump()).model_dump(mode="json") for v in data.variants],
        guard=data.guard.model_dump(),
        created_by=actor_id,
    )
    session.add(experiment)
    try:
        session.commit()
    except IntegrityError as exc:
        # A concurrent create won the unique name or the one-running-per-surface index.
        session.rollback()
        raise Conflict(
            f"Another experiment on {data.surface.value} or named {data.name!r} was just created."
        ) from exc
    session.refresh(experiment)
    _forget_running(session)
    return experiment


def stop(*, session: Session, experiment: Experiment, reason: str) -> Experiment:
    """Stop a running experiment (all traffic back to normal serving); 409 if already stopped."""
    row = get(session=session, experiment_id=experiment.id)
    if row.status == ExperimentStatus.stopped:
        raise Conflict(f"Experiment {row.name!r} is already stopped.")
    row.status = ExperimentStatus.stopped
    row.stopped_at = utcnow()
    row.stopped_reason = reason[:500]
    session.add(row)
    session.commit()
    session.refresh(row)
    _forget_running(session)
    return row


def stop_variant(
    *, session: Session, experiment: Experiment, variant: str, reason: str
) -> Experiment:
    """Stop one non-control variant: its units fall back to the control from now on."""
    row = get(session=session, experiment_id=experiment.id)
    variants = copy.deepcopy(row.variants)
    if not variants or variants[0]["name"] == variant:
        raise Conflict("The control variant cannot be stopped; stop the experiment instead.")
    for v in variants:
        if v["name"] == variant:
            if v.get("status") == VariantStatus.stopped.value:
                return row
            v["status"] = VariantStatus.stopped.value
            v["stopped_reason"] = reason
            break
    else:
        raise NotFound(f"Experiment {row.name!r} has no variant {variant!r}.")
    # A new list object, so the ORM sees the JSON column changed.
    row.variants = variants
    session.add(row)
    session.commit()
    session.refresh(row)
    _forget_running(session)
    return row


def running_for(session: Session, surface: Surface | str) -> Experiment | None:
    """The experiment running on a surface, if any (cached in-process for a few seconds)."""
    surface = Surface(surface)
    key = (_db_key(session), surface.value)
    now = time.monotonic()
    with _running_lock:
        hit = _running.get(key)
    if hit is None or now - hit[0] >= RUNNING_TTL_S:
        row = _running_row(session, surface)
        snapshot = (
            {c.name: getattr(row, c.name) for c in _experiment.columns} if row is not None else None
        )
        with _running_lock:
            _running[key] = (now, snapshot)
    else:
        snapshot = hit[1]
    if snapshot is None:
        return None
    # A detached copy: callers may read it freely without touching the shared snapshot.
    return Experiment(**copy.deepcopy(snapshot))


def known_idle(engine: Engine, surface: Surface | str) -> bool:
    """True if the in-process cache already knows no experiment runs on the surface.

    Lets a request skip opening a session (and its thread hop) just to learn that; False
    means "ask :func:`running_for`" (an experiment runs, or the cache is cold or stale).
    """
    key = (_engine_key(engine), Surface(surface).value)
    with _running_lock:
        hit = _running.get(key)
    return hit is not None and hit[1] is None and time.monotonic() - hit[0] < RUNNING_TTL_S


def unit_for(user_id: int | None, session_id: str | None) -> str | None:
    """The assignment unit: the user when signed in, else the session, else none."""
    if user_id is not None:
        return f"u:{user_id}"
    if session_id:
        return f"s:{session_id}"
    return None


def bucket(experiment_id: str, unit: str) -> int:
    """The unit's fixed bucket in [0, 10000) for this experiment."""
    digest = hashlib.sha256(f"{experiment_id}:{unit}".encode()).hexdigest()
    return int(digest, 16) % BUCKETS


def assign(experiment: Experiment, unit: str) -> Variant:
    """The variant a unit sees: sticky, and a stopped variant's units go to the control."""
    variants = experiment.variant_list()
    b = bucket(experiment.id, unit)
    chosen = variants[-1]
    cumulative = 0.0
    for v in variants:
        cumulative += v.share
        if b < round(cumulative * BUCKETS):
            chosen = v
            break
    return chosen if chosen.status is VariantStatus.active else variants[0]


def exposure_row(
    *,
    experiment: Experiment,
    variant: Variant | str,
    unit: str,
    user_id: int | None,
    session_id: str | None,
    request_id: str | None,
    items: Iterable[int],
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The table row for one exposure (for :func:`log_exposures`)."""
    shown: list[int] = []
    for item in items:
        if len(shown) >= MAX_ITEMS:
            break
        shown.append(int(item))
    return {
        "experiment_id": experiment.id,
        "variant": variant.name if isinstance(variant, Variant) else variant,
        "unit": unit[:140],
        "user_id": user_id,
        "session_id": session_id[:128] if session_id else None,
        "request_id": request_id[:64] if request_id else None,
        "items": shown,
        "created_at": created_at or utcnow(),
    }


def log_exposures(*, session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert exposure rows in one statement and commit."""
    if rows:
        session.execute(insert(_exposure), list(rows))
        session.commit()


def log_exposure(
    *,
    session: Session,
    experiment: Experiment,
    variant: Variant | str,
    unit: str,
    user_id: int | None,
    session_id: str | None,
    request_id: str | None,
    items: Iterable[int],
) -> None:
    """Record that a unit was shown a variant's items (one insert)."""
    row = exposure_row(
        experiment=experiment,
        variant=variant,
        unit=unit,
        user_id=user_id,
        session_id=session_id,
        request_id=request_id,
        items=items,
    )
    log_exposures(session=session, rows=[row])


@dataclass(frozen=True)
class Totals:
    """Attributed counts of one variant."""

    exposures: int = 0
    units: int = 0
    clicks: int = 0
    carts: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0


def attribute(
    session: Session, experiment_id: str, *, now: datetime, window: timedelta = WINDOW
) -> dict[str, Totals]:
    """Per-variant attributed totals of an experiment's exposures served before ``now``."""
    first = session.scalar(
        select(func.min(_exposure.c.created_at)).where(_exposure.c.experiment_id == experiment_id)
    )
    if first is None:
        return {}
    dialect = session.get_bind().dialect.name
    x = (
        select(
            _exposure.c.id,
            _exposure.c.variant,
            _exposure.c.unit,
            _exposure.c.user_id,
            _exposure.c.session_id,
            _exposure.c["items"],
            _exposure.c.created_at,
            func.lead(_exposure.c.created_at)
            .over(
                partition_by=_exposure.c.unit,
                order_by=(_exposure.c.created_at, _exposure.c.id),
            )
            .label("next_at"),
        )
        .where(_exposure.c.experiment_id == experiment_id)
        .cte("x")
    )
    window_end = sql.plus(dialect, x.c.created_at, window)

    def inside(ts: Any) -> Any:
        return and_(
            ts >= x.c.created_at,
            ts < window_end,
            or_(x.c.next_at.is_(None), ts < x.c.next_at),
            ts < now,
        )

    # Only events that could belong to some exposure; the joins below then stay small.
    ev = (
        select(
            _event.c.id,
            _event.c.type,
            _event.c.session_id,
            _event.c.user_id,
            _event.c.product_id,
            _event.c.received_at,
            sql.json_number(dialect, _event.c.properties, "revenue").label("revenue"),
        )
        .where(
            _event.c.type.in_(
                [EventType.click.value, EventType.add_to_cart.value, EventType.purchase.value]
            ),
            _event.c.received_at >= first,
            _event.c.received_at < now,
        )
        .cte("ev")
    )
    match_cols = (
        x.c.id.label("xid"),
        x.c.variant,
        x.c.unit,
        ev.c.id.label("eid"),
        ev.c.type,
        ev.c.product_id,
        ev.c.revenue,
    )
    by_session = (
        select(*match_cols)
        .select_from(x.join(ev, ev.c.session_id == x.c.session_id))
        .where(inside(ev.c.received_at))
    )
    by_user = (
        select(*match_cols)
        .select_from(x.join(ev, ev.c.user_id == x.c.user_id))
        .where(x.c.user_id.is_not(None), inside(ev.c.received_at))
    )
    # UNION (not ALL): an event matching an exposure by both session and user counts once.
    em = union(by_session, by_user).cte("em")

    item = sql.json_int_array(dialect, x.c["items"])
    items = (
        select(x.c.id.label("xid"), sql.int_value(item).label("product_id"))
        .select_from(x.join(item, true()))
        .cte("items")
    )

    # One row per exposure plus one per attributed fact, summed per exposure below. Only
    # UNION ALL and GROUP BY, no outer joins: the plan stays linear even when the planner has no
    # statistics yet (a fresh table), where outer joins of aggregates turned into nested loops.
    def fact(
        clicked: Any, carted: Any, converted: Any, revenue: Any, xid: Any, variant: Any, unit: Any
    ) -> Any:
        return (
            xid.label("xid"),
            variant.label("variant"),
            unit.label("unit"),
            cast(clicked, Integer).label("clicked"),
            cast(carted, Integer).label("carted"),
            cast(converted, Integer).label("converted"),
            cast(revenue, Float).label("revenue"),
        )

    zero = literal(0)
    shown = select(*fact(zero, zero, zero, literal(0.0), x.c.id, x.c.variant, x.c.unit)).where(
        x.c.created_at < now
    )
    engaged = (
        select(
            *fact(
                case((em.c.type == EventType.click.value, 1), else_=0),
                case((em.c.type == EventType.add_to_cart.value, 1), else_=0),
                zero,
                literal(0.0),
                em.c.xid,
                em.c.variant,
                em.c.unit,
            )
        )
        .select_from(
            em.join(items, and_(items.c.xid == em.c.xid, items.c.product_id == em.c.product_id))
        )
        .where(em.c.type.in_([EventType.click.value, EventType.add_to_cart.value]))
    )
    purchases = select(
        *fact(
            zero,
            zero,
            literal(1),
            func.coalesce(em.c.revenue, 0.0),
            em.c.xid,
            em.c.variant,
            em.c.unit,
        )
    ).where(em.c.type == EventType.purchase.value, em.c.unit.like("s:%"))
    orders = (
        select(*fact(zero, zero, literal(1), _order.c.total, x.c.id, x.c.variant, x.c.unit))
        .select_from(x.join(_order, _order.c.user_id == x.c.user_id))
        .where(
            x.c.unit.like("u:%"),
            _order.c.status.in_(CONVERTING),
            inside(_order.c.created_at),
        )
    )
    facts = union_all(shown, engaged, purchases, orders).subquery("facts")
    flags = (
        select(
            facts.c.variant,
            facts.c.unit,
            func.max(facts.c.clicked).label("clicked"),
            func.max(facts.c.carted).label("carted"),
            func.max(facts.c.converted).label("converted"),
            func.sum(facts.c.revenue).label("revenue"),
        )
        .group_by(facts.c.xid, facts.c.variant, facts.c.unit)
        .subquery("flags")
    )
    totals = select(
        flags.c.variant,
        func.count(),
        func.count(flags.c.unit.distinct()),
        func.sum(flags.c.clicked),
        func.sum(flags.c.carted),
        func.sum(flags.c.converted),
        func.sum(flags.c.revenue),
        func.sum(flags.c.revenue * flags.c.revenue),
    ).group_by(flags.c.variant)
    out: dict[str, Totals] = {}
    for name, n, units, clicks, carts, conv, rev, rev_sq in session.execute(totals):
        out[str(name)] = Totals(
            exposures=int(n),
            units=int(units),
            clicks=int(clicks or 0),
            carts=int(carts or 0),
            conversions=int(conv or 0),
            revenue=float(rev or 0.0),
            revenue_sq=float(rev_sq or 0.0),
        )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _guard(
    session: Session, experiment: Experiment, totals: dict[str, Totals]
) -> tuple[Experiment, GuardReport]:
    settings = experiment.guard_settings()
    variants = experiment.variant_list()
    control = variants[0]
    c = totals.get(control.name, Totals())
    decisions: list[GuardDecision] = []
    stopped: list[str] = []
    running = experiment.status == ExperimentStatus.running.value
    for v in variants[1:]:
        t = totals.get(v.name, Totals())
        if v.status is VariantStatus.stopped:
            decisions.append(
                GuardDecision(
                    variant=v.name,
                    checked=False,
                    p_worse=None,
                    stopped=False,
                    reason=v.stopped_reason or "already stopped",
                )
            )
            continue
        if c.exposures < settings.min_exposures or t.exposures < settings.min_exposures:
            decisions.append(
                GuardDecision(
                    variant=v.name,
                    checked=False,
                    p_worse=None,
                    stopped=False,
                    reason=(
                        f"waiting for {settings.min_exposures} exposures per arm "
                        f"(control {c.exposures}, {v.name} {t.exposures})"
                    ),
                )
            )
            continue
        p_worse = stats.one_sided_worse(c.conversions, c.exposures, t.conversions, t.exposures)
        summary = (
            f"conversion {_pct(t.conversions / t.exposures)} ({t.conversions}/{t.exposures}) vs "
            f"control {_pct(c.conversions / c.exposures)} ({c.conversions}/{c.exposures}), "
            f"one-sided p={p_worse:.3g}"
            if p_worse is not None
            else "no conversions in either arm"
        )
        worse = p_worse is not None and p_worse < settings.alpha
        reason = (
            f"guard: {summary} < alpha {settings.alpha:g}"
            if worse
            else f"{summary}; not significantly worse at alpha {settings.alpha:g}"
        )
        if worse and running:
            experiment = stop_variant(
                session=session, experiment=experiment, variant=v.name, reason=reason
            )
            stopped.append(v.name)
            log.warning("experiment %s: stopped variant %s (%s)", experiment.id, v.name, reason)
        decisions.append(
            GuardDecision(
                variant=v.name,
                checked=True,
                p_worse=p_worse,
                stopped=worse and running,
                reason=reason,
            )
        )
    report = GuardReport(
        min_exposures=settings.min_exposures,
        alpha=settings.alpha,
        stopped=stopped,
        decisions=decisions,
    )
    return experiment, report


def guard(*, session: Session, experiment: Experiment, now: datetime | None = None) -> list[str]:
    """Stop the variants that convert significantly worse than the control; their names."""
    row = get(session=session, experiment_id=experiment.id)
    totals = attribute(session, row.id, now=now or utcnow())
    _, report = _guard(session, row, totals)
    return report.stopped


def _estimate(interval: stats.Interval) -> Estimate:
    return Estimate(value=interval.value, ci_low=interval.low, ci_high=interval.high)


def _lift(cmp: stats.Comparison) -> Lift:
    return Lift(
        absolute=cmp.absolute.value,
        absolute_ci_low=cmp.absolute.low,
        absolute_ci_high=cmp.absolute.high,
        relative=cmp.relative.value,
        relative_ci_low=cmp.relative.low,
        relative_ci_high=cmp.relative.high,
        p_value=cmp.p_value,
    )


def results(
    *,
    session: Session,
    experiment: Experiment,
    now: datetime | None = None,
    window: timedelta = WINDOW,
) -> ExperimentResults:
    """Attributed per-variant results with CIs and lifts vs the control; runs the guard first."""
    now = now or utcnow()
    row = get(session=session, experiment_id=experiment.id)
    totals = attribute(session, row.id, now=now, window=window)
    row, report = _guard(session, row, totals)
    variants = row.variant_list()
    c = totals.get(variants[0].name, Totals())
    out: list[VariantResult] = []
    for i, v in enumerate(variants):
        t = totals.get(v.name, Totals())
        lift: dict[str, Lift] | None = None
        if i > 0:
            lift = {
                "ctr": _lift(
                    stats.compare_proportions(c.clicks, c.exposures, t.clicks, t.exposures)
                ),
                "add_to_cart_rate": _lift(
                    stats.compare_proportions(c.carts, c.exposures, t.carts, t.exposures)
                ),
                "conversion_rate": _lift(
                    stats.compare_proportions(
                        c.conversions, c.exposures, t.conversions, t.exposures
                    )
                ),
                "revenue_per_exposure": _lift(
                    stats.compare_means(
                        c.revenue, c.revenue_sq, c.exposures, t.revenue, t.revenue_sq, t.exposures
                    )
                ),
            }
        out.append(
            VariantResult(
                name=v.name,
                model=v.model,
                share=v.share,
                status=v.status,
                stopped_reason=v.stopped_reason,
                is_control=i == 0,
                exposures=t.exposures,
                units=t.units,
                clicks=t.clicks,
                add_to_carts=t.carts,
                conversions=t.conversions,
                revenue=round(t.revenue, 2),
                ctr=_estimate(stats.wilson(t.clicks, t.exposures)),
                add_to_cart_rate=_estimate(stats.wilson(t.carts, t.exposures)),
                conversion_rate=_estimate(stats.wilson(t.conversions, t.exposures)),
                revenue_per_exposure=_estimate(
                    stats.mean_interval(t.revenue, t.revenue_sq, t.exposures)
                ),
                lift=lift,
            )
        )
    return ExperimentResults(
        experiment=ExperimentPublic.of(row),
        computed_at=now,
        window_hours=window.total_seconds() / 3600,
        variants=out,
        guard=report,
    )


__all__ = [
    "BUCKETS",
    "WINDOW",
    "Totals",
    "assign",
    "attribute",
    "bucket",
    "clear_cache",
    "create",
    "exposure_row",
    "get",
    "guard",
    "list_experiments",
    "log_exposure",
    "log_exposures",
    "results",
    "running_for",
    "stop",
    "stop_variant",
    "unit_for",
]
