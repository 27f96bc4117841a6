"""Shopper event ingestion benchmark: POST /api/v1/events under plain uvicorn on PostgreSQL + Redis.

    uv run python bench/events_ingest.py                          # 16 clients, 15 s, 100/batch
    uv run python bench/events_ingest.py --clients 32 --batch 100 --seconds 20 --signed-in

With ``--push`` the served app is the production one (``cartwise.serving.asgi:create_app``):
every stored batch also updates session features in Feast's Redis online store through the
push source, and a probe measures freshness under the load: it posts one event for a new
session every 0.25 s and polls the online store until the session appears.

It creates a PostgreSQL database of its own (tables via ``metadata.create_all``, since the
events migration is generated separately), serves the app with one uvicorn worker in a
subprocess (Redis rate limiting on, as in production), and drives ``--clients`` concurrent
loops that each post batches of ``--batch`` fresh events (mixed view/click/search/cart) for
``--seconds`` after a short warm-up. It prints events/s, batches/s and the p50/p99 latency
of one batch, then checks that the table holds exactly the accepted events, and drops the
database. A benchmark, not a test: the client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
NO_LOGIN = "!"  # not an argon2 hash, so no password ever matches
TYPES = ("view", "view", "view", "click", "search", "add_to_cart", "remove_from_cart", "purchase")


@dataclass
class Stats:
    """Batch latencies and outcomes of one run."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0

    def pct(self, q: float) -> float:
        """A batch latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Batches:
    """Makes batch bodies with unique event ids, cheaply (the client shares the cores)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.prefix = secrets.token_hex(4)
        self.counter = itertools.count()

    def _event(self, n: int) -> dict[str, Any]:
        kind = self.rng.choice(TYPES)
        event: dict[str, Any] = {
            "event_id": f"{self.prefix}-0000-4000-8000-{n:012x}",
            "type": kind,
            "session_id": f"bench-{n // 20}",
            "client_ts": datetime.now(UTC).isoformat(),
            "properties": {"page": "bench", "n": n % 97},
        }
        if kind == "search":
            event["query"] = self.rng.choice(("red mug", "lantern", "tea towel", "candle"))
        elif kind != "purchase":
            event["product_id"] = self.rng.randint(1, 4000)
            event["sku"] = f"SKU{event['product_id']:05d}"
            if kind == "click":
                event["position"] = self.rng.randint(0, 50)
        return event

    def body(self) -> bytes:
        """The JSON body of the next batch."""
        events = [self._event(next(self.counter)) for _ in range(self.size)]
        return json.dumps({"events": events}).encode()


def settings_values(database_url: str, redis_url: str, var_dir: str) -> dict[str, Any]:
    """The app's settings for the benchmark."""
    return {
        "env": "development",
        "database_url": database_url,
        "redis_url": redis_url,
        "var_dir": var_dir,
        "log_level": "WARNING",
        # Rate limiting stays on (one Redis round trip a request) with a limit never reached.
        "rate_limit_per_minute": 100_000_000,
        "database_pool_size": 20,
        "database_max_overflow": 20,
        "access_token_minutes": 240,
    }


def prepare(pg_admin: str, dbname: str) -> str:
    """Create the benchmark database and its tables; return its URL."""
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    database_url = pg_admin.rsplit("/", 1)[0] + "/" + dbname
    engine = make_engine(database_url)
    metadata.create_all(engine)
    engine.dispose()
    return database_url


def bench_token(values: dict[str, Any]) -> str:
    """A signed-in shopper's access token (so the user id path is measured too)."""
    from sqlmodel import Session

    from cartwise.commerce.customers.models import User
    from cartwise.platform.auth import Role, issue_access_token
    from cartwise.platform.db import make_engine
    from cartwise.platform.settings import Settings

    settings = Settings(**values)
    engine = make_engine(values["database_url"], settings)
    with Session(engine) as session:
        user = User(email=f"bench-{uuid.uuid4().hex[:8]}@example.com", hashed_password=NO_LOGIN)
        session.add(user)
        session.commit()
        session.refresh(user)
        assert user.id is not None
        user_id = user.id
    engine.dispose()
    return issue_access_token(settings, user_id, Role.customer).token


