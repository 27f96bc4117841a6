"""API load benchmark: the same app under Ray Serve and under plain uvicorn, on PostgreSQL + Redis.

    uv run python bench/api_load.py                       # 20 clients, 15 s per endpoint
    uv run python bench/api_load.py --clients 20 --seconds 10 --replicas 2 --ingress proxy

In one run it creates a database of its own, migrates it, loads the real sample catalog (UCI
Online Retail, 2,933 products) with deep stock, makes one signed-in shopper per client, then
serves the app twice: under plain uvicorn (a subprocess, one worker) and under Ray Serve (a
local Ray with the same settings). Against each it drives, one endpoint at a time, a fixed
number of concurrent clients for a fixed time after a warm-up:

- ``catalog list``   GET  /api/v1/products?page=N (the public listing, Redis-cached)
- ``product detail`` GET  /api/v1/products/{id}
- ``add to cart``    POST /api/v1/carts/{id}/items (signed in, 20 lines per cart, then a new cart)
- ``checkout``       POST /api/v1/checkout (signed in, a one-line cart, with an Idempotency-Key)

Carts are prepared in the database beforehand, so only the measured endpoint is called. It
prints requests/s, p50 and p99 per endpoint and server, and the Serve/uvicorn ratio. This is a
benchmark, not a test: the numbers depend on the machine (the client shares its cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
ADDRESS = {
    "full_name": "Bench Shopper",
    "line1": "1 High Street",
    "city": "York",
    "postcode": "YO1 1AA",
    "country": "GB",
}
LINES_PER_CART = 20


@dataclass
class Stats:
    """Latencies and outcomes of one endpoint against one server."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        """Successful requests."""
        return len(self.latencies)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        """A latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Fixture:
    """What the load needs: the database, products, shoppers and their tokens."""

    database_url: str
    redis_url: str
    product_ids: list[int]
    skus: list[str]
    user_ids: list[int]
    tokens: list[str]
    settings: dict[str, Any]


# ------------------------------------------------------------------ preparation


def _settings(database_url: str, redis_url: str, var_dir: str, log_level: str) -> dict[str, Any]:
    return {
        "env": "development",
        "database_url": database_url,
        "redis_url": redis_url,
        "var_dir": var_dir,
        "log_level": log_level,
        "access_token_minutes": 240,
        # Rate limiting stays on (one Redis round trip per request, as in production) with a
        # limit the benchmark never reaches.
        "rate_limit_per_minute": 100_000_000,
        "auth_rate_limit_per_minute": 100_000_000,
        "database_pool_size": 20,
        "database_max_overflow": 20,
    }


