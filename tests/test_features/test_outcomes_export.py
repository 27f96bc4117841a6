"""The ``order_outcomes`` fact of the facts export: staff review verdicts and chargebacks, one
row per outcome by the day it became known, re-exported when a chargeback changes (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import update
from sqlmodel import Session, col, select

from cartwise.commerce.customers.models import User
from cartwise.commerce.orders import service as orders
from cartwise.commerce.orders.models import Order, OrderStatus, OrderTransition, ReviewDecision
from cartwise.commerce.payments.models import Chargeback, Payment, PaymentStatus
from cartwise.features.export import export_facts
from cartwise.features.facts import FACTS
from cartwise.platform.db import make_engine
from tests.payments_support import place_order


def at(day: int, hour: int = 12) -> datetime:
    """A moment in March 2026 (UTC)."""
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def _in_review(engine: Any, user_id: int | None) -> str:
    order_id, _ = place_order(engine, provider="manual", user_id=user_id)
    with Session(engine) as s:
        order = s.get(Order, order_id)
        assert order is not None
        orders.record_transition(
            s, order, OrderStatus.pending_payment, OrderStatus.review, actor="fraud", actor_id=None
        )
        order.status = OrderStatus.review
        order.created_at = at(1, 9)
        s.add(order)
        s.commit()
    return order_id


def _verdict_on(engine: Any, order_id: str, day: int) -> None:
    """Move the order's review verdict to a known day."""
    with Session(engine) as s:
        s.execute(
            update(OrderTransition)
            .where(
                col(OrderTransition.order_id) == order_id,
                col(OrderTransition.from_status) == OrderStatus.review,
            )
            .values(created_at=at(day))
        )
        s.commit()


def _chargeback(engine: Any, order_id: str, dispute_id: str, reason: str, day: int) -> None:
    with Session(engine) as s:
        payment = Payment(
            order_id=order_id,
            provider="stripe",
            provider_ref=f"pi_{dispute_id}",
            amount=Decimal("25.00"),
            currency="GBP",
            status=PaymentStatus.succeeded,
        )
        s.add(payment)
        s.flush()
        assert payment.id is not None
        s.add(
            Chargeback(
                dispute_id=dispute_id,
                order_id=order_id,
                payment_id=payment.id,
                reason=reason,
                amount=Decimal("25.00"),
                currency="GBP",
                created_at=at(day),
                updated_at=at(day),
            )
        )
        s.commit()


def _read(root: Path) -> pd.DataFrame:
    parts = sorted((root / "order_outcomes").glob("date=*/part-0.parquet"))
    for path in parts:
        assert pq.read_table(path).schema.equals(FACTS["order_outcomes"])
    frame = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    return frame.sort_values(["order_id", "source"]).reset_index(drop=True)


def test_order_outcomes_export(db_url: str, settings: Any, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    root = tmp_path / "exports"
    try:
        with Session(engine) as s:
            staff = User(email="staff@example.com", hashed_password="!", role="staff")
            shopper = User(email="shopper@example.com", hashed_password="!", role="customer")
            s.add_all([staff, shopper])
            s.commit()
            staff_id, shopper_id = staff.id, shopper.id
        assert staff_id is not None
        assert shopper_id is not None
        approved = _in_review(engine, shopper_id)
        rejected = _in_review(engine, None)
        withdrawn = _in_review(engine, shopper_id)
        for order_id, decision in ((approved, ReviewDecision.approve), (rejected, "reject")):
            with Session(engine) as s:
                orders.decide_review(
                    session=s,
                    settings=settings,
                    order_id=order_id,
                    decision=ReviewDecision(decision),
                    actor="staff",
                    actor_id=staff_id,
                    note="checked",
                )
        _verdict_on(engine, approved, 2)
        _verdict_on(engine, rejected, 3)
        # The customer cancels an order under review: no verdict, no outcome.
        with Session(engine) as s:
            orders.transition(
                session=s,
                order_id=withdrawn,
                to_status=OrderStatus.cancelled,
                actor="customer",
                actor_id=shopper_id,
                reason="changed my mind",
            )
        paid, _ = place_order(engine, provider="stripe", user_id=shopper_id)
        _chargeback(engine, paid, "dp_fraud", "fraudulent", day=5)
        _chargeback(engine, approved, "dp_late", "product_not_received", day=5)

        first = export_facts(engine, root)
        assert (first.rows["order_outcomes"], first.partitions["order_outcomes"]) == (4, 3)
        assert {p.parent.name for p in (root / "order_outcomes").glob("*/part-0.parquet")} == {
            "date=2026-03-02",
            "date=2026-03-03",
            "date=2026-03-05",
        }
        got = _read(root)
        rows = {
            (r.order_id, r.source): (r.is_fraud, r.reason, r.decided_at)
            for r in got.itertuples(index=False)
        }
        assert rows == {
            (approved, "review"): (False, "approve", pd.Timestamp(at(2))),
            (approved, "chargeback"): (False, "product_not_received", pd.Timestamp(at(5))),
            (rejected, "review"): (True, "reject", pd.Timestamp(at(3))),
            (paid, "chargeback"): (True, "fraudulent", pd.Timestamp(at(5))),
        }
        by_key = got.set_index(["order_id", "source"])
        assert by_key.loc[(approved, "review"), "decided_by"] == staff_id
        assert pd.isna(by_key.loc[(paid, "chargeback"), "decided_by"])
        assert by_key.loc[(approved, "review"), "user_id"] == shopper_id
        assert pd.isna(by_key.loc[(rejected, "review"), "user_id"])  # a guest
        assert by_key.loc[(rejected, "review"), "order_created_at"] == pd.Timestamp(at(1, 9))

        # Nothing new: nothing rewritten.
        again = export_facts(engine, root)
        assert again.partitions["order_outcomes"] == 0

        # The dispute's reason is corrected: only its day is rewritten, with the new label.
        with Session(engine) as s:
            s.execute(
                update(Chargeback)
                .where(col(Chargeback.dispute_id) == "dp_late")
                .values(reason="fraudulent", updated_at=at(20))
            )
            s.commit()
        third = export_facts(engine, root)
        assert (third.partitions["order_outcomes"], third.rows["order_outcomes"]) == (1, 2)
        got = _read(root).set_index(["order_id", "source"])
        assert bool(got.loc[(approved, "chargeback"), "is_fraud"]) is True
        assert len(got) == 4
        with Session(engine) as s:
            assert len(s.exec(select(Chargeback)).all()) == 2
    finally:
        engine.dispose()
