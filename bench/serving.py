"""Serving benchmark: the ML endpoints under Ray Serve (with deployments) and under plain uvicorn.

    uv run python bench/serving.py                          # 1, 8 and 32 clients, 10 s each
    uv run python bench/serving.py --clients 8 --duration 5 --servers serve
    uv run python bench/serving.py --shop /path/to/shop     # reuse a trained shop

The script builds a trained shop, or reuses one: by default under ``var/bench/shop``, with
``tests/trained_shop.py``'s ``build``. That shop is a generated catalog, customers and
sessions in PostgreSQL, with Feast materialised and all five areas trained and promoted in
MLflow. The bench writes to the shop (bench users, carts and orders, deep stock on a few
SKUs), so never point ``--shop`` at a shop that tests share.

It serves the shop twice, with the same settings (``CARTWISE_*`` from the shop, Redis for the
cache, rate limits and the prediction cache):

- ``serve``: the full Ray Serve application (the ``CommerceAPI`` ingress plus the
  Recommender, Search, FraudScorer, CustomerInsights and DemandPlanner deployments) on a
  local Ray, with the HAProxy ingress, as ``cartwise serve`` runs it.
- ``uvicorn``: the same handlers under plain uvicorn, one worker in a subprocess
  (``cartwise.serving.asgi:create_app``), which calls the model services in-process through
  the local ML client.

Against each server it drives these endpoints with 1, 8 and 32 closed-loop clients, after a
warm-up that waits for the models to answer:

- ``recs``: ``GET /api/v1/recommendations``. 70 % are a signed-in shop customer on the home
  page; 30 % are an anonymous product page.
- ``search``: ``GET /api/v1/search?q=``, with words from product names, some with a typo.
- ``suggest``: ``GET /api/v1/search/suggest?q=``, with 2-4 letter prefixes.
- ``checkout``: ``POST /api/v1/checkout`` for a one-line cart of a new bench shopper. It
  includes the synchronous fraud scoring.

It prints requests/s, p50, p99 and the share of answers served by a fallback per cell, the
Serve/uvicorn throughput ratio, and the issue's goals. The goals are: recommendations p99
under 50 ms at 8 clients, search p99 under 80 ms, suggest p99 under 20 ms, and Serve at least
0.5x uvicorn. An endpoint the app does not have yet (404) is reported as missing. This is a
benchmark, not a test: the client shares the machine's cores with the servers.
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
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.trained_shop builds the shop
sys.path.insert(0, str(Path(__file__).resolve().parent))  # api_load's load driver

from api_load import Reply, Stats, drive  # noqa: E402

from tests.trained_shop import TrainedShop, build  # noqa: E402

ENDPOINTS = ("recs", "search", "suggest", "checkout")
ADDRESS = {
    "full_name": "Bench Shopper",
    "line1": "1 High Street",
    "city": "York",
    "postcode": "YO1 1AA",
    "country": "GB",
}
BENCH_USERS = 1000  # spread checkouts so no shopper looks like an order-velocity fraud
DEEP_STOCK_SKUS = 20
# The issue's goals on 2 cores (p99 in ms; recommendations at 8 clients).
GOALS = {"recs": 50.0, "search": 80.0, "suggest": 20.0}
THROUGHPUT_GOAL = 0.5


@dataclass
class Fixture:
    """What the load needs from the shop: settings, tokens, products, queries, carts."""

    shop: TrainedShop
    env: dict[str, str]
    customer_tokens: list[str]
    product_ids: list[int]
    queries: list[str]
    prefixes: list[str]
    bench_user_ids: list[int]
    bench_tokens: dict[int, str]
    variant_ids: list[int]
    carts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Cell:
    """One measured (server, endpoint, clients) cell."""

    server: str
    endpoint: str
    clients: int
    stats: Stats
    fallbacks: int = 0
    missing: bool = False


# ------------------------------------------------------------------ preparation


def server_env(shop: TrainedShop, args: argparse.Namespace) -> dict[str, str]:
    """The CARTWISE_* variables both servers run with."""
    return {
        **shop.env,
        "CARTWISE_REDIS_URL": args.redis,
        "CARTWISE_LOG_LEVEL": args.log_level,
        "CARTWISE_ACCESS_TOKEN_MINUTES": "240",
        # Rate limits stay on (one Redis round trip per request, as in production) with a
        # limit the benchmark never reaches.
        "CARTWISE_RATE_LIMIT_PER_MINUTE": "100000000",
        "CARTWISE_AUTH_RATE_LIMIT_PER_MINUTE": "100000000",
        "CARTWISE_DATABASE_POOL_SIZE": "20",
        "CARTWISE_DATABASE_MAX_OVERFLOW": "20",
    }


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def prepare(shop: TrainedShop, args: argparse.Namespace) -> Fixture:
    """Read products and customers, make bench shoppers and give a few SKUs deep stock."""
    from sqlmodel import Session, col, select

    from cartwise.commerce.catalog.models import Product, Variant
    from cartwise.commerce.customers.models import User
    from cartwise.commerce.inventory.service import set_stock
    from cartwise.platform.auth import Role, hash_password, issue_access_token
    from cartwise.platform.db import make_engine
    from cartwise.platform.settings import Settings

    env = server_env(shop, args)
    settings = Settings.model_validate(
        {k.removeprefix("CARTWISE_").lower(): v for k, v in env.items() if v != ""}
    )
    rng = random.Random(7)
    engine = make_engine(shop.database_url, settings)
    try:
        with Session(engine) as session:
            products = session.exec(
                select(Product.id, Product.name).where(col(Product.status) == "active")
            ).all()
            customers = session.exec(
                select(User.id)
                .where(col(User.role) == Role.customer)
                .where(col(User.email).not_like("bench-%"))
            ).all()
            variants = session.exec(
                select(Variant.id, Variant.sku)
                .join(Product, col(Product.id) == col(Variant.product_id))
                .where(col(Product.status) == "active")
                .where(col(Variant.is_active))
            ).all()
            deep = rng.sample(list(variants), min(DEEP_STOCK_SKUS, len(variants)))
            for _, sku in deep:
                set_stock(session=session, sku=sku, on_hand=1_000_000, note="bench/serving.py")
            hashed = hash_password("bench-password-1")
            run = uuid.uuid4().hex[:6]
            users = [
                User(email=f"bench-{run}-{i}@example.com", hashed_password=hashed)
                for i in range(BENCH_USERS)
            ]
            session.add_all(users)
            session.commit()
            bench_ids = [u.id for u in users if u.id is not None]
    finally:
        engine.dispose()
    words = sorted({w.lower() for _, name in products for w in name.split() if len(w) >= 4})
    queries = words + [_typo(w, rng) for w in rng.sample(words, len(words) // 4)]
    queries += [" ".join(rng.sample(words, 2)) for _ in range(len(words) // 4)]
    return Fixture(
        shop=shop,
        env=env,
        customer_tokens=[
            issue_access_token(settings, uid, Role.customer).token
            for uid in customers
            if uid is not None
        ],
        product_ids=[pid for pid, _ in products if pid is not None],
        queries=queries,
        prefixes=sorted({w[:n] for w in words for n in (2, 3, 4)}),
        bench_user_ids=bench_ids,
        bench_tokens={
            uid: issue_access_token(settings, uid, Role.customer).token for uid in bench_ids
        },
        variant_ids=[vid for vid, _ in deep if vid is not None],
    )


def make_carts(fx: Fixture, count: int) -> list[tuple[str, str]]:
    """``count`` one-line carts of bench shoppers (round robin); (token, cart id) each."""
    from sqlmodel import Session

    from cartwise.commerce.carts.models import Cart, CartItem
    from cartwise.platform.db import make_engine

    rng = random.Random(count)
    engine = make_engine(fx.shop.database_url)
    out: list[tuple[str, str]] = []
    try:
        with Session(engine) as session:
            start = rng.randrange(len(fx.bench_user_ids))
            carts = [
                Cart(user_id=fx.bench_user_ids[(start + i) % len(fx.bench_user_ids)])
                for i in range(count)
            ]
            session.add_all(carts)
            session.flush()
            session.add_all(
                CartItem(cart_id=c.id, variant_id=rng.choice(fx.variant_ids), quantity=1)
                for c in carts
            )
            session.commit()
            out = [(fx.bench_tokens[c.user_id], c.id) for c in carts if c.user_id is not None]
    finally:
        engine.dispose()
    return out


# ------------------------------------------------------------------------- load

Op = Callable[[aiohttp.ClientSession, int, random.Random], Awaitable[Reply]]
FALLBACK_MARK = b'"fallback":true'


class Counter:
    """Answers served by a fallback, counted while a cell runs."""

    def __init__(self) -> None:
        self.fallbacks = 0


async def _get(session: aiohttp.ClientSession, counter: Counter, url: str, **kw: Any) -> Reply:
    async with session.get(url, **kw) as response:
        body = await response.read()
        if FALLBACK_MARK in body:
            counter.fallbacks += 1
        text = body[:200].decode("utf-8", "replace") if response.status >= 400 else ""
        return Reply(response.status, text)


def operations(fx: Fixture, counter: Counter) -> dict[str, Op]:
    """The measured requests, one per endpoint."""

    async def recs(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        if rng.random() < 0.7:
            headers = {"Authorization": f"Bearer {rng.choice(fx.customer_tokens)}"}
            return await _get(
                c, counter, "/api/v1/recommendations?context=home&k=10", headers=headers
            )
        pid = rng.choice(fx.product_ids)
        return await _get(
            c,
            counter,
            f"/api/v1/recommendations?context=product&product_id={pid}&k=10&session_id=bench-{n}",
        )

    async def search(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        return await _get(c, counter, "/api/v1/search", params={"q": rng.choice(fx.queries)})

    async def suggest(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        return await _get(
            c, counter, "/api/v1/search/suggest", params={"q": rng.choice(fx.prefixes)}
        )

    async def checkout(c: aiohttp.ClientSession, n: int, rng: random.Random) -> Reply:
        if not fx.carts:
            raise RuntimeError("out of prepared carts: raise --carts")
        token, cart_id = fx.carts.pop()
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": secrets.token_hex(16)}
        body = {"cart_id": cart_id, "shipping_address": ADDRESS}
        async with c.post("/api/v1/checkout", json=body, headers=headers) as response:
            raw = await response.read()
            # Shoppers do not see the risk: fallback_orders() counts it from the orders.
            text = raw[:200].decode("utf-8", "replace") if response.status >= 400 else ""
            return Reply(response.status, text)

    return {"recs": recs, "search": search, "suggest": suggest, "checkout": checkout}


def fallback_orders(fx: Fixture, since: datetime) -> int:
    """Orders placed since ``since`` whose fraud check fell back to the rule."""
    from sqlmodel import Session, col, func, select

    from cartwise.commerce.orders.models import Order
    from cartwise.platform.db import make_engine

    engine = make_engine(fx.shop.database_url)
    try:
        with Session(engine) as session:
            query = (
                select(func.count())
                .select_from(Order)
                .where(col(Order.created_at) >= since)
                .where(col(Order.risk_fallback))
            )
            return int(session.exec(query).one())
    finally:
        engine.dispose()


async def _exists(base: str, fx: Fixture, endpoint: str) -> bool:
    paths = {
        "recs": "/api/v1/recommendations?context=home&k=1",
        "search": "/api/v1/search?q=bag",
        "suggest": "/api/v1/search/suggest?q=ba",
    }
    if endpoint not in paths:
        return True
    async with (
        aiohttp.ClientSession(base) as client,
        client.get(paths[endpoint]) as response,
    ):
        return response.status != 404


async def _models_answer(base: str, wait_s: float) -> dict[str, bool]:
    """Poll until recommendations and search come from the models (not a fallback)."""
    probes = {
        "recs": "/api/v1/recommendations?context=home&k=5&session_id=bench-warmup",
        "search": "/api/v1/search?q=bag",
    }
    ready = dict.fromkeys(probes, False)
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession(base) as client:
        while time.monotonic() < deadline and not all(ready.values()):
            for name, path in probes.items():
                if ready[name]:
                    continue
                async with client.get(path) as response:
                    if response.status == 404:
                        ready[name] = True  # not there yet: nothing to wait for
                    elif response.status == 200:
                        ready[name] = FALLBACK_MARK not in await response.read()
            await asyncio.sleep(0.5)
    return ready


def measure(base: str, fx: Fixture, args: argparse.Namespace, label: str) -> list[Cell]:
    """Warm up, then measure every endpoint at every client count against one server."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    ready = asyncio.run(_models_answer(base, args.model_timeout))
    for name, ok in ready.items():
        if not ok:
            print(f"  {label}: {name} still falls back after {args.model_timeout:.0f}s")
    wanted = [e for e in ENDPOINTS if e in args.endpoints]
    present = {e: asyncio.run(_exists(base, fx, e)) for e in wanted}
    counter = Counter()
    ops = operations(fx, counter)
    cells: list[Cell] = []
    total = len(wanted) * len(args.clients) * args.duration + len(wanted) * args.warmup
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=total)

        async def run(name: str, clients: int, seconds: float, what: str) -> Stats:
            progress.update(task, description=f"{label:8} {name:8} {what}")

            async def tick() -> None:
                for _ in range(int(seconds * 2)):
                    await asyncio.sleep(0.5)
                    progress.advance(task, 0.5)

            stats, _ = await asyncio.gather(drive(base, name, ops[name], clients, seconds), tick())
            return stats

        for name in wanted:
            if not present[name]:
                for clients in args.clients:
                    cells.append(Cell(label, name, clients, Stats(name), missing=True))
                progress.advance(task, args.warmup + len(args.clients) * args.duration)
                continue
            if name == "checkout":
                need = args.carts * (1 + len(args.clients))
                fx.carts = make_carts(fx, need)
            if args.warmup > 0:
                asyncio.run(run(name, 4, args.warmup, "warm-up"))
            for clients in args.clients:
                counter.fallbacks = 0
                since = datetime.now(UTC)
                stats = asyncio.run(run(name, clients, args.duration, f"{clients} clients"))
                if name == "checkout":
                    counter.fallbacks = fallback_orders(fx, since)
                cells.append(Cell(label, name, clients, stats, counter.fallbacks))
                progress.console.print(_line(cells[-1]), soft_wrap=True, highlight=False)
    return cells


