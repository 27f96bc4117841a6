"""Shopper events: batch ingestion, whole-batch validation, retries and the sink hook."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event
from sqlmodel import Session, select

from cartwise.commerce.events import service
from cartwise.commerce.events.models import ShopperEvent
from tests.conftest import Account, assert_problem

URL = "/api/v1/events"


def _ts(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) - timedelta(minutes=5) + delta).isoformat()


def view(**overrides: Any) -> dict[str, Any]:
    """A valid view event with a fresh id."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "view",
        "session_id": "sess-1",
        "sku": "85123A",
        "product_id": 7,
        "client_ts": _ts(),
        "properties": {"source": "home"},
    }
    event.update(overrides)
    return event


def stored(session: Session) -> list[ShopperEvent]:
    """Every stored event, oldest first."""
    session.expire_all()
    return list(session.exec(select(ShopperEvent).order_by(ShopperEvent.id)).all())  # type: ignore[arg-type]


def test_batch_is_stored_with_user_from_token(
    client: TestClient, session: Session, customer: Account
) -> None:
    search_id = str(uuid.uuid4())
    events = [
        view(),
        {
            "event_id": search_id,
            "type": "search",
            "session_id": "sess-1",
            "query": "red mug",
            "client_ts": "2026-01-02T03:04:05+02:00",
        },
        {
            "type": "click",
            "session_id": "sess-1",
            "product_id": 9,
            "position": 3,
            "client_ts": _ts(),
            "properties": {"query": "red mug"},
        },
        {"type": "add_to_cart", "session_id": "sess-1", "sku": "22423", "client_ts": _ts()},
        {"type": "remove_from_cart", "session_id": "sess-1", "sku": "22423", "client_ts": _ts()},
        {
            "type": "purchase",
            "session_id": "sess-1",
            "client_ts": _ts(),
            "properties": {"order_id": "abc"},
        },
    ]
    r = client.post(URL, json={"events": events}, headers=customer.headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 6, "duplicates": 0}
    rows = stored(session)
    assert [row.type for row in rows] == [
        "view",
        "search",
        "click",
        "add_to_cart",
        "remove_from_cart",
        "purchase",
    ]
    assert {row.user_id for row in rows} == {customer.id}
    first, search, click = rows[0], rows[1], rows[2]
    assert first.event_id == events[0]["event_id"]
    assert (first.sku, first.product_id, first.session_id) == ("85123A", 7, "sess-1")
    assert first.properties == {"source": "home"}
    assert search.event_id == search_id
    assert search.query == "red mug"
    assert search.client_ts == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert click.position == 3
    assert click.product_id == 9
    # Server ids for events sent without one, all distinct and UUID-shaped.
    assert len({row.event_id for row in rows}) == 6
    assert all(uuid.UUID(row.event_id) for row in rows)
    assert first.received_at.tzinfo is not None
    assert abs(first.received_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_anonymous_events_have_no_user_and_body_user_is_ignored(
    client: TestClient, session: Session, customer: Account
) -> None:
    r = client.post(URL, json={"events": [view(user_id=424242)]})
    assert r.status_code == 202, r.text
    r = client.post(URL, json={"events": [view(user_id=424242)]}, headers=customer.headers)
    assert r.status_code == 202, r.text
    assert [row.user_id for row in stored(session)] == [None, customer.id]


def test_invalid_token_is_401(client: TestClient) -> None:
    r = client.post(URL, json={"events": [view()]}, headers={"Authorization": "Bearer nope"})
    assert_problem(r, 401)


def test_one_bad_event_rejects_whole_batch(client: TestClient, session: Session) -> None:
    events = [view(), view(), view(type="search"), view(), view(position=5000)]
    events[2].pop("query", None)
    body = assert_problem(client.post(URL, json={"events": events}), 422)
    assert body["invalid_events"] == [2, 4]
    assert "2, 4" in body["detail"]
    assert {e["index"] for e in body["errors"]} == {2, 4}
    assert any(e["field"] == "events.4.position" for e in body["errors"])
    assert stored(session) == []


def test_too_many_events_or_none(client: TestClient, session: Session) -> None:
    body = assert_problem(client.post(URL, json={"events": [view() for _ in range(501)]}), 422)
    assert body["errors"][0]["field"] == "events"
    assert_problem(client.post(URL, json={"events": []}), 422)
    assert_problem(client.post(URL, json={}), 422)
    assert stored(session) == []


def test_full_batch_of_500_is_one_insert(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    inserts: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SHOPPER_EVENT"):
            inserts.append(len(params) if isinstance(params, list | tuple | dict) else 0)

    sa_event.listen(app.state.engine, "before_cursor_execute", count)
    try:
        r = client.post(URL, json={"events": [view() for _ in range(500)]})
    finally:
        sa_event.remove(app.state.engine, "before_cursor_execute", count)
    assert r.status_code == 202, r.text
    assert len(inserts) == 1, inserts
    assert r.json() == {"accepted": 500, "duplicates": 0}
    assert len(stored(session)) == 500


def test_retry_is_not_stored_twice(client: TestClient, session: Session) -> None:
    batch = {"events": [view(), view(), view()]}
    assert client.post(URL, json=batch).json() == {"accepted": 3, "duplicates": 0}
    assert client.post(URL, json=batch).json() == {"accepted": 0, "duplicates": 3}
    partly = {"events": [*batch["events"][:2], view()]}
    assert client.post(URL, json=partly).json() == {"accepted": 1, "duplicates": 2}
    repeated = view()
    assert client.post(URL, json={"events": [repeated, repeated]}).json() == {
        "accepted": 1,
        "duplicates": 1,
    }
    assert len(stored(session)) == 5


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (view(sku=None, product_id=None), "events.0"),
        ({"type": "click", "session_id": "s", "client_ts": _ts()}, "events.0"),
        ({"type": "search", "session_id": "s", "client_ts": _ts()}, "events.0"),
        ({"type": "search", "session_id": "s", "query": "", "client_ts": _ts()}, "events.0.query"),
        (view(client_ts=_ts(timedelta(days=1, hours=1))), "events.0.client_ts"),
        (view(client_ts="2026-01-02T03:04:05"), "events.0.client_ts"),
        (view(client_ts="1999-12-31T23:00:00+00:00"), "events.0.client_ts"),
        (view(properties={"blob": "x" * 4100}), "events.0.properties"),
        (view(session_id=""), "events.0.session_id"),
        (view(session_id="s" * 129), "events.0.session_id"),
        (view(session_id="a\x00b"), "events.0.session_id"),
        (view(sku="s" * 65), "events.0.sku"),
        (view(type="teleport"), "events.0.type"),
        (view(event_id="not-a-uuid"), "events.0.event_id"),
        (view(product_id=2**31), "events.0.product_id"),
        (view(position=-1), "events.0.position"),
    ],
    ids=[
        "view-without-sku",
        "click-without-product",
        "search-without-query",
        "empty-query",
        "future-ts",
        "naive-ts",
        "ancient-ts",
        "big-properties",
        "empty-session",
        "long-session",
        "nul-session",
        "long-sku",
        "unknown-type",
        "bad-event-id",
        "huge-product-id",
        "negative-position",
    ],
)
def test_invalid_event_is_422(
    client: TestClient, session: Session, event: dict[str, Any], field: str
) -> None:
    body = assert_problem(client.post(URL, json={"events": [view(), event]}), 422)
    index_field = field.replace("events.0", "events.1")
    assert index_field in {e["field"] for e in body["errors"]}, body
    assert body["invalid_events"] == [1]
    assert stored(session) == []


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post(URL, content=b'{"events": [', headers={"Content-Type": "application/json"})
    assert_problem(r, 400)