def prepare(args: argparse.Namespace, dbname: str, var_dir: str) -> Fixture:
    """Create, migrate and fill the benchmark database; make the shoppers."""
    from sqlmodel import Session, select

    from cartwise.commerce.catalog.models import Variant
    from cartwise.commerce.catalog.sample import load_sample
    from cartwise.commerce.customers.models import User
    from cartwise.commerce.migrations_api import upgrade
    from cartwise.platform.auth import Role, hash_password, issue_access_token
    from cartwise.platform.db import make_engine
    from cartwise.platform.settings import Settings

    with psycopg.connect(args.pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    database_url = args.pg_admin.rsplit("/", 1)[0] + "/" + dbname
    upgrade(database_url)
    settings = _settings(database_url, args.redis, var_dir, args.log_level)
    engine = make_engine(database_url, Settings(**settings))
    with Session(engine) as session:
        summary = load_sample(session=session, stock=1_000_000)
        print(f"  sample catalog: {summary.products_created} products", flush=True)
        rows = session.exec(select(Variant.product_id, Variant.sku)).all()
        hashed = hash_password("bench-password-1")
        users = [
            User(email=f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com", hashed_password=hashed)
            for i in range(args.clients)
        ]
        session.add_all(users)
        session.commit()
        user_ids = [u.id for u in users if u.id is not None]
    engine.dispose()
    app_settings = Settings(**settings)
    tokens = [issue_access_token(app_settings, uid, Role.customer).token for uid in user_ids]
    return Fixture(
        database_url=database_url,
        redis_url=args.redis,
        product_ids=sorted({pid for pid, _ in rows}),
        skus=sorted(sku for _, sku in rows),
        user_ids=user_ids,
        tokens=tokens,
        settings=settings,
    )


def make_carts(fx: Fixture, per_user: int, lines: int, seed: int) -> list[list[str]]:
    """``per_user`` active carts per shopper with ``lines`` random lines each; ids per user."""
    from sqlmodel import Session, select

    from cartwise.commerce.carts.models import Cart, CartItem
    from cartwise.commerce.catalog.models import Variant
    from cartwise.platform.db import make_engine

    rng = random.Random(seed)
    engine = make_engine(fx.database_url)
    out: list[list[str]] = []
    with Session(engine) as session:
        variant_ids = [v for v in session.exec(select(Variant.id)).all() if v is not None]
        carts: list[Cart] = []
        for uid in fx.user_ids:
            mine = [Cart(user_id=uid, currency="GBP") for _ in range(per_user)]
            carts.extend(mine)
            out.append([c.id for c in mine])
        session.add_all(carts)
        session.flush()
        if lines:
            session.add_all(
                CartItem(cart_id=c.id, variant_id=vid, quantity=1)
                for c in carts
                for vid in rng.sample(variant_ids, lines)
            )
        session.commit()
    engine.dispose()
    return out


# ------------------------------------------------------------------------- load


@dataclass
class Reply:
    """Status and (on errors) body of one response."""

    status: int
    text: str = ""


Op = Callable[[aiohttp.ClientSession, int, random.Random], Awaitable[Reply]]


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Reply:
    async with session.request(method, url, **kw) as response:
        body = await response.read()
        text = body[:200].decode("utf-8", "replace") if response.status >= 400 else ""
        return Reply(response.status, text)


def scenarios(fx: Fixture, args: argparse.Namespace) -> list[tuple[str, Op, Callable[[], None]]]:
    """The four measured endpoints, each with a setup run before it is measured."""
    state: dict[str, Any] = {}

    def headers(client_no: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {fx.tokens[client_no]}"}

    async def catalog_list(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        return await _call(c, "GET", f"/api/v1/products?page={rng.randint(1, 50)}")

    async def product_detail(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        return await _call(c, "GET", f"/api/v1/products/{rng.choice(fx.product_ids)}")

    def setup_add() -> None:
        state["add_carts"] = make_carts(fx, per_user=args.carts_per_client, lines=0, seed=1)
        state["add_pos"] = [0] * len(fx.user_ids)

    async def add_to_cart(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        pos = state["add_pos"][n]
        state["add_pos"][n] = pos + 1
        cart_id = state["add_carts"][n][(pos // LINES_PER_CART) % args.carts_per_client]
        body = {"sku": rng.choice(fx.skus), "quantity": 1}
        return await _call(
            c, "POST", f"/api/v1/carts/{cart_id}/items", json=body, headers=headers(n)
        )

    def setup_checkout() -> None:
        state["co_carts"] = make_carts(fx, per_user=args.carts_per_client, lines=1, seed=2)
        state["co_pos"] = [0] * len(fx.user_ids)

    async def checkout(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        pos = state["co_pos"][n]
        state["co_pos"][n] = pos + 1
        carts = state["co_carts"][n]
        if pos >= len(carts):
            raise RuntimeError("out of prepared carts: raise --carts-per-client")
        body = {"cart_id": carts[pos], "shipping_address": ADDRESS}
        return await _call(
            c,
            "POST",
            "/api/v1/checkout",
            json=body,
            headers={**headers(n), "Idempotency-Key": secrets.token_hex(16)},
        )

    return [
        ("catalog list", catalog_list, lambda: None),
        ("product detail", product_detail, lambda: None),
        ("add to cart", add_to_cart, setup_add),
        ("checkout", checkout, setup_checkout),
    ]


async def drive(base_url: str, name: str, op: Op, clients: int, seconds: float) -> Stats:
    """Run ``clients`` concurrent loops of ``op`` for ``seconds``; collect latencies."""
    stats = Stats(name)
    # aiohttp, not httpx: on 2 shared cores httpx's client costs ~2.3 ms of CPU per request
    # (aiohttp ~0.13 ms) and would measure the client instead of the servers.
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:
        deadline = time.perf_counter() + seconds

        async def loop(n: int) -> None:
            rng = random.Random(n * 7919 + len(name))
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    reply = await op(client, n, rng)
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    stats.errors += 1
                    stats.first_error = stats.first_error or repr(exc)
                    if isinstance(exc, RuntimeError):
                        return
                    continue
                took = time.perf_counter() - started
                if reply.status < 400:
                    stats.latencies.append(took)
                else:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"{reply.status} {reply.text}"

        started = time.perf_counter()
        await asyncio.gather(*(loop(n) for n in range(clients)))
        stats.elapsed = time.perf_counter() - started
    return stats


def measure(base_url: str, fx: Fixture, args: argparse.Namespace, label: str) -> list[Stats]:
    """Warm up, then measure every endpoint against one server."""
    results = []
    wanted = {e.strip() for e in args.endpoints.split(",")} if args.endpoints else None
    for name, op, setup in scenarios(fx, args):
        if wanted is not None and name.split()[0] not in wanted:
            continue
        setup()
        if args.warmup > 0 and name in ("catalog list", "product detail"):
            asyncio.run(drive(base_url, name, op, args.clients, args.warmup))
        stats = asyncio.run(drive(base_url, name, op, args.clients, args.seconds))
        results.append(stats)
        print(
            f"  {label:8} {name:15} {stats.rps:8.1f} req/s  p50 {stats.pct(0.5):7.1f} ms  "
            f"p99 {stats.pct(0.99):7.1f} ms  errors {stats.errors}"
            + (f"  first: {stats.first_error}" if stats.first_error else ""),
            flush=True,
        )
    return results


# ---------------------------------------------------------------------- servers


def run_uvicorn(fx: Fixture, args: argparse.Namespace, log_dir: Path) -> list[Stats]:
    """Serve the app with plain uvicorn in a subprocess and measure it."""
    from cartwise.serving.launch import free_port, wait_http

    port = free_port()
    env = {**os.environ}
    env.update({f"CARTWISE_{k.upper()}": str(v) for k, v in fx.settings.items()})
    log = (log_dir / "uvicorn.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "cartwise.commerce:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.uvicorn_workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz")
        return measure(base, fx, args, "uvicorn")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_serve(fx: Fixture, args: argparse.Namespace) -> list[Stats]:
    """Serve the app with Ray Serve on a local Ray and measure it."""
    from cartwise.serving.args import AppArgs
    from cartwise.serving.launch import (
        deploy,
        free_port,
        private_ports_env,
        shutdown,
        start_ray,
        wait_http,
    )

    port = free_port()
    extra = private_ports_env()
    for item in args.serve_env:
        key, _, value = item.partition("=")
        extra[key] = value
    start_ray(
        num_cpus=max(os.cpu_count() or 1, args.replicas),
        dashboard=False,
        ingress=args.ingress,
        log_to_driver=False,
        extra_env=extra,
    )
    try:
        app_args: dict[str, Any] = {
            "settings": fx.settings,
            "num_replicas": args.replicas,
            "num_cpus": 1.0,
        }
        if args.max_ongoing:
            app_args["max_ongoing_requests"] = args.max_ongoing
        deploy(AppArgs.model_validate(app_args), host="127.0.0.1", port=port)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz")
        return measure(base, fx, args, "serve")
    finally:
        shutdown()


# ------------------------------------------------------------------------ report


def report(results: dict[str, list[Stats]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the comparison table; return it as data."""
    serve = {s.name: s for s in results.get("serve", [])}
    plain = {s.name: s for s in results.get("uvicorn", [])}
    names = [s.name for s in (results.get("serve") or results.get("uvicorn") or [])]
    print()
    print(
        f"clients {args.clients}, {args.seconds:g} s per endpoint, Serve: {args.replicas} "
        f"replica(s), {args.ingress} ingress; uvicorn: {args.uvicorn_workers} worker(s); "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'endpoint':16}| {'server':8}| {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'errors':>6} | {'serve/uvicorn':>13}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for name in names:
        for label, table in (("serve", serve), ("uvicorn", plain)):
            stats = table.get(name)
            if stats is None:
                continue
            ratio = ""
            if label == "serve" and name in plain and plain[name].rps:
                ratio = f"{stats.rps / plain[name].rps:.2f}x"
            print(
                f"{name:16}| {label:8}| {stats.rps:8.1f} | {stats.pct(0.5):7.1f} | "
                f"{stats.pct(0.99):7.1f} | {stats.errors:6d} | {ratio:>13}"
            )
            rows.append(
                {
                    "endpoint": name,
                    "server": label,
                    "rps": round(stats.rps, 1),
                    "p50_ms": round(stats.pct(0.5), 2),
                    "p99_ms": round(stats.pct(0.99), 2),
                    "errors": stats.errors,
                    "requests": stats.ok,
                }
            )
    if serve and plain:
        total_s = statistics.fmean(s.rps for s in serve.values())
        total_u = statistics.fmean(s.rps for s in plain.values())
        print(f"\nmean throughput ratio serve/uvicorn: {total_s / total_u:.2f}x")
        goal = serve.get("catalog list")
        if goal is not None:
            p99, mean_ratio = goal.pct(0.99), total_s / total_u
            print(
                f"goal: catalog list p99 {p99:.1f} ms under Serve "
                f"({'met' if p99 < 50 else 'NOT met'}, < 50 ms); throughput "
                f"{mean_ratio:.2f}x uvicorn ({'met' if mean_ratio >= 0.5 else 'NOT met'}, >= 0.5x)"
            )
    return {"clients": args.clients, "seconds": args.seconds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, prepare the data, measure both servers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds/endpoint")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (reads)")
    parser.add_argument("--servers", default="uvicorn,serve", help="which servers, in order")
    parser.add_argument(
        "--endpoints", default="", help="subset by first word: catalog,product,add,checkout"
    )
    parser.add_argument("--replicas", type=int, default=1, help="Serve replicas")
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy")
    parser.add_argument("--max-ongoing", type=int, default=0, help="Serve max_ongoing_requests")
    parser.add_argument("--uvicorn-workers", type=int, default=1)
    parser.add_argument(
        "--serve-env", action="append", default=[], metavar="RAY_SERVE_X=V", help="extra env"
    )
    parser.add_argument("--carts-per-client", type=int, default=400)
    parser.add_argument("--log-level", default="INFO", help="the app's log level (both servers)")
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CARTWISE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("CARTWISE_BENCH_REDIS", "redis://127.0.0.1:6379/11")
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)

    dbname = f"cartwise_bench_{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="cartwise-bench-")
    print(f"preparing database {dbname} ...", flush=True)
    fx = prepare(args, dbname, var_dir)
    results: dict[str, list[Stats]] = {}
    try:
        for server in [s.strip() for s in args.servers.split(",") if s.strip()]:
            redis.Redis.from_url(args.redis).flushdb()
            print(f"{server}:", flush=True)
            if server == "uvicorn":
                results[server] = run_uvicorn(fx, args, Path(var_dir))
            elif server == "serve":
                results[server] = run_serve(fx, args)
            else:
                parser.error(f"unknown server {server!r}")
        data = report(results, args)
        if args.json:
            args.json.write_text(json.dumps(data, indent=2))
    finally:
        redis.Redis.from_url(args.redis).flushdb()
        if not args.keep_db:
            from cartwise.platform.db import dispose_engines

            dispose_engines()
            with psycopg.connect(args.pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
