"""Synthetic shop benchmark: ``cartwise data synth`` to Parquet (and optionally a database).

    uv run python bench/synth.py                                   # ~1M events to Parquet
    uv run python bench/synth.py --customers 2000 --days 120 --db sqlite --db postgresql

It generates a shop (default 5,000 customers x 120 days x 1,000 products, about a million
shopper events) into a temporary folder in the facts layout, prints the time of each stage
and the events per second, and checks the output (row counts, schemas, a non-negative stock
ledger). With ``--db sqlite`` and/or ``--db postgresql`` it also writes the same run into a
fresh database of its own (a temporary SQLite file; a PostgreSQL database created and dropped
on ``--pg-admin``), twice, to time the first run and the idempotent second one. A benchmark,
not a test: the machine's other work shows in the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

PG_ADMIN = os.environ.get("CARTWISE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _stages() -> tuple[dict[str, float], Any]:
    """Record when each progress stage first reports."""
    seen: dict[str, float] = {}

    def report(stage: str, done: int, total: int) -> None:
        seen.setdefault(stage, time.perf_counter())

    return seen, report


def parquet_run(config: Any, folder: Path) -> dict[str, Any]:
    """Generate and write to Parquet; returns the timings and counts."""
    from cartwise.features.facts import FACTS
    from cartwise.features.synth import generate
    from cartwise.features.synth.write_parquet import write_parquet

    started = time.perf_counter()
    run = generate(config)
    generated = time.perf_counter()
    rows = write_parquet(run.shop, folder)
    written = time.perf_counter()
    # Check what was written, outside the timing.
    for name, schema in FACTS.items():
        files = sorted((folder / name).glob("date=*/part-0.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == rows[name], name
        assert pq.read_schema(files[0]).equals(schema), name
    assert (run.shop.stock_movements["on_hand_after"] >= 0).all()
    return {
        "events": len(run.shop.events),
        "orders": len(run.shop.orders),
        "sessions": run.shop.sessions,
        "generate_s": generated - started,
        "write_s": written - generated,
        "total_s": written - started,
        "files": sum(1 for _ in folder.rglob("*.parquet")),
        "bytes": sum(p.stat().st_size for p in folder.rglob("*.parquet")),
    }


def db_run(kind: str, config: Any, folder: Path) -> list[dict[str, Any]]:
    """Write the run into a fresh database twice; returns the timings of both runs."""
    from sqlmodel import Session

    from cartwise.commerce.tables import metadata
    from cartwise.features.synth import synth
    from cartwise.platform.db import dispose_engines, make_engine

    dbname = f"cartwise_synth_bench_{uuid.uuid4().hex[:8]}"
    if kind == "postgresql":
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        url += f"/{dbname}"
    else:
        url = f"sqlite:///{folder / f'{dbname}.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    results = []
    try:
        for attempt in (1, 2):
            seen, report = _stages()
            started = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                result = synth(config, to="db", out=folder / kind, session=session, progress=report)
            total = time.perf_counter() - started
            db_started = seen.get("database: catalog", started)
            events_started = seen.get("database: events", time.perf_counter())
            results.append(
                {
                    "db": kind,
                    "run": attempt,
                    "total_s": total,
                    "generate_s": db_started - started,
                    "write_s": started + total - db_started,
                    "events_s": started + total - events_started,
                    "inserted_events": result.written["events"],
                    "inserted_orders": result.written["orders"],
                }
            )
    finally:
        engine.dispose()
        dispose_engines()
        if kind == "postgresql":
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", default="2025-09-01", help="first day (fixed: comparable runs)")
    parser.add_argument(
        "--db", action="append", choices=["sqlite", "postgresql"], default=[], help="also a DB"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("CARTWISE_LOG_LEVEL", "WARNING")
    from cartwise.features.synth import SynthConfig

    config = SynthConfig(
        args.customers, args.days, args.seed, date.fromisoformat(args.start), args.products
    )
    print(
        f"synth: {args.customers:,} customers x {args.days} days x {args.products:,} products, "
        f"seed {args.seed}, {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="cartwise-synth-") as tmp:
        folder = Path(tmp)
        r = parquet_run(config, folder / "parquet")
        print(
            f"parquet: {r['events']:,} events, {r['sessions']:,} sessions, {r['orders']:,} orders; "
            f"generate {r['generate_s']:.1f} s + write {r['write_s']:.1f} s = {r['total_s']:.1f} s "
            f"-> {r['events'] / r['total_s']:,.0f} events/s "
            f"({r['files']} files, {r['bytes'] / 1e6:.0f} MB)"
        )
        for kind in args.db:
            for d in db_run(kind, config, folder):
                print(
                    f"{d['db']} run {d['run']}: {d['total_s']:.1f} s "
                    f"(generate {d['generate_s']:.1f} s, write {d['write_s']:.1f} s "
                    f"of which events {d['events_s']:.1f} s); "
                    f"inserted {d['inserted_events']:,} events, {d['inserted_orders']:,} orders"
                    + (
                        f" -> {d['inserted_events'] / d['events_s']:,.0f} events/s"
                        if d["inserted_events"]
                        else ""
                    )
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
