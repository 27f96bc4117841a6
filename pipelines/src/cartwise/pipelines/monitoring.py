"""What ``monitor_drift`` decides from one drift check: breach or not, retrain or why not.

Pure functions, no I/O: the flow (:mod:`cartwise.pipelines.flows.monitoring`) runs the check,
reads the area's recent decisions from the database and hands both in here, so every rule can
be tested on hand-made checks.

The rules, in order:

1. fewer current rows than ``min_rows`` (or no drift share at all): ``not_enough_data``;
2. no breach (drift share within its threshold, every measured quality metric within its
   bound): ``no_drift``;
3. a breach, but the area was retrained less than ``cooldown`` ago: ``cooldown`` (unless
   forced), so a drift that persists while the new model settles does not start a retrain storm;
4. otherwise: retrain, then gate; the gate's outcome gives ``retrained_promoted`` or
   ``retrained_not_promoted`` (:func:`after_retraining`), an error gives ``failed``.

Example::

    thresholds = Thresholds.for_area("fraud", get_model_settings())
    verdict = decide(check, thresholds, history, now=datetime.now(UTC))
    if verdict.retrain:
        ...  # train_model, evaluate_and_promote, then after_retraining(verdict, gate)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cartwise.commerce.monitoring.models import DecisionOutcome

if TYPE_CHECKING:
    from cartwise.models.settings import ModelSettings

# Outcomes that mean a retraining ran (and so start the cooldown).
RETRAINED: frozenset[DecisionOutcome] = frozenset(
    {DecisionOutcome.retrained_promoted, DecisionOutcome.retrained_not_promoted}
)
# The gate's outcomes (cartwise.models.gate.Outcome) that moved ``champion``.
PROMOTED_GATE_OUTCOMES = frozenset({"promoted", "first_champion", "forced"})
# Quality is judged only with this many labelled positives (where the check counts them).
MIN_POSITIVES = 10
# How many drifted features the decision's numbers list (the most important first).
TOP_FEATURES = 10


class CheckLike(Protocol):
    """The parts of ``cartwise.models.monitoring.DriftCheck`` the decision reads."""

    area: str
    model_name: str
    model_version: int | None
    reference_rows: int
    current_rows: int
    drift_share: float | None
    drifted_features: int
    n_features: int
    prediction_drift: float | None
    quality: dict[str, float]
    features: dict[str, dict[str, Any]]
    notes: list[str]


@dataclass(frozen=True)
class Thresholds:
    """One area's limits: drift share, quality bounds, minimum rows and retrain cooldown."""

    drift_share: float
    # metric -> bound: a floor, or a ceiling for the metrics in ``ceilings``.
    quality_floors: Mapping[str, float] = field(default_factory=dict)
    min_rows: int = 200
    cooldown: timedelta = timedelta(hours=24)
    ceilings: frozenset[str] = frozenset({"wape", "mae", "rmse"})
    # "share": the share of drifted features breaches; "weighted": the share of importance on
    # drifted features (the share when the version has no importance).
    drift_measure: str = "share"

    @classmethod
    def for_area(cls, area: str, settings: ModelSettings) -> Thresholds:
        """The area's limits from the model settings (``CARTWISE_MONITOR_*``)."""
        from cartwise.models.settings import CEILING_METRICS

        return cls(
            drift_share=settings.drift_threshold(area),
            quality_floors=settings.quality_floors(area),
            min_rows=settings.monitor_min_rows,
            cooldown=timedelta(hours=settings.retrain_cooldown_hours),
            ceilings=CEILING_METRICS,
            drift_measure=settings.drift_measure(area),
        )

    def as_numbers(self) -> dict[str, Any]:
        """The limits as JSON-ready numbers (recorded with every decision)."""
        return {
            "drift_share_threshold": self.drift_share,
            "drift_measure": self.drift_measure,
            "quality_floors": dict(self.quality_floors),
            "ceiling_metrics": sorted(self.ceilings & set(self.quality_floors)),
            "min_rows": self.min_rows,
            "cooldown_hours": self.cooldown.total_seconds() / 3600,
        }


@dataclass(frozen=True)
class PastDecision:
    """An earlier decision of the same area, as far as the cooldown cares."""

    outcome: DecisionOutcome
    created_at: datetime
    # A ``failed`` decision whose training or gate broke also counts: a persistent failure
    # must not retrain every hour either.
    retrain_attempted: bool = False

    @property
    def retrained(self) -> bool:
        """True when this decision ran (or tried to run) a retraining."""
        return self.outcome in RETRAINED or self.retrain_attempted