def _line(cell: Cell) -> str:
    s = cell.stats
    share = 100 * cell.fallbacks / s.ok if s.ok else 0.0
    return (
        f"  {cell.server:8} {cell.endpoint:8} {cell.clients:3d} clients {s.rps:8.1f} req/s  "
        f"p50 {s.pct(0.5):7.1f} ms  p99 {s.pct(0.99):7.1f} ms  fallback {share:5.1f}%  "
        f"errors {s.errors}" + (f"  first: {s.first_error}" if s.first_error else "")
    )


# ---------------------------------------------------------------------- servers


def run_uvicorn(fx: Fixture, args: argparse.Namespace, log_dir: Path) -> list[Cell]:
    """The same handlers under plain uvicorn (models in-process) in a subprocess."""
    from cartwise.serving.launch import free_port, wait_http

    port = free_port()
    env = {**os.environ, **fx.env}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "cartwise.serving.asgi:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with (log_dir / "uvicorn.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz", timeout=180)
            return measure(base, fx, args, "uvicorn")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_serve(fx: Fixture, args: argparse.Namespace) -> list[Cell]:
    """The full Serve application (ingress + model deployments) on a local Ray."""
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
    # The replicas inherit the settings from the raylet's environment, i.e. this process's.
    os.environ.update(fx.env)
    start_ray(
        num_cpus=os.cpu_count() or 2,
        dashboard=False,
        ingress=args.ingress,
        log_to_driver=False,
        extra_env=private_ports_env(),
    )
    try:
        deploy(AppArgs(), host="127.0.0.1", port=port)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", timeout=300)
        return measure(base, fx, args, "serve")
    finally:
        shutdown()


