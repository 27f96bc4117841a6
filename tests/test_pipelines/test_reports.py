"""The ``reports`` and ``export`` flows, and the Prefect REST runner of export jobs."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.exports.models import ExportKind, ExportRequest, ExportStatus
from tests.test_commerce.factories import make_variant
from tests.test_commerce.test_business_analytics import add_order
from tests.test_commerce.test_exports import RANGE, T0, seed

pytestmark = [pytest.mark.integration]


@pytest.fixture
def shop(make_settings: Callable[..., Any], tmp_path: Path) -> dict[str, Any]:
    """A SQLite shop with the export tests' orders; its settings overrides and storage."""
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import get_engine
    from cartwise.platform.storage import get_storage

    url = f"sqlite:///{tmp_path / 'reports.db'}"
    settings = make_settings(database_url=url)
    engine = get_engine(settings)
    metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        seed(session)
    overrides = {"database_url": url, "var_dir": str(settings.var_dir), "env": "test"}
    return {
        "settings": settings,
        "engine": engine,
        "overrides": overrides,
        "storage": get_storage(settings),
    }


def _files(storage: Any, prefix: str) -> dict[str, bytes]:
    root = Path(storage.root) / prefix
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_daily_report_writes_files_and_a_rerun_overwrites_them(
    prefect_harness: None, shop: dict[str, Any]
) -> None:
    from cartwise.pipelines.flows.reports import reports

    storage = shop["storage"]
    manifest = reports(kind="daily", day="2026-11-02", overrides=shop["overrides"])
    prefix = "reports/daily/2026-11-02"
    assert manifest["prefix"] == prefix
    files = _files(storage, prefix)
    assert sorted(files) == [
        "customers.csv",
        "customers.parquet",
        "manifest.json",
        "products.csv",
        "products.parquet",
        "sales.csv",
        "sales.parquet",
        "summary.html",
    ]
    assert files["sales.csv"].decode().splitlines() == [
        "dimension,key,currency,revenue,orders,units",
        "total,,GBP,31.25,2,7",
        "category,Uncategorised,GBP,31.25,2,7",
        "country,GB,GBP,31.25,2,7",
    ]
    products = pq.read_table(io.BytesIO(files["products.parquet"])).to_pylist()
    assert [(p["units"], str(p["revenue"]), p["order_lines"]) for p in products] == [
        (5, "11.25", 2),
        (2, "20.00", 1),
    ]
    customers = list(csv.DictReader(io.StringIO(files["customers.csv"].decode())))
    assert [(c["customer"], c["orders"], c["revenue"], c["segment"]) for c in customers] == [
        ("e:someone@example.com", "2", "31.25", "new")
    ]
    assert b"31.25" in files["summary.html"]
    assert json.loads(files["manifest.json"])["files"]["sales"]["rows"] == 3

    # The same run again: the same files, byte for byte (but the manifest's time).
    reports(kind="daily", day="2026-11-02", overrides=shop["overrides"])
    again = _files(storage, prefix)
    assert sorted(again) == sorted(files)
    for name in files:
        if name != "manifest.json":
            assert again[name] == files[name], name

    # A late order of that day: the re-run replaces the files with the new numbers.
    with Session(shop["engine"]) as session:
        tea = make_variant(session, price="1.00", name="Late")
        add_order(session, at=T0 + timedelta(hours=20), status="paid", lines=[(tea, 3, "1.00")])
    reports(kind="daily", day="2026-11-02", overrides=shop["overrides"])
    latest = _files(storage, prefix)
    assert sorted(latest) == sorted(files)
    assert latest["sales.csv"].decode().splitlines()[1] == "total,,GBP,34.25,3,10"


def test_monthly_cohort_report(prefect_harness: None, shop: dict[str, Any]) -> None:
    from cartwise.pipelines.flows.reports import reports

    reports(kind="monthly", month="2026-11", overrides=shop["overrides"])
    files = _files(shop["storage"], "reports/monthly/2026-11")
    assert sorted(files) == ["cohorts.csv", "cohorts.parquet", "manifest.json", "summary.html"]
    rows = list(csv.DictReader(io.StringIO(files["cohorts.csv"].decode())))
    assert [
        (r["cohort"], r["month_offset"], r["customers"], r["orders"], r["revenue"]) for r in rows
    ] == [("2026-11", "0", "1", "4", "111.25")]  # every November sale
    with pytest.raises(ValueError, match="kind must be"):
        reports.fn(kind="weekly", overrides=shop["overrides"])


