"""The promotion gate: ``challenger`` replaces ``champion`` only when it is better by a margin.

Both versions are evaluated by the same callable on the same held-out window. The decision, its
reason and both scores are written twice: as ``gate.*`` tags on the challenger's model version,
and as a run in the ``gate`` experiment (so the MLflow UI shows the history of decisions).

Example::

    from cartwise.models import gate, tracking

    def evaluate(loaded: tracking.Loaded) -> dict[str, float]:
        return {"ndcg_at_10": ndcg(loaded.predict(holdout_queries), holdout_truth)}

    decision = gate.evaluate_and_promote(
        "recommend-hybrid", evaluate=evaluate, metric="ndcg_at_10", window="2011-10-01/2011-12-09"
    )
    decision.outcome   # "promoted", "kept" or "first_champion"
    decision.reason    # e.g. "ndcg_at_10 0.3300 vs champion 0.3100: +6.45% >= margin 1.00%"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cartwise.models import tracking
from cartwise.models.settings import ModelSettings
from cartwise.models.tracking import CHALLENGER, CHAMPION, Loaded

GATE_EXPERIMENT = "gate"

Outcome = Literal["promoted", "kept", "first_champion", "forced"]


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one challenger, and why."""

    name: str
    outcome: Outcome
    reason: str
    metric: str
    challenger_version: int
    challenger_score: float | None
    # The champion before the decision (None when there was none).
    champion_version: int | None
    champion_score: float | None
    margin: float
    higher_is_better: bool
    # The run in the ``gate`` experiment that records this decision.
    run_id: str

    @property
    def promoted(self) -> bool:
        """True when ``champion`` now points at the challenger."""
        return self.outcome != "kept"


def evaluate_and_promote(
    name: str,
    *,
    evaluate: Callable[[Loaded], Mapping[str, float]],
    metric: str,
    higher_is_better: bool = True,
    margin: float | None = None,
    window: str | None = None,
    settings: ModelSettings | None = None,
) -> Decision:
    """Evaluate ``challenger`` and ``champion`` with ``evaluate``; move ``champion`` if it wins.

    The challenger wins when its ``metric`` beats the champion's by more than ``margin`` (a
    fraction of the champion's score; ``settings.gate_margin`` by default); ties keep the
    champion. With no champion yet, the challenger becomes the first one unless its score is not
    a finite number. ``LookupError`` when there is no challenger.
    """
    settings = tracking.configure(settings)
    margin = settings.gate_margin if margin is None else margin
    challenger = tracking.load(name, CHALLENGER, settings=settings)
    champion_mv = tracking.current(name, CHAMPION, settings=settings)

    challenger_metrics = _scores(evaluate, challenger, metric)
    challenger_score = challenger_metrics[metric]
    champion_version: int | None = None
    champion_metrics: dict[str, float] = {}
    champion_score: float | None = None
    if champion_mv is not None:
        champion_version = int(champion_mv.version)
        if champion_version == challenger.version:
            champion_metrics = challenger_metrics
        else:
            champion = tracking.load(name, version=champion_version, settings=settings)
            champion_metrics = _scores(evaluate, champion, metric)
        champion_score = champion_metrics[metric]

    outcome, reason = _decide(
        metric,
        challenger_score,
        champion_score,
        same=champion_version == challenger.version,
        margin=margin,
        higher_is_better=higher_is_better,
    )
    if outcome != "kept":
        tracking.set_alias(name, CHAMPION, challenger.version, settings=settings)
    return _record(
        name,
        outcome=outcome,
        reason=reason,
        metric=metric,
        challenger_version=challenger.version,
        challenger_metrics=challenger_metrics,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
        margin=margin,
        higher_is_better=higher_is_better,
        window=window,
        settings=settings,
        # Re-gating the champion must not overwrite the decision that made it champion.
        tag_version=champion_version != challenger.version,
    )


def promote(
    name: str, version: int, *, reason: str, settings: ModelSettings | None = None
) -> Decision:
    """Point ``champion`` at ``version`` by hand (a rollback, an override), recording why."""
    settings = tracking.configure(settings)
    previous = tracking.current(name, CHAMPION, settings=settings)
    tracking.set_alias(name, CHAMPION, version, settings=settings)
    return _record(
        name,
        outcome="forced",
        reason=reason,
        metric="",
        challenger_version=version,
        challenger_metrics={},
        champion_version=int(previous.version) if previous is not None else None,
        champion_metrics={},
        margin=0.0,
        higher_is_better=True,
        window=None,
        settings=settings,
    )


