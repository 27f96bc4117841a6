"""RFC 9457 problem documents for every error, with the right 4xx status."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://cartwise.dev/problems/"


class Problem(Exception):
    """An error that becomes a problem document."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if slug is not None:
            self.slug = slug
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class NotFound(Problem):
    """The resource does not exist, or the caller may not know it exists."""

    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    """The request conflicts with the current state."""

    status, slug, title = 409, "conflict", "Conflict"


class Unauthorized(Problem):
    """Missing or invalid credentials."""

    status, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class Forbidden(Problem):
    """Authenticated, but the role does not allow it."""

    status, slug, title = 403, "forbidden", "Forbidden"


class Unprocessable(Problem):
    """Well-formed, but semantically invalid."""

    status, slug, title = 422, "unprocessable", "Unprocessable content"


class TooManyRequests(Problem):
    """The client exceeded its rate limit."""

    status, slug, title = 429, "rate-limited", "Too many requests"


class PayloadTooLarge(Problem):
    """The request body exceeds the configured limit."""

    status, slug, title = 413, "payload-too-large", "Payload too large"


def problem_body(
    status: int,
    title: str,
    detail: str,
    slug: str,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON body of a problem document."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A JSONResponse carrying a problem document."""
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem_body(status, title, detail, slug, instance, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _slug_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.title, exc.detail, exc.slug, request, exc.headers, **exc.extra
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        exc.status_code,
        title,
        detail,
        _slug_for(exc.status_code),
        request,
        dict(exc.headers or {}),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return problem_response(
            400, "Malformed JSON", "The request body is not valid JSON.", "malformed-json", request
        )
    errors = [
        {
            "loc": [_jsonable(p) for p in err.get("loc", ())],
            "field": ".".join(str(p) for p in err.get("loc", ())[1:]) or None,
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    fields = sorted({str(e["field"]) for e in errors if e["field"]})
    detail = "Invalid request: " + (", ".join(fields) if fields else "malformed body")
    return problem_response(
        422, "Validation failed", detail, "validation-error", request, errors=errors
    )


async def _data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot hold (out-of-range integer, over-long text) is the
    # client's fault; validation should catch it first, this is the safety net.
    log.warning("database rejected a value on %s: %s", request.url.path, getattr(exc, "orig", exc))
    return problem_response(
        422, "Invalid value", "A value is out of range or too long.", "invalid-value", request
    )


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500, "Internal server error", "An unexpected error occurred.", "internal", request
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every exception through a problem document."""
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    from sqlalchemy.exc import DataError

    app.add_exception_handler(DataError, _data_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status in (400, 401, 403, 404, 409, 413, 422, 429)
}