def test_export_flow_runs_the_queued_jobs_once(prefect_harness: None, shop: dict[str, Any]) -> None:
    from cartwise.commerce.exports.service import create_job, get_job
    from cartwise.pipelines.flows.reports import export

    with Session(shop["engine"], expire_on_commit=False) as session:
        jobs = [
            create_job(
                session=session,
                request=ExportRequest.model_validate({"kind": kind, "format": "csv", **RANGE}),
                requested_by=None,
            )
            for kind in (ExportKind.orders, ExportKind.sales_daily)
        ]
    outcome = export(overrides=shop["overrides"])
    assert {k: v["status"] for k, v in outcome.items()} == {
        str(jobs[0].id): "succeeded",
        str(jobs[1].id): "succeeded",
    }
    assert outcome[str(jobs[0].id)]["rows"] == 4
    assert export(overrides=shop["overrides"]) == {}  # nothing queued any more
    # Asked by id again, a finished job is left alone.
    assert export(job_id=jobs[0].id, overrides=shop["overrides"])[str(jobs[0].id)]["rows"] == 4
    assert export(job_id=999_999, overrides=shop["overrides"]) == {
        "999999": {"status": "missing", "rows": None, "key": None}
    }
    with Session(shop["engine"]) as session:
        job = get_job(session=session, job_id=jobs[0].id or 0)
        assert (job.status, job.attempts) == (ExportStatus.succeeded, 1)


def test_prefect_runner_starts_the_export_deployment(
    prefect_harness: None, shop: dict[str, Any], make_settings: Callable[..., Any]
) -> None:
    """POST /exports with the Prefect runner creates a flow run; running it finishes the job."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    from cartwise.commerce import create_app
    from cartwise.commerce.customers.models import User
    from cartwise.commerce.exports.runner import PrefectRunner, PrefectRunnerError
    from cartwise.pipelines.deployments import DEPLOYMENTS, build_one
    from cartwise.pipelines.flows.reports import export
    from cartwise.platform.auth import Role, issue_access_token

    api = str(PREFECT_API_URL.value())
    spec = next(s for s in DEPLOYMENTS if s.flow == "export")
    name = f"on-demand-{uuid.uuid4().hex[:6]}"
    deployment = build_one(spec.__class__(spec.flow, name, spec.description))
    deployment_id = deployment.apply()

    with pytest.raises(PrefectRunnerError, match="no Prefect deployment"):
        PrefectRunner(api, "export/not-there").submit(1)

    settings = make_settings(
        database_url=shop["settings"].database_url,
        exports_runner="prefect",
        prefect_api_url=api,
        export_deployment=f"export/{name}",
    )
    with Session(shop["engine"], expire_on_commit=False) as session:
        user = User(
            email=f"staff-{uuid.uuid4().hex[:6]}@example.com", hashed_password="!", role=Role.staff
        )
        session.add(user)
        session.commit()
    token = issue_access_token(settings, user.id or 0, Role.staff).token
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(
            "/api/v1/exports",
            json={"kind": "orders", "format": "parquet", **RANGE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued"  # a worker will run it, not this process

    with Session(shop["engine"]) as session:
        from cartwise.commerce.exports.service import get_job

        flow_run_id = get_job(session=session, job_id=job["id"]).runner_ref
    assert flow_run_id
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(uuid.UUID(flow_run_id))
    assert str(run.deployment_id) == str(deployment_id)
    assert run.parameters == {"job_id": job["id"]}
    # Submitting the same job again does not start a second run.
    assert PrefectRunner(api, f"export/{name}").submit(job["id"]) == flow_run_id

    # What the worker does with that run: the export flow with its parameters.
    outcome = export(job_id=job["id"], overrides=shop["overrides"])
    assert outcome[str(job["id"])]["status"] == "succeeded"
    assert outcome[str(job["id"])]["rows"] == 4
    assert datetime.now(UTC) > T0
