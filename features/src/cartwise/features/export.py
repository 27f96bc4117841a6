"""Export the commerce facts to Parquet partitioned by date, incrementally and idempotently.

Each run finds the days touched since the last run (rows updated since the saved watermark for
mutable tables, ids above it for append-only ones), rewrites exactly those day partitions from
the database, and rewrites the small dimension snapshots. A partition is written to a temporary
file and renamed into place, so a crash leaves the old partition, never half a file; the
watermarks are saved last, so a crashed run is simply redone. Re-running with nothing new
rewrites nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Select, case, false, func, literal, null, select, true, union_all
from sqlalchemy.engine import Engine

from cartwise.commerce.catalog.models import Category, Product, Variant
from cartwise.commerce.customers.models import User
from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.inventory.models import StockLevel, StockMovement
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus, OrderTransition
from cartwise.commerce.payments.models import Chargeback, Payment
from cartwise.commerce.suppliers.models import PurchaseOrder, PurchaseOrderLine, Supplier
from cartwise.features.facts import DATE_COLUMN, DIMENSIONS, FACTS

STATE_FILE = "_state.json"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ExportSummary:
    """What one export run wrote."""

    rows: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    dimensions: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether any fact partition was rewritten."""
        return any(self.partitions.values())


@dataclass(frozen=True)
class _Fact:
    """How to read one fact table and how to find the days it touched since a watermark."""

    select: Callable[[], Select[Any]]
    timestamp: Any  # the column the partition day comes from
    watermark: Any  # updated_at (mutable rows) or id (append-only rows)
    watermark_is_id: bool


def _t(model: Any) -> Any:
    return model.__table__


# A staff verdict on an order held for fraud review is the order's transition out of review
# that ``orders.service.decide_review`` records (approve → pending_payment, reject → cancelled,
# reason "fraud review approved|rejected[: note]", actor_id = the member of staff).
REVIEW_REASON = "fraud review %"
FRAUD_DISPUTE_REASON = "fraudulent"


def _outcomes() -> Any:
    """Review verdicts and chargebacks as one subquery of ``order_outcomes`` rows.

    ``changed_at`` is the watermark: a verdict never changes, a chargeback moves when its
    reason or status is updated.
    """
    o, t, cb = _t(Order), _t(OrderTransition), _t(Chargeback)
    rejected = t.c.to_status == OrderStatus.cancelled.value
    reviews = (
        select(
            t.c.order_id.label("order_id"),
            o.c.user_id.label("user_id"),
            literal("review").label("source"),
            case((rejected, true()), else_=false()).label("is_fraud"),
            case((rejected, literal("reject")), else_=literal("approve")).label("reason"),
            t.c.actor_id.label("decided_by"),
            t.c.created_at.label("decided_at"),
            o.c.created_at.label("order_created_at"),
            t.c.created_at.label("changed_at"),
        )
        .join(o, o.c.id == t.c.order_id)
        .where(
            t.c.from_status == OrderStatus.review.value,
            t.c.to_status.in_([OrderStatus.pending_payment.value, OrderStatus.cancelled.value]),
            t.c.reason.like(REVIEW_REASON),
        )
    )
    chargebacks = select(
        cb.c.order_id.label("order_id"),
        o.c.user_id.label("user_id"),
        literal("chargeback").label("source"),
        case((cb.c.reason == FRAUD_DISPUTE_REASON, true()), else_=false()).label("is_fraud"),
        cb.c.reason.label("reason"),
        null().label("decided_by"),
        cb.c.created_at.label("decided_at"),
        o.c.created_at.label("order_created_at"),
        cb.c.updated_at.label("changed_at"),
    ).join(o, o.c.id == cb.c.order_id)
    return union_all(reviews, chargebacks).subquery("order_outcomes")


def purchase_order_lines_query() -> Select[Any]:
    """Every purchase-order line in the ``purchase_orders`` fact's columns, oldest order first.

    A line without a product id of its own takes its variant's. Staff routes read the same
    query live (supplier scores, reorder suggestions) that the export writes to Parquet.
    """
    po, pol, v = _t(PurchaseOrder), _t(PurchaseOrderLine), _t(Variant)
    return (
        select(
            pol.c.purchase_order_id.label("po_id"),
            po.c.supplier_id,
            func.coalesce(pol.c.product_id, v.c.product_id).label("product_id"),
            pol.c.sku,
            po.c.status,
            pol.c.quantity_ordered,
            pol.c.quantity_received,
            pol.c.unit_cost,
            po.c.placed_at,
            po.c.expected_at,
            po.c.received_at,
            po.c.updated_at,
        )
        .join(po, po.c.id == pol.c.purchase_order_id)
        .outerjoin(v, v.c.id == pol.c.variant_id)
        .order_by(po.c.placed_at, pol.c.purchase_order_id, pol.c.id)
    )


