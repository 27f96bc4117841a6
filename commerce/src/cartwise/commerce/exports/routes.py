"""HTTP routes of the exports domain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import update
from sqlmodel import col

from cartwise.commerce.deps import IntId, SessionDep, StaffDep, StorageDep
from cartwise.commerce.exports import service
from cartwise.commerce.exports.models import (
    ExportJob,
    ExportJobPage,
    ExportJobPublic,
    ExportRequest,
    ExportStatus,
)
from cartwise.commerce.exports.runner import ExportRunner, PrefectRunnerError, make_runner
from cartwise.platform.errors import PROBLEM_RESPONSES, Problem
from cartwise.platform.types import utcnow

router = APIRouter(prefix="/api/v1", tags=["exports"], responses=PROBLEM_RESPONSES)


def export_runner(request: Request) -> ExportRunner:
    """The app's export runner, built on first use unless one was installed on app.state."""
    state = request.app.state
    runner: ExportRunner | None = getattr(state, "export_runner", None)
    if runner is None:
        runner = make_runner(state.settings, state.engine, state.storage)
        state.export_runner = runner
    return runner


@router.post("/exports", status_code=202, response_model=ExportJobPublic)
def create_export(
    body: ExportRequest,
    request: Request,
    session: SessionDep,
    staff: StaffDep,
    storage: StorageDep,
) -> ExportJobPublic:
    """Queue an export (CSV or Parquet) and start it; poll its status and URL (staff)."""
    job = service.create_job(session=session, request=body, requested_by=staff.subject)
    assert job.id is not None
    try:
        ref = export_runner(request).submit(job.id)
    except PrefectRunnerError as exc:
        session.execute(
            update(ExportJob)
            .where(col(ExportJob.id) == job.id)
            .values(status=ExportStatus.failed.value, error=str(exc)[:2000], finished_at=utcnow())
        )
        session.commit()
        raise Problem(
            f"export job {job.id} could not be started: {exc}",
            status=503,
            slug="export-runner-unavailable",
            title="Export runner unavailable",
        ) from exc
    service.set_runner_ref(session=session, job_id=job.id, ref=ref)
    session.expire_all()
    return service.to_public(service.get_job(session=session, job_id=job.id), storage)


@router.get("/exports/{job_id}", response_model=ExportJobPublic)
def get_export(
    job_id: IntId, session: SessionDep, _: StaffDep, storage: StorageDep
) -> ExportJobPublic:
    """An export job's status, and its download URL once it has succeeded (staff)."""
    return service.to_public(service.get_job(session=session, job_id=job_id), storage)


@router.get("/exports", response_model=ExportJobPage)
def list_exports(
    session: SessionDep,
    _: StaffDep,
    storage: StorageDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ExportJobPage:
    """Export jobs, newest first (staff)."""
    jobs, total = service.list_jobs(session=session, limit=limit, offset=offset)
    return ExportJobPage(items=[service.to_public(j, storage) for j in jobs], total=total)
