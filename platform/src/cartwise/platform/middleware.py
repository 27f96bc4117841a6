"""One pure-ASGI middleware: request ids, access logs, metrics, security headers, a body limit.

It is a single layer on purpose: every extra middleware costs latency on each request under
Ray Serve, where the ingress is the hot path.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cartwise.platform.errors import PROBLEM_BASE, PROBLEM_JSON
from cartwise.platform.logging import request_id_var
from cartwise.platform.metrics import HTTP_IN_FLIGHT, observe_request, route_template

log = logging.getLogger("cartwise.access")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
_RID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = [False]

    async def replay() -> Message:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class CartwiseMiddleware:
    """Adds request ids, JSON access logs, security headers, and refuses oversized bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        hsts: bool,
        upload_path_suffixes: tuple[str, ...] = ("/images",),
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.upload_suffixes = upload_path_suffixes
        headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if hsts:
            headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
        self.static_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap one HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        rid = None
        declared_length: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _RID_OK.match(candidate):
                    rid = candidate
            elif name == b"content-length":
                try:
                    declared_length = int(value)
                except ValueError:
                    declared_length = None
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        limit = self.max_upload if path.endswith(self.upload_suffixes) else self.max_body
        status_holder = [0]
        csp = DOCS_CSP if path in ("/docs", "/redoc") else API_CSP
        extra = [
            *self.static_headers,
            (b"content-security-policy", csp.encode()),
            (b"x-request-id", rid.encode()),
        ]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            if declared_length is not None and declared_length > limit:
                await self._too_large(send_wrapper, limit, path)
            elif declared_length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                # A chunked body has no declared length: buffer it (bounded by the limit)
                # so the app never sees more than the limit.
                buffered = await self._read_bounded(receive, limit)
                if buffered is None:
                    await self._too_large(send_wrapper, limit, path)
                else:
                    await self.app(scope, _replay(buffered, receive), send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            elapsed_ms = elapsed * 1000
            HTTP_IN_FLIGHT.dec()
            # The router wrote the matched route into the scope: label by its template, never
            # by the raw path, so the series stay bounded.
            observe_request(
                scope.get("method", ""), route_template(scope), status_holder[0] or 500, elapsed
            )
            if path not in ("/healthz",):
                log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "status": status_holder[0],
                        "duration_ms": round(elapsed_ms, 2),
                    },
                )
            request_id_var.reset(token)

    @staticmethod
    async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _too_large(send: Send, limit: int, path: str) -> None:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + "payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"The request body exceeds {limit} bytes.",
            "instance": path,
        }
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(raw)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})
