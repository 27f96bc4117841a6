"""Export jobs: POST → job → file in storage (local and a real moto S3 server), failures, input."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.exports.service import run_job
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import make_variant
from tests.test_commerce.test_business_analytics import add_order
from tests.test_platform.test_s3_storage import KEYS, s3_endpoint  # noqa: F401 (a fixture)

T0 = datetime(2026, 11, 2, tzinfo=UTC)
RANGE = {"start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}


def seed(session: Session) -> list[str]:
    """Four orders in the range (one cancelled), one after it; returns the ids in the range."""
    mug = make_variant(session, price="10.00", name="Mug")
    tea = make_variant(session, price="2.25", name="Tea")
    h = timedelta(hours=1)
    return [
        add_order(session, at=T0 + h, status="paid", lines=[(mug, 2, "10.00"), (tea, 1, "2.25")]),
        add_order(session, at=T0 + 2 * h, status="delivered", lines=[(tea, 4, "2.25")]),
        add_order(session, at=T0 + 3 * h, status="cancelled", lines=[(mug, 1, "10.00")]),
        add_order(session, at=T0 + 26 * h, status="shipped", lines=[(mug, 1, "10.00")]),
        add_order(session, at=T0 + 50 * h, status="paid", lines=[(mug, 7, "10.00")]),
    ][:4]


def finish(client: TestClient, staff: Account, body: dict[str, Any]) -> dict[str, Any]:
    """POST an export, wait for its runner thread, return the job as GET shows it."""
    r = client.post("/api/v1/exports", json=body, headers=staff.headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded")
    app: Any = client.app
    app.state.export_runner.join(job["id"], timeout=120)
    r = client.get(f"/api/v1/exports/{job['id']}", headers=staff.headers)
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


def test_local_exports_csv_and_parquet_rerun_is_idempotent(
    client: TestClient, app: FastAPI, session: Session, staff: Account
) -> None:
    ids = seed(session)
    job = finish(client, staff, {"kind": "orders", "format": "csv", **RANGE})
    assert job["status"] == "succeeded", job
    assert job["row_count"] == 4
    assert job["requested_by"] == staff.id
    assert job["url"] == f"/media/exports/{job['id']}/orders.csv"
    r = client.get(job["url"])
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ids
    assert [row["status"] for row in rows] == ["paid", "delivered", "cancelled", "shipped"]
    assert [row["total"] for row in rows] == ["22.25", "9.00", "10.00", "10.00"]

    lines = finish(client, staff, {"kind": "order_lines", "format": "parquet", **RANGE})
    assert lines["status"] == "succeeded", lines
    table = pq.read_table(io.BytesIO(client.get(lines["url"]).content))
    assert table.num_rows == lines["row_count"] == 5
    assert sorted(str(v) for v in table.column("line_total").to_pylist()) == [
        "10.00",
        "10.00",
        "2.25",
        "20.00",
        "9.00",
    ]

    daily = finish(client, staff, {"kind": "sales_daily", "format": "csv", **RANGE})
    assert client.get(daily["url"]).text.splitlines() == [
        "day,currency,orders,units,revenue",
        "2026-11-02,GBP,2,7,31.25",
        "2026-11-03,GBP,1,1,10.00",
    ]

    # Running a job again writes the same key again: one file, same content, no new job.
    storage = app.state.storage
    before = storage.get(f"exports/{job['id']}/orders.csv")
    with Session(app.state.engine) as s:
        again = run_job(session=s, storage=storage, job_id=job["id"])
    assert again.status == "succeeded"
    assert again.attempts == 1  # already done: left alone
    storage.delete(f"exports/{job['id']}/orders.csv")
    with Session(app.state.engine) as s:
        again = run_job(session=s, storage=storage, job_id=job["id"])
    assert again.attempts == 2
    assert again.row_count == 4
    assert storage.get(f"exports/{job['id']}/orders.csv") == before
    folder = Path(storage.root) / "exports" / str(job["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["orders.csv"]  # no temp files left

    listed = client.get("/api/v1/exports", headers=staff.headers).json()
    assert listed["total"] == 3
    assert [j["kind"] for j in listed["items"]] == ["sales_daily", "order_lines", "orders"]


def test_every_kind_exports(client: TestClient, session: Session, staff: Account) -> None:
    seed(session)
    for kind in ("products", "customers", "cohorts"):
        job = finish(client, staff, {"kind": kind, "format": "parquet", **RANGE})
        assert job["status"] == "succeeded", job
        table = pq.read_table(io.BytesIO(client.get(job["url"]).content)).to_pylist()
        assert len(table) == job["row_count"]
        if kind == "products":
            assert sorted((r["name"], r["units"], str(r["revenue"])) for r in table) == [
                ("Mug", 3, "30.00"),
                ("Tea", 5, "11.25"),
            ]
        elif kind == "customers":
            assert [(r["orders"], str(r["revenue"]), r["segment"]) for r in table] == [
                (3, "41.25", "new")
            ]
        else:
            assert [(r["cohort"], r["month_offset"], r["customers"]) for r in table] == [
                ("2026-11", 0, 1)
            ]


@pytest.fixture
def s3_app(
    make_settings: Callable[..., Any],
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
) -> Iterator[tuple[TestClient, FastAPI, str]]:
    """The app on SQLite with its storage on a moto S3 server (a fresh bucket)."""
    from cartwise.commerce import create_app
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    url = f"sqlite:///{tmp_path / 's3.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    bucket = f"cartwise-exports-{uuid.uuid4().hex[:10]}"
    settings = make_settings(
        database_url=url,
        storage_backend="s3",
        storage_public_url="",
        s3_endpoint_url=s3_endpoint,
        s3_bucket=bucket,
        s3_access_key_id=KEYS["access_key_id"],
        s3_secret_access_key=KEYS["secret_access_key"],
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app, bucket


def test_s3_export_has_a_presigned_url(s3_app: tuple[TestClient, FastAPI, str]) -> None:
    client, app, bucket = s3_app
    with Session(app.state.engine) as session:
        seed(session)
    from cartwise.commerce.customers.models import User
    from cartwise.platform.auth import Role, issue_access_token

    with Session(app.state.engine) as session:
        user = User(email="s3-staff@example.com", hashed_password="!", role=Role.staff)
        session.add(user)
        session.commit()
        assert user.id is not None
        token = issue_access_token(app.state.settings, user.id, Role.staff).token
    staff = Account(user.id, user.email, "", "staff", token)
    job = finish(client, staff, {"kind": "sales_daily", "format": "parquet", **RANGE})
    assert job["status"] == "succeeded", job
    assert job["url"].startswith(f"{app.state.settings.s3_endpoint_url}/{bucket}/exports/")
    assert "X-Amz-Signature=" in job["url"]
    fetched = httpx.get(job["url"])  # over HTTP, from the S3 server itself
    assert fetched.status_code == 200
    rows = pq.read_table(io.BytesIO(fetched.content)).to_pylist()
    assert [(str(r["day"]), r["orders"], str(r["revenue"])) for r in rows] == [
        ("2026-11-02", 2, "31.25"),
        ("2026-11-03", 1, "10.00"),
    ]
    # A job whose bucket has gone fails, and says why.
    app.state.storage.client.delete_object(Bucket=bucket, Key=job["storage_key"])
    app.state.storage.client.delete_bucket(Bucket=bucket)
    failed = finish(client, staff, {"kind": "orders", "format": "csv", **RANGE})
    assert failed["status"] == "failed"
    assert "NoSuchBucket" in failed["error"]
    assert failed["url"] is None


def test_a_failing_job_records_its_error(
    client: TestClient, app: FastAPI, session: Session, staff: Account
) -> None:
    seed(session)
    # The storage folder cannot be created (a file is in the way): the write fails.
    root = Path(app.state.storage.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "exports").write_text("not a folder")
    job = finish(client, staff, {"kind": "orders", "format": "csv", **RANGE})
    assert job["status"] == "failed"
    assert job["error"]
    assert job["url"] is None
    assert job["finished_at"] is not None


def test_bad_requests(client: TestClient, staff: Account, customer: Account) -> None:
    url = "/api/v1/exports"
    body = {"kind": "orders", "format": "csv"}
    assert_problem(client.post(url, json=body), 401)
    assert_problem(client.post(url, json=body, headers=customer.headers), 403)
    assert_problem(client.get(url, headers=customer.headers), 403)
    for bad in (
        {"kind": "invoices"},
        {"kind": "orders", "format": "xlsx"},
        {"kind": "orders", "start": "2026-11-05T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        {"kind": "orders", "start": "2010-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"kind": "orders", "start": "2026-11-01T00:00:00"},
        {},
    ):
        assert_problem(client.post(url, json=bad, headers=staff.headers), 422)
    assert_problem(client.get(f"{url}/999999", headers=staff.headers), 404)
    assert_problem(client.get(f"{url}/0", headers=staff.headers), 422)
    assert client.get(url, headers=staff.headers).json() == {"items": [], "total": 0}
