"""Store and list drift reports and retraining decisions (written by ``monitor_drift``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from cartwise.commerce.monitoring.models import DecisionOutcome, MonitoringReport, RetrainDecision
from cartwise.platform.errors import NotFound


def add_report(*, session: Session, report: MonitoringReport) -> MonitoringReport:
    """Insert one drift report row and commit."""
    session.add(report)
    session.commit()
    session.refresh(report)
    return report


def find_report(
    *,
    session: Session,
    area: str,
    model_version: int | None,
    window_start: datetime | None,
    window_end: datetime | None,
) -> MonitoringReport | None:
    """The latest report of the same area, model version and window (a re-run reuses it)."""
    query = select(MonitoringReport).where(MonitoringReport.area == area)
    for column, value in (
        (MonitoringReport.model_version, model_version),
        (MonitoringReport.window_start, window_start),
        (MonitoringReport.window_end, window_end),
    ):
        query = query.where(col(column).is_(None) if value is None else col(column) == value)
    query = query.order_by(col(MonitoringReport.id).desc()).limit(1)
    return session.exec(query).first()


def get_report(*, session: Session, report_id: int) -> MonitoringReport:
    """One report; ``NotFoundError`` (404) when there is none."""
    report = session.get(MonitoringReport, report_id)
    if report is None:
        raise NotFound(f"monitoring report {report_id} not found")
    return report


def list_reports(
    *, session: Session, area: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[Sequence[MonitoringReport], int]:
    """Reports newest first (optionally of one area) and their total count."""
    query = select(MonitoringReport)
    count = select(func.count()).select_from(MonitoringReport)
    if area is not None:
        query = query.where(MonitoringReport.area == area)
        count = count.where(MonitoringReport.area == area)
    query = query.order_by(col(MonitoringReport.created_at).desc(), col(MonitoringReport.id).desc())
    items = session.exec(query.offset(offset).limit(limit)).all()
    return items, int(session.exec(count).one())


def add_decision(*, session: Session, decision: RetrainDecision) -> RetrainDecision:
    """Insert one retraining decision and commit."""
    session.add(decision)
    session.commit()
    session.refresh(decision)
    return decision


def decision_for_report(*, session: Session, report_id: int) -> RetrainDecision | None:
    """The decision already taken on a report (a re-run after a crash does not decide twice)."""
    query = (
        select(RetrainDecision)
        .where(RetrainDecision.report_id == report_id)
        .order_by(col(RetrainDecision.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


def recent_decisions(
    *, session: Session, area: str, since: datetime | None = None, limit: int = 100
) -> Sequence[RetrainDecision]:
    """The area's decisions newest first, optionally only those after ``since``."""
    query = select(RetrainDecision).where(RetrainDecision.area == area)
    if since is not None:
        query = query.where(col(RetrainDecision.created_at) >= since)
    query = query.order_by(
        col(RetrainDecision.created_at).desc(), col(RetrainDecision.id).desc()
    ).limit(limit)
    return session.exec(query).all()


def list_decisions(
    *,
    session: Session,
    area: str | None = None,
    outcome: DecisionOutcome | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[RetrainDecision], int]:
    """Decisions newest first, filtered by area and/or outcome, and their total count."""
    filters: list[Any] = []
    if area is not None:
        filters.append(RetrainDecision.area == area)
    if outcome is not None:
        filters.append(RetrainDecision.outcome == outcome)
    query = select(RetrainDecision).where(*filters)
    count = select(func.count()).select_from(RetrainDecision).where(*filters)
    query = query.order_by(col(RetrainDecision.created_at).desc(), col(RetrainDecision.id).desc())
    items = session.exec(query.offset(offset).limit(limit)).all()
    return items, int(session.exec(count).one())


__all__ = [
    "add_decision",
    "add_report",
    "decision_for_report",
    "find_report",
    "get_report",
    "list_decisions",
    "list_reports",
    "recent_decisions",
]
