"""Alerts raised for staff, and their schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlmodel import Field, SQLModel

from cartwise.platform.types import UTCDateTime, utcnow

# The kinds raised today; ``kind`` stays free text so new producers need no migration.
FRAUD_REVIEW = "fraud.review"
FRAUD_BLOCKED = "fraud.blocked"
CHARGEBACK = "order.chargeback"


class AlertStatus(StrEnum):
    """Where an alert is in its life: open → acknowledged → resolved (or open → resolved)."""

    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class AlertSeverity(StrEnum):
    """How urgent an alert is."""

    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Alert(SQLModel, table=True):
    """Something staff should look at, with the facts that raised it."""

    __tablename__ = "alert"
    __table_args__ = (
        Index("ix_alert_status_created", "status", "created_at"),
        Index("ix_alert_kind_created", "kind", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=60)
    severity: AlertSeverity = Field(default=AlertSeverity.medium, sa_type=String(10))
    status: AlertStatus = Field(default=AlertStatus.open, sa_type=String(16))
    # No foreign key: a blocked checkout never becomes an order, and alerts outlive orders.
    order_id: str | None = Field(default=None, max_length=32, index=True)
    title: str = Field(max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: int | None = None
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: int | None = None


class AlertPublic(SQLModel):
    """An alert as staff see it."""

    id: int
    kind: str
    severity: AlertSeverity
    status: AlertStatus
    order_id: str | None
    title: str
    detail: dict[str, Any]
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: int | None
    resolved_at: datetime | None
    resolved_by: int | None


class AlertPage(SQLModel):
    """A page of alerts, newest first."""

    items: list[AlertPublic]
    total: int
    limit: int
    offset: int