@dataclass(frozen=True)
class Verdict:
    """What to do after one check: a final outcome, or retrain (``outcome`` is None)."""

    area: str
    breach: bool
    breach_reasons: list[str]
    outcome: DecisionOutcome | None
    reason: str
    numbers: dict[str, Any]

    @property
    def retrain(self) -> bool:
        """True when the flow should train and gate a new version."""
        return self.outcome is None


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def quality_breaches(
    quality: Mapping[str, float], floors: Mapping[str, float], ceilings: frozenset[str]
) -> list[str]:
    """One reason per measured metric outside its bound (unmeasured metrics are skipped)."""
    reasons: list[str] = []
    for metric, bound in sorted(floors.items()):
        value = quality.get(metric)
        if not _finite(value):
            continue
        assert value is not None
        if metric in ceilings:
            if value > bound:
                reasons.append(f"{metric} {value:.4f} above its ceiling {bound:.4f}")
        elif value < bound:
            reasons.append(f"{metric} {value:.4f} below its floor {bound:.4f}")
    return reasons


def quality_judged(quality: Mapping[str, float], min_rows: int) -> str | None:
    """None when there are labels enough to judge quality; else why not.

    A recall over two labelled frauds is noise: the labelled rows must reach ``min_rows``, and
    where the check gives a positive rate (``fraud_rate``), :data:`MIN_POSITIVES` positives.
    """
    rows = quality.get("labelled_rows")
    if _finite(rows) and rows is not None and rows < min_rows:
        return f"{rows:.0f} labelled rows, fewer than {min_rows}"
    rate = quality.get("fraud_rate")
    if _finite(rows) and _finite(rate) and rows is not None and rate is not None:
        positives = round(rows * rate)
        if positives < MIN_POSITIVES:
            return f"{positives} labelled positives, fewer than {MIN_POSITIVES}"
    return None


def breach_reasons(check: CheckLike, thresholds: Thresholds) -> list[str]:
    """Why the check breaches its area's limits; empty when it does not."""
    reasons: list[str] = []
    share = check.drift_share
    weighted = getattr(check, "importance_weighted_drift", None)
    if thresholds.drift_measure == "weighted" and _finite(weighted):
        assert weighted is not None
        if weighted > thresholds.drift_share:
            reasons.append(
                f"importance-weighted drift {weighted:.2f} (the share of the model's importance "
                f"on its {check.drifted_features} drifted features) over the threshold "
                f"{thresholds.drift_share:.2f}"
            )
    elif _finite(share) and share is not None and share > thresholds.drift_share:
        reasons.append(
            f"drift share {share:.2f} ({check.drifted_features}/{check.n_features} features) "
            f"over the threshold {thresholds.drift_share:.2f}"
        )
    if quality_judged(check.quality, thresholds.min_rows) is None:
        reasons.extend(
            quality_breaches(check.quality, thresholds.quality_floors, thresholds.ceilings)
        )
    return reasons


def drifted_features(check: CheckLike, limit: int = TOP_FEATURES) -> list[dict[str, Any]]:
    """The drifted features, most important first (importance unknown sorts last)."""
    rows = [
        {"feature": name, **{k: info.get(k) for k in ("drift_score", "importance")}}
        for name, info in check.features.items()
        if info.get("drifted")
    ]

    def key(row: dict[str, Any]) -> tuple[float, str]:
        importance = row.get("importance")
        if isinstance(importance, int | float) and math.isfinite(importance):
            return (-float(importance), row["feature"])
        return (math.inf, row["feature"])

    return sorted(rows, key=key)[:limit]


def check_numbers(check: CheckLike) -> dict[str, Any]:
    """The check's own numbers as recorded with the decision."""
    return {
        "model": check.model_name,
        "model_version": check.model_version,
        "drift_share": check.drift_share,
        "drifted_features": check.drifted_features,
        "n_features": check.n_features,
        "prediction_drift": check.prediction_drift,
        # Share of the champion's importance on drifted features, where the check gives it.
        "importance_weighted_drift": getattr(check, "importance_weighted_drift", None),
        "reference_rows": check.reference_rows,
        "current_rows": check.current_rows,
        "quality": {k: v for k, v in check.quality.items() if _finite(v)},
        "top_drifted": drifted_features(check),
        "notes": list(check.notes),
    }


