"""Search analytics from the shopper event log, computed in SQL.

Contract with whoever logs searches (the serving ingress): a search is an event
``type="search"``, ``query=<normalised query>``, ``properties={"search_id", "results",
"corrected"}``; a click on a result is ``type="click"`` with ``product_id``, ``position``
(0-based rank), ``query`` and ``properties={"search_id"}``. A click belongs to the search with
the same ``search_id``; searches are counted by when they were received.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Float, Table, and_, case, cast, func, select
from sqlmodel import Session

from cartwise.commerce.events.models import EventType, ShopperEvent
from cartwise.commerce.experiments.sql import json_number

DEFAULT_RANGE = timedelta(days=7)
# Clicks are looked up a little around the range: a click can arrive after the range ends for a
# search made just before, and batched storefront events may even land before the search row.
CLICK_SLACK_BEFORE = timedelta(hours=1)
CLICK_SLACK_AFTER = timedelta(days=1)

_event: Table = ShopperEvent.__table__  # type: ignore[attr-defined]


class QueryStats(BaseModel):
    """One query's searches, how many got a click, and its click-through rate."""

    query: str
    searches: int
    clicked: int
    ctr: float


class ZeroResultQuery(BaseModel):
    """A query that returned nothing, and how often."""

    query: str
    searches: int


class SearchAnalytics(BaseModel):
    """Search volume and quality over [start, end)."""

    start: datetime
    end: datetime
    searches: int
    searches_with_click: int
    ctr: float | None
    mrr: float | None
    zero_result_searches: int
    zero_result_rate: float | None
    top_queries: list[QueryStats]
    zero_result_queries: list[ZeroResultQuery]


def search_analytics(
    *, session: Session, start: datetime, end: datetime, limit: int = 20
) -> SearchAnalytics:
    """Totals, CTR, MRR of clicks, top and zero-result queries for searches in [start, end)."""
    dialect = session.get_bind().dialect.name
    search_id = _event.c.properties["search_id"].as_string()
    searches = (
        select(
            _event.c.id,
            func.coalesce(_event.c.query, "").label("query"),
            search_id.label("search_id"),
            json_number(dialect, _event.c.properties, "results").label("results"),
        )
        .where(
            _event.c.type == EventType.search.value,
            _event.c.received_at >= start,
            _event.c.received_at < end,
        )
        .cte("searches")
    )
    clicks = (
        select(
            search_id.label("search_id"),
            func.min(_event.c.position).label("first_position"),
        )
        .where(
            _event.c.type == EventType.click.value,
            _event.c.received_at >= start - CLICK_SLACK_BEFORE,
            _event.c.received_at < end + CLICK_SLACK_AFTER,
            search_id.is_not(None),
        )
        .group_by(search_id)
        .cte("clicks")
    )
    per_search = (
        select(
            searches.c.query,
            case((clicks.c.search_id.is_not(None), 1), else_=0).label("clicked"),
            # A click without a position still counts as a click, but adds nothing to MRR.
            case(
                (
                    clicks.c.first_position.is_not(None),
                    1.0 / (cast(clicks.c.first_position, Float) + 1.0),
                ),
                else_=0.0,
            ).label("rr"),
            case(
                (and_(searches.c.results.is_not(None), searches.c.results == 0), 1), else_=0
            ).label("zero"),
        )
        .select_from(
            searches.outerjoin(
                clicks,
                and_(searches.c.search_id.is_not(None), clicks.c.search_id == searches.c.search_id),
            )
        )
        .cte("per_search")
    )
    n, with_click, rr_sum, zero = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(per_search.c.clicked), 0),
            func.coalesce(func.sum(per_search.c.rr), 0.0),
            func.coalesce(func.sum(per_search.c.zero), 0),
        )
    ).one()
    n, with_click, zero = int(n), int(with_click), int(zero)

    count = func.count().label("searches")
    clicked = func.sum(per_search.c.clicked).label("clicked")
    top_rows: list[Any] = list(
        session.execute(
            select(per_search.c.query, count, clicked)
            .group_by(per_search.c.query)
            .order_by(count.desc(), per_search.c.query)
            .limit(limit)
        )
    )
    zero_count = func.count().label("searches")
    zero_rows: list[Any] = list(
        session.execute(
            select(per_search.c.query, zero_count)
            .where(per_search.c.zero == 1)
            .group_by(per_search.c.query)
            .order_by(zero_count.desc(), per_search.c.query)
            .limit(limit)
        )
    )
    return SearchAnalytics(
        start=start,
        end=end,
        searches=n,
        searches_with_click=with_click,
        ctr=with_click / n if n else None,
        mrr=float(rr_sum) / n if n else None,
        zero_result_searches=zero,
        zero_result_rate=zero / n if n else None,
        top_queries=[
            QueryStats(
                query=str(q),
                searches=int(s),
                clicked=int(c or 0),
                ctr=int(c or 0) / int(s),
            )
            for q, s, c in top_rows
        ],
        zero_result_queries=[ZeroResultQuery(query=str(q), searches=int(s)) for q, s in zero_rows],
    )


__all__ = ["DEFAULT_RANGE", "SearchAnalytics", "search_analytics"]
