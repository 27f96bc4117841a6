"""Write a run straight to the commerce facts layout of :mod:`cartwise.features.facts`.

Facts go to ``<out>/<table>/date=YYYY-MM-DD/part-0.parquet`` by the UTC day of their
``DATE_COLUMN``, dimensions to ``<out>/<name>.parquet``, each with exactly the schema of
``FACTS`` / ``DIMENSIONS``. Partitions of a previous run under the same folder are removed
first, so the folder holds one run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cartwise.features.facts import DATE_COLUMN, DIMENSIONS, FACTS
from cartwise.features.synth.outcomes import COLUMNS as CHARGEBACK_COLUMNS
from cartwise.features.synth.shop import Shop
from cartwise.features.synth.world import DAY_US

TS = pa.timestamp("us", tz="UTC")
COMPRESSION = "zstd"  # as the exporter writes
Progress = Callable[[str, int, int], None]


def _ts(us: pd.Series | np.ndarray) -> pa.Array:
    values = np.asarray(us, dtype=np.int64)
    return pa.array(values, pa.int64(), mask=values < 0).cast(TS)


def _int(values: pd.Series | np.ndarray, nullable: bool = False) -> pa.Array:
    array = np.asarray(values, dtype=np.int64)
    return pa.array(array, pa.int64(), mask=array < 0 if nullable else None)


def _money(cents: pd.Series | np.ndarray) -> pa.Array:
    return pa.array(np.asarray(cents, dtype=np.int64) / 100.0, pa.float64())


def _str(values: pd.Series | np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


def _table(name: str, columns: dict[str, pa.Array], schemas: dict[str, pa.Schema]) -> pa.Table:
    schema = schemas[name]
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def fact_tables(shop: Shop) -> dict[str, pa.Table]:
    """The fact tables of a run, with the exact ``FACTS`` schemas.

    ``order_outcomes`` holds the run's chargebacks (a generated shop has no review verdicts:
    no order is held for review).
    """
    o, lines, ev, pay, mv, po, cb = (
        shop.orders,
        shop.order_lines,
        shop.events,
        shop.payments,
        shop.stock_movements,
        shop.purchase_orders,
        shop.chargebacks,
    )
    if cb.empty:
        cb = pd.DataFrame({name: np.zeros(0, dtype=object) for name in CHARGEBACK_COLUMNS})
    n_cb = len(cb)
    return {
        "orders": _table(
            "orders",
            {
                "order_id": _str(o["order_id"]),
                "user_id": _int(o["user_id"], nullable=True),
                "status": _str(o["status"]),
                "currency": _str(o["currency"]),
                "subtotal": _money(o["subtotal"]),
                "discount": _money(o["discount"]),
                "shipping": _money(o["shipping"]),
                "total": _money(o["total"]),
                "refunded_amount": _money(o["refunded_amount"]),
                "country": _str(o["country"]),
                "created_at": _ts(o["created_us"]),
                "updated_at": _ts(o["updated_us"]),
            },
            FACTS,
        ),
        "order_lines": _table(
            "order_lines",
            {
                "order_id": _str(lines["order_id"]),
                "user_id": _int(lines["user_id"], nullable=True),
                "product_id": _int(lines["product_id"]),
                "variant_id": _int(lines["variant_id"]),
                "sku": _str(lines["sku"]),
                "quantity": _int(lines["quantity"]),
                "unit_price": _money(lines["unit_price"]),
                "line_total": _money(lines["line_total"]),
                "status": _str(lines["status"]),
                "created_at": _ts(lines["created_us"]),
            },
            FACTS,
        ),
        "events": _table(
            "events",
            {
                "id": _int(ev["id"]),
                "event_id": _str(ev["event_id"]),
                "type": _str(ev["type"]),
                "session_id": _str(ev["session_id"]),
                "user_id": _int(ev["user_id"], nullable=True),
                "product_id": _int(ev["product_id"], nullable=True),
                "sku": _str(ev["sku"]),
                "query": _str(ev["query"]),
                "position": _int(ev["position"], nullable=True),
                "client_ts": _ts(ev["time_us"]),
                # Historical events: the platform "received" them when they happened.
                "received_at": _ts(ev["time_us"]),
            },
            FACTS,
        ),
        "payments": _table(
            "payments",
            {
                "payment_id": _int(pay["payment_id"]),
                "order_id": _str(pay["order_id"]),
                "status": _str(pay["status"]),
                "amount": _money(pay["amount"]),
                "created_at": _ts(pay["created_us"]),
                "updated_at": _ts(pay["updated_us"]),
            },
            FACTS,
        ),
        "stock_movements": _table(
            "stock_movements",
            {
                "id": _int(mv["id"]),
                "sku": _str(mv["sku"]),
                "reason": _str(mv["reason"]),
                "delta_on_hand": _int(mv["delta_on_hand"]),
                "on_hand_after": _int(mv["on_hand_after"]),
                "order_id": _str(mv["order_id"]),
                "created_at": _ts(mv["created_us"]),
            },
            FACTS,
        ),
        "purchase_orders": _table(
            "purchase_orders",
            {
                "po_id": _str(po["po_id"]),
                "supplier_id": _int(po["supplier_id"]),
                "product_id": _int(po["product_id"]),
                "sku": _str(po["sku"]),
                "status": _str(po["status"]),
                "quantity_ordered": _int(po["quantity_ordered"]),
                "quantity_received": _int(po["quantity_received"]),
                "unit_cost": _money(po["unit_cost"]),
                "placed_at": _ts(po["placed_us"]),
                "expected_at": _ts(po["expected_us"]),
                "received_at": _ts(po["received_us"]),
                "updated_at": _ts(po["updated_us"]),
            },
            FACTS,
        ),
        "order_outcomes": _table(
            "order_outcomes",
            {
                "order_id": _str(cb["order_id"]),
                "user_id": _int(cb["user_id"], nullable=True),
                "source": _str(np.full(n_cb, "chargeback", dtype=object)),
                "is_fraud": pa.array(cb["is_fraud"].to_numpy(dtype=bool), pa.bool_()),
                "reason": _str(cb["reason"]),
                "decided_by": pa.nulls(n_cb, pa.int64()),
                "decided_at": _ts(cb["created_us"]),
                "order_created_at": _ts(cb["order_created_us"]),
            },
            FACTS,
        ),
    }


def dimension_tables(shop: Shop) -> dict[str, pa.Table]:
    """The five dimensions of a run, with the exact ``DIMENSIONS`` schemas."""
    c, p, cat, sup = shop.customers, shop.products, shop.categories, shop.suppliers
    return {
        "customers": _table(
            "customers",
            {
                "user_id": _int(c["user_id"]),
                "role": _str(c["role"]),
                "is_active": pa.array(c["is_active"].to_numpy(dtype=bool)),
                "created_at": _ts(c["created_us"]),
            },
            DIMENSIONS,
        ),
        "products": _table(
            "products",
            {
                "product_id": _int(p["product_id"]),
                "name": _str(p["name"]),
                "description": _str(p["description"]),
                "category_id": _int(p["category_id"]),
                "category": _str(p["category"]),
                "status": _str(p["status"]),
                "created_at": _ts(p["created_us"]),
            },
            DIMENSIONS,
        ),
        "variants": _table(
            "variants",
            {
                "variant_id": _int(p["variant_id"]),
                "product_id": _int(p["product_id"]),
                "sku": _str(p["sku"]),
                "price": _money(p["price"]),
                "currency": _str(p["currency"]),
                "is_active": pa.array(p["is_active"].to_numpy(dtype=bool)),
                "on_hand": _int(p["on_hand"]),
                "reserved": _int(p["reserved"]),
            },
            DIMENSIONS,
        ),
        "categories": _table(
            "categories",
            {
                "category_id": _int(cat["category_id"]),
                "name": _str(cat["name"]),
                "parent_id": _int(np.where(cat["parent_id"] > 0, cat["parent_id"], -1), True),
            },
            DIMENSIONS,
        ),
        "suppliers": _table(
            "suppliers",
            {
                "supplier_id": _int(sup["supplier_id"]),
                "name": _str(sup["name"]),
                "lead_time_days": _int(sup["lead_time_days"]),
                "is_active": pa.array(sup["is_active"].to_numpy(dtype=bool)),
            },
            DIMENSIONS,
        ),
    }


def _clear(folder: Path) -> None:
    """Remove the partition files a previous run left (nothing else)."""
    for part in folder.glob("date=*/part-0.parquet"):
        part.unlink()
        if not any(part.parent.iterdir()):
            part.parent.rmdir()


def write_partitioned(table: pa.Table, column: str, folder: Path) -> int:
    """Write ``table`` as one ``date=YYYY-MM-DD/part-0.parquet`` per UTC day; returns files."""
    folder.mkdir(parents=True, exist_ok=True)
    _clear(folder)
    micros = table.column(column).cast(pa.int64()).to_numpy(zero_copy_only=False)
    day = micros // DAY_US
    order = np.argsort(day, kind="stable")
    table = table.take(pa.array(order))
    day = day[order]
    bounds: list[int] = (
        np.flatnonzero(np.r_[True, day[1:] != day[:-1], True]).tolist() if len(day) else []
    )
    for a, b in itertools.pairwise(bounds):
        when = date.fromordinal(date(1970, 1, 1).toordinal() + int(day[a]))
        target = folder / f"date={when.isoformat()}"
        target.mkdir(exist_ok=True)
        pq.write_table(
            table.slice(int(a), int(b - a)), target / "part-0.parquet", compression=COMPRESSION
        )
    return max(0, len(bounds) - 1)


def write_parquet(shop: Shop, out: Path, progress: Progress | None = None) -> dict[str, int]:
    """Write the facts and dimensions of a run under ``out``; returns rows per table."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    facts = fact_tables(shop)
    for done, (name, table) in enumerate(facts.items(), start=1):
        write_partitioned(table, DATE_COLUMN[name], out / name)
        rows[name] = table.num_rows
        if progress:
            progress("writing parquet", done, len(facts) + 1)
    for name, table in dimension_tables(shop).items():
        pq.write_table(table, out / f"{name}.parquet", compression=COMPRESSION)
        rows[name] = table.num_rows
    if progress:
        progress("writing parquet", len(facts) + 1, len(facts) + 1)
    return rows