def _facts() -> dict[str, _Fact]:
    o, ol, ev, pay, mv, po = (
        _t(Order),
        _t(OrderLine),
        _t(ShopperEvent),
        _t(Payment),
        _t(StockMovement),
        _t(PurchaseOrder),
    )
    oc = _outcomes()
    return {
        "orders": _Fact(
            lambda: select(
                o.c.id.label("order_id"),
                o.c.user_id,
                o.c.status,
                o.c.currency,
                o.c.subtotal,
                o.c.discount,
                o.c.shipping,
                o.c.total,
                o.c.refunded_amount,
                o.c.country,
                o.c.created_at,
                o.c.updated_at,
            ),
            o.c.created_at,
            o.c.updated_at,
            False,
        ),
        "order_lines": _Fact(
            lambda: select(
                ol.c.order_id,
                o.c.user_id,
                ol.c.product_id,
                ol.c.variant_id,
                ol.c.sku,
                ol.c.quantity,
                ol.c.unit_price,
                ol.c.line_total,
                o.c.status,
                o.c.created_at,
            ).join(o, o.c.id == ol.c.order_id),
            o.c.created_at,
            o.c.updated_at,
            False,
        ),
        "events": _Fact(
            lambda: select(
                ev.c.id,
                ev.c.event_id,
                ev.c.type,
                ev.c.session_id,
                ev.c.user_id,
                ev.c.product_id,
                ev.c.sku,
                ev.c.query,
                ev.c.position,
                ev.c.client_ts,
                ev.c.received_at,
            ),
            ev.c.received_at,
            ev.c.id,
            True,
        ),
        "payments": _Fact(
            lambda: select(
                pay.c.id.label("payment_id"),
                pay.c.order_id,
                pay.c.status,
                pay.c.amount,
                pay.c.created_at,
                pay.c.updated_at,
            ),
            pay.c.created_at,
            pay.c.updated_at,
            False,
        ),
        "stock_movements": _Fact(
            lambda: select(
                mv.c.id,
                mv.c.sku,
                mv.c.reason,
                mv.c.delta_on_hand,
                mv.c.on_hand_after,
                mv.c.order_id,
                mv.c.created_at,
            ),
            mv.c.created_at,
            mv.c.id,
            True,
        ),
        "purchase_orders": _Fact(
            purchase_order_lines_query,
            po.c.placed_at,
            po.c.updated_at,
            False,
        ),
        "order_outcomes": _Fact(
            lambda: select(
                oc.c.order_id,
                oc.c.user_id,
                oc.c.source,
                oc.c.is_fraud,
                oc.c.reason,
                oc.c.decided_by,
                oc.c.decided_at,
                oc.c.order_created_at,
            ).order_by(oc.c.decided_at, oc.c.order_id, oc.c.source),
            oc.c.decided_at,
            oc.c.changed_at,
            False,
        ),
    }


