"""Chargebacks: what the shop learns, weeks later, about the orders it accepted.

A production shop never sees the hidden fraud labels; it learns them from disputes. Here a
share of the paid fraud orders (:attr:`SynthConfig.chargeback_rate`, default 70%) gets a
``fraudulent`` chargeback some days after the order (uniform in
:attr:`SynthConfig.chargeback_days`, default 3 to 25), and a small share of paid honest orders
(:attr:`SynthConfig.dispute_rate`, default 0.5%) a dispute for another reason (not received,
not as described, ...). Only disputes raised before the end of the period exist. A dispute is
decided (``lost`` when fraudulent; ``won`` or ``lost`` otherwise) :data:`DECIDED_AFTER_DAYS`
after it was opened, else it is still ``open``.

Unpaid orders (card testing whose payments were all declined) take no money, so they cannot be
disputed. The ground truth (``order_labels``) is untouched: these are the *observed* outcomes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cartwise.features.synth.world import DAY_US, World, stream

FRAUDULENT = "fraudulent"
OTHER_REASONS = (
    "product_not_received",
    "product_unacceptable",
    "credit_not_processed",
    "duplicate",
)
DECIDED_AFTER_DAYS = 21

COLUMNS = (
    "dispute_id",
    "order_id",
    "user_id",
    "payment_ref",
    "reason",
    "is_fraud",
    "amount",
    "currency",
    "status",
    "created_us",
    "updated_us",
    "closed_us",
    "order_created_us",
)


def build_chargebacks(world: World, orders: pd.DataFrame, payments: pd.DataFrame) -> pd.DataFrame:
    """One row per dispute raised by the end of the period, in order of its opening."""
    config = world.config
    n = len(orders)
    rng = stream(config.seed, "chargebacks")
    # One draw of each kind per order, in order-id order, so the result depends on the seed only.
    chance = rng.random(n)
    low, high = config.chargeback_days
    delay = (rng.uniform(float(low), float(high), n) * DAY_US).astype(np.int64)
    other = rng.integers(0, len(OTHER_REASONS), n)
    merchant_wins = rng.random(n) < 0.4

    is_fraud = orders["is_fraud"].to_numpy(dtype=bool)
    paid = orders["paid_us"].to_numpy(dtype=np.int64) >= 0
    created = orders["created_us"].to_numpy(dtype=np.int64)
    opened = created + delay
    disputed = paid & np.where(
        is_fraud, chance < config.chargeback_rate, chance < config.dispute_rate
    )
    disputed &= opened < world.end_us
    rows = np.flatnonzero(disputed)
    if len(rows) == 0:
        return pd.DataFrame({name: [] for name in COLUMNS})

    # The payment that collected the order: Payment.provider_ref as the database writer makes it.
    attempt = payments.groupby("order_id", sort=False).cumcount() + 1
    collected = payments["status"].to_numpy() != "failed"
    ref_of = dict(
        zip(
            payments["order_id"].to_numpy()[collected],
            (
                "synth-"
                + payments["order_id"].astype(str).to_numpy()[collected]
                + "-"
                + attempt.astype(str).to_numpy()[collected]
            ),
            strict=True,
        )
    )
    order_ids = orders["order_id"].astype(str).to_numpy()[rows]
    fraud = is_fraud[rows]
    reason = np.where(fraud, FRAUDULENT, np.array(OTHER_REASONS, dtype=object)[other[rows]])
    closed_us = opened[rows] + DECIDED_AFTER_DAYS * DAY_US
    closed = closed_us < world.end_us
    status = np.where(
        ~closed, "open", np.where(~fraud & merchant_wins[rows], "won", "lost")
    ).astype(object)
    frame = pd.DataFrame(
        {
            "dispute_id": np.char.add("synth-dp-", order_ids.astype(str)).astype(object),
            "order_id": order_ids,
            "user_id": orders["user_id"].to_numpy(dtype=np.int64)[rows],
            "payment_ref": [ref_of[o] for o in order_ids],
            "reason": reason,
            "is_fraud": fraud,
            "amount": orders["total"].to_numpy(dtype=np.int64)[rows],
            "currency": orders["currency"].astype(str).to_numpy()[rows],
            "status": status,
            "created_us": opened[rows],
            "updated_us": np.where(closed, closed_us, opened[rows]),
            "closed_us": np.where(closed, closed_us, -1),
            "order_created_us": created[rows],
        }
    )
    return frame.sort_values(["created_us", "order_id"], kind="stable").reset_index(drop=True)
