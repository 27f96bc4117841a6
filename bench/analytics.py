"""Staff business analytics on the full Online Retail import: SQL (PostgreSQL) against pandas.

    uv run python bench/analytics.py                       # ../shared/datasets, 5 repeats
    uv run python bench/analytics.py --repeat 10 --data /path/to/datasets
    uv run python bench/analytics.py --prepare-only        # just import (cached)

The first run imports the whole UCI Online Retail file (541,909 lines) into a PostgreSQL
database of its own, ``--database`` (default ``cartwise_bench_analytics``), with
:func:`cartwise.commerce.importing.online_retail.import_online_retail`, the code behind
``cartwise data import-online-retail``. When the import finishes, the database gets a comment
naming the file and its size; later runs see it and reuse the database (``--reimport`` drops
it and starts again). The import commits in chunks, so an interrupted one resumes.

Then it times each service of :mod:`cartwise.commerce.events.business` (sales, products,
funnel, customers, cohorts) over the whole data range and over its last 30 days (the API's
default window): the median of ``--repeat`` runs after one warm-up. Beside it, a pandas
baseline computes the same numbers from the same rows, read from the same database in the
same run (the read is timed separately: pandas needs it before any computation). It checks
that both agree to the penny and prints the table; the exit status is 1 if any differ.

Conversion and the funnel need shopper events, which the Online Retail data does not have, so
the bench writes a synthetic event log once (views, add-to-carts and purchases for a sample
of the invoices, and browsing sessions; fixed seed).

A benchmark, not a test: the numbers depend on the machine, which is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets"
PG_ADMIN = os.environ.get(
    "CARTWISE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MARKER = "cartwise-bench online-retail import v1"
console = Console()


def _url(admin: str, name: str) -> str:
    base = admin.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)


def _resolve(data: Path) -> Path:
    from cartwise.commerce.importing.online_retail import resolve_input

    folder = data / "online_retail" if (data / "online_retail").is_dir() else data
    return resolve_input(folder)


def prepare(data: Path, admin: str, name: str, reimport: bool) -> str:
    """Create and fill the bench database once; later calls reuse it (by name and marker)."""
    from sqlmodel import Session

    from cartwise.commerce.importing.online_retail import import_online_retail
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    source = _resolve(data)
    marker = f"{MARKER}: {source.name} {source.stat().st_size} bytes"
    with psycopg.connect(admin, autocommit=True) as conn:
        if reimport:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is None:
            conn.execute(f'CREATE DATABASE "{name}"')
        elif row[0] == marker:
            console.print(f"reusing database {name} ({row[0]})")
            url = _url(admin, name)
            engine = make_engine(url)
            metadata.create_all(engine)  # tables added since the import (idempotent)
            engine.dispose()
            return url
    url = _url(admin, name)
    engine = make_engine(url)
    metadata.create_all(engine)
    started = time.perf_counter()
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress, Session(engine) as session:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        summary = import_online_retail(session=session, path=source, progress=report)
    engine.dispose()
    console.print(
        f"imported {summary.rows_read:,} rows from {source}: {summary.customers_created:,} "
        f"customers, {summary.orders_created:,} orders, {summary.refunds_created:,} refunds, "
        f"{summary.lines_created:,} lines ({time.perf_counter() - started:.0f} s)"
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
    return url


BENCH_SESSIONS = "bench-"


def ensure_events(url: str, seed: int, order_sessions: int, browse_sessions: int) -> int:
    """A synthetic shopper event log over the imported orders, written once (fixed seed)."""
    import numpy as np
    from sqlalchemy import func, insert, select, text
    from sqlmodel import Session, col

    from cartwise.commerce.events.models import ShopperEvent
    from cartwise.commerce.orders.models import Order, OrderLine
    from cartwise.platform.db import make_engine

    engine = make_engine(url)
    table = ShopperEvent.__table__  # type: ignore[attr-defined]
    with Session(engine) as session:
        have = session.execute(
            select(func.count())
            .select_from(table)
            .where(table.c.session_id.like(f"{BENCH_SESSIONS}%"))
        ).scalar_one()
        if have:
            console.print(f"reusing {have:,} synthetic shopper events")
            engine.dispose()
            return int(have)
        rng = np.random.default_rng(seed)
        orders = session.execute(
            select(col(Order.id), col(Order.user_id), col(Order.created_at)).where(
                col(Order.status) == "delivered"
            )
        ).all()
        picked = [orders[i] for i in rng.choice(len(orders), order_sessions, replace=False)]
        lines: dict[str, list[int]] = {}
        for oid, pid in session.execute(
            select(col(OrderLine.order_id), col(OrderLine.product_id)).where(
                col(OrderLine.order_id).in_([o[0] for o in picked])
            )
        ):
            lines.setdefault(oid, []).append(int(pid))
        products = [int(p) for (p,) in session.execute(text("SELECT id FROM product"))]
        start = min(o[2] for o in orders)
        span = (max(o[2] for o in orders) - start).total_seconds()
        rows: list[dict[str, Any]] = []

        def event(kind: str, sid: str, user: int | None, pid: int, at: datetime) -> None:
            rows.append(
                {
                    "event_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | len(rows))),
                    "type": kind,
                    "session_id": sid,
                    "user_id": user,
                    "product_id": pid,
                    "properties": {},
                    "client_ts": at,
                    "received_at": at,
                }
            )

        for i, (oid, user, at) in enumerate(picked):
            sid = f"{BENCH_SESSIONS}o{i}"
            t = at - timedelta(minutes=30)
            for pid in lines.get(oid, []):
                for _ in range(int(rng.integers(0, 3))):  # some lines were never viewed
                    event("view", sid, user, pid, t)
                if rng.random() < 0.9:
                    event("add_to_cart", sid, user, pid, t + timedelta(minutes=5))
                event("purchase", sid, user, pid, at)
        for i in range(browse_sessions):
            sid = f"{BENCH_SESSIONS}b{i}"
            at = start + timedelta(seconds=float(rng.random() * span))
            for pid in rng.choice(products, int(rng.integers(1, 6))):
                event("view", sid, None, int(pid), at)
                if rng.random() < 0.1:
                    event("add_to_cart", sid, None, int(pid), at + timedelta(minutes=1))
        for i in range(0, len(rows), 20_000):
            session.execute(insert(table), rows[i : i + 20_000])
        session.commit()
        session.execute(text("ANALYZE shopper_event"))
        session.commit()
    engine.dispose()
    console.print(f"wrote {len(rows):,} synthetic shopper events")
    return len(rows)


# ------------------------------------------------------------------ pandas baseline


def read_frames(url: str) -> dict[str, Any]:
    """The rows both sides use, read from the same database with pandas."""
    import pandas as pd
    from sqlalchemy import create_engine

    from cartwise.platform.db import normalize_url

    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        frames = {
            "orders": pd.read_sql(
                "SELECT id, user_id, email, status, currency, country, created_at, "
                'round(refunded_amount * 100)::bigint AS refunded_c FROM "order"',
                conn,
            ),
            "lines": pd.read_sql(
                "SELECT order_id, product_id, product_name, quantity, "
                "round(line_total * 100)::bigint AS total_c FROM order_line",
                conn,
            ),
            "products": pd.read_sql(
                "SELECT p.id AS product_id, p.category_id, c.name AS category FROM product p "
                "LEFT JOIN category c ON c.id = p.category_id",
                conn,
            ),
            "events": pd.read_sql(
                "SELECT session_id, user_id, type, product_id, received_at FROM shopper_event "
                "WHERE type IN ('view', 'add_to_cart', 'purchase')",
                conn,
            ),
        }
    engine.dispose()
    frames["orders"]["created_at"] = pd.to_datetime(frames["orders"]["created_at"], utc=True)
    frames["events"]["received_at"] = pd.to_datetime(frames["events"]["received_at"], utc=True)
    return frames


SALE = ["paid", "fulfilled", "shipped", "delivered"]


def _money(cents: Any) -> Decimal:
    return Decimal(int(cents)).scaleb(-2).quantize(Decimal("0.01"))


def pd_sales(f: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """Totals, by day, by country and by category, as the SQL service defines them."""
    o = f["orders"]
    o = o[o["status"].isin(SALE) & (o["created_at"] >= start) & (o["created_at"] < end)]
    lines = f["lines"][f["lines"]["order_id"].isin(o["id"])]
    per_order = lines.groupby("order_id").agg(rev=("total_c", "sum"), u=("quantity", "sum"))
    po = o.set_index("id").join(per_order, how="inner")
    po["day"] = po["created_at"].dt.strftime("%Y-%m-%d")
    po["country"] = po["country"].fillna("")
    agg = {"rev": ("rev", "sum"), "n": ("rev", "size"), "u": ("u", "sum")}
    per_cur = po.groupby("currency").agg(**agg, refunded=("refunded_c", "sum"))
    day = po.groupby(["day", "currency"]).agg(**agg)
    country = po.groupby(["country", "currency"]).agg(**agg)
    cats = f["products"].set_index("product_id")["category_id"]
    lc = lines.assign(cat=lines["product_id"].map(cats).fillna(-1).astype("int64"))
    lc = lc.join(o.set_index("id")["currency"], on="order_id")
    per_oc = lc.groupby(["order_id", "cat", "currency"]).agg(
        rev=("total_c", "sum"), u=("quantity", "sum")
    )
    cat = per_oc.groupby(level=["cat", "currency"]).agg(**agg)
    return {
        "totals": {
            cur: (_money(r.rev), int(r.n), int(r.u), _money(r.refunded))
            for cur, r in per_cur.iterrows()
        },
        "by_day": {k: (_money(r.rev), int(r.n), int(r.u)) for k, r in day.iterrows()},
        "by_country": {k: (_money(r.rev), int(r.n), int(r.u)) for k, r in country.iterrows()},
        "by_category": {k: (_money(r.rev), int(r.n), int(r.u)) for k, r in cat.iterrows()},
    }


def sql_sales(session: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The SQL service's answer, shaped like :func:`pd_sales`."""
    from cartwise.commerce.events import business

    s = business.sales(session=session, start=start, end=end)
    return {
        "totals": {t.currency: (t.revenue, t.orders, t.units, t.refunded) for t in s.totals},
        "by_day": {
            (d.day.isoformat(), d.currency): (d.revenue, d.orders, d.units) for d in s.by_day
        },
        "by_country": {
            (c.country or "", c.currency): (c.revenue, c.orders, c.units) for c in s.by_country
        },
        "by_category": {
            (c.category_id if c.category_id is not None else -1, c.currency): (
                c.revenue,
                c.orders,
                c.units,
            )
            for c in s.by_category
        },
    }