async def drive(base_url: str, args: argparse.Namespace, seconds: float, token: str) -> Stats:
    """Post batches from ``args.clients`` concurrent loops for ``seconds``."""
    stats = Stats()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(limit=args.clients, limit_per_host=args.clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:
        deadline = time.perf_counter() + seconds

        async def loop(n: int) -> None:
            batches = Batches(args.batch, seed=n)
            while time.perf_counter() < deadline:
                body = batches.body()
                started = time.perf_counter()
                try:
                    async with client.post("/api/v1/events", data=body, headers=headers) as r:
                        text = await r.text()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    stats.errors += 1
                    stats.first_error = stats.first_error or repr(exc)
                    continue
                took = time.perf_counter() - started
                if status == 202:
                    reply = json.loads(text)
                    stats.latencies.append(took)
                    stats.accepted += reply["accepted"]
                    stats.duplicates += reply["duplicates"]
                else:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"{status} {text[:300]}"

        started = time.perf_counter()
        await asyncio.gather(*(loop(n) for n in range(args.clients)))
        stats.elapsed = time.perf_counter() - started
    return stats


def prepare_push(values: dict[str, Any], redis_url: str) -> dict[str, Any]:
    """Apply the Feast definitions on a bench project (Redis online store); return overrides."""
    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings

    extra = {
        "feast_online_store": "redis",
        "feast_redis_url": redis_url,
        "feast_project": f"bench_{uuid.uuid4().hex[:8]}",
    }
    store.apply(FeatureSettings(**values, **extra))
    return extra


def probe_freshness(base_url: str, settings_values: dict[str, Any], stop: Any) -> list[float]:
    """Seconds from posting an event of a new session until the online store shows it."""
    import httpx

    from cartwise.features.settings import FeatureSettings
    from cartwise.features.store import get_store

    fs = get_store(FeatureSettings(**settings_values))
    service = fs.get_feature_service("session_v1")
    delays: list[float] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            session_id = f"probe-{uuid.uuid4().hex[:12]}"
            event = {
                "type": "search",
                "session_id": session_id,
                "query": f"probe {n}",
                "client_ts": datetime.now(UTC).isoformat(),
            }
            started = time.perf_counter()
            if client.post("/api/v1/events", json={"events": [event]}).status_code != 202:
                continue
            while time.perf_counter() - started < 10:
                got = fs.get_online_features(
                    features=service, entity_rows=[{"session_id": session_id}]
                ).to_dict()
                if got["event_count"][0]:
                    delays.append(time.perf_counter() - started)
                    break
                time.sleep(0.01)
            stop.wait(0.25)
    return delays


def stored_count(database_url: str) -> int:
    """Rows in shopper_event, leaving out the freshness probe's."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM shopper_event WHERE session_id NOT LIKE 'probe-%'"
        ).fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    """Prepare the database, serve the app, drive the load and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=100, help="events per batch")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds")
    parser.add_argument("--signed-in", action="store_true", help="send a bearer token")
    parser.add_argument(
        "--push", action="store_true", help="serve with the Feast session push and probe freshness"
    )
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CARTWISE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("CARTWISE_BENCH_REDIS", "redis://127.0.0.1:6379/12")
    )
    args = parser.parse_args(argv)

    from cartwise.serving.launch import free_port, wait_http

    dbname = f"cartwise_bench_{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="cartwise-bench-")
    print(f"preparing database {dbname} ...", flush=True)
    database_url = prepare(args.pg_admin, dbname)
    values = settings_values(database_url, args.redis, var_dir)
    if args.push:
        values.update(prepare_push(values, args.redis))
    env = {**os.environ, **{f"CARTWISE_{k.upper()}": str(v) for k, v in values.items()}}
    port = free_port()
    log_path = Path(var_dir) / "uvicorn.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        token = bench_token(values) if args.signed_in else ""
        redis.Redis.from_url(args.redis).flushdb()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "cartwise.serving.asgi:create_app"
                    if args.push
                    else "cartwise.commerce:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz")
        if args.warmup > 0:
            asyncio.run(drive(base, args, args.warmup, token))
        before = stored_count(database_url)
        delays: list[float] = []
        stop = threading.Event()
        prober = threading.Thread(
            target=lambda: delays.extend(probe_freshness(base, values, stop)), daemon=True
        )
        if args.push:
            prober.start()
        stats = asyncio.run(drive(base, args, args.seconds, token))
        stop.set()
        if args.push:
            prober.join(timeout=30)
        stored = stored_count(database_url) - before
        batches = len(stats.latencies)
        print(
            f"uvicorn, 1 worker, {os.cpu_count()} cores, {args.clients} clients, "
            f"batches of {args.batch}{', signed in' if args.signed_in else ''}:\n"
            f"  {stats.accepted / stats.elapsed:9.1f} events/s\n"
            f"  {batches / stats.elapsed:9.1f} batches/s\n"
            f"  p50 {stats.pct(0.5):7.1f} ms  p99 {stats.pct(0.99):7.1f} ms per batch\n"
            f"  accepted {stats.accepted}, duplicates {stats.duplicates}, stored {stored}, "
            f"errors {stats.errors}"
            + (f"  first: {stats.first_error}" if stats.first_error else ""),
            flush=True,
        )
        if args.push:
            ordered = sorted(delays) or [float("nan")]
            print(
                f"  session push freshness over {len(delays)} probes: "
                f"p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
                f"p99 {ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000:.0f} ms, "
                f"max {ordered[-1] * 1000:.0f} ms",
                flush=True,
            )
        if stored != stats.accepted:
            print("  MISMATCH: stored rows differ from accepted events", flush=True)
            return 1
        return 0 if stats.errors == 0 else 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.Redis.from_url(args.redis).flushdb()
        from cartwise.platform.db import dispose_engines

        dispose_engines()
        with psycopg.connect(args.pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())
