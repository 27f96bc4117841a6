"""Alerts for staff: listing (filters, paging, newest first), acknowledging, access, migration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect
from sqlmodel import Session

from cartwise.commerce import migrations_api

# Registers the alert table in the metadata the fixtures create (until tables.py imports it).
from cartwise.commerce.alerts import models as _alert_models  # noqa: F401
from cartwise.commerce.alerts import service
from cartwise.commerce.alerts.models import Alert, AlertSeverity
from cartwise.commerce.orders.models import Order
from cartwise.platform.db import normalize_url
from cartwise.platform.types import utcnow
from tests.conftest import PG_ADMIN_DSN, Account, _pg_url, assert_problem

RISK_COLUMNS = {
    "risk_score",
    "risk_decision",
    "risk_model_version",
    "risk_reasons",
    "risk_fallback",
}


def _seed(session: Session, count: int = 5) -> list[int]:
    """Alerts created one minute apart, oldest first; odd ones are fraud.blocked."""
    start = utcnow() - timedelta(hours=1)
    ids = []
    for i in range(count):
        alert = service.raise_alert(
            session,
            kind="fraud.blocked" if i % 2 else "fraud.review",
            title=f"alert {i}",
            severity=AlertSeverity.high,
            order_id=f"order{i}",
            detail={"n": i},
        )
        alert.created_at = start + timedelta(minutes=i)
        session.add(alert)
        assert alert.id is not None
        ids.append(alert.id)
    session.commit()
    return ids


def test_staff_list_newest_first_with_filters_and_paging(
    client: TestClient, session: Session, staff: Account
) -> None:
    ids = _seed(session)
    r = client.get("/api/v1/alerts", headers=staff.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 20, 0)
    assert [a["id"] for a in page["items"]] == ids[::-1]
    first = page["items"][-1]
    assert (first["kind"], first["severity"], first["status"], first["order_id"]) == (
        "fraud.review",
        "high",
        "open",
        "order0",
    )
    assert first["detail"] == {"n": 0}

    r = client.get("/api/v1/alerts?limit=2&offset=2", headers=staff.headers).json()
    assert ([a["id"] for a in r["items"]], r["total"]) == ([ids[2], ids[1]], 5)
    blocked = client.get("/api/v1/alerts?kind=fraud.blocked", headers=staff.headers).json()
    assert [a["id"] for a in blocked["items"]] == [ids[3], ids[1]]
    assert blocked["total"] == 2
    beyond = client.get("/api/v1/alerts?offset=10", headers=staff.headers).json()
    assert (beyond["items"], beyond["total"]) == ([], 5)


def test_acknowledge_then_filter_by_status(
    client: TestClient, session: Session, staff: Account
) -> None:
    ids = _seed(session, 3)
    r = client.post(f"/api/v1/alerts/{ids[0]}/acknowledge", headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["acknowledged_by"]) == ("acknowledged", staff.id)
    assert body["acknowledged_at"] is not None
    # Acknowledging again changes nothing.
    again = client.post(f"/api/v1/alerts/{ids[0]}/acknowledge", headers=staff.headers).json()
    assert again["acknowledged_at"] == body["acknowledged_at"]

    opened = client.get("/api/v1/alerts?status=open", headers=staff.headers).json()
    assert [a["id"] for a in opened["items"]] == [ids[2], ids[1]]
    acked = client.get("/api/v1/alerts?status=acknowledged", headers=staff.headers).json()
    assert [a["id"] for a in acked["items"]] == [ids[0]]
    one = client.get(f"/api/v1/alerts/{ids[0]}", headers=staff.headers).json()
    assert one["status"] == "acknowledged"


def test_a_resolved_alert_cannot_be_acknowledged(
    client: TestClient, session: Session, staff: Account
) -> None:
    ids = _seed(session, 2)
    assert service.resolve_for_order(session=session, order_id="order1", actor_id=staff.id) == [
        ids[1]
    ]
    session.commit()
    r = client.post(f"/api/v1/alerts/{ids[1]}/acknowledge", headers=staff.headers)
    assert assert_problem(r, 409)["type"].endswith("/alert-resolved")
    session.expire_all()
    resolved = session.get(Alert, ids[1])
    assert resolved is not None
    assert (resolved.status, resolved.resolved_by) == ("resolved", staff.id)
    untouched = session.get(Alert, ids[0])
    assert untouched is not None
    assert untouched.status == "open"


def test_alerts_are_staff_only_and_inputs_are_checked(
    client: TestClient, session: Session, customer: Account, staff: Account, admin: Account
) -> None:
    ids = _seed(session, 1)
    assert_problem(client.get("/api/v1/alerts", headers=customer.headers), 403)
    assert_problem(client.get("/api/v1/alerts"), 401)
    assert_problem(
        client.post(f"/api/v1/alerts/{ids[0]}/acknowledge", headers=customer.headers), 403
    )
    assert_problem(client.post(f"/api/v1/alerts/{ids[0]}/acknowledge"), 401)
    assert client.get("/api/v1/alerts", headers=admin.headers).status_code == 200
    assert_problem(client.post("/api/v1/alerts/999999/acknowledge", headers=staff.headers), 404)
    assert_problem(client.get("/api/v1/alerts/999999", headers=staff.headers), 404)
    assert_problem(client.get("/api/v1/alerts?status=closed", headers=staff.headers), 422)
    assert_problem(client.get("/api/v1/alerts?limit=101", headers=staff.headers), 422)
    assert_problem(client.get("/api/v1/alerts?offset=-1", headers=staff.headers), 422)
    assert_problem(client.post("/api/v1/alerts/0/acknowledge", headers=staff.headers), 422)
    assert_problem(
        client.post("/api/v1/alerts/99999999999/acknowledge", headers=staff.headers), 422
    )


# --- the migration ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"cartwise_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _schema(url: str) -> tuple[set[str], set[str], set[str]]:
    """(tables, order columns, order indexes) of a database."""
    engine = create_engine(normalize_url(url))
    try:
        found = inspect(engine)
        tables = set(found.get_table_names())
        columns = {c["name"] for c in found.get_columns("order")}
        indexes = {str(i["name"]) for i in found.get_indexes("order")}
        return tables, columns, indexes
    finally:
        engine.dispose()


def _table_of(diff: Any) -> str | None:
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return str(diff[1].name)
    if kind in ("add_index", "remove_index"):
        return str(diff[1].table.name)
    if kind.startswith(("add_", "remove_", "modify_")) and len(diff) > 2:
        return str(diff[2])
    return None


def _model_diffs(url: str) -> list[Any]:
    """Differences between the migrated alert/order tables and their models (other helpers'
    tables may be in the metadata without their migration yet)."""
    flat: list[Any] = []
    for diff in migrations_api.check(url):
        flat.extend(diff if isinstance(diff, list) else [diff])
    return [d for d in flat if _table_of(d) in {"alert", "order"}]


def test_migration_upgrades_and_downgrades(empty_db: str) -> None:
    migrations_api.upgrade(empty_db, "c5a1f0000001")
    tables, columns, indexes = _schema(empty_db)
    assert "alert" in tables
    assert columns >= RISK_COLUMNS
    assert "ix_order_email_created" in indexes
    assert _model_diffs(empty_db) == []
    engine = create_engine(normalize_url(empty_db))
    try:
        alert_columns = {c["name"] for c in inspect(engine).get_columns("alert")}
    finally:
        engine.dispose()
    assert alert_columns == set(Alert.__table__.columns.keys())  # type: ignore[attr-defined]
    assert set(Order.__table__.columns.keys()) >= RISK_COLUMNS  # type: ignore[attr-defined]

    migrations_api.downgrade(empty_db, "bc7a7e38076c")
    tables, columns, indexes = _schema(empty_db)
    assert "alert" not in tables
    assert not RISK_COLUMNS & columns
    assert "ix_order_email_created" not in indexes
    assert migrations_api.current(empty_db) == "bc7a7e38076c"

    migrations_api.upgrade(empty_db, "c5a1f0000001")
    assert _schema(empty_db)[1] >= RISK_COLUMNS
