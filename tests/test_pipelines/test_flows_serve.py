"""Every flow as a deployment: names, schedules and parameters; ``cartwise flows serve``
registers them with a real Prefect API and runs what it is asked to run."""

from __future__ import annotations

import importlib.util
import io
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from cartwise.pipelines.deployments import DEPLOYMENTS, build
from cartwise.pipelines.deployments import select as select_specs

pytestmark = [pytest.mark.integration]

AREAS = ("recommend", "search", "customers", "demand", "fraud")


def _by_name() -> dict[str, Any]:
    return {spec.full_name: spec for spec in DEPLOYMENTS}


def _minutes(cron: str) -> int:
    """Minutes after midnight of a daily/weekly cron (minute hour * * dow)."""
    minute, hour = cron.split()[:2]
    return int(hour) * 60 + int(minute)


def test_the_deployment_set_has_its_schedules_and_parameters() -> None:
    specs = _by_name()
    assert len(specs) == len(DEPLOYMENTS)  # names are unique
    assert specs["refresh-features/hourly"].cron == "5 * * * *"
    assert specs["monitor-drift/hourly"].cron.endswith("* * * *")  # type: ignore[union-attr]
    assert specs["monitor-drift/hourly"].parameters == {"area": "all"}
    for name in ("process-outbox/every-minute", "release-expired-reservations/every-minute"):
        assert specs[name].interval_seconds == 60
        assert specs[name].concurrency_limit == 1
    assert specs["reports/daily"].parameters == {"kind": "daily"}
    assert specs["reports/monthly"].parameters == {"kind": "monthly"}
    assert specs["reports/monthly"].cron.split()[2] == "1"  # type: ignore[union-attr]
    assert specs["export/on-demand"].schedule_text == "on demand"
    for area in AREAS:
        every = "nightly" if area in ("recommend", "search") else "weekly"
        train = specs[f"train-model/{every}-{area}"]
        gate = specs[f"evaluate-and-promote/{every}-{area}"]
        assert train.parameters == gate.parameters == {"area": area}
        assert train.cron.split()[2:] == gate.cron.split()[2:]  # type: ignore[union-attr]
        assert train.cron.split()[4] == ("*" if every == "nightly" else "0")  # type: ignore[union-attr]
        assert _minutes(gate.cron) - _minutes(train.cron) == 60  # type: ignore[arg-type]
    # Every flow the CLI knows is served by at least one deployment.
    from cartwise.pipelines.flows import FLOWS

    assert {spec.flow for spec in DEPLOYMENTS} == set(FLOWS)


def test_built_deployments_carry_schedule_parameters_and_module_entrypoint() -> None:
    built, skipped = build(select_specs(["process-outbox", "release-expired-reservations"]))
    assert skipped == {}
    by_name = {f"{d.flow_name}/{d.name}": d for d in built}
    outbox = by_name["process-outbox/every-minute"]
    assert outbox.entrypoint == "cartwise.pipelines.flows.outbox.process_outbox"
    assert outbox.schedules[0].schedule.interval.total_seconds() == 60
    assert outbox.schedules[0].schedule.timezone == "UTC"
    assert outbox.concurrency_limit == 1
    release = by_name["release-expired-reservations/every-minute"]
    assert release.entrypoint.endswith("flows.maintenance.release_expired_reservations")


def test_a_flow_that_cannot_be_imported_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cartwise.pipelines import flows

    monkeypatch.setitem(flows.FLOWS, "process-outbox", "cartwise.pipelines.flows.nope:x")
    built, skipped = build(select_specs(["process-outbox", "release-expired-reservations"]))
    assert [d.flow_name for d in built] == ["release-expired-reservations"]
    assert "ModuleNotFoundError" in skipped["process-outbox/every-minute"]


