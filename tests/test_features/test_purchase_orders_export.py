"""The ``purchase_orders`` fact and ``suppliers`` dimension of the facts export: the exact
schema, one row per line by the day the order was placed, and incremental re-export when a
receipt or a cancellation moves an order's ``updated_at`` (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import update
from sqlmodel import Session, col

from cartwise.commerce.suppliers import service
from cartwise.commerce.suppliers.models import (
    PurchaseOrder,
    PurchaseOrderCreate,
    PurchaseOrderLineCreate,
    ReceiveLine,
    ReceiveRequest,
    SupplierCreate,
)
from cartwise.features.export import export_facts
from cartwise.features.facts import DIMENSIONS, FACTS
from cartwise.platform.db import make_engine
from tests.test_commerce.factories import make_variant


def at(day: int, hour: int = 12) -> datetime:
    """A moment in March 2026 (UTC)."""
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def _place(s: Session, supplier_id: int, lines: list[tuple[str, int, str]], day: int) -> str:
    data = PurchaseOrderCreate(
        supplier_id=supplier_id,
        lines=[
            PurchaseOrderLineCreate(sku=sku, quantity=q, unit_cost=Decimal(c))
            for sku, q, c in lines
        ],
    )
    po, _ = service.create_purchase_order(session=s, data=data)
    # Placed on a known day, so the partition is known.
    s.execute(
        update(PurchaseOrder)
        .where(col(PurchaseOrder.id) == po.id)
        .values(placed_at=at(day), expected_at=at(day + 4), updated_at=at(day))
    )
    s.commit()
    return po.id


def test_purchase_orders_export_by_placed_day_incrementally(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    root = tmp_path / "exports"
    try:
        with Session(engine, expire_on_commit=False) as s:
            mug = make_variant(s, stock=0, name="Mug")
            jug = make_variant(s, stock=0, name="Jug")
            acme = service.create_supplier(
                session=s, data=SupplierCreate(name="Acme", lead_time_days=4)
            )
            assert acme.id is not None
            first_po = _place(s, acme.id, [(mug.sku, 10, "1.25"), (jug.sku, 5, "2.00")], day=1)
            second_po = _place(s, acme.id, [(mug.sku, 3, "1.30")], day=3)
            service.receive(
                session=s,
                po_id=first_po,
                data=ReceiveRequest(lines=[ReceiveLine(sku=mug.sku, quantity=4)]),
                receipt_key="d-1",
            )

        first = export_facts(engine, root)
        assert (first.rows["purchase_orders"], first.partitions["purchase_orders"]) == (3, 2)
        assert first.dimensions["suppliers"] == 1
        day1 = root / "purchase_orders" / "date=2026-03-01" / "part-0.parquet"
        day3 = root / "purchase_orders" / "date=2026-03-03" / "part-0.parquet"
        for path in (day1, day3):
            assert pq.read_table(path).schema.equals(FACTS["purchase_orders"])
        rows = pq.read_table(day1).to_pandas().set_index("sku")
        assert rows["po_id"].tolist() == [first_po, first_po]
        assert (rows["status"] == "partially_received").all()
        assert rows.loc[mug.sku, ["quantity_ordered", "quantity_received"]].tolist() == [10, 4]
        assert rows.loc[jug.sku, ["quantity_ordered", "quantity_received"]].tolist() == [5, 0]
        assert rows.loc[mug.sku, "unit_cost"] == 1.25
        assert rows.loc[mug.sku, "product_id"] == mug.product_id
        assert (rows["supplier_id"] == acme.id).all()
        assert (rows["placed_at"] == pd.Timestamp(at(1))).all()
        assert (rows["expected_at"] == pd.Timestamp(at(5))).all()
        assert rows["received_at"].notna().all()
        assert (rows["updated_at"] == rows["received_at"]).all()
        open_po = pq.read_table(day3).to_pandas()
        assert open_po[["po_id", "status"]].values.tolist() == [[second_po, "placed"]]
        assert open_po["received_at"].isna().all()
        suppliers = pq.read_table(root / "suppliers.parquet")
        assert suppliers.schema.equals(DIMENSIONS["suppliers"])
        assert suppliers.to_pylist() == [
            {"supplier_id": acme.id, "name": "Acme", "lead_time_days": 4, "is_active": True}
        ]

        # Nothing new: nothing rewritten.
        stamps = {p: p.stat().st_mtime_ns for p in (day1, day3)}
        assert export_facts(engine, root).partitions["purchase_orders"] == 0
        assert {p: p.stat().st_mtime_ns for p in (day1, day3)} == stamps

        # Cancelling the second order rewrites only the day it was placed.
        with Session(engine, expire_on_commit=False) as s:
            service.cancel_purchase_order(session=s, po_id=second_po)
        third = export_facts(engine, root)
        assert (third.partitions["purchase_orders"], third.rows["purchase_orders"]) == (1, 1)
        assert day1.stat().st_mtime_ns == stamps[day1]
        assert pq.read_table(day3).column("status").to_pylist() == ["cancelled"]
    finally:
        engine.dispose()
