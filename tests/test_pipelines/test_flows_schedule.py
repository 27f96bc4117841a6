"""A deployment's schedule starts its flow by itself: nobody calls ``run_deployment``.

``cartwise flows serve`` registers ``process-outbox/every-minute`` with its schedule active
(as ``cartwise demo`` starts it); Prefect's scheduler service creates Scheduled runs on the
interval's grid, and the served runner starts one when its time comes, delivering the outbox.

Prefect's test harness (the ``prefect_harness`` fixture) cannot show this: its server is an
*ephemeral* one, which runs no scheduler service, so schedules there never create runs. This
test uses the demo's own ``prefect server start`` (``_FlowsBeside.start_server``) instead,
with Prefect's default scheduler settings. The first run is one interval (60 s) after the
schedule's anchor, the moment the deployment was built, so the test waits about a minute.
"""

from __future__ import annotations

import io
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

pytestmark = [pytest.mark.integration]

NAME = "process-outbox/every-minute"


def _wait_for(what: str, check: Any, procs: list[tuple[str, Any]], logs: Path) -> Any:
    """Poll ``check`` until it returns something truthy; fail if a child process died."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for name, proc in procs:
            if proc.poll() is not None:
                pytest.fail(
                    f"{name} exited ({proc.returncode}) before {what}:\n"
                    f"{(logs / f'{name}.log').read_text()}"
                )
        time.sleep(1)
    text = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out waiting for {what}:\n{text}")


def _on_grid(offset: timedelta, interval: timedelta) -> bool:
    """Whether ``offset`` is a whole number of ``interval``s (to the microsecond)."""

    def micros(d: timedelta) -> int:  # pendulum durations do not support `%` with timedelta
        return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds

    return micros(offset) % micros(interval) == 0


@pytest.mark.slow
def test_the_every_minute_schedule_runs_process_outbox_without_anybody_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.objects import FlowRun, StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from rich.console import Console

    from cartwise.commerce.outbox.models import OutboxEvent
    from cartwise.pipelines.cli import _FlowsBeside
    from cartwise.platform.settings import Settings
    from tests.test_pipelines.outbox_peers import free_port, shipped_order_shop

    engine = shipped_order_shop(tmp_path, monkeypatch, "o7", "bob@example.com")
    # No API configured: like `cartwise demo`, start a Prefect server (with its services).
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    console = Console(file=io.StringIO(), width=200)
    beside = _FlowsBeside(Settings(), port=free_port())
    logs = beside.logs
    try:
        beside.start_server(console)
        assert [name for name, _ in beside.procs] == ["prefect-server"]
        # Schedules active, as the demo serves them; only this deployment, so no other flow
        # (refresh-features at :05, ...) starts in the test's shop meanwhile.
        beside.start_flows(console, only=[NAME])
        assert [name for name, _ in beside.procs] == ["prefect-server", "flows-serve"]
        procs = list(beside.procs)

        with (
            temporary_settings({PREFECT_API_URL: beside.api_url}),
            get_client(sync_client=True) as client,
        ):

            def deployment() -> Any:
                try:
                    return client.read_deployment_by_name(NAME)
                except Exception:  # not registered yet
                    return None

            def runs() -> list[FlowRun]:
                return client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[outbox.id])
                    ),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=200,
                )

            outbox = _wait_for(f"{NAME} to be registered", deployment, procs, logs)
            assert not outbox.paused
            (schedule,) = outbox.schedules
            assert schedule.active
            interval = schedule.schedule.interval
            assert interval == timedelta(seconds=60)
            anchor = schedule.schedule.anchor_date

            # The scheduler service (not this test) creates the runs ahead of time.
            scheduled = _wait_for(
                "scheduled runs", lambda: r if len(r := runs()) >= 3 else None, procs, logs
            )
            soon = datetime.now(UTC) + timedelta(seconds=30)
            for run in scheduled:
                assert run.auto_scheduled
                assert run.created_by is not None
                assert run.created_by.type == "SCHEDULE"
                assert run.created_by.id == schedule.id
                assert run.expected_start_time is not None
                assert run.expected_start_time > anchor
                assert _on_grid(run.expected_start_time - anchor, interval)
                if run.expected_start_time > soon:  # too far off for the runner to take
                    assert run.state is not None
                    assert run.state.type == StateType.SCHEDULED
                    assert run.state.name == "Scheduled"
            times = [r.expected_start_time for r in scheduled]
            assert all(b - a == interval for a, b in itertools.pairwise(times))
            first = scheduled[0]

            # The served runner takes the first run when its time comes and completes it.
            def finished() -> FlowRun | None:
                run = client.read_flow_run(first.id)
                assert run.state is not None
                return run if run.state.is_final() else None

            done = _wait_for(f"the {first.expected_start_time} run", finished, procs, logs)
            assert done.state is not None
            assert done.state.is_completed(), (
                done.state,
                (logs / "flows-serve.log").read_text(),
            )
            assert done.start_time is not None
            assert first.expected_start_time is not None
            # Not early: the server holds a run until its scheduled time (to the second).
            assert done.start_time >= first.expected_start_time - timedelta(seconds=1)

            # Every run of the deployment so far came from the schedule.
            for run in runs():
                assert run.auto_scheduled
                assert run.created_by is not None
                assert run.created_by.type == "SCHEDULE"

        with Session(engine) as s:
            (event,) = s.exec(select(OutboxEvent)).all()
            assert event.processed_at is not None
        (mail,) = (tmp_path / "var" / "mail").glob("*.eml")
        assert "Subject: Order o7 has shipped" in mail.read_text()
    finally:
        beside.stop(console)
        engine.dispose()
    assert "flows server stopped" in (logs / "flows-serve.log").read_text()
