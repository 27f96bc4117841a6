"""The Redis client used for the cache, rate limits and idempotency locks."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cartwise.platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def make_redis(settings: Settings) -> redis.Redis:
    """A real Redis client, or fakeredis in-process when embedded mode has no Redis URL."""
    if settings.redis_url:
        return redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=30,
            retry_on_timeout=False,
            # redis-py retries a refused connection with back-off (about 7 s in all): with Redis
            # down every request would wait that long before serving without the cache.
            retry=Retry(NoBackoff(), 0),
        )
    if settings.is_production:  # guarded by Settings as well; belt and braces
        raise RuntimeError("production mode needs CARTWISE_REDIS_URL")
    import fakeredis

    return fakeredis.FakeRedis()


def get_redis(settings: Settings | None = None) -> redis.Redis:
    """The cached Redis client for the configured URL."""
    settings = settings or get_settings()
    key = settings.redis_url or "embedded"
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = make_redis(settings)
            _clients[key] = client
        return client


def reset_clients() -> None:
    """Forget cached clients (tests)."""
    with _lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


class JsonCache:
    """A small JSON cache on Redis that never lets a Redis outage fail a request."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def get(self, key: str) -> Any | None:
        """The cached value, or None on a miss or a Redis failure."""
        try:
            raw: Any = self.client.get(self._key(key))
        except redis.RedisError as exc:
            log.warning("cache get failed: %s", exc)
            return None
        if raw is None:
            return None
        return json.loads(raw)

    def get_raw(self, key: str) -> bytes | None:
        """The cached JSON bytes as stored (no decode), or None on a miss or failure."""
        try:
            raw: Any = self.client.get(self._key(key))
        except redis.RedisError as exc:
            log.warning("cache get failed: %s", exc)
            return None
        return bytes(raw) if raw is not None else None

    def set_raw(self, key: str, value: bytes, ttl: int) -> None:
        """Store JSON bytes with a TTL; failures are logged and ignored."""
        try:
            self.client.set(self._key(key), value, ex=ttl)
        except redis.RedisError as exc:
            log.warning("cache set failed: %s", exc)

    def set(self, key: str, value: Any, ttl: int) -> None:
        """Store a value with a TTL; failures are logged and ignored."""
        try:
            self.client.set(self._key(key), json.dumps(value, default=str), ex=ttl)
        except redis.RedisError as exc:
            log.warning("cache set failed: %s", exc)

    def version(self, name: str) -> int:
        """A namespace version number; bumping it invalidates every key built from it."""
        try:
            raw: Any = self.client.get(self._key(f"v:{name}"))
        except redis.RedisError:
            return -1
        return int(raw) if raw is not None else 0

    def bump(self, name: str) -> None:
        """Invalidate a namespace by bumping its version."""
        try:
            self.client.incr(self._key(f"v:{name}"))
        except redis.RedisError as exc:
            log.warning("cache bump failed: %s", exc)
