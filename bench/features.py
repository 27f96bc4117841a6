"""Online feature latency: Feast ``get_online_features`` on SQLite and Redis, against a bare read.

    uv run python bench/features.py                                  # the full Online Retail
    uv run python bench/features.py --iterations 500 --data data/online_retail_sample

In one run it imports the Online Retail data into a fresh SQLite commerce database (in a
temporary folder), exports the facts, builds the feature tables, then applies and materialises
the Feast definitions twice: once with the embedded SQLite online store and once with the real
Redis (``--redis``, default database 13). Both use a Feast project name of their own
(``bench_<hex>``), so the Redis keys cannot collide with anyone else's; they are deleted at the
end (``--keep`` keeps them and the folder).

It then times, for 1 and for 100 random customers per call, ``get_online_features`` with the
``recommend_v1`` service (customer_stats + customer_affinity, 21 features) followed by
``to_dict()``, which is what a caller needs, and, for the same keys, the bare store read under it:
one Redis pipeline of HMGETs (the fields Feast asks for), or the SQLite ``SELECT`` Feast runs per
view, with the keys serialised beforehand. The gap between the two is Feast's own Python work.
``--breakdown`` adds where that time goes on Redis. A benchmark, not a test: the numbers depend
on the machine, and the client shares its cores with Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "online_retail"
SAMPLE = ROOT / "data" / "online_retail_sample"
SERVICE = "recommend_v1"
GOAL_MS = 10.0
console = Console()


@dataclass
class Result:
    """Latencies of one case, in seconds."""

    store: str
    entities: int
    path: str
    samples: list[float]

    def pct(self, q: float) -> float:
        """A latency percentile in milliseconds (nearest rank)."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def mean_ms(self) -> float:
        """The mean latency in milliseconds."""
        return statistics.fmean(self.samples) * 1000


def resolve_data(path: Path) -> Path:
    """The file or folder to import: the shared data if present, else the committed sample."""
    if not path.exists():
        console.print(f"[yellow]{path} not found; using the committed sample instead[/]")
        path = SAMPLE
    from cartwise.commerce.importing.online_retail import resolve_input

    # A dataset folder means its Parquet; the sample folder imports as a by-day folder.
    return resolve_input(path)


def timed(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int) -> list[float]:
    """Call ``fn`` on the first ``warmup`` inputs untimed, then on the rest timed; seconds each."""
    for value in inputs[:warmup]:
        fn(value)
    samples = []
    for value in inputs[warmup:]:
        started = time.perf_counter()
        fn(value)
        samples.append(time.perf_counter() - started)
    return samples


def prepare(data: Path, var_dir: Path, project: str, redis_url: str) -> dict[str, Any]:
    """Import, export and build once; apply and materialise on SQLite and on Redis."""
    from sqlmodel import Session

    from cartwise.commerce.importing.online_retail import import_online_retail
    from cartwise.commerce.migrations_api import upgrade
    from cartwise.features import store
    from cartwise.features.export import export_facts
    from cartwise.features.settings import FeatureSettings
    from cartwise.features.tables import build_feature_tables
    from cartwise.platform.db import make_engine

    common: dict[str, Any] = {
        "env": "development",
        "var_dir": var_dir,
        "database_url": f"sqlite:///{var_dir / 'cartwise.db'}",
        "feast_project": project,
        "feast_registry_url": None,
    }
    stores = {
        "sqlite": FeatureSettings(
            **common, features_dir=var_dir / "features-sqlite", feast_online_store="sqlite"
        ),
        "redis": FeatureSettings(
            **common,
            features_dir=var_dir / "features-redis",
            feast_online_store="redis",
            feast_redis_url=redis_url,
        ),
    }
    first = stores["sqlite"]
    started = time.perf_counter()
    upgrade(first.effective_database_url)
    engine = make_engine(first.effective_database_url, first)
    with Session(engine) as session:
        summary = import_online_retail(session=session, path=data)
    console.print(
        f"imported {summary.rows_read:,} rows: {summary.customers_created:,} customers, "
        f"{summary.orders_created + summary.refunds_created:,} orders "
        f"({time.perf_counter() - started:.1f} s)"
    )
    started = time.perf_counter()
    export_facts(engine, first.exports_dir)
    engine.dispose()
    rows = build_feature_tables(first.exports_dir, first.tables_dir)
    console.print(
        f"exported and built {rows['customer_stats']:,} customer_stats rows "
        f"({time.perf_counter() - started:.1f} s)"
    )
    # Both stores read the same tables: link them rather than build twice.
    redis_dir = stores["redis"].effective_features_dir
    redis_dir.mkdir(parents=True)
    for name in ("exports", "tables"):
        (redis_dir / name).symlink_to(first.effective_features_dir / name)
    for kind, settings in stores.items():
        started = time.perf_counter()
        # Feast prints a progress line per view while materialising; keep the report readable.
        with contextlib.redirect_stdout(io.StringIO()):
            store.apply(settings)
            done = store.materialize(settings)
        # done.rows counts the table rows in the window; the store keeps the newest per key.
        console.print(
            f"{kind}: applied and materialised {len(done.rows)} views "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return {"stores": stores}


def customer_ids(tables: Path) -> list[int]:
    """Every customer with a row in the online store."""
    import pyarrow.parquet as pq

    column = pq.read_table(tables / "customer_stats.parquet", columns=["customer_id"]).column(0)
    return sorted({int(v) for v in column.to_pylist()})


def feast_reader(fs: Any) -> Callable[[Sequence[int]], dict[str, Any]]:
    """What a caller does: the service (looked up once) for the ids, as a dict."""
    service = fs.get_feature_service(SERVICE)

    def read(ids: Sequence[int]) -> dict[str, Any]:
        rows = [{"customer_id": i} for i in ids]
        return fs.get_online_features(features=service, entity_rows=rows).to_dict()

    return read


def _entity_key(customer_id: int) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer_id)])