def last_retraining(history: Sequence[PastDecision]) -> PastDecision | None:
    """The most recent decision that retrained the area, if any."""
    retrained = [d for d in history if d.retrained]
    return max(retrained, key=lambda d: d.created_at) if retrained else None


def decide(
    check: CheckLike,
    thresholds: Thresholds,
    history: Sequence[PastDecision] = (),
    *,
    now: datetime | None = None,
    force: bool = False,
) -> Verdict:
    """Breach or not, and whether to retrain; ``force`` ignores the cooldown (not the data)."""
    now = now or datetime.now(UTC)
    numbers = {**check_numbers(check), **thresholds.as_numbers()}
    numbers["quality_not_judged"] = quality_judged(check.quality, thresholds.min_rows)
    reasons = breach_reasons(check, thresholds)
    breach = bool(reasons)

    def verdict(outcome: DecisionOutcome | None, reason: str) -> Verdict:
        return Verdict(check.area, breach, reasons, outcome, reason, numbers)

    if check.current_rows < thresholds.min_rows or check.drift_share is None:
        seen = "; ".join([*reasons, *check.notes]) or "no breach seen"
        why = (
            "no drift share measured"
            if check.drift_share is None and check.current_rows >= thresholds.min_rows
            else f"{check.current_rows} current rows, fewer than the {thresholds.min_rows} needed"
        )
        return verdict(DecisionOutcome.not_enough_data, f"{why} for a verdict ({seen})")
    if not breach:
        measured = sorted(k for k in thresholds.quality_floors if _finite(check.quality.get(k)))
        unjudged = quality_judged(check.quality, thresholds.min_rows)
        quality = f"; {', '.join(measured)} within bounds" if measured else ""
        if measured and unjudged:
            quality = f"; quality not judged ({unjudged})"
        weighted = getattr(check, "importance_weighted_drift", None)
        if thresholds.drift_measure == "weighted" and _finite(weighted):
            drift = (
                f"importance-weighted drift {weighted:.2f} (drift share "
                f"{check.drift_share:.2f}) within the threshold {thresholds.drift_share:.2f}"
            )
        else:
            drift = (
                f"drift share {check.drift_share:.2f} within the threshold "
                f"{thresholds.drift_share:.2f}"
            )
        return verdict(DecisionOutcome.no_drift, f"{drift}{quality}")
    last = last_retraining(history)
    if last is not None and not force:
        since = now - last.created_at
        numbers["last_retrained_at"] = last.created_at.isoformat()
        if since < thresholds.cooldown:
            left = thresholds.cooldown - since
            return verdict(
                DecisionOutcome.cooldown,
                f"{'; '.join(reasons)}; but retrained {_hours(since)} ago, inside the "
                f"{_hours(thresholds.cooldown)} cooldown ({_hours(left)} left)",
            )
    numbers["forced"] = force
    return verdict(None, "; ".join(reasons))


def after_retraining(
    verdict: Verdict, trained: Mapping[str, Any], gate: Mapping[str, Any]
) -> tuple[DecisionOutcome, str, dict[str, Any]]:
    """The final outcome once training and the gate ran: promoted or not, with the numbers."""
    promoted = gate.get("outcome") in PROMOTED_GATE_OUTCOMES
    outcome = (
        DecisionOutcome.retrained_promoted if promoted else DecisionOutcome.retrained_not_promoted
    )
    numbers = {
        **verdict.numbers,
        "trained_version": trained.get("version"),
        "trained_metrics": dict(trained.get("metrics") or {}),
        "gate": dict(gate),
    }
    verb = "promoted" if promoted else "not promoted"
    reason = (
        f"{verdict.reason}; retrained v{trained.get('version')}, {verb}: "
        f"{gate.get('reason', gate.get('outcome'))}"
    )
    return outcome, reason, numbers


def failed(verdict: Verdict, error: BaseException, stage: str) -> tuple[str, dict[str, Any]]:
    """Reason and numbers for a retraining that broke at ``stage`` (train or gate)."""
    reason = f"{verdict.reason}; {stage} failed: {type(error).__name__}: {error}"
    return reason[:1000], {**verdict.numbers, "failed_stage": stage, "error": str(error)[:500]}


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"


__all__ = [
    "RETRAINED",
    "CheckLike",
    "PastDecision",
    "Thresholds",
    "Verdict",
    "after_retraining",
    "breach_reasons",
    "check_numbers",
    "decide",
    "drifted_features",
    "failed",
    "last_retraining",
    "quality_breaches",
    "quality_judged",
]
