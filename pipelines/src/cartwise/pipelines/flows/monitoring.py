"""``monitor_drift(area)``: Evidently drift check → report in storage → decision → retraining.

For each area: run the drift check of :mod:`cartwise.models.monitoring` on the recent window,
store its HTML and JSON under ``monitoring/<area>/<window end>_v<version>/report.*``, insert a
``MonitoringReport`` row, tag the model version in MLflow with where the report is, decide
(:mod:`cartwise.pipelines.monitoring`), and on a breach outside the cooldown train a new
``challenger`` and gate it (the tasks of ``train_model`` and ``evaluate_and_promote``). Every
run ends with one ``RetrainDecision`` per area, whatever happened.

Re-running after a crash does no work twice: the window ends at the latest fact, so a re-run
over the same data finds the report of the same model version and window and reuses it (files
and row), a report that already has its decision is not decided again, and a challenger
registered after the report (training finished, the gate did not) is gated, not trained again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError

from cartwise.pipelines.flows.models import gate_task, train_task

if TYPE_CHECKING:
    from cartwise.models.monitoring import DriftCheck
    from cartwise.models.settings import ModelSettings
    from cartwise.pipelines.monitoring import Verdict

RETRIES = 2
RETRY_DELAYS: list[float] = [5.0, 30.0]
# MLflow model-version tags that link a version to its latest drift report.
TAG_PREFIX = "monitoring."


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger; a module logger when a task runs as ``task.fn`` (a notebook)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _settings() -> ModelSettings:
    from cartwise.models.settings import get_model_settings

    return get_model_settings()


def report_prefix(area: str, version: int | None, window_end: datetime | None) -> str:
    """``monitoring/<area>/<YYYYmmddTHHMMSSZ>_v<version>``: one folder per version and window."""
    stamp = (window_end or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"monitoring/{area}/{stamp}_v{version if version is not None else 0}"


@task(name="drift-check", retries=1, retry_delay_seconds=[10.0], cache_policy=NONE)
def check_task(area: str, window_days: int, now: datetime | None) -> DriftCheck:
    """Evidently on the recent window against the champion's reference sample.

    ``now`` None ends the window at the latest fact the area sees, so re-runs over the same
    data check the same window (and reuse its report).
    """
    from cartwise.models.monitoring import check
    from cartwise.pipelines.training import model_source

    result = check(area, model_source(), window_days=window_days, now=now, settings=_settings())
    share = "n/a" if result.drift_share is None else f"{result.drift_share:.2f}"
    _log().info(
        "%s v%s: drift share %s over %d rows (%d reference), quality %s",
        area,
        result.model_version,
        share,
        result.current_rows,
        result.reference_rows,
        result.quality,
    )
    return result


@task(name="history", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE)
def history_task(area: str, since: datetime) -> list[dict[str, Any]]:
    """The area's decisions since ``since`` (what the cooldown looks at)."""
    from sqlmodel import Session

    from cartwise.commerce.monitoring import service
    from cartwise.platform.db import get_engine

    with Session(get_engine(_settings())) as session:
        rows = service.recent_decisions(session=session, area=area, since=since)
        return [
            {
                "outcome": row.outcome,
                "created_at": row.created_at,
                "retrain_attempted": "failed_stage" in (row.numbers or {})
                and row.numbers.get("failed_stage") in ("train", "gate"),
            }
            for row in rows
        ]


@task(name="store-report", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE)
def store_report_task(result: DriftCheck, breach: bool, reasons: list[str]) -> dict[str, Any]:
    """Put the HTML/JSON in object storage and insert the report row (or reuse both)."""
    from sqlmodel import Session

    from cartwise.commerce.monitoring import service
    from cartwise.commerce.monitoring.models import MonitoringReport
    from cartwise.platform.db import get_engine
    from cartwise.platform.storage import get_storage

    settings = _settings()
    storage = get_storage(settings)
    log = _log()
    with Session(get_engine(settings), expire_on_commit=False) as session:
        found = service.find_report(
            session=session,
            area=result.area,
            model_version=result.model_version,
            window_start=result.window_start,
            window_end=result.window_end,
        )
        if (
            found is not None
            and found.html_key
            and found.json_key
            and storage.exists(found.html_key)
            and storage.exists(found.json_key)
        ):
            log.info("%s: reusing report %s (%s)", result.area, found.id, found.html_key)
            return {
                "id": found.id,
                "html_key": found.html_key,
                "json_key": found.json_key,
                "created_at": found.created_at,
                "reused": True,
            }
        prefix = report_prefix(result.area, result.model_version, result.window_end)
        html_key, json_key = f"{prefix}/report.html", f"{prefix}/report.json"
        # Files first, row second: a crash in between leaves files a re-run overwrites.
        storage.put(html_key, result.html, "text/html; charset=utf-8")
        storage.put(json_key, result.json, "application/json")
        if found is not None:
            report = found
            report.html_key, report.json_key = html_key, json_key
        else:
            report = MonitoringReport(
                area=result.area,
                model_name=result.model_name,
                model_version=result.model_version,
                window_start=result.window_start,
                window_end=result.window_end,
                reference_rows=result.reference_rows,
                current_rows=result.current_rows,
                drift_share=result.drift_share,
                drifted_features=result.drifted_features,
                n_features=result.n_features,
                prediction_drift=result.prediction_drift,
                quality=_jsonable(result.quality),
                features=_jsonable(result.features),
                breach=breach,
                breach_reasons=list(reasons),
                html_key=html_key,
                json_key=json_key,
            )
        report = service.add_report(session=session, report=report)
        log.info("%s: report %s stored at %s", result.area, report.id, html_key)
        return {
            "id": report.id,
            "html_key": html_key,
            "json_key": json_key,
            "created_at": report.created_at,
            "reused": False,
        }