def _views(fs: Any) -> list[tuple[Any, list[str]]]:
    """The service's feature views with the feature names it asks of each."""
    service = fs.get_feature_service(SERVICE)
    out = []
    for projection in service.feature_view_projections:
        view = fs.get_feature_view(projection.name)
        out.append((view, [f.name for f in projection.features]))
    return out


def raw_redis_reader(fs: Any, redis_url: str) -> Callable[[Sequence[bytes]], Any]:
    """One pipeline of HMGETs, the fields Feast reads, for pre-serialised keys."""
    from feast.infra.online_stores.helpers import _mmh3

    fields = []
    for view, names in _views(fs):
        fields.append([_mmh3(f"{view.name}:{n}") for n in names] + [f"_ts:{view.name}"])
    client = redis.Redis.from_url(redis_url)

    def read(keys: Sequence[bytes]) -> Any:
        with client.pipeline(transaction=False) as pipe:
            for view_fields in fields:
                for key in keys:
                    pipe.hmget(key, view_fields)
            return pipe.execute()

    return read


def raw_sqlite_reader(fs: Any, db_path: Path) -> Callable[[Sequence[bytes]], Any]:
    """The SELECT Feast runs per feature view, for pre-serialised keys."""
    from feast.infra.online_stores.helpers import compute_table_id

    tables = [compute_table_id(fs.project, view, False) for view, _ in _views(fs)]
    conn = sqlite3.connect(db_path, check_same_thread=False)

    def read(keys: Sequence[bytes]) -> Any:
        marks = ",".join("?" * len(keys))
        return [
            conn.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '  # noqa: S608
                f"WHERE entity_key IN ({marks}) ORDER BY entity_key",
                list(keys),
            ).fetchall()
            for table in tables
        ]

    return read


def breakdown(fs: Any, ids: Sequence[int], warmup: int) -> list[Result]:
    """Where Feast's time goes on Redis, for 1 entity: the layers under the public call."""
    from feast import utils
    from feast.infra.key_encoding_utils import serialize_entity_key

    service = fs.get_feature_service(SERVICE)
    provider = fs._get_provider()
    config = fs.config
    views = _views(fs)
    refs = [f"{view.name}:{name}" for view, names in views for name in names]
    project = fs.project.encode()

    def prepare_only(customer_id: int) -> Any:
        # Registry lookups and request bookkeeping, before any store is read.
        return utils._prepare_entities_to_read_from_online_store(
            registry=fs.registry,
            project=fs.project,
            features=service,
            entity_values={"customer_id": [customer_id]},
            full_feature_names=False,
            native_entity_values=True,
        )

    cases: dict[str, Callable[[int], Any]] = {
        "get_online_features + to_dict": lambda c: fs.get_online_features(
            features=service, entity_rows=[{"customer_id": c}]
        ).to_dict(),
        "get_online_features": lambda c: fs.get_online_features(
            features=service, entity_rows=[{"customer_id": c}]
        ),
        "get_online_features, feature refs": lambda c: fs.get_online_features(
            features=refs, entity_rows=[{"customer_id": c}]
        ),
        "  prepare (registry lookups)": prepare_only,
        "  entity key proto + serialise": lambda c: (
            serialize_entity_key(_entity_key(c), config.entity_key_serialization_version) + project
        ),
        # A fresh list each call: the Redis store appends its timestamp field to the one it gets.
        "  provider.online_read x2 views": lambda c: [
            provider.online_read(config, view, [_entity_key(c)], list(names))
            for view, names in views
        ],
    }
    inputs = [[i] for i in ids]
    return [
        Result("redis", 1, name, timed(lambda batch, f=fn: f(batch[0]), inputs, warmup))
        for name, fn in cases.items()
    ]


