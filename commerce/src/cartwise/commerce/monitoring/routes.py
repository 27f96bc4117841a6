"""HTTP routes of the monitoring domain (staff only): drift reports and retraining decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import SQLModel

from cartwise.commerce.deps import IntId, SessionDep, StaffDep, StorageDep
from cartwise.commerce.monitoring import service
from cartwise.commerce.monitoring.models import DecisionOutcome, MonitoringReport, RetrainDecision
from cartwise.platform.errors import PROBLEM_RESPONSES
from cartwise.platform.storage import Storage

router = APIRouter(prefix="/api/v1", tags=["monitoring"], responses=PROBLEM_RESPONSES)

AreaQuery = Annotated[
    str | None, Query(min_length=1, max_length=20, pattern=r"^[a-z][a-z_]*$", description="Area")
]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


class ReportPublic(SQLModel):
    """One drift report with links to its Evidently HTML and JSON."""

    id: int
    area: str
    model_name: str
    model_version: int | None
    created_at: datetime
    window_start: datetime | None
    window_end: datetime | None
    reference_rows: int
    current_rows: int
    drift_share: float | None
    drifted_features: int
    n_features: int
    prediction_drift: float | None
    quality: dict[str, Any]
    features: dict[str, Any]
    breach: bool
    breach_reasons: list[str]
    html_key: str | None
    json_key: str | None
    html_url: str | None
    json_url: str | None


class ReportPage(SQLModel):
    """A page of drift reports, newest first."""

    items: list[ReportPublic]
    total: int
    limit: int
    offset: int


class DecisionPublic(SQLModel):
    """One retraining decision: its outcome, why, and the numbers behind it."""

    id: int
    area: str
    created_at: datetime
    outcome: DecisionOutcome
    reason: str
    numbers: dict[str, Any]
    report_id: int | None
    version_before: int | None
    version_after: int | None


class DecisionPage(SQLModel):
    """A page of retraining decisions, newest first."""

    items: list[DecisionPublic]
    total: int
    limit: int
    offset: int


def _url(storage: Storage, key: str | None) -> str | None:
    return storage.url(key) if key else None


def _report(report: MonitoringReport, storage: Storage) -> ReportPublic:
    return ReportPublic.model_validate(
        {
            **report.model_dump(),
            "html_url": _url(storage, report.html_key),
            "json_url": _url(storage, report.json_key),
        }
    )


def _decision(decision: RetrainDecision) -> DecisionPublic:
    # Read back from the database the outcome is a plain string; validation makes it the enum.
    return DecisionPublic.model_validate(decision, from_attributes=True)


@router.get("/monitoring/reports", response_model=ReportPage)
def list_reports(
    session: SessionDep,
    storage: StorageDep,
    _: StaffDep,
    area: AreaQuery = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ReportPage:
    """Drift reports newest first (staff), optionally of one area, with HTML/JSON links."""
    items, total = service.list_reports(session=session, area=area, limit=limit, offset=offset)
    return ReportPage(
        items=[_report(r, storage) for r in items], total=total, limit=limit, offset=offset
    )


@router.get("/monitoring/reports/{report_id}", response_model=ReportPublic)
def read_report(
    report_id: IntId, session: SessionDep, storage: StorageDep, _: StaffDep
) -> ReportPublic:
    """One drift report with per-feature drift and importance (staff)."""
    return _report(service.get_report(session=session, report_id=report_id), storage)


@router.get("/monitoring/decisions", response_model=DecisionPage)
def list_decisions(
    session: SessionDep,
    _: StaffDep,
    area: AreaQuery = None,
    outcome: Annotated[DecisionOutcome | None, Query()] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> DecisionPage:
    """Retraining decisions newest first (staff), filtered by area and/or outcome."""
    items, total = service.list_decisions(
        session=session, area=area, outcome=outcome, limit=limit, offset=offset
    )
    return DecisionPage(
        items=[_decision(d) for d in items], total=total, limit=limit, offset=offset
    )