@task(name="link-report", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE)
def link_report_task(result: DriftCheck, stored: dict[str, Any]) -> bool:
    """Tag the checked model version in MLflow with its latest report (keys, URL, drift)."""
    from cartwise.models import tracking
    from cartwise.platform.storage import get_storage

    if result.model_version is None:
        return False
    settings = _settings()
    storage = get_storage(settings)
    tags = {
        "report_id": str(stored["id"]),
        "report_html": stored["html_key"],
        "report_json": stored["json_key"],
        # Presigned on S3, so it expires; GET /api/v1/monitoring/reports/{id} gives a fresh one.
        "report_url": storage.url(stored["html_key"]),
        "drift_share": "n/a" if result.drift_share is None else f"{result.drift_share:.4f}",
        "window": _window(result),
    }
    client = tracking.client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(
            result.model_name, str(result.model_version), TAG_PREFIX + key, value[:5000]
        )
    return True


@task(
    name="pending-challenger", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE
)
def pending_challenger_task(model_name: str, after: datetime) -> dict[str, Any] | None:
    """A challenger registered after ``after`` (a crashed run's training), with its gate tags."""
    from cartwise.models import tracking

    mv = tracking.current(model_name, tracking.CHALLENGER, settings=_settings())
    if mv is None or mv.creation_timestamp is None:
        return None
    created = datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC)
    if created <= after:
        return None
    tags = dict(mv.tags or {})
    metrics = {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")}
    trained = {
        "area": None,
        "model": model_name,
        "version": int(mv.version),
        "metrics": metrics,
        "resumed": True,
    }
    gate = None
    if "gate.decision" in tags:
        gate = {
            "outcome": tags["gate.decision"],
            "reason": tags.get("gate.reason", ""),
            "challenger": int(mv.version),
            "resumed": True,
        }
    return {"trained": trained, "gate": gate}


@task(name="record-decision", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE)
def record_task(
    area: str,
    outcome: str,
    reason: str,
    numbers: dict[str, Any],
    report_id: int | None,
    version_before: int | None,
    version_after: int | None,
) -> dict[str, Any]:
    """Insert the area's ``RetrainDecision`` (reason and numbers) and return it as a dict."""
    from sqlmodel import Session

    from cartwise.commerce.monitoring import service
    from cartwise.commerce.monitoring.models import DecisionOutcome, RetrainDecision
    from cartwise.platform.db import get_engine

    with Session(get_engine(_settings()), expire_on_commit=False) as session:
        decision = service.add_decision(
            session=session,
            decision=RetrainDecision(
                area=area,
                outcome=DecisionOutcome(outcome),
                reason=reason[:1000],
                numbers=_jsonable(numbers),
                report_id=report_id,
                version_before=version_before,
                version_after=version_after,
            ),
        )
        _log().info("%s: %s (%s)", area, decision.outcome, decision.reason)
        return _decision_dict(decision)


@task(name="earlier-decision", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE)
def earlier_decision_task(report_id: int) -> dict[str, Any] | None:
    """The decision a previous run already took on this report, if any."""
    from sqlmodel import Session

    from cartwise.commerce.monitoring import service
    from cartwise.platform.db import get_engine

    with Session(get_engine(_settings())) as session:
        found = service.decision_for_report(session=session, report_id=report_id)
        return None if found is None else _decision_dict(found)


def _decision_dict(decision: Any) -> dict[str, Any]:
    return {
        "id": decision.id,
        "area": decision.area,
        "outcome": str(decision.outcome),
        "reason": decision.reason,
        "report_id": decision.report_id,
        "version_before": decision.version_before,
        "version_after": decision.version_after,
        "numbers": decision.numbers,
    }


def _window(result: DriftCheck) -> str:
    def day(value: datetime | None) -> str:
        return value.isoformat(timespec="minutes") if value else "?"

    return f"{day(result.window_start)}/{day(result.window_end)}"


def _jsonable(value: Any) -> Any:
    """Plain JSON for the JSON columns: numpy numbers as numbers, NaN/inf as None, dates ISO."""
    import math

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _retrain(
    area: str,
    verdict: Verdict,
    stored: dict[str, Any],
    model_name: str,
    *,
    budget: str,
    tune_samples: int | None,
) -> tuple[str, str, dict[str, Any], int | None]:
    """Train (unless a crashed run already did) and gate; outcome, reason, numbers, version."""
    from cartwise.pipelines import monitoring as rules

    pending = pending_challenger_task(model_name, stored["created_at"])
    trained = pending["trained"] if pending else None
    gate = pending["gate"] if pending else None
    try:
        if trained is None:
            trained = train_task(area, budget, tune_samples, 0)
    except Exception as exc:  # recorded as "failed" with the reason, then re-raised by no one
        reason, numbers = rules.failed(verdict, exc, "train")
        return "failed", reason, numbers, None
    try:
        if gate is None:
            gate = gate_task(area, None)
    except Exception as exc:
        reason, numbers = rules.failed(verdict, exc, "gate")
        numbers["trained_version"] = trained.get("version")
        return "failed", reason, numbers, trained.get("version")
    outcome, reason, numbers = rules.after_retraining(verdict, trained, gate)
    return str(outcome), reason, numbers, int(trained["version"])


def _champion(model_name: str) -> int | None:
    from cartwise.models import tracking

    mv = tracking.current(model_name, tracking.CHAMPION, settings=_settings())
    return None if mv is None else int(mv.version)


def monitor_area(
    area: str,
    *,
    window_days: int,
    now: datetime,
    budget: str,
    tune_samples: int | None,
    force: bool,
) -> dict[str, Any]:
    """One area: check → store → link → decide → maybe retrain → record the decision."""
    from cartwise.commerce.monitoring.models import DecisionOutcome
    from cartwise.models.areas import spec
    from cartwise.pipelines import monitoring as rules

    settings = _settings()
    thresholds = rules.Thresholds.for_area(area, settings)
    model_name = spec(area).model_name
    try:
        result = check_task(area, window_days, None)
    except Exception as exc:
        # No champion yet, no exported features...: a decision says so, the other areas go on.
        return record_task(
            area,
            DecisionOutcome.failed,
            f"drift check failed: {type(exc).__name__}: {exc}",
            {"failed_stage": "check", "error": str(exc)[:500], **thresholds.as_numbers()},
            None,
            _champion(model_name),
            None,
        )
    history = [
        rules.PastDecision(
            outcome=DecisionOutcome(h["outcome"]),
            created_at=h["created_at"],
            retrain_attempted=h["retrain_attempted"],
        )
        for h in history_task(area, now - thresholds.cooldown - timedelta(hours=1))
    ]
    verdict = rules.decide(
        check=result, thresholds=thresholds, history=history, now=now, force=force
    )
    stored = store_report_task(result, verdict.breach, verdict.breach_reasons)
    link_report_task(result, stored)
    if stored["reused"]:
        earlier = earlier_decision_task(stored["id"])
        if earlier is not None:
            _log().info(
                "%s: already decided on report %s: %s", area, stored["id"], earlier["outcome"]
            )
            return {**earlier, "reused": True}
    before = result.model_version
    if not verdict.retrain:
        assert verdict.outcome is not None
        return record_task(
            area, verdict.outcome, verdict.reason, verdict.numbers, stored["id"], before, None
        )
    outcome, reason, numbers, trained_version = _retrain(
        area, verdict, stored, model_name, budget=budget, tune_samples=tune_samples
    )
    after = _champion(model_name)
    numbers = {**numbers, "trained_version": trained_version, "champion_after": after}
    # version_after is the champion once the decision is made: the new version if promoted.
    return record_task(area, outcome, reason, numbers, stored["id"], before, after)


@flow(name="monitor-drift")
def monitor_drift(
    area: str = "all",
    window_days: int | None = None,
    budget: str = "demo",
    tune_samples: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check drift and quality per area; retrain and gate on a breach outside the cooldown.

    ``force`` ignores the cooldown (a breach is still needed: to retrain regardless, run
    ``train-model`` then ``evaluate-and-promote``).
    """
    settings = _settings()
    days = window_days or settings.monitor_window_days
    now = datetime.now(UTC)
    results = {
        name: monitor_area(
            name, window_days=days, now=now, budget=budget, tune_samples=tune_samples, force=force
        )
        for name in monitored_areas(area)
    }
    # Never shorter than the window the checks read.
    prune_feature_logs_task(max(settings.feature_log_retention_days, days), now)
    return results


@task(
    name="prune-feature-logs", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, cache_policy=NONE
)
def prune_feature_logs_task(retention_days: int, now: datetime) -> int:
    """Delete feature-log partitions older than the retention; returns how many files."""
    from cartwise.models.monitoring import feature_log

    deleted = feature_log.prune(retention_days, _settings(), now=now)
    if deleted:
        _log().info(
            "deleted %d feature-log file(s) older than %d days", len(deleted), retention_days
        )
    return len(deleted)


def monitored_areas(area: str) -> list[str]:
    """``all`` → every area with a drift monitor; one area → ``[area]`` if it has one."""
    from cartwise.models.monitoring.areas import ADAPTERS
    from cartwise.pipelines.training import resolve_areas

    names = resolve_areas(area)  # ValueError for an unknown area
    if area == "all":
        return [name for name in names if name in ADAPTERS]
    if names[0] not in ADAPTERS:
        raise ValueError(f"no drift monitoring for {area!r} yet; monitored: {', '.join(ADAPTERS)}")
    return names
