"""Drift reports and retraining decisions, written by the monitoring flow and read by staff.

The commerce member only stores and lists these records; computing them (Evidently, MLflow,
retraining) happens in the models and pipelines members.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlmodel import Field, SQLModel

from cartwise.platform.types import UTCDateTime, utcnow


class DecisionOutcome(StrEnum):
    """What one ``monitor_drift`` run decided for an area."""

    no_drift = "no_drift"
    not_enough_data = "not_enough_data"
    cooldown = "cooldown"
    retrained_promoted = "retrained_promoted"
    retrained_not_promoted = "retrained_not_promoted"
    failed = "failed"


class MonitoringReport(SQLModel, table=True):
    """One Evidently run for one area's model version: drift, quality, and where the files are."""

    __tablename__ = "monitoring_report"
    __table_args__ = (Index("ix_monitoring_report_area_created", "area", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    area: str = Field(max_length=20)
    model_name: str = Field(max_length=80)
    model_version: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    window_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    window_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reference_rows: int = 0
    current_rows: int = 0
    drift_share: float | None = None
    drifted_features: int = 0
    n_features: int = 0
    prediction_drift: float | None = None
    # metric name -> value, for the quality metrics whose labels have arrived
    quality: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # feature -> {"drift_score": ..., "drifted": ..., "importance": ...}
    features: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    breach: bool = False
    breach_reasons: list[str] = Field(default_factory=list, sa_type=JSON)
    html_key: str | None = Field(default=None, max_length=300)
    json_key: str | None = Field(default=None, max_length=300)


class RetrainDecision(SQLModel, table=True):
    """Why ``monitor_drift`` did (or did not) retrain an area, with the numbers behind it."""

    __tablename__ = "retrain_decision"
    __table_args__ = (Index("ix_retrain_decision_area_created", "area", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    area: str = Field(max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    outcome: DecisionOutcome = Field(sa_type=String(32))
    reason: str = Field(max_length=1000)
    numbers: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    report_id: int | None = Field(default=None, foreign_key="monitoring_report.id")
    version_before: int | None = None
    version_after: int | None = None
