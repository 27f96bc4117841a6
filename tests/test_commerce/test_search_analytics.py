"""Search analytics over hand-built search and click events with known answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.events.analytics import search_analytics
from tests.conftest import Account, assert_problem
from tests.test_commerce.test_experiments import add_events

URL = "/api/v1/analytics/search"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
END = T0 + timedelta(days=1)


def search(query: str, at: datetime, search_id: str | None, results: Any) -> dict[str, Any]:
    """A search event as the ingress logs it."""
    props: dict[str, Any] = {"results": results, "corrected": None}
    if search_id is not None:
        props["search_id"] = search_id
    return {"type": "search", "query": query, "properties": props, "at": at}


def click(search_id: str, position: int | None, at: datetime) -> dict[str, Any]:
    """A click on a search result."""
    return {
        "type": "click",
        "product_id": 7,
        "position": position,
        "properties": {"search_id": search_id},
        "at": at,
    }


def shop_events() -> list[dict[str, Any]]:
    """Nine searches in [T0, END), two outside, and their clicks."""
    m = timedelta(minutes=1)
    return [
        search("mug", T0, "s1", 10),
        click("s1", 2, T0 + m),
        click("s1", 0, T0 + 2 * m),  # the best-ranked click counts for MRR: 1/1
        search("mug", T0 + 10 * m, "s2", 10),
        click("s2", 1, T0 + 11 * m),  # 1/2
        click("s2", None, T0 + 12 * m),  # no position: still a click, no MRR
        search("mug", END - m, "s3", 8),
        click("s3", 4, END + timedelta(hours=1)),  # after the range, for a search in it: 1/5
        search("red mug", T0 + 20 * m, "s4", 5),
        click("s4", 3, T0 + 21 * m),  # 1/4
        search("xyzzy", T0 + 30 * m, "s5", 0),
        search("xyzzy", T0 + 31 * m, "s6", 0),
        search("blue teapot", T0 + 32 * m, "s7", 0),
        search("lamp", T0 + 33 * m, None, 3),  # no search id: counted, never clicked
        search("vase", T0 + 34 * m, "s11", "n/a"),  # a non-numeric count is not zero results
        click("nope", 0, T0 + 35 * m),  # a click on an unknown search
        search("mug", T0 - timedelta(hours=1), "s9", 10),  # before the range
        click("s9", 0, T0 - timedelta(minutes=59)),
        search("mug", END, "s10", 0),  # the end is exclusive
        {"type": "view", "product_id": 7, "at": T0 + m},
    ]


def test_numbers_on_hand_built_events(session: Session) -> None:
    add_events(session, shop_events())
    result = search_analytics(session=session, start=T0, end=END, limit=3)
    assert result.searches == 9
    assert result.searches_with_click == 4
    assert result.ctr == pytest.approx(4 / 9)
    assert result.mrr == pytest.approx((1 + 0.5 + 0.2 + 0.25) / 9)
    assert result.zero_result_searches == 3
    assert result.zero_result_rate == pytest.approx(3 / 9)
    assert [(q.query, q.searches, q.clicked) for q in result.top_queries] == [
        ("mug", 3, 3),
        ("xyzzy", 2, 0),
        ("blue teapot", 1, 0),
    ]
    assert result.top_queries[0].ctr == pytest.approx(1.0)
    assert [(q.query, q.searches) for q in result.zero_result_queries] == [
        ("xyzzy", 2),
        ("blue teapot", 1),
    ]

    everything = search_analytics(
        session=session, start=T0 - timedelta(days=1), end=END + timedelta(minutes=2)
    )
    assert everything.searches == 11
    assert [q.query for q in everything.top_queries][:2] == ["mug", "xyzzy"]
    assert everything.top_queries[0].searches == 5


def test_empty_range(session: Session) -> None:
    add_events(session, shop_events())
    result = search_analytics(
        session=session, start=END + timedelta(days=3), end=END + timedelta(days=4)
    )
    assert result.searches == 0
    assert result.ctr is None
    assert result.mrr is None
    assert result.top_queries == []
    assert result.zero_result_queries == []


def test_route_for_staff_with_range_and_limit(
    client: TestClient, session: Session, staff: Account
) -> None:
    add_events(session, shop_events())
    params: dict[str, str | int] = {"start": T0.isoformat(), "end": END.isoformat(), "limit": 2}
    r = client.get(URL, params=params, headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["searches"] == 9
    assert body["mrr"] == pytest.approx(1.95 / 9)
    assert [q["query"] for q in body["top_queries"]] == ["mug", "xyzzy"]
    assert datetime.fromisoformat(body["start"]) == T0
    # The range may be given in any offset; it is the same instants.
    shifted = {
        "start": T0.astimezone(timezone(timedelta(hours=5))).isoformat(),
        "end": END.isoformat(),
    }
    assert client.get(URL, params=shifted, headers=staff.headers).json()["searches"] == 9


def test_default_range_is_the_last_week_through_the_events_api(
    client: TestClient, session: Session, staff: Account, customer: Account
) -> None:
    now = datetime.now(UTC)
    search_id = str(uuid.uuid4())
    batch = [
        {
            "type": "search",
            "session_id": "sess-a",
            "query": "teapot",
            "properties": {"search_id": search_id, "results": 12, "corrected": None},
            "client_ts": now.isoformat(),
        },
        {
            "type": "click",
            "session_id": "sess-a",
            "product_id": 3,
            "position": 1,
            "query": "teapot",
            "properties": {"search_id": search_id},
            "client_ts": now.isoformat(),
        },
    ]
    r = client.post("/api/v1/events", json={"events": batch}, headers=customer.headers)
    assert r.status_code == 202, r.text
    add_events(session, [search("teapot", now - timedelta(days=8), "old", 3)])

    body = client.get(URL, headers=staff.headers).json()
    assert body["searches"] == 1
    assert body["ctr"] == 1.0
    assert body["mrr"] == 0.5
    assert body["top_queries"] == [{"query": "teapot", "searches": 1, "clicked": 1, "ctr": 1.0}]


def test_access_and_bad_parameters(client: TestClient, customer: Account, staff: Account) -> None:
    assert_problem(client.get(URL), 401)
    assert_problem(client.get(URL, headers=customer.headers), 403)
    bad: list[dict[str, str | int]] = [
        {"start": END.isoformat(), "end": T0.isoformat()},
        {"start": T0.isoformat(), "end": T0.isoformat()},
        {"start": "2026-11-02T09:00:00"},  # no offset
        {"start": "yesterday"},
        {"limit": 0},
        {"limit": 10_000},
        {"start": "0001-01-01T00:00:00+05:00"},
    ]
    for params in bad:
        assert_problem(client.get(URL, params=params, headers=staff.headers), 422)
