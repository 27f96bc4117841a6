"""HTTP routes of the staff business analytics: sales, products, funnel, customers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from cartwise.commerce.deps import SessionDep, StaffDep
from cartwise.commerce.events import business
from cartwise.platform.errors import PROBLEM_RESPONSES, Unprocessable
from cartwise.platform.types import utcnow

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=PROBLEM_RESPONSES)

Start = Annotated[AwareDatetime | None, Query(description="Inclusive; default 30 days before end.")]
End = Annotated[AwareDatetime | None, Query(description="Exclusive; default now.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Rows of each ranked list.")]


class RankBy(StrEnum):
    """What top sellers are ranked by."""

    units = "units"
    revenue = "revenue"


def time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """Defaults and checks for [start, end): both in UTC, start before end, at most MAX_RANGE."""
    try:
        end = end.astimezone(UTC) if end is not None else utcnow()
        start = start.astimezone(UTC) if start is not None else end - business.DEFAULT_RANGE
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 has no UTC equivalent
        raise Unprocessable("start or end is out of range.") from exc
    if start >= end:
        raise Unprocessable("start must be before end.")
    if end - start > business.MAX_RANGE:
        raise Unprocessable(f"the range may span at most {business.MAX_RANGE.days} days.")
    return start, end


@router.get("/sales", response_model=business.SalesAnalytics)
def sales(session: SessionDep, _: StaffDep, start: Start = None, end: End = None) -> object:
    """Revenue, orders and units by day, category and country over [start, end) (staff)."""
    lo, hi = time_range(start, end)
    return business.sales(session=session, start=lo, end=hi)


@router.get("/products", response_model=business.ProductAnalytics)
def products(
    session: SessionDep,
    _: StaffDep,
    start: Start = None,
    end: End = None,
    limit: Limit = 20,
    by: Annotated[RankBy, Query(description="Rank top sellers by units or revenue.")] = (
        RankBy.units
    ),
) -> object:
    """Top-selling products and view → purchase conversion per product (staff)."""
    lo, hi = time_range(start, end)
    return business.products(session=session, start=lo, end=hi, limit=limit, by=by.value)


@router.get("/funnel", response_model=business.Funnel)
def funnel(session: SessionDep, _: StaffDep, start: Start = None, end: End = None) -> object:
    """Sessions and users reaching view → add to cart → purchase over [start, end) (staff)."""
    lo, hi = time_range(start, end)
    return business.funnel(session=session, start=lo, end=hi)


@router.get("/customers", response_model=business.CustomerAnalytics)
def customers(session: SessionDep, _: StaffDep, start: Start = None, end: End = None) -> object:
    """New vs returning customers and average order value over [start, end) (staff)."""
    lo, hi = time_range(start, end)
    return business.customers(session=session, start=lo, end=hi)
