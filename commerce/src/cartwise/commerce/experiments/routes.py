"""HTTP routes of A/B experiments (staff only).

The serving ingress assigns units and logs exposures through the service; these routes let staff
create and stop experiments and read attributed results (reading results also runs the guard).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from cartwise.commerce.deps import SessionDep, StaffDep
from cartwise.commerce.experiments import service
from cartwise.commerce.experiments.models import (
    ExperimentCreate,
    ExperimentPublic,
    ExperimentResults,
    ExperimentStatus,
    StopRequest,
    Surface,
)
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["experiments"], responses=PROBLEM_RESPONSES)

ExperimentId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


@router.post("/experiments", response_model=ExperimentPublic, status_code=status.HTTP_201_CREATED)
def create_experiment(
    data: ExperimentCreate, session: SessionDep, staff: StaffDep
) -> ExperimentPublic:
    """Start an experiment on a surface (staff); 409 when one is already running there."""
    experiment = service.create(session=session, data=data, actor_id=staff.subject)
    return ExperimentPublic.of(experiment)


@router.get("/experiments", response_model=list[ExperimentPublic])
def list_experiments(
    session: SessionDep,
    _: StaffDep,
    surface: Annotated[Surface | None, Query()] = None,
    status: Annotated[ExperimentStatus | None, Query()] = None,
) -> list[ExperimentPublic]:
    """Experiments, newest first (staff)."""
    return [
        ExperimentPublic.of(e)
        for e in service.list_experiments(session=session, surface=surface, status=status)
    ]


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic)
def read_experiment(
    experiment_id: ExperimentId, session: SessionDep, _: StaffDep
) -> ExperimentPublic:
    """One experiment (staff)."""
    return ExperimentPublic.of(service.get(session=session, experiment_id=experiment_id))


@router.post("/experiments/{experiment_id}/stop", response_model=ExperimentPublic)
def stop_experiment(
    experiment_id: ExperimentId,
    session: SessionDep,
    _: StaffDep,
    body: StopRequest | None = None,
) -> ExperimentPublic:
    """Stop a running experiment (staff); 409 when it is already stopped."""
    experiment = service.get(session=session, experiment_id=experiment_id)
    reason = body.reason if body is not None else StopRequest().reason
    return ExperimentPublic.of(service.stop(session=session, experiment=experiment, reason=reason))


@router.get("/experiments/{experiment_id}/results", response_model=ExperimentResults)
def experiment_results(
    experiment_id: ExperimentId, session: SessionDep, _: StaffDep
) -> ExperimentResults:
    """Per-variant exposures, CTR, add-to-cart, conversion and revenue with CIs (staff).

    Runs the guard first: a variant converting significantly worse than the control is stopped.
    """
    experiment = service.get(session=session, experiment_id=experiment_id)
    return service.results(session=session, experiment=experiment)