# ------------------------------------------------------------------------ report


def report(cells: list[Cell], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and the goals; return the rows as data."""
    by_key = {(c.server, c.endpoint, c.clients): c for c in cells}
    print()
    print(
        f"{args.duration:g} s per cell, Serve: {args.ingress} ingress; uvicorn: 1 worker; "
        f"{os.cpu_count()} CPUs; shop {args.shop}"
    )
    header = (
        f"{'endpoint':9}| {'clients':>7} | {'server':8}| {'req/s':>8} | {'p50 ms':>7} | "
        f"{'p99 ms':>7} | {'fallback':>8} | {'errors':>6} | {'serve/uvicorn':>13}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    ratios: list[float] = []
    for endpoint in ENDPOINTS:
        for clients in args.clients:
            for server in ("serve", "uvicorn"):
                cell = by_key.get((server, endpoint, clients))
                if cell is None:
                    continue
                if cell.missing:
                    print(f"{endpoint:9}| {clients:7d} | {server:8}| {'missing (404)':>8}")
                    continue
                s = cell.stats
                other = by_key.get(("uvicorn", endpoint, clients))
                ratio = ""
                if server == "serve" and other and not other.missing and other.stats.rps:
                    value = s.rps / other.stats.rps
                    ratios.append(value)
                    ratio = f"{value:.2f}x"
                share = 100 * cell.fallbacks / s.ok if s.ok else 0.0
                print(
                    f"{endpoint:9}| {clients:7d} | {server:8}| {s.rps:8.1f} | "
                    f"{s.pct(0.5):7.1f} | {s.pct(0.99):7.1f} | {share:7.1f}% | "
                    f"{s.errors:6d} | {ratio:>13}"
                )
                rows.append(
                    {
                        "endpoint": endpoint,
                        "clients": clients,
                        "server": server,
                        "rps": round(s.rps, 1),
                        "p50_ms": round(s.pct(0.5), 2),
                        "p99_ms": round(s.pct(0.99), 2),
                        "fallback_share": round(share / 100, 4),
                        "errors": s.errors,
                        "requests": s.ok,
                    }
                )
    print()
    goals: dict[str, Any] = {}
    for endpoint, limit in GOALS.items():
        # Recommendations at 8 clients (the issue's wording); search and suggest at every load,
        # reported at 8 clients too, where the table has it.
        clients = 8 if 8 in args.clients else max(args.clients)
        cell = by_key.get(("serve", endpoint, clients))
        if cell is None or cell.missing or not cell.stats.ok:
            print(f"goal: {endpoint} p99 < {limit:g} ms @{clients} under Serve: not measured")
            continue
        p99 = cell.stats.pct(0.99)
        met = p99 < limit
        goals[endpoint] = {"clients": clients, "p99_ms": round(p99, 2), "met": met}
        print(
            f"goal: {endpoint} p99 < {limit:g} ms @{clients} under Serve: {p99:.1f} ms "
            f"({'met' if met else 'NOT met'})"
        )
    if ratios:
        mean = statistics.fmean(ratios)
        goals["throughput"] = {"ratio": round(mean, 3), "met": mean >= THROUGHPUT_GOAL}
        print(
            f"goal: Serve throughput >= {THROUGHPUT_GOAL}x uvicorn: mean {mean:.2f}x over "
            f"{len(ratios)} cells ({'met' if mean >= THROUGHPUT_GOAL else 'NOT met'})"
        )
    return {"duration_s": args.duration, "clients": args.clients, "rows": rows, "goals": goals}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the shop, measure both servers and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=_ints, default=[1, 8, 32], help="e.g. 1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up s per endpoint")
    parser.add_argument(
        "--shop",
        type=Path,
        default=ROOT / "var" / "bench" / "shop",
        help="trained shop folder (built there if missing; the bench writes to it)",
    )
    parser.add_argument("--servers", default="uvicorn,serve", help="which servers, in order")
    parser.add_argument(
        "--endpoints",
        type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
        default=list(ENDPOINTS),
        help="subset of recs,search,suggest,checkout",
    )
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy")
    parser.add_argument("--carts", type=int, default=1500, help="carts per checkout cell")
    parser.add_argument(
        "--model-timeout", type=float, default=240.0, help="s to wait for the models to load"
    )
    parser.add_argument("--log-level", default="WARNING", help="the app's log level")
    parser.add_argument(
        "--redis", default=os.environ.get("CARTWISE_BENCH_REDIS", "redis://127.0.0.1:6379/11")
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    unknown = set(args.endpoints) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))}")
    # Ray reads RAY_* when first imported; keep it out of this process until run_serve.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

    shop_dir = args.shop.resolve()
    print(f"shop: {shop_dir} ({'reused' if (shop_dir / 'ready.json').exists() else 'building'})")
    started = time.monotonic()
    shop = build(shop_dir, keep=True)
    print(f"  ready in {time.monotonic() - started:.0f}s (database {shop.database})", flush=True)
    fx = prepare(shop, args)
    print(
        f"  {len(fx.product_ids)} products, {len(fx.customer_tokens)} customers, "
        f"{len(fx.queries)} queries, {len(fx.prefixes)} prefixes",
        flush=True,
    )
    cells: list[Cell] = []
    log_dir = shop_dir / "bench-logs"
    log_dir.mkdir(exist_ok=True)
    cache = redis.Redis.from_url(args.redis)
    try:
        for server in [s.strip() for s in args.servers.split(",") if s.strip()]:
            cache.flushdb()
            print(f"{server}:", flush=True)
            if server == "uvicorn":
                cells += run_uvicorn(fx, args, log_dir)
            elif server == "serve":
                cells += run_serve(fx, args)
            else:
                parser.error(f"unknown server {server!r}")
        data = report(cells, args)
        if args.json:
            args.json.write_text(json.dumps(data, indent=2))
    finally:
        cache.flushdb()
        cache.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
