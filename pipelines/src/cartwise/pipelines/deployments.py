"""Every flow as a Prefect deployment with its schedule, for ``cartwise flows serve``.

The table below is plain data (cheap to import and to test); :func:`build` turns it into
Prefect ``RunnerDeployment`` objects, importing each flow by name through ``FLOWS`` only then.
A flow whose module cannot be imported is reported and left out, so one broken flow does not
stop the others from being served.

Times are UTC and staggered, because on a small machine two trainings at once are slower than
one after the other: each evaluation runs an hour after its training.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cartwise.pipelines.flows import FLOWS

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

TIMEZONE = "UTC"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: a flow (by its ``FLOWS`` name), a schedule and fixed parameters."""

    flow: str
    name: str
    description: str
    cron: str | None = None
    interval_seconds: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # One run at a time: a slow run is not overtaken by the next scheduled one.
    concurrency_limit: int | None = 1

    @property
    def full_name(self) -> str:
        """``<flow>/<deployment>``, as Prefect names it."""
        return f"{self.flow}/{self.name}"

    @property
    def schedule_text(self) -> str:
        """The schedule in words (cron in UTC, an interval, or on demand)."""
        if self.cron:
            return f"cron '{self.cron}' ({TIMEZONE})"
        if self.interval_seconds:
            return f"every {self.interval_seconds}s"
        return "on demand"


def _training(area: str, train_cron: str, gate_cron: str, every: str) -> list[DeploymentSpec]:
    return [
        DeploymentSpec(
            "train-model",
            f"{every}-{area}",
            f"Train {area} ({every}) with Ray Tune, log to MLflow, register the challenger.",
            cron=train_cron,
            parameters={"area": area},
        ),
        DeploymentSpec(
            "evaluate-and-promote",
            f"{every}-{area}",
            f"Gate the {area} challenger an hour after its {every} training.",
            cron=gate_cron,
            parameters={"area": area},
        ),
    ]


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        "refresh-features",
        "hourly",
        "Export commerce facts, rebuild feature tables, materialise to the online store.",
        cron="5 * * * *",
    ),
    *_training("recommend", "0 2 * * *", "0 3 * * *", "nightly"),
    *_training("search", "30 2 * * *", "30 3 * * *", "nightly"),
    *_training("customers", "0 3 * * 0", "0 4 * * 0", "weekly"),
    *_training("demand", "30 3 * * 0", "30 4 * * 0", "weekly"),
    *_training("fraud", "0 4 * * 0", "0 5 * * 0", "weekly"),
    DeploymentSpec(
        "monitor-drift",
        "hourly",
        "Evidently drift and quality for every area; a breach retrains and gates.",
        cron="20 * * * *",  # after refresh-features has loaded the hour's features
        parameters={"area": "all"},
    ),
    DeploymentSpec(
        "process-outbox",
        "every-minute",
        "Send order mails and fraud alerts (mail + signed webhook), exactly once each.",
        interval_seconds=60,
    ),
    DeploymentSpec(
        "release-expired-reservations",
        "every-minute",
        "Cancel unpaid orders whose stock reservation expired.",
        interval_seconds=60,
    ),
    DeploymentSpec(
        "reports",
        "daily",
        "Daily sales, customer and product reports to object storage.",
        cron="0 1 * * *",
        parameters={"kind": "daily"},
    ),
    DeploymentSpec(
        "reports",
        "monthly",
        "The monthly cohort report.",
        cron="30 1 1 * *",
        parameters={"kind": "monthly"},
    ),
    DeploymentSpec(
        "export",
        "on-demand",
        "CSV/Parquet exports; started by POST /api/v1/exports or by hand.",
        concurrency_limit=None,
    ),
)


def select(only: list[str] | None = None) -> list[DeploymentSpec]:
    """The specs whose flow or full name is in ``only`` (all when empty); unknown → error."""
    if not only:
        return list(DEPLOYMENTS)
    wanted = set(only)
    known = {s.flow for s in DEPLOYMENTS} | {s.full_name for s in DEPLOYMENTS}
    unknown = wanted - known
    if unknown:
        raise ValueError(f"unknown deployment(s) {', '.join(sorted(unknown))}")
    return [s for s in DEPLOYMENTS if s.flow in wanted or s.full_name in wanted]


def load_flow(name: str) -> Any:
    """The flow object ``FLOWS[name]`` points at (imported now)."""
    module, function = FLOWS[name].split(":")
    return getattr(importlib.import_module(module), function)


def build_one(spec: DeploymentSpec, *, paused: bool = False) -> RunnerDeployment:
    """A ``RunnerDeployment`` for one spec (imports its flow)."""
    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    schedules = []
    if spec.cron:
        schedules.append(Cron(spec.cron, timezone=TIMEZONE))
    elif spec.interval_seconds:
        schedules.append(Interval(spec.interval_seconds, timezone=TIMEZONE))
    deployment: RunnerDeployment = load_flow(spec.flow).to_deployment(
        name=spec.name,
        schedules=schedules or None,
        parameters=spec.parameters or None,
        description=spec.description,
        concurrency_limit=spec.concurrency_limit,
        tags=["cartwise"],
        paused=paused,
        # A module path, not a file path: runs load the installed package from any folder.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return deployment


def build(
    specs: list[DeploymentSpec] | None = None, *, paused: bool = False
) -> tuple[list[RunnerDeployment], dict[str, str]]:
    """Deployments for the specs, and ``{full name: why}`` for those whose flow won't import."""
    built: list[RunnerDeployment] = []
    skipped: dict[str, str] = {}
    for spec in DEPLOYMENTS if specs is None else specs:
        try:
            built.append(build_one(spec, paused=paused))
        except (ImportError, AttributeError) as exc:
            skipped[spec.full_name] = f"{type(exc).__name__}: {exc}"
    return built, skipped