def test_cli_lists_deployments_and_refuses_unknown_names() -> None:
    from cartwise.pipelines.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["flows", "deployments"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for name in ("process-outbox/every-minute", "train-model/weekly-fraud", "export/on-demand"):
        assert name in listed.output
    bad = runner.invoke(app, ["flows", "deployments", "--only", "nope"])
    assert bad.exit_code == 2
    assert "unknown deployment" in bad.output


def _importable(spec: Any) -> bool:
    from cartwise.pipelines.flows import FLOWS

    return importlib.util.find_spec(FLOWS[spec.flow].split(":")[0]) is not None


def _wait_for(what: str, check: Any, proc: Any, log: Path) -> Any:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc.poll() is not None:
            pytest.fail(f"flows serve exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


@pytest.mark.slow
def test_flows_serve_registers_deployments_and_runs_process_outbox(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's way: ``_FlowsBeside`` starts ``cartwise flows serve`` against the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import DeploymentSort
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings
    from rich.console import Console

    from cartwise.commerce.outbox.models import OutboxEvent
    from cartwise.pipelines.cli import _FlowsBeside, _serve_panel_lines
    from cartwise.platform.settings import Settings
    from tests.test_pipelines.outbox_peers import shipped_order_shop

    engine = shipped_order_shop(tmp_path, monkeypatch, "o1", "ann@example.com")
    api_url = get_current_settings().api.url
    assert api_url
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    console = Console(file=io.StringIO(), width=200)
    beside = _FlowsBeside(Settings())
    beside.start_server(console)  # an API is configured: no server of its own
    assert beside.procs == []
    lines = beside.start_flows(console, paused=True)
    ((_, proc),) = beside.procs
    log = tmp_path / "var" / "log" / "flows-serve.log"
    try:
        expected = {spec.full_name for spec in DEPLOYMENTS if _importable(spec)}
        assert "process-outbox/every-minute" in expected

        def registered() -> dict[str, Any]:
            with get_client(sync_client=True) as client:
                found = {}
                for d in client.read_deployments(limit=200, sort=DeploymentSort.NAME_ASC):
                    found[f"{client.read_flow(d.flow_id).name}/{d.name}"] = d
            return found if expected <= set(found) else {}

        deployments = _wait_for("the deployments", registered, proc, log)
        outbox = deployments["process-outbox/every-minute"]
        assert outbox.schedules[0].schedule.interval.total_seconds() == 60
        assert outbox.paused
        assert deployments["monitor-drift/hourly"].parameters == {"area": "all"}
        assert deployments["train-model/nightly-search"].parameters == {"area": "search"}

        run = run_deployment("process-outbox/every-minute", timeout=240, poll_interval=1)
        assert run.state is not None
        assert run.state.is_completed(), (run.state, log.read_text())
        with Session(engine) as s:
            (event,) = s.exec(select(OutboxEvent)).all()
            assert event.processed_at is not None
        (mail,) = (tmp_path / "var" / "mail").glob("*.eml")
        assert "Subject: Order o1 has shipped" in mail.read_text()
    finally:
        beside.stop(console)
        engine.dispose()
    assert proc.returncode == 0, log.read_text()
    assert "flows server stopped" in log.read_text()

    text = "\n".join(
        _serve_panel_lines("http://h:1", dashboard_url=None, tracking_uri="x", flows_lines=lines)
    )
    assert f"Prefect UI     {api_url.removesuffix('/api')}/deployments" in text
    assert f"{tmp_path / 'var' / 'mail'}/*.eml" in text


def test_demo_keeps_going_when_the_prefect_server_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from rich.console import Console

    from cartwise.pipelines.cli import _FlowsBeside
    from cartwise.platform.settings import Settings
    from tests.test_pipelines.outbox_peers import free_port

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = io.StringIO()
    console = Console(file=out, width=200)
    beside = _FlowsBeside(Settings(var_dir=tmp_path / "var"), port=free_port())
    # Stands in for a `prefect server start` that fails (port taken, broken install...).
    beside._spawn("prefect-server", [sys.executable, "-c", "raise SystemExit(1)"], beside._env())

    lines = beside.start_flows(console)

    assert lines == [f"Prefect        not running (see {beside.logs}/prefect-server.log)"]
    assert "did not start" in out.getvalue()
    assert beside.procs == []  # no flows server started against nothing
