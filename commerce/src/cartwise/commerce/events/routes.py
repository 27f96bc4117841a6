"""HTTP routes of the shopper events domain.

``POST /api/v1/events`` is public. A bearer token, when sent, sets the events' user; a user id
in the body is ignored. A batch is all or nothing: one bad event rejects it with a single
problem document that lists every wrong event by its index in ``events``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from cartwise.commerce.deps import OptionalPrincipalDep, SessionDep
from cartwise.commerce.events import service
from cartwise.commerce.events.models import MAX_BATCH, EventBatch, IngestResult
from cartwise.platform.errors import PROBLEM_RESPONSES, Unprocessable


def _event_index(loc: tuple[Any, ...]) -> int | None:
    if len(loc) > 2 and loc[:2] == ("body", "events") and isinstance(loc[2], int):
        return loc[2]
    return None


def batch_problem(exc: RequestValidationError) -> Unprocessable:
    """One 422 problem for a whole batch, naming each wrong event by index and field."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        index = _event_index(loc)
        errors.append(
            {
                "loc": [p if isinstance(p, int | str) else str(p) for p in loc],
                "field": ".".join(str(p) for p in loc[1:]) or None,
                "index": index,
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    indexes = sorted({e["index"] for e in errors if e["index"] is not None})
    if indexes:
        shown = ", ".join(str(i) for i in indexes[:20]) + (" …" if len(indexes) > 20 else "")
        detail = (
            f"{len(indexes)} event(s) are invalid, at index {shown}; the whole batch was "
            "rejected and nothing was stored."
        )
    else:
        fields = sorted({str(e["field"]) for e in errors if e["field"]})
        detail = "Invalid batch: " + (", ".join(fields) if fields else "malformed body")
    return Unprocessable(
        detail,
        title="Validation failed",
        slug="validation-error",
        errors=errors,
        invalid_events=indexes,
    )


class BatchRoute(APIRoute):
    """A route whose body validation errors become one batch problem document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler to turn a validation error into a batch problem."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                # Unparseable JSON keeps the app-wide 400 answer.
                if any(err.get("type") == "json_invalid" for err in exc.errors()):
                    raise
                raise batch_problem(exc) from exc

        return handle


router = APIRouter(
    prefix="/api/v1", tags=["events"], responses=PROBLEM_RESPONSES, route_class=BatchRoute
)


@router.post(
    "/events",
    response_model=IngestResult,
    status_code=status.HTTP_202_ACCEPTED,
    summary=f"Ingest a batch of 1 to {MAX_BATCH} shopper events",
)
def ingest_events(
    batch: EventBatch,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    principal: OptionalPrincipalDep,
) -> IngestResult:
    """Store a batch of shopper events durably; retried event ids are counted, not stored."""
    result, new_rows = service.ingest(
        session=session,
        events=batch.events,
        user_id=principal.subject if principal is not None else None,
    )
    sinks = service.sinks_of(request.app)
    if sinks and new_rows:
        # After the commit and after the response: a slow or failing sink loses nothing.
        background.add_task(service.dispatch, list(sinks), new_rows)
    return result
