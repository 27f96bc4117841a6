"""Raise, list, acknowledge and resolve alerts. Only ``acknowledge`` commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import Session, col, func, select

from cartwise.commerce.alerts.models import (
    Alert,
    AlertPage,
    AlertPublic,
    AlertSeverity,
    AlertStatus,
)
from cartwise.platform.errors import Conflict, NotFound
from cartwise.platform.types import utcnow


class AlertResolved(Conflict):
    """The alert is already resolved; there is nothing left to acknowledge."""

    slug = "alert-resolved"
    title = "Alert already resolved"


def raise_alert(
    session: Session,
    *,
    kind: str,
    title: str,
    severity: AlertSeverity = AlertSeverity.medium,
    order_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Alert:
    """Add an open alert to the caller's transaction and flush it so it has an id."""
    alert = Alert(
        kind=kind,
        severity=severity,
        order_id=order_id,
        title=title[:200],
        detail=detail or {},
    )
    session.add(alert)
    session.flush()
    return alert


def alert_public(alert: Alert) -> AlertPublic:
    """The API view of an alert."""
    return AlertPublic.model_validate(alert.model_dump(warnings=False))


def list_alerts(
    *,
    session: Session,
    status: AlertStatus | None = None,
    kind: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> AlertPage:
    """Alerts newest first, optionally of one status or kind."""
    filters: list[ColumnElement[bool]] = []
    if status is not None:
        filters.append(col(Alert.status) == status)
    if kind is not None:
        filters.append(col(Alert.kind) == kind)
    total = session.exec(select(func.count()).select_from(Alert).where(*filters)).one()
    rows = session.exec(
        select(Alert)
        .where(*filters)
        .order_by(col(Alert.created_at).desc(), col(Alert.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return AlertPage(items=[alert_public(a) for a in rows], total=total, limit=limit, offset=offset)


def get_alert(*, session: Session, alert_id: int) -> Alert:
    """One alert, or 404."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("Alert not found.")
    return alert


def acknowledge(*, session: Session, alert_id: int, actor_id: int) -> Alert:
    """Mark an open alert acknowledged (again is a no-op); 409 when resolved. Commits."""
    # Conditional on the status, so a concurrent resolve is never overwritten.
    result = session.execute(
        update(Alert)
        .where(col(Alert.id) == alert_id, col(Alert.status) == AlertStatus.open)
        .values(status=AlertStatus.acknowledged, acknowledged_at=utcnow(), acknowledged_by=actor_id)
    )
    session.commit()
    alert = session.get(Alert, alert_id, populate_existing=True)
    if alert is None:
        raise NotFound("Alert not found.")
    if result.rowcount != 1 and alert.status == AlertStatus.resolved:  # type: ignore[attr-defined]
        raise AlertResolved("This alert is already resolved.")
    return alert


def resolve_for_order(
    *, session: Session, order_id: str, actor_id: int | None, kinds: tuple[str, ...] = ()
) -> list[int]:
    """Resolve the order's unresolved alerts (of the given kinds, or all); caller commits."""
    filters: list[ColumnElement[bool]] = [
        col(Alert.order_id) == order_id,
        col(Alert.status) != AlertStatus.resolved,
    ]
    if kinds:
        filters.append(col(Alert.kind).in_(kinds))
    ids = [int(i) for i in session.exec(select(Alert.id).where(*filters)) if i is not None]
    if ids:
        session.execute(
            update(Alert)
            .where(col(Alert.id).in_(ids), col(Alert.status) != AlertStatus.resolved)
            .values(status=AlertStatus.resolved, resolved_at=utcnow(), resolved_by=actor_id)
        )
    return ids
