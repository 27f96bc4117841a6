"""The prediction cache on the real Redis: keyed by model version, never failing a request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cartwise.serving.launch import free_port
from cartwise.serving.runtime.cache import (
    PredictionCache,
    cache_from_settings,
    canonical_key,
    prediction_redis,
)
from cartwise.serving.runtime.holder import LoadedModel

V1 = LoadedModel("recommend", 1, "champion", None, 0.0)
V2 = LoadedModel("recommend", 2, "champion", None, 0.0)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """The test Redis (flushed by the redis_url fixture)."""
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return dict(self.value, call=self.calls)


def test_second_call_is_a_hit_and_a_new_version_misses(client: redis.Redis) -> None:
    cache = PredictionCache(client, prefix="t", ttl_s=30)
    compute = Counter({"items": [1, 2]})
    first, hit = cache.get_or_compute(V1, "recommend", {"user_id": 7, "k": 10}, compute)
    assert (first, hit) == ({"items": [1, 2], "call": 1}, False)
    # Same key in another order: the canonical JSON makes it the same entry.
    again, hit = cache.get_or_compute(V1, "recommend", {"k": 10, "user_id": 7}, compute)
    assert (again, hit) == (first, True)
    assert compute.calls == 1
    # A new version never reads the old version's answer.
    fresh, hit = cache.get_or_compute(V2, "recommend", {"user_id": 7, "k": 10}, compute)
    assert (fresh["call"], hit) == (2, False)
    # Another method with the same arguments is another entry.
    _, hit = cache.get_or_compute(V1, "similar", {"user_id": 7, "k": 10}, compute)
    assert not hit

    key = cache.key_for(V1, "recommend", {"user_id": 7, "k": 10})
    assert key.startswith("t:recommend:v1:recommend:")
    assert cache.version_key(V2) == "t:recommend:v2"
    ttl: Any = client.ttl(key)
    assert 0 < ttl <= 30

    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["bypass"]) == (1, 3, 0)
    assert stats["hit_rate"] == 0.25
    assert stats["redis"] == "ok"
    # The counters shared by every replica live in Redis.
    assert stats["shared"]["recommend"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}
    counters: Any = client.mget(["t:stats:recommend:hit", "t:stats:recommend:miss"])
    assert [int(c) for c in counters] == [1, 3]


def test_async_compute(client: redis.Redis) -> None:
    cache = PredictionCache(client, prefix="t")

    async def compute() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"risk": 0.5}

    async def twice() -> list[tuple[dict[str, Any], bool]]:
        key = {"order_id": 1}
        return [
            await cache.aget_or_compute(V1, "score", key, compute),
            await cache.aget_or_compute(V1, "score", key, compute),
        ]

    assert asyncio.run(twice()) == [({"risk": 0.5}, False), ({"risk": 0.5}, True)]


def test_redis_down_computes_without_cache_and_backs_off() -> None:
    dead = prediction_redis(f"redis://127.0.0.1:{free_port()}/0")
    cache = PredictionCache(dead, prefix="t")
    compute = Counter({"items": []})
    for _ in range(5):
        value, hit = cache.get_or_compute(V1, "recommend", {"k": 1}, compute)
        assert not hit
        assert value["items"] == []
    assert compute.calls == 5
    stats = cache.stats()
    assert stats["bypass"] == 5
    assert stats["redis"] == "down"
    # One connection error, then the cache is skipped rather than retried on every call.
    assert stats["errors"] == 1
    assert "shared" not in stats


def test_ttl_zero_disables_and_unjsonable_values_are_not_cached(client: redis.Redis) -> None:
    cache = PredictionCache(client, prefix="t", ttl_s=0)
    compute = Counter({})
    cache.get_or_compute(V1, "m", {}, compute)
    cache.get_or_compute(V1, "m", {}, compute)
    assert compute.calls == 2
    assert cache.stats()["bypass"] == 2
    assert client.keys("t:recommend:*") == []

    cache.ttl_s = 30  # as reconfigure() does
    odd = {"when": object()}
    value, hit = cache.get_or_compute(V1, "m", {}, lambda: odd)
    assert value is odd
    assert not hit


def test_cache_from_settings_uses_redis_or_in_process(redis_url: str, tmp_path: Any) -> None:
    from cartwise.platform.settings import Settings

    real = cache_from_settings(Settings(env="test", var_dir=tmp_path, redis_url=redis_url))
    real.get_or_compute(V1, "m", {"a": 1}, lambda: {"ok": True})
    probe = redis.Redis.from_url(redis_url)
    assert probe.exists(real.key_for(V1, "m", {"a": 1}))
    probe.close()

    embedded = cache_from_settings(Settings(env="test", var_dir=tmp_path, redis_url=""), ttl_s=5)
    embedded.get_or_compute(V1, "m", {"a": 1}, lambda: {"ok": True})
    assert embedded.get_or_compute(V1, "m", {"a": 1}, lambda: {"ok": False}) == ({"ok": True}, True)


def test_canonical_key_is_stable() -> None:
    assert canonical_key({"b": [1, 2], "a": None}) == canonical_key({"a": None, "b": [1, 2]})
    assert canonical_key({"a": 1}) != canonical_key({"a": 2})
