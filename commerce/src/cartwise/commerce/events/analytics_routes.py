"""HTTP route of search analytics (staff)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from cartwise.commerce.deps import SessionDep, StaffDep
from cartwise.commerce.events.analytics import DEFAULT_RANGE, SearchAnalytics, search_analytics
from cartwise.platform.errors import PROBLEM_RESPONSES, Unprocessable
from cartwise.platform.types import utcnow

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=PROBLEM_RESPONSES)


@router.get("/search", response_model=SearchAnalytics)
def search(
    session: SessionDep,
    _: StaffDep,
    start: Annotated[
        AwareDatetime | None, Query(description="Inclusive; default 7 days before end.")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive; default now.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> SearchAnalytics:
    """Searches, CTR, MRR of clicks, top and zero-result queries over [start, end) (staff)."""
    try:
        end = end.astimezone(UTC) if end is not None else utcnow()
        start = start.astimezone(UTC) if start is not None else end - DEFAULT_RANGE
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 has no UTC equivalent
        raise Unprocessable("start or end is out of range.") from exc
    if start >= end:
        raise Unprocessable("start must be before end.")
    return search_analytics(session=session, start=start, end=end, limit=limit)