def _dimensions() -> dict[str, Select[Any]]:
    u, p, c, v, s = _t(User), _t(Product), _t(Category), _t(Variant), _t(StockLevel)
    sup = _t(Supplier)
    return {
        "customers": select(u.c.id.label("user_id"), u.c.role, u.c.is_active, u.c.created_at),
        "products": select(
            p.c.id.label("product_id"),
            p.c.name,
            p.c.description,
            p.c.category_id,
            c.c.name.label("category"),
            p.c.status,
            p.c.created_at,
        ).outerjoin(c, c.c.id == p.c.category_id),
        "variants": select(
            v.c.id.label("variant_id"),
            v.c.product_id,
            v.c.sku,
            v.c.price,
            v.c.currency,
            v.c.is_active,
            func.coalesce(s.c.on_hand, 0).label("on_hand"),
            func.coalesce(s.c.reserved, 0).label("reserved"),
        ).outerjoin(s, s.c.sku == v.c.sku),
        "categories": select(c.c.id.label("category_id"), c.c.name, c.c.parent_id),
        "suppliers": select(
            sup.c.id.label("supplier_id"), sup.c.name, sup.c.lead_time_days, sup.c.is_active
        ),
    }


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Coerce a frame to a facts schema: UTC timestamps, floats for money, nullable ints."""
    frame = frame.copy()
    for f in schema:
        name = f.name
        if name not in frame:
            frame[name] = None
        if pa.types.is_timestamp(f.type):
            frame[name] = pd.to_datetime(frame[name], utc=True, format="mixed")
        elif pa.types.is_floating(f.type):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        elif pa.types.is_integer(f.type):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
        elif pa.types.is_boolean(f.type):
            frame[name] = frame[name].astype("boolean")
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file through a temporary name and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def partition_path(root: Path, table: str, day: date) -> Path:
    """The file of one day partition of a fact table."""
    return root / table / f"date={day.isoformat()}" / "part-0.parquet"


def day_column(data: pa.Table, table: str) -> pa.ChunkedArray:
    """The UTC day of each row of a facts table (its partition key)."""
    return pc.cast(data.column(DATE_COLUMN[table]), pa.date32())


def write_partitions(root: Path, table: str, data: pa.Table, days: set[date] | None = None) -> int:
    """Write each day of a facts table to its partition (``days``: only those); returns days."""
    day_of_row = day_column(data, table)
    wanted = set(pc.unique(day_of_row).to_pylist()) if days is None else days
    for day in sorted(wanted):
        part = data.filter(pc.equal(day_of_row, pa.scalar(day, pa.date32())))
        path = partition_path(root, table, day)
        if part.num_rows == 0:
            # The day's rows are gone from the source: no partition.
            path.unlink(missing_ok=True)
            continue
        write_atomic(part, path)
    return len(wanted)


def _load_state(root: Path) -> dict[str, Any]:
    path = root / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(root: Path, state: dict[str, Any]) -> None:
    tmp = root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, root / STATE_FILE)


def _read(engine: Engine, stmt: Select[Any]) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _as_utc(value: Any) -> datetime:
    stamp = pd.Timestamp(value)
    result: datetime = (
        stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    ).to_pydatetime()
    return result


def _touched_days(engine: Engine, fact: _Fact, mark: Any) -> tuple[set[date], Any]:
    """The partition days with rows changed after ``mark``, and the new watermark."""
    stmt = select(fact.timestamp, fact.watermark)
    if mark is not None:
        value = int(mark) if fact.watermark_is_id else datetime.fromisoformat(mark)
        stmt = stmt.where(fact.watermark > value)
    with engine.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    if not rows:
        return set(), mark
    days = {_as_utc(r[0]).date() for r in rows}
    if fact.watermark_is_id:
        return days, max(int(r[1]) for r in rows)
    return days, max(_as_utc(r[1]) for r in rows).isoformat()


def export_facts(
    engine: Engine,
    root: Path,
    *,
    full: bool = False,
    on_table: Callable[[str, int], None] | None = None,
) -> ExportSummary:
    """Export every fact table incrementally (``full`` redoes all days) plus the dimensions."""
    root.mkdir(parents=True, exist_ok=True)
    state = {} if full else _load_state(root)
    new_state = dict(state)
    summary = ExportSummary()
    for name, fact in _facts().items():
        days, mark = _touched_days(engine, fact, state.get(name))
        rows = 0
        if days:
            start = datetime.combine(min(days), datetime.min.time(), tzinfo=UTC)
            # Rows of the whole touched days, so each rewritten partition is complete.
            frame = _read(engine, fact.select().where(fact.timestamp >= start))
            table = to_arrow(frame, FACTS[name])
            keep = pc.is_in(day_column(table, name), pa.array(sorted(days), pa.date32()))
            table = table.filter(keep)
            rows = table.num_rows
            write_partitions(root, name, table, days)
        summary.rows[name] = rows
        summary.partitions[name] = len(days)
        new_state[name] = mark
        if on_table:
            on_table(name, rows)
    for name, stmt in _dimensions().items():
        table = to_arrow(_read(engine, stmt), DIMENSIONS[name])
        write_atomic(table, root / f"{name}.parquet")
        summary.dimensions[name] = table.num_rows
        if on_table:
            on_table(name, table.num_rows)
    new_state["exported_at"] = datetime.now(UTC).isoformat()
    _save_state(root, new_state)
    return summary
