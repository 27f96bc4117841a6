"""Per-client, per-route rate limits on Redis (fixed one-minute windows)."""

from __future__ import annotations

import logging
import time

import redis
from fastapi import Request

from cartwise.platform.errors import TooManyRequests

log = logging.getLogger(__name__)


class RateLimiter:
    """Counts requests per client and route template in Redis; raises 429 over the limit."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_minute: int,
        overrides: dict[str, int] | None = None,
        prefix: str = "rl",
        enabled: bool = True,
    ) -> None:
        self.client = client
        self.per_minute = per_minute
        self.overrides = overrides or {}
        self.prefix = prefix
        self.enabled = enabled

    def limit_for(self, route: str) -> int:
        """The per-minute limit of a route template."""
        return self.overrides.get(route, self.per_minute)

    def hit(self, client_id: str, route: str, now: float | None = None) -> None:
        """Count one request; raise TooManyRequests with Retry-After when over the limit."""
        if not self.enabled:
            return
        now = time.time() if now is None else now
        window = int(now // 60)
        key = f"{self.prefix}:{route}:{client_id}:{window}"
        limit = self.limit_for(route)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 61)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            # Fail open: a Redis outage must not take the shop down.
            log.warning("rate limiter unavailable: %s", exc)
            return
        if count > limit:
            retry_after = max(1, int(60 - (now % 60)) + 1)
            raise TooManyRequests(
                f"Rate limit of {limit} requests per minute exceeded for this route.",
                headers={"Retry-After": str(retry_after)},
                limit=limit,
            )


def client_identity(request: Request) -> str:
    """The principal's subject when authenticated, else the client address."""
    from cartwise.platform.auth import peek_subject

    subject = peek_subject(request)
    if subject is not None:
        return f"u:{subject}"
    host = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and request.app.state.settings.trust_forwarded_for:
        host = forwarded.split(",")[0].strip()
    return f"ip:{host}"


async def rate_limit(request: Request) -> None:
    """App-wide dependency applying the limiter to the matched route."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or not limiter.enabled:
        return
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    key = f"{request.method}:{template}"
    limiter.hit(client_identity(request), key)
