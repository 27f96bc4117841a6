"""Experiments (variants with traffic shares) and the exposures logged while they run."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, text
from sqlmodel import Field, SQLModel

from cartwise.platform.types import UTCDateTime, new_uuid, utcnow

MIN_VARIANTS = 2
MAX_VARIANTS = 5
MAX_ITEMS = 100
SHARE_TOLERANCE = 1e-6


class Surface(StrEnum):
    """Where the experiment changes what the shopper sees."""

    recommendations = "recommendations"
    search = "search"


class ExperimentStatus(StrEnum):
    """Whether traffic is still being split; a stopped experiment never runs again."""

    running = "running"
    stopped = "stopped"


class VariantStatus(StrEnum):
    """A stopped variant's traffic goes to the control."""

    active = "active"
    stopped = "stopped"


# Model refs the serving layer understands: an alias, a registry version, or a baseline.
MODEL_REF_PATTERN = r"^(champion|challenger|v[1-9][0-9]{0,8}|baseline:popularity|baseline:bm25)$"
# A baseline only makes sense on the surface it was built for.
BASELINE_SURFACE = {"baseline:popularity": Surface.recommendations, "baseline:bm25": Surface.search}

VariantName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_.-]{1,40}$")
]
ModelRef = Annotated[str, StringConstraints(strip_whitespace=True, pattern=MODEL_REF_PATTERN)]


class VariantSpec(BaseModel):
    """One arm of an experiment as staff define it."""

    name: VariantName
    model: ModelRef
    share: float = Field(gt=0, le=1, description="Fraction of units; all shares sum to 1.")


class Variant(VariantSpec):
    """One arm as stored: the spec plus whether it still receives traffic."""

    status: VariantStatus = VariantStatus.active
    stopped_reason: str | None = None


class Guard(BaseModel):
    """When the guard may stop a variant that converts worse than the control."""

    model_config = ConfigDict(extra="forbid")

    min_exposures: int = Field(default=200, ge=1, le=100_000_000)
    alpha: float = Field(default=0.01, gt=0, lt=0.5)


class Experiment(SQLModel, table=True):
    """An experiment; ``variants[0]`` is the control."""

    __table_args__ = (
        # At most one running experiment per surface, enforced by the database as well, so two
        # concurrent creations cannot both win.
        Index(
            "uq_experiment_running_surface",
            "surface",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    name: str = Field(max_length=100, unique=True)
    surface: Surface = Field(sa_type=String(20))
    status: ExperimentStatus = Field(default=ExperimentStatus.running, sa_type=String(20))
    variants: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    guard: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    description: str = Field(default="", max_length=500)
    created_by: int | None = None
    stopped_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def variant_list(self) -> list[Variant]:
        """The variants as models, control first."""
        return [Variant.model_validate(v) for v in self.variants]

    def guard_settings(self) -> Guard:
        """The guard thresholds (defaults for anything not stored)."""
        return Guard.model_validate(self.guard or {})


class ExperimentExposure(SQLModel, table=True):
    """One response that showed a unit (user or session) the items of a variant."""

    __tablename__ = "experiment_exposure"
    __table_args__ = (Index("ix_experiment_exposure_unit", "experiment_id", "unit", "created_at"),)

    # BIGINT on PostgreSQL (one row per served response); SQLite only autoincrements INTEGER.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    experiment_id: str = Field(
        sa_column=Column(
            String(32), ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
        )
    )
    variant: str = Field(max_length=40)
    unit: str = Field(max_length=140)
    user_id: int | None = None
    session_id: str | None = Field(default=None, max_length=128)
    request_id: str | None = Field(default=None, max_length=64)
    items: list[int] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ExperimentCreate(BaseModel):
    """A new experiment: 2 to 5 variants with unique names and shares summing to 1."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    surface: Surface
    description: str = Field(default="", max_length=500)
    variants: list[VariantSpec] = Field(min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    guard: Guard = Field(default_factory=Guard)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentCreate:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        total = math.fsum(v.share for v in self.variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"variant shares must sum to 1, not {total:g}")
        for v in self.variants:
            surface = BASELINE_SURFACE.get(v.model)
            if surface is not None and surface is not self.surface:
                raise ValueError(f"{v.model} cannot serve the {self.surface} surface")
        return self


class ExperimentPublic(BaseModel):
    """An experiment as the API shows it."""

    id: str
    name: str
    surface: Surface
    status: ExperimentStatus
    description: str
    variants: list[Variant]
    guard: Guard
    created_by: int | None
    created_at: datetime
    stopped_at: datetime | None
    stopped_reason: str | None

    @classmethod
    def of(cls, experiment: Experiment) -> ExperimentPublic:
        """The public view of a stored experiment."""
        return cls(
            id=experiment.id,
            name=experiment.name,
            surface=experiment.surface,
            status=experiment.status,
            description=experiment.description,
            variants=experiment.variant_list(),
            guard=experiment.guard_settings(),
            created_by=experiment.created_by,
            created_at=experiment.created_at,
            stopped_at=experiment.stopped_at,
            stopped_reason=experiment.stopped_reason,
        )


class StopRequest(BaseModel):
    """Why staff stop an experiment."""

    reason: str = Field(default="stopped by staff", max_length=500)


class Estimate(BaseModel):
    """A rate or mean with its 95% confidence interval (null when there is no data)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None


class Lift(BaseModel):
    """A variant against the control: absolute and relative differences, two-sided p-value."""

    absolute: float | None
    absolute_ci_low: float | None
    absolute_ci_high: float | None
    relative: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    p_value: float | None


class VariantResult(BaseModel):
    """Attributed outcomes of one variant."""

    name: str
    model: str
    share: float
    status: VariantStatus
    stopped_reason: str | None
    is_control: bool
    exposures: int
    units: int
    clicks: int
    add_to_carts: int
    conversions: int
    revenue: float
    ctr: Estimate
    add_to_cart_rate: Estimate
    conversion_rate: Estimate
    revenue_per_exposure: Estimate
    lift: dict[str, Lift] | None = Field(
        default=None,
        description="Against the control, by metric (ctr, add_to_cart_rate, conversion_rate, "
        "revenue_per_exposure); null for the control.",
    )


class GuardDecision(BaseModel):
    """What the guard concluded about one non-control variant."""

    variant: str
    checked: bool
    p_worse: float | None
    stopped: bool
    reason: str


class GuardReport(BaseModel):
    """The guard's thresholds, its decisions and the variants it stopped in this run."""

    min_exposures: int
    alpha: float
    stopped: list[str]
    decisions: list[GuardDecision]


class ExperimentResults(BaseModel):
    """Per-variant attributed results with confidence intervals and lifts vs the control."""

    experiment: ExperimentPublic
    computed_at: datetime
    window_hours: float
    variants: list[VariantResult]
    guard: GuardReport