def test_failing_sink_loses_nothing(
    app: FastAPI, client: TestClient, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[list[dict[str, Any]]] = []

    def broken(rows: list[dict[str, Any]]) -> None:
        raise ConnectionError("feast push is down")

    service.add_sink(app, broken)
    service.add_sink(app, received.append)
    batch = {"events": [view(), view()]}
    r = client.post(URL, json=batch)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0}
    assert len(stored(session)) == 2
    assert "event sink" in caplog.text
    # The healthy sink still ran, with the stored rows; a retry pushes nothing again.
    assert [[row["event_id"] for row in rows] for rows in received] == [
        [e["event_id"] for e in batch["events"]]
    ]
    assert client.post(URL, json=batch).json() == {"accepted": 0, "duplicates": 2}
    assert len(received) == 1


def test_dispatch_contains_sink_errors() -> None:
    calls: list[int] = []

    def broken(rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("boom")

    service.dispatch([broken, lambda rows: calls.append(len(rows))], [{"event_id": "x"}])
    service.dispatch([broken], [])
    assert calls == [1]


def _row(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "search",
        "session_id": "sess-combined",
        "user_id": None,
        "product_id": None,
        "sku": None,
        "query": "red mug",
        "position": None,
        "properties": {"n": 0},
        "client_ts": now,
        "received_at": now,
    }
    row.update(overrides)
    return row


def test_concurrent_request_threads_share_inserts_and_commits(
    app: FastAPI, session: Session
) -> None:
    import threading

    engine = app.state.engine
    commits: list[int] = []

    def count(conn: Any) -> None:
        commits.append(1)

    sa_event.listen(engine, "commit", count)
    rows = [_row(properties={"n": i}) for i in range(40)]
    got: dict[int, list[dict[str, Any]] | BaseException] = {}
    start = threading.Barrier(len(rows))

    def store(i: int) -> None:
        start.wait()
        try:
            got[i] = service.store_combined(engine, [rows[i]])
        except BaseException as exc:
            got[i] = exc

    try:
        threads = [threading.Thread(target=store, args=(i,)) for i in range(len(rows))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sa_event.remove(engine, "commit", count)
    # Every caller got back its own row, committed.
    assert all(got[i] == [rows[i]] for i in range(len(rows))), got
    by_id = {e.event_id: e for e in stored(session)}
    assert all(by_id[r["event_id"]].properties == r["properties"] for r in rows)
    # Some callers shared a commit.
    assert 1 <= len(commits) < len(rows)
    # A row stored again (same id) is not new, and nothing is duplicated.
    assert service.store_combined(engine, [rows[0]]) == []
    assert len(stored(session)) == len(rows)
