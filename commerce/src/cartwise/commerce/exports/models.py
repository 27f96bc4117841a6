"""Export jobs: the table and its API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy import JSON, Index, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from cartwise.platform.types import UTCDateTime, utcnow


class ExportKind(StrEnum):
    """What an export contains."""

    orders = "orders"
    order_lines = "order_lines"
    sales_daily = "sales_daily"
    products = "products"
    customers = "customers"
    cohorts = "cohorts"


class ExportFormat(StrEnum):
    """The file format of an export."""

    csv = "csv"
    parquet = "parquet"


class ExportStatus(StrEnum):
    """Where an export job is: queued → running → succeeded | failed."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ExportJob(SQLModel, table=True):
    """A requested export; the file lands in storage under ``storage_key``."""

    __tablename__ = "export_job"
    __table_args__ = (Index("ix_export_job_status_created", "status", "created_at"),)

    id: int | None = SQLField(default=None, primary_key=True)
    kind: ExportKind = SQLField(sa_type=String(20))
    format: ExportFormat = SQLField(sa_type=String(10))
    # The ISO start and end of the range: what the job was asked for, kept as sent.
    params: dict[str, Any] = SQLField(default_factory=dict, sa_type=JSON)
    status: ExportStatus = SQLField(default=ExportStatus.queued, sa_type=String(12))
    storage_key: str | None = SQLField(default=None, max_length=300)
    row_count: int | None = None
    error: str | None = SQLField(default=None, max_length=2000)
    attempts: int = 0
    # No foreign key: a job record outlives the member of staff who asked for it.
    requested_by: int | None = None
    # The runner's handle on the work (a Prefect flow run id, or the thread's name).
    runner_ref: str | None = SQLField(default=None, max_length=80)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)


class ExportRequest(BaseModel):
    """Ask for an export of one kind, in one format, over [start, end)."""

    kind: ExportKind
    format: ExportFormat = ExportFormat.csv
    start: AwareDatetime | None = Field(
        default=None, description="Inclusive; default 30 days before end."
    )
    end: AwareDatetime | None = Field(default=None, description="Exclusive; default now.")

    @model_validator(mode="after")
    def _ordered(self) -> ExportRequest:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class ExportJobPublic(BaseModel):
    """An export job as the API shows it; ``url`` is set once it has succeeded."""

    id: int
    kind: ExportKind
    format: ExportFormat
    params: dict[str, Any]
    status: ExportStatus
    row_count: int | None
    error: str | None
    attempts: int
    requested_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    storage_key: str | None
    url: str | None = None


class ExportJobPage(BaseModel):
    """The newest export jobs first."""

    items: list[ExportJobPublic]
    total: int
