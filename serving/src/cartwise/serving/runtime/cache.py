"""Prediction cache on Redis, keyed by model version, that never fails a request.

Keys are ``<prefix>:<model>:v<version>:<method>:<sha1 of the canonical JSON key>``: a new
version never reads an answer of the old one, and the old entries expire with their TTL. Hits
and misses are counted in the process (``stats()``) and in Redis
(``<prefix>:stats:<model>:hit|miss``, summed over replicas), flushed at most once a second so
counting costs no extra round trip per request. When Redis fails, the cache is bypassed for a
few seconds (counted as ``bypass``) instead of making every request wait for a timeout.

Example::

    cache = cache_from_settings(settings)
    result, hit = cache.get_or_compute(model, "recommend", {"user_id": 7, "k": 10}, compute)
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis

from cartwise.serving.runtime.holder import LoadedModel

if TYPE_CHECKING:
    from cartwise.platform.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60
# After a Redis error, skip the cache this long: a dead Redis costs one timeout, not one per call.
BYPASS_AFTER_ERROR_S = 5.0
STATS_FLUSH_INTERVAL_S = 1.0


def canonical_key(key: Mapping[str, Any]) -> str:
    """The sha1 of the key as canonical JSON (sorted keys, no spaces)."""
    raw = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


class PredictionCache:
    """Model answers in Redis with a TTL; a Redis outage degrades to computing every time."""

    def __init__(
        self, redis_client: redis.Redis | None, prefix: str = "pc", ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._bypass = 0
        self._errors = 0
        self._down_until = 0.0
        # Per model name: counts not yet added to the shared Redis counters.
        self._pending: dict[str, dict[str, int]] = {}
        self._flushed_at = time.monotonic()

    @property
    def enabled(self) -> bool:
        """False when there is no Redis client or the TTL is zero."""
        return self.redis is not None and self.ttl_s > 0

    def version_key(self, model: LoadedModel) -> str:
        """The key prefix of every entry of this model version."""
        return f"{self.prefix}:{model.name}:v{model.version}"

    def key_for(self, model: LoadedModel, method: str, key: Mapping[str, Any]) -> str:
        """The Redis key of one answer."""
        return f"{self.version_key(model)}:{method}:{canonical_key(key)}"

    def get_or_compute(
        self,
        model: LoadedModel,
        method: str,
        key: Mapping[str, Any],
        compute: Callable[[], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool]:
        """The cached answer (and True), or ``compute()`` stored with the TTL (and False)."""
        redis_key = self._usable_key(model, method, key)
        if redis_key is None:
            return compute(), False
        found = self._read(model, redis_key)
        if found is not None:
            return found, True
        value = compute()
        self._write(redis_key, value)
        return value, False

    async def aget_or_compute(
        self,
        model: LoadedModel,
        method: str,
        key: Mapping[str, Any],
        compute: Callable[[], Awaitable[dict[str, Any]]],
    ) -> tuple[dict[str, Any], bool]:
        """``get_or_compute`` for an async ``compute``."""
        redis_key = self._usable_key(model, method, key)
        if redis_key is None:
            return await compute(), False
        found = self._read(model, redis_key)
        if found is not None:
            return found, True
        value = await compute()
        self._write(redis_key, value)
        return value, False

    def stats(self) -> dict[str, Any]:
        """Local counts and hit rate, plus the counters shared by every replica (if reachable)."""
        self.flush_stats(force=True)
        with self._lock:
            hits, misses, bypass = self._hits, self._misses, self._bypass
            names = sorted(self._pending)
        looked_up = hits + misses
        out: dict[str, Any] = {
            "hits": hits,
            "misses": misses,
            "bypass": bypass,
            "errors": self._errors,
            "hit_rate": round(hits / looked_up, 4) if looked_up else None,
            "ttl_s": self.ttl_s,
            "redis": self._redis_state(),
        }
        shared = self.shared_stats(names)
        if shared is not None:
            out["shared"] = shared
        return out

    def shared_stats(self, names: list[str]) -> dict[str, dict[str, Any]] | None:
        """Hit/miss counters in Redis for the model names (all replicas), or None if down."""
        if self.redis is None or not names:
            return None
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.get(self._stats_key(name, "hit"))
                pipe.get(self._stats_key(name, "miss"))
            raw = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        out: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            hit, miss = int(raw[2 * i] or 0), int(raw[2 * i + 1] or 0)
            total = hit + miss
            out[name] = {
                "hits": hit,
                "misses": miss,
                "hit_rate": round(hit / total, 4) if total else None,
            }
        return out

    def flush_stats(self, *, force: bool = False) -> None:
        """Add the counts since the last flush to the shared Redis counters."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._flushed_at < STATS_FLUSH_INTERVAL_S:
                return
            pending = {n: dict(c) for n, c in self._pending.items() if any(c.values())}
            for counts in self._pending.values():
                counts["hit"] = counts["miss"] = 0
            self._flushed_at = now
        if not pending or self.redis is None or self._is_down():
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name, counts in pending.items():
                for kind, n in counts.items():
                    if n:
                        pipe.incrby(self._stats_key(name, kind), n)
            pipe.execute()
        except redis.RedisError as exc:
            # Shared counters are best effort; the local ones stay exact.
            self._failed(exc)

    # -- internals -------------------------------------------------------------------------

    def _stats_key(self, name: str, kind: str) -> str:
        return f"{self.prefix}:stats:{name}:{kind}"

    def _usable_key(self, model: LoadedModel, method: str, key: Mapping[str, Any]) -> str | None:
        if not self.enabled or self._is_down():
            with self._lock:
                self._bypass += 1
            return None
        return self.key_for(model, method, key)

    def _read(self, model: LoadedModel, redis_key: str) -> dict[str, Any] | None:
        assert self.redis is not None
        try:
            raw: Any = self.redis.get(redis_key)
        except redis.RedisError as exc:
            self._failed(exc)
            with self._lock:
                self._bypass += 1
            return None
        value: Any = None
        if raw is not None:
            try:
                value = json.loads(raw)
            except ValueError:
                value = None  # a corrupt entry is a miss; the write below replaces it
        hit = isinstance(value, dict)
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
            counts = self._pending.setdefault(model.name, {"hit": 0, "miss": 0})
            counts["hit" if hit else "miss"] += 1
        self.flush_stats()
        return value if hit else None

    def _write(self, redis_key: str, value: dict[str, Any]) -> None:
        if self.redis is None or self._is_down():
            return
        try:
            payload = json.dumps(value, default=str)
        except (TypeError, ValueError) as exc:
            log.warning("prediction not cached, not JSON-able: %s", exc)
            return
        try:
            self.redis.set(redis_key, payload, ex=max(1, int(self.ttl_s)))
        except redis.RedisError as exc:
            self._failed(exc)

    def _is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._errors += 1
            self._down_until = time.monotonic() + BYPASS_AFTER_ERROR_S
        log.warning("prediction cache bypassed for %.0fs: %s", BYPASS_AFTER_ERROR_S, exc)

    def _redis_state(self) -> str:
        if self.redis is None:
            return "none"
        return "down" if self._is_down() else "ok"


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()
# A prediction read must fit in a request's deadline (recommend: 150 ms). redis-py 7 retries a
# failed connection three times with back-off by default (~7 s when Redis is down), so this
# client does not retry and gives up quickly; the cache then bypasses Redis for a few seconds.
REDIS_TIMEOUT_S = 0.2


def prediction_redis(url: str) -> redis.Redis:
    """A fail-fast Redis client for ``url`` (one pool per process and URL)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=30,
            )
            _clients[url] = client
        return client


def cache_from_settings(
    settings: Settings | None = None, *, prefix: str = "pc", ttl_s: float = DEFAULT_TTL_S
) -> PredictionCache:
    """A cache on ``settings.redis_url`` (in-process fakeredis when empty, as the platform does)."""
    from cartwise.platform.cache import get_redis
    from cartwise.platform.settings import get_settings

    settings = settings or get_settings()
    try:
        client = prediction_redis(settings.redis_url) if settings.redis_url else get_redis(settings)
    except Exception as exc:
        # Never let the cache stop a model from serving.
        log.warning("prediction cache disabled: %s", exc)
        return PredictionCache(None, prefix=prefix, ttl_s=ttl_s)
    return PredictionCache(client, prefix=prefix, ttl_s=ttl_s)