def pd_products(
    f: dict[str, Any], start: datetime, end: datetime, limit: int = 20
) -> dict[str, Any]:
    """Top sellers by units and view → purchase conversion."""
    o = f["orders"]
    o = o[o["status"].isin(SALE) & (o["created_at"] >= start) & (o["created_at"] < end)]
    m = f["lines"].merge(o, left_on="order_id", right_on="id")
    top = (
        m.groupby(["product_id", "currency"])
        .agg(u=("quantity", "sum"), rev=("total_c", "sum"), n=("order_id", "size"))
        .reset_index()
        .sort_values(["u", "rev", "product_id", "currency"], ascending=[False, False, True, True])
        .head(limit)
    )
    e = f["events"]
    e = e[e["type"].isin(["view", "purchase"]) & e["product_id"].notna()]
    e = e[(e["received_at"] >= start) & (e["received_at"] < end)]
    e = e.assign(
        view=(e["type"] == "view").astype("int64"), buy=(e["type"] == "purchase").astype("int64")
    )
    ps = e.groupby(["product_id", "session_id"]).agg(
        views=("view", "sum"), viewed=("view", "max"), bought=("buy", "max")
    )
    ps["conv"] = ps["viewed"] * ps["bought"]
    pp = (
        ps.groupby(level="product_id")
        .agg(
            views=("views", "sum"),
            viewing=("viewed", "sum"),
            buying=("bought", "sum"),
            conv=("conv", "sum"),
        )
        .reset_index()
    )
    pp = pp.sort_values(["viewing", "product_id"], ascending=[False, True]).head(limit)
    return {
        "top": [
            (int(r.product_id), r.currency, int(r.u), _money(r.rev), int(r.n))
            for r in top.itertuples()
        ],
        "conversion": [
            (int(r.product_id), int(r.views), int(r.viewing), int(r.buying), int(r.conv))
            for r in pp.itertuples()
        ],
    }


