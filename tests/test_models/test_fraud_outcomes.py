"""Fraud labels from outcomes (chargebacks and review verdicts) instead of a hidden truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cartwise.models.fraud import data as fraud_data
from cartwise.models.source import Source

TS = pa.timestamp("us", tz="UTC")
DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-01-01", tz="UTC")

# order id -> created (days after START)
ORDERS = {
    "old-quiet": 0,  # old, no outcome: legit by maturity
    "old-fraud-cb": 1,  # fraudulent chargeback on day 10
    "old-dispute": 2,  # product_not_received dispute on day 12: legit only by maturity
    "rejected": 50,  # review reject on day 50: fraud at once
    "approved": 51,  # review approve on day 51: legit at once
    "approved-then-cb": 52,  # approved on day 52, fraudulent chargeback on day 60
    "young": 55,  # no outcome and too young: unknown
    "late-cb": 56,  # fraudulent chargeback on day 70 (after as_of = day 62)
    "old-declined": 3,  # never paid (a declined card test): unknown however old
}
UNPAID = {"old-declined": "cancelled", "rejected": "cancelled"}
OUTCOMES = [
    # order, source, is_fraud, reason, decided (days after START)
    ("old-fraud-cb", "chargeback", True, "fraudulent", 10),
    ("old-dispute", "chargeback", False, "product_not_received", 12),
    ("rejected", "review", True, "reject", 50),
    ("approved", "review", False, "approve", 51),
    ("approved-then-cb", "review", False, "approve", 52),
    ("approved-then-cb", "chargeback", True, "fraudulent", 60),
    ("late-cb", "chargeback", True, "fraudulent", 70),
]


def _write(root: Path, table: str, frame: pd.DataFrame, column: str, schema: pa.Schema) -> None:
    days = frame[column].dt.strftime("%Y-%m-%d")
    for day, part in frame.groupby(days):
        folder = root / table / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pandas(part, schema=schema, preserve_index=False),
            folder / "part-0.parquet",
        )


def _facts(root: Path, *, outcomes: bool = True) -> Path:
    orders = pd.DataFrame(
        {
            "order_id": list(ORDERS),
            "user_id": range(1, len(ORDERS) + 1),
            "status": [UNPAID.get(o, "delivered") for o in ORDERS],
            "total": 10.0,
            "country": "GB",
            "created_at": [START + d * DAY + pd.Timedelta(hours=9) for d in ORDERS.values()],
        }
    )
    _write(
        root,
        "orders",
        orders,
        "created_at",
        pa.schema(
            [
                ("order_id", pa.string()),
                ("user_id", pa.int64()),
                ("status", pa.string()),
                ("total", pa.float64()),
                ("country", pa.string()),
                ("created_at", TS),
            ]
        ),
    )
    if outcomes:
        created = dict(zip(orders["order_id"], orders["created_at"], strict=True))
        frame = pd.DataFrame(
            {
                "order_id": [o[0] for o in OUTCOMES],
                "source": [o[1] for o in OUTCOMES],
                "is_fraud": [o[2] for o in OUTCOMES],
                "reason": [o[3] for o in OUTCOMES],
                "decided_at": [START + o[4] * DAY + pd.Timedelta(hours=15) for o in OUTCOMES],
                "order_created_at": [created[o[0]] for o in OUTCOMES],
            }
        )
        _write(
            root,
            "order_outcomes",
            frame,
            "decided_at",
            pa.schema(
                [
                    ("order_id", pa.string()),
                    ("source", pa.string()),
                    ("is_fraud", pa.bool_()),
                    ("reason", pa.string()),
                    ("decided_at", TS),
                    ("order_created_at", TS),
                ]
            ),
        )
    return root


def _labels(frame: pd.DataFrame) -> dict[str, tuple[bool, str]]:
    return {
        r.order_id: (bool(r.is_fraud), str(r.label_source)) for r in frame.itertuples(index=False)
    }


def test_outcomes_as_of_with_maturity(tmp_path: Path) -> None:
    source = Source(facts_dir=_facts(tmp_path))
    as_of = START + 62 * DAY
    got = fraud_data.outcomes(source, as_of=as_of, maturity_days=30)
    assert list(got.columns) == ["order_id", "is_fraud", "label_source"]
    assert got["order_id"].is_unique
    assert _labels(got) == {
        "old-quiet": (False, "matured"),
        "old-fraud-cb": (True, "chargeback"),
        # A dispute for another reason is no fraud label; the order is legit once matured.
        "old-dispute": (False, "matured"),
        "rejected": (True, "review"),
        "approved": (False, "review"),
        # A fraudulent chargeback after an approval: fraud wins.
        "approved-then-cb": (True, "chargeback"),
        # "young" (no outcome, 7 days old) and "late-cb" (its chargeback comes later): unknown;
        # so is "old-declined": never paid, so no chargeback can ever say what it was.
    }


def test_as_of_excludes_later_outcomes_and_maturity_moves(tmp_path: Path) -> None:
    source = Source(facts_dir=_facts(tmp_path))
    # Day 55 at noon: the day-60 chargeback is not known yet, so the approval stands.
    early = _labels(fraud_data.outcomes(source, as_of=START + 55 * DAY, maturity_days=30))
    assert early["approved-then-cb"] == (False, "review")
    assert "young" not in early  # created at 09:00 that day: after as_of
    # Before the chargeback of day 10 arrived, that order was unknown (too young at day 5).
    day5 = _labels(fraud_data.outcomes(source, as_of=START + 5 * DAY, maturity_days=30))
    assert day5 == {}
    # With the chargeback on day 10 15:00: known at 15:00, not at 14:59.
    before = fraud_data.outcomes(
        source, as_of=START + 10 * DAY + pd.Timedelta(hours=14, minutes=59), maturity_days=30
    )
    after = fraud_data.outcomes(
        source, as_of=START + 10 * DAY + pd.Timedelta(hours=15), maturity_days=30
    )
    assert "old-fraud-cb" not in set(before["order_id"])
    assert _labels(after)["old-fraud-cb"] == (True, "chargeback")
    # A short maturity makes young orders legit sooner; a long one leaves them unknown.
    short = _labels(fraud_data.outcomes(source, as_of=START + 62 * DAY, maturity_days=5))
    assert short["young"] == (False, "matured")
    # Maturity can be wrong: late-cb looks legit until its chargeback arrives on day 70.
    assert short["late-cb"] == (False, "matured")
    long = _labels(fraud_data.outcomes(source, as_of=START + 62 * DAY, maturity_days=90))
    assert "old-quiet" not in long
    assert long["old-fraud-cb"] == (True, "chargeback")
    # Orders created after as_of are never labelled.
    assert "rejected" not in _labels(
        fraud_data.outcomes(source, as_of=START + 40 * DAY, maturity_days=1)
    )


def test_labels_prefer_truth_then_outcomes(tmp_path: Path) -> None:
    facts = _facts(tmp_path / "facts")
    # A production export: no truth, labels from outcomes as of the export's last fact (the
    # chargeback of day 70): late-cb is fraud; young is 15 days old then, below the 30-day
    # maturity: unknown.
    production = fraud_data.labels(Source(facts_dir=facts), maturity_days=30)
    assert list(production.columns) == ["order_id", "is_fraud", "pattern", "label_source"]
    got = _labels(production)
    assert got["late-cb"] == (True, "chargeback")
    assert got["approved-then-cb"] == (True, "chargeback")
    assert "young" not in got
    assert (production["pattern"] == "").all()
    # A generated shop: its ground truth wins, every order labelled.
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    pd.DataFrame(
        {
            "order_id": list(ORDERS),
            "is_fraud": [o == "young" for o in ORDERS],
            "pattern": ["card_testing" if o == "young" else None for o in ORDERS],
        }
    ).to_parquet(truth_dir / "order_labels.parquet")
    generated = fraud_data.labels(Source(facts_dir=facts, truth_dir=truth_dir))
    assert len(generated) == len(ORDERS)
    assert set(generated["label_source"]) == {"truth"}
    assert generated.set_index("order_id").loc["young", "pattern"] == "card_testing"
    assert not generated.set_index("order_id").loc["late-cb", "is_fraud"]
    # Neither: an old export of a production shop.
    bare = Source(facts_dir=_facts(tmp_path / "old", outcomes=False))
    assert not fraud_data.has_outcomes(bare)
    assert (
        fraud_data.outcomes(bare, as_of=START + 90 * DAY, maturity_days=30)["is_fraud"].sum() == 0
    )
    with pytest.raises(LookupError):
        fraud_data.labels(bare)


def test_maturity_setting_default() -> None:
    from cartwise.models.settings import ModelSettings

    assert ModelSettings(env="test").fraud_label_maturity_days == 30
    with pytest.raises(ValueError):
        ModelSettings(env="test", fraud_label_maturity_days=0)