def measure(
    stores: dict[str, Any], redis_url: str, iterations: int, warmup: int, seed: int
) -> tuple[list[Result], dict[str, Any]]:
    """Time Feast and the bare read, per store and batch size, on the same random ids."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    from cartwise.features import store

    rng = random.Random(seed)
    results: list[Result] = []
    handles: dict[str, Any] = {}
    ids = customer_ids(stores["sqlite"].tables_dir)
    for kind, settings in stores.items():
        fs = store.get_store(settings)
        handles[kind] = fs
        project = fs.project.encode()
        if kind == "redis":
            raw = raw_redis_reader(fs, settings.online_redis_url)
        else:
            raw = raw_sqlite_reader(fs, settings.effective_features_dir / "online.db")
        feast_read = feast_reader(fs)
        for n in (1, 100):
            batches = [rng.sample(ids, n) for _ in range(iterations + warmup)]
            keys = [
                [
                    serialize_entity_key(_entity_key(i), 3) + (project if kind == "redis" else b"")
                    for i in batch
                ]
                for batch in batches
            ]
            # The two paths must see the same data before their speeds mean anything.
            first = feast_read(batches[0])
            assert first["customer_id"] == batches[0], first["customer_id"]
            assert all(v is not None for v in first["orders_lifetime"]), first
            assert all(raw(keys[0])), f"{kind}: the bare read found nothing"
            results.append(Result(kind, n, "feast", timed(feast_read, batches, warmup)))
            results.append(Result(kind, n, "bare", timed(raw, keys, warmup)))
        handles[f"{kind}_ids"] = [rng.choice(ids) for _ in range(iterations + warmup)]
    return results, handles


def report(results: list[Result], extra: list[Result]) -> None:
    """The side-by-side table, then the Redis goal."""
    table = Table(title=f"get_online_features({SERVICE}) vs the bare store read, ms")
    for column in ("store", "entities", "Feast p50", "Feast p99", "bare p50", "bare p99"):
        table.add_column(column, justify="right" if column != "store" else "left")
    table.add_column("Feast / bare (p50)", justify="right")
    by = {(r.store, r.entities, r.path): r for r in results}
    for kind in ("sqlite", "redis"):
        for n in (1, 100):
            feast, bare = by[(kind, n, "feast")], by[(kind, n, "bare")]
            table.add_row(
                kind,
                str(n),
                f"{feast.pct(0.5):.2f}",
                f"{feast.pct(0.99):.2f}",
                f"{bare.pct(0.5):.3f}",
                f"{bare.pct(0.99):.3f}",
                f"{feast.pct(0.5) / bare.pct(0.5):.0f}x",
            )
    console.print(table)
    if extra:
        detail = Table(title="Redis, 1 entity: the layers under get_online_features, ms")
        for column in ("path", "p50", "p99", "mean"):
            detail.add_column(column, justify="left" if column == "path" else "right")
        for r in extra:
            detail.add_row(r.path, f"{r.pct(0.5):.2f}", f"{r.pct(0.99):.2f}", f"{r.mean_ms:.2f}")
        console.print(detail)
    p99 = by[("redis", 1, "feast")].pct(0.99)
    verdict = "met" if p99 < GOAL_MS else "NOT met"
    console.print(f"goal: Redis 1-entity p99 {p99:.2f} ms < {GOAL_MS:.0f} ms: {verdict}")


def cleanup_redis(redis_url: str, project: str) -> int:
    """Delete this run's keys: Feast suffixes every entity key with the project name."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    client.close()
    return deleted


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, prepare both stores, time the reads and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED,
        help="Online Retail: the shared folder (default), a .csv[.gz], .parquet or by-day folder",
    )
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--redis", default=os.environ.get("CARTWISE_BENCH_REDIS", "redis://127.0.0.1:6379/13")
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the layers under the call on Redis"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and the Redis keys")
    args = parser.parse_args(argv)

    data = resolve_data(args.data)
    project = f"bench_{uuid.uuid4().hex[:8]}"
    var_dir = Path(tempfile.mkdtemp(prefix="cartwise-bench-features-"))
    console.print(f"data {data}\nfolder {var_dir}, Feast project {project}, Redis {args.redis}")
    try:
        stores = prepare(data, var_dir, project, args.redis)["stores"]
        results, handles = measure(stores, args.redis, args.iterations, args.warmup, args.seed)
        extra = (
            breakdown(handles["redis"], handles["redis_ids"], args.warmup) if args.breakdown else []
        )
        report(results, extra)
    finally:
        if not args.keep:
            deleted = cleanup_redis(args.redis, project)
            console.print(f"deleted {deleted:,} Redis keys of {project}")
            shutil.rmtree(var_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
