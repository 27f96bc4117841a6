"""Rate limits on the real Redis, security headers, CORS, body limits, request ids, problems."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from cartwise.platform.ratelimit import RateLimiter
from tests.conftest import assert_problem


@pytest.fixture
def limited_client(make_settings: Callable[..., Any], tmp_path) -> TestClient:
    from cartwise.commerce import create_app
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    url = f"sqlite:///{tmp_path / 'rl.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    app = create_app(
        make_settings(database_url=url, rate_limit_per_minute=5, auth_rate_limit_per_minute=2)
    )
    return TestClient(app, raise_server_exceptions=False)


def test_rate_limit_per_route_with_retry_after(limited_client: TestClient, redis_url: str) -> None:
    statuses = [limited_client.get("/api/v1/users/me").status_code for _ in range(7)]
    assert statuses[:5] == [401] * 5
    r = limited_client.get("/api/v1/users/me")
    body = assert_problem(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    assert body["limit"] == 5
    # Counters live in the real Redis, keyed by route and client.
    keys = redis.Redis.from_url(redis_url).keys("rl:GET:/api/v1/users/me:*")
    assert keys, "rate-limit counters are not in Redis"
    # Another route has its own budget.
    assert limited_client.get("/readyz").status_code == 200


def test_auth_routes_have_a_stricter_limit(limited_client: TestClient) -> None:
    form = {"username": "nobody@example.com", "password": "whatever1"}
    codes = [limited_client.post("/api/v1/auth/token", data=form).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_limiter_counts_per_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RateLimiter(client, per_minute=2)
    limiter.hit("ip:1", "GET:/x", now=120.0)
    limiter.hit("ip:1", "GET:/x", now=121.0)
    limiter.hit("ip:2", "GET:/x", now=121.0)
    from cartwise.platform.errors import TooManyRequests

    with pytest.raises(TooManyRequests):
        limiter.hit("ip:1", "GET:/x", now=122.0)
    # A new window starts afresh.
    limiter.hit("ip:1", "GET:/x", now=181.0)


def test_limiter_fails_open_when_redis_is_down() -> None:
    from cartwise.platform.cache import make_redis
    from cartwise.platform.settings import Settings

    # The client the app builds (no retry back-off: a dead Redis answers at once).
    dead = make_redis(Settings(env="test", redis_url="redis://127.0.0.1:1/0"))
    limiter = RateLimiter(dead, per_minute=1)
    limiter.hit("ip:1", "GET:/x")
    limiter.hit("ip:1", "GET:/x")  # over the limit, but nothing counts it: served


def test_security_headers(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"]
    assert "strict-transport-security" not in r.headers  # HSTS only in production
    docs = client.get("/docs")
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def test_hsts_in_production_mode(make_settings: Callable[..., Any], db_url: str) -> None:
    from cartwise.commerce import create_app

    # An app serving /metrics in production needs its scrape token.
    settings = make_settings(database_url=db_url, metrics_token="m" * 32)
    prod = settings.model_copy(update={"env": "production"})
    app = create_app(prod)
    r = TestClient(app).get("/healthz")
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_cors_from_settings(client: TestClient) -> None:
    ok = client.options(
        "/api/v1/users/me",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
    )
    assert ok.headers.get("access-control-allow-origin") == "http://localhost:3000"
    bad = client.options(
        "/api/v1/users/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in bad.headers


def test_request_id_is_echoed_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cartwise.access"):
        r = client.get("/readyz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/readyz").headers["x-request-id"]
    assert len(generated) == 32
    hostile = client.get("/readyz", headers={"X-Request-Id": "bad id\nwith newline"})
    assert hostile.headers["x-request-id"] != "bad id\nwith newline"
    from cartwise.platform.logging import JsonFormatter

    records = [r for r in caplog.records if getattr(r, "path", None) == "/readyz"]
    assert records
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["status"] == 200
    assert "duration_ms" in line


def test_json_log_has_request_id() -> None:
    from cartwise.platform.logging import JsonFormatter, request_id_var

    token = request_id_var.set("rid-1")
    try:
        record = logging.LogRecord("x", logging.INFO, "f", 1, "hello %s", ("w",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello w"
    assert line["request_id"] == "rid-1"


def test_body_size_limit(client: TestClient, app) -> None:
    limit = app.state.settings.max_body_bytes
    big = json.dumps({"email": "a@b.co", "password": "x" * (limit + 10)})
    r = client.post(
        "/api/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(r, 413)

    def chunks():
        for _ in range(limit // 1000 + 5):
            yield b"x" * 1000

    r = client.post(
        "/api/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(r, 413)


def test_errors_are_problem_documents(client: TestClient) -> None:
    body = assert_problem(client.get("/api/v1/no-such-route"), 404)
    assert body["instance"] == "/api/v1/no-such-route"
    assert_problem(client.put("/healthz"), 405)
    body = assert_problem(
        client.post(
            "/api/v1/auth/register",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        400,
    )
    assert body["type"].endswith("malformed-json")
    body = assert_problem(
        client.post("/api/v1/auth/register", json={"email": "not-an-email", "password": 5}), 422
    )
    fields = {e["field"] for e in body["errors"]}
    assert {"email", "password"} <= fields


def test_readyz_reports_redis_down(make_settings: Callable[..., Any], db_url: str) -> None:
    from cartwise.commerce import create_app
    from cartwise.platform import cache

    settings = make_settings(database_url=db_url, redis_url="redis://127.0.0.1:1/0")
    try:
        app = create_app(settings)
        r = TestClient(app).get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["redis"].startswith("error")
        assert r.json()["checks"]["database"] == "ok"
        # The API still answers without Redis (rate limits and caches fail open).
        assert TestClient(app).get("/api/v1/users/me").status_code == 401
    finally:
        cache.reset_clients()