def sql_products(session: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The SQL service's answer, shaped like :func:`pd_products`."""
    from cartwise.commerce.events import business

    p = business.products(session=session, start=start, end=end)
    return {
        "top": [
            (t.product_id, t.currency, t.units, t.revenue, t.order_lines) for t in p.top_sellers
        ],
        "conversion": [
            (c.product_id, c.views, c.viewing_sessions, c.purchasing_sessions, c.converted_sessions)
            for c in p.conversion
        ],
    }


def pd_funnel(f: dict[str, Any], start: datetime, end: datetime) -> list[tuple[int, int]]:
    """Sessions and users reaching view, view + cart, view + cart + purchase."""
    e = f["events"]
    e = e[(e["received_at"] >= start) & (e["received_at"] < end)]
    flags = (
        e.assign(
            s0=(e["type"] == "view").astype("int64"),
            s1=(e["type"] == "add_to_cart").astype("int64"),
            s2=(e["type"] == "purchase").astype("int64"),
        )
        .groupby("session_id")
        .agg(user=("user_id", "max"), s0=("s0", "max"), s1=("s1", "max"), s2=("s2", "max"))
    )
    out = []
    reached = flags["s0"] == 1
    for step in ("s0", "s1", "s2"):
        reached = reached & (flags[step] == 1)
        out.append((int(reached.sum()), int(flags.loc[reached, "user"].nunique())))
    return out


def sql_funnel(session: Any, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """The SQL service's answer, shaped like :func:`pd_funnel`."""
    from cartwise.commerce.events import business

    return [
        (s.sessions, s.users) for s in business.funnel(session=session, start=start, end=end).steps
    ]


def _keys(o: Any) -> Any:
    return (
        o["user_id"]
        .map(lambda u: None if u != u else f"u:{int(u)}")
        .fillna("e:" + o["email"].str.lower())
    )


def pd_customers(f: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """New vs returning customers, per currency, with orders and revenue."""
    o = f["orders"]
    sold = o[o["status"].isin(SALE) & (o["created_at"] < end)].assign(key=lambda x: _keys(x))
    first = sold.groupby("key")["created_at"].min()
    inr = sold[sold["created_at"] >= start]
    value = f["lines"].groupby("order_id")["total_c"].sum()
    inr = inr.assign(
        value=inr["id"].map(value),
        segment=inr["key"].map(first).ge(start).map({True: "new", False: "returning"}),
    )
    seg = inr.groupby(["segment", "currency"]).agg(
        c=("key", "nunique"), n=("id", "size"), v=("value", "sum")
    )
    new = inr.loc[inr["segment"] == "new", "key"].nunique()
    return {
        "counts": (int(inr["key"].nunique()), int(new)),
        "segments": {k: (int(r.c), int(r.n), _money(r.v)) for k, r in seg.iterrows()},
    }


def sql_customers(session: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The SQL service's answer, shaped like :func:`pd_customers`."""
    from cartwise.commerce.events import business

    c = business.customers(session=session, start=start, end=end)
    return {
        "counts": (c.customers, c.new_customers),
        "segments": {
            (s.segment, s.currency): (s.customers, s.orders, s.revenue) for s in c.segments
        },
    }


def pd_cohorts(f: dict[str, Any], start: datetime, end: datetime) -> dict[Any, Any]:
    """Acquisition cohorts: size, active customers, orders and revenue per month offset."""
    o = f["orders"]
    sold = o[o["status"].isin(SALE) & (o["created_at"] < end)].assign(key=lambda x: _keys(x))
    first = sold.groupby("key")["created_at"].min()
    cohort_of = first.dt.strftime("%Y-%m")
    sizes = cohort_of.value_counts()
    inr = sold[sold["created_at"] >= start]
    value = f["lines"].groupby("order_id")["total_c"].sum()
    f_at = inr["key"].map(first)
    inr = inr.assign(
        value=inr["id"].map(value),
        cohort=inr["key"].map(cohort_of),
        offset=(inr["created_at"].dt.year * 12 + inr["created_at"].dt.month)
        - (f_at.dt.year * 12 + f_at.dt.month),
    )
    g = inr.groupby(["cohort", "offset", "currency"]).agg(
        c=("key", "nunique"), n=("id", "size"), v=("value", "sum")
    )
    return {k: (int(sizes[k[0]]), int(r.c), int(r.n), _money(r.v)) for k, r in g.iterrows()}


def sql_cohorts(session: Any, start: datetime, end: datetime) -> dict[Any, Any]:
    """The SQL service's answer, shaped like :func:`pd_cohorts`."""
    from cartwise.commerce.events import business

    return {
        (c.cohort, c.month_offset, c.currency): (c.cohort_size, c.customers, c.orders, c.revenue)
        for c in business.cohorts(session=session, start=start, end=end)
    }


CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sales": (sql_sales, pd_sales),
    "products": (sql_products, pd_products),
    "funnel": (sql_funnel, pd_funnel),
    "customers": (sql_customers, pd_customers),
    "cohorts": (sql_cohorts, pd_cohorts),
}


def _median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    result = fn()  # warm-up (and the answer to compare)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, import once, time SQL and pandas side by side, check they agree."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="datasets folder or file")
    parser.add_argument("--database", default="cartwise_bench_analytics")
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--order-sessions", type=int, default=3000)
    parser.add_argument("--browse-sessions", type=int, default=20000)
    parser.add_argument("--reimport", action="store_true")
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args(argv)
    url = prepare(args.data, args.pg_admin, args.database, args.reimport)
    ensure_events(url, args.seed, args.order_sessions, args.browse_sessions)
    if args.prepare_only:
        return 0

    from sqlalchemy import text
    from sqlmodel import Session

    from cartwise.platform.db import make_engine

    engine = make_engine(url)
    with Session(engine) as session:
        session.execute(text("ANALYZE"))
        lo, hi = session.execute(text('SELECT min(created_at), max(created_at) FROM "order"')).one()
        counts = session.execute(
            text(
                'SELECT (SELECT count(*) FROM "order"), (SELECT count(*) FROM order_line), '
                "(SELECT count(*) FROM shopper_event)"
            )
        ).one()
    start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
    end = datetime(hi.year, hi.month, hi.day, tzinfo=UTC) + timedelta(days=1)
    console.print(
        f"{counts[0]:,} orders, {counts[1]:,} order lines, {counts[2]:,} shopper events; "
        f"range {start.date()} .. {end.date()} (whole data), median of {args.repeat}"
    )
    started = time.perf_counter()
    frames = read_frames(url)
    read_ms = (time.perf_counter() - started) * 1000

    table = Table(title="staff analytics: PostgreSQL (SQL service) vs pandas (same rows, same run)")
    table.add_column("query")
    table.add_column("range")
    table.add_column("SQL ms", justify="right")
    table.add_column("pandas ms", justify="right")
    table.add_column("pandas / SQL", justify="right")
    table.add_column("agree")
    failures = 0
    # The whole year, and the API's default window (the last 30 days of the data).
    ranges = [("whole data", start, end), ("last 30 days", end - timedelta(days=30), end)]
    with Session(engine) as session:
        for label, lo_at, hi_at in ranges:
            for name, (sql_fn, pd_fn) in CASES.items():
                sql_ms, sql_answer = _median_ms(partial(sql_fn, session, lo_at, hi_at), args.repeat)
                pd_ms, pd_answer = _median_ms(partial(pd_fn, frames, lo_at, hi_at), args.repeat)
                agree = sql_answer == pd_answer
                failures += not agree
                if not agree:
                    console.print(f"[red]{name} ({label}) differs[/]")
                    console.print(
                        f"SQL:    {str(sql_answer)[:800]}\npandas: {str(pd_answer)[:800]}"
                    )
                table.add_row(
                    name,
                    label,
                    f"{sql_ms:,.0f}",
                    f"{pd_ms:,.0f}",
                    f"{pd_ms / sql_ms:.2f}x",
                    "yes" if agree else "NO",
                )
    table.add_row("(pandas read of the rows)", "", "", f"{read_ms:,.0f}", "", "")
    engine.dispose()
    console.print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