def _scores(
    evaluate: Callable[[Loaded], Mapping[str, float]], loaded: Loaded, metric: str
) -> dict[str, float]:
    scores = {k: float(v) for k, v in evaluate(loaded).items()}
    if metric not in scores:
        raise KeyError(
            f"evaluate() returned no {metric!r} for {loaded.name} v{loaded.version}; "
            f"it returned {sorted(scores)}"
        )
    return scores


def _decide(
    metric: str,
    challenger: float,
    champion: float | None,
    *,
    same: bool,
    margin: float,
    higher_is_better: bool,
) -> tuple[Outcome, str]:
    if not math.isfinite(challenger):
        return "kept", f"challenger {metric} is {challenger}, not a number to promote on"
    if champion is None:
        return "first_champion", f"no champion yet; challenger {metric} {challenger:.4f}"
    if same:
        return "kept", f"challenger is already the champion ({metric} {challenger:.4f})"
    if not math.isfinite(champion):
        return "promoted", f"champion {metric} is {champion}; challenger {challenger:.4f}"
    gain = challenger - champion if higher_is_better else champion - challenger
    # Relative to the champion's magnitude, so the margin means the same for any metric scale.
    needed = margin * abs(champion)
    relative = gain / abs(champion) if champion else math.copysign(math.inf, gain)
    summary = (
        f"{metric} {challenger:.4f} vs champion {champion:.4f} "
        f"({'higher' if higher_is_better else 'lower'} is better): "
        f"{relative:+.2%} vs margin {margin:.2%}"
    )
    if gain > needed:
        return "promoted", f"{summary}; challenger is better by more than the margin"
    return "kept", f"{summary}; not better by more than the margin"


def _record(
    name: str,
    *,
    outcome: Outcome,
    reason: str,
    metric: str,
    challenger_version: int,
    challenger_metrics: Mapping[str, float],
    champion_version: int | None,
    champion_metrics: Mapping[str, float],
    margin: float,
    higher_is_better: bool,
    window: str | None,
    settings: ModelSettings,
    tag_version: bool = True,
) -> Decision:
    mlflow_client = tracking.client(settings)
    challenger_score = challenger_metrics.get(metric)
    champion_score = champion_metrics.get(metric)
    tags = {
        "model": name,
        "decision": outcome,
        "reason": reason,
        # Shown as the run's description in the MLflow UI.
        "mlflow.note.content": f"{outcome}: {reason}",
    }
    run = mlflow_client.create_run(
        tracking.experiment(GATE_EXPERIMENT, settings),
        run_name=f"{name} v{challenger_version} vs v{champion_version or '-'}: {outcome}",
        tags=tags,
    )
    run_id = run.info.run_id
    params = {
        "model": name,
        "challenger_version": challenger_version,
        "champion_version": champion_version if champion_version is not None else "none",
        "metric": metric or "none",
        "margin": margin,
        "higher_is_better": higher_is_better,
        "window": window or "unspecified",
    }
    for key, value in params.items():
        mlflow_client.log_param(run_id, key, str(value))
    for role, scores in (("challenger", challenger_metrics), ("champion", champion_metrics)):
        for key, value in scores.items():
            if math.isfinite(value):
                mlflow_client.log_metric(run_id, f"{role}.{key}", value)
    mlflow_client.set_terminated(run_id)

    version_tags = {
        "gate.decision": outcome,
        "gate.reason": reason,
        "gate.metric": metric,
        "gate.challenger_score": _text(challenger_score),
        "gate.champion_score": _text(champion_score),
        "gate.champion_version": str(champion_version) if champion_version else "none",
        "gate.margin": repr(margin),
        "gate.window": window or "unspecified",
        "gate.run_id": run_id,
        "gate.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if tag_version:
        for key, value in version_tags.items():
            mlflow_client.set_model_version_tag(name, str(challenger_version), key, value)
    return Decision(
        name=name,
        outcome=outcome,
        reason=reason,
        metric=metric,
        challenger_version=challenger_version,
        challenger_score=challenger_score,
        champion_version=champion_version,
        champion_score=champion_score,
        margin=margin,
        higher_is_better=higher_is_better,
        run_id=run_id,
    )


def _text(score: float | None) -> str:
    return "none" if score is None else repr(score)
