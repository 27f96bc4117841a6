"""HTTP routes of the alerts domain (staff only): list alerts and acknowledge them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cartwise.commerce.alerts import service
from cartwise.commerce.alerts.models import AlertPage, AlertPublic, AlertStatus
from cartwise.commerce.deps import IntId, SessionDep, StaffDep
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=PROBLEM_RESPONSES)


@router.get("/alerts", response_model=AlertPage)
def list_alerts(
    session: SessionDep,
    _: StaffDep,
    status: Annotated[AlertStatus | None, Query()] = None,
    kind: Annotated[str | None, Query(min_length=1, max_length=60)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AlertPage:
    """Alerts, newest first (staff), filtered by status and kind, paged by limit/offset."""
    return service.list_alerts(
        session=session, status=status, kind=kind, limit=limit, offset=offset
    )


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
def read_alert(alert_id: IntId, session: SessionDep, _: StaffDep) -> AlertPublic:
    """One alert (staff)."""
    return service.alert_public(service.get_alert(session=session, alert_id=alert_id))


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertPublic)
def acknowledge_alert(alert_id: IntId, session: SessionDep, staff: StaffDep) -> AlertPublic:
    """Acknowledge an alert (staff): someone is on it; 409 when it is already resolved."""
    alert = service.acknowledge(session=session, alert_id=alert_id, actor_id=staff.subject)
    return service.alert_public(alert)
