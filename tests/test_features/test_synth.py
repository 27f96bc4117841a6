"""``cartwise data synth``: determinism, the facts contract, behaviour that matches the hidden
truth, fraud labels, the stock ledger, and the database path on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from sqlmodel import Session
from typer.testing import CliRunner

from cartwise.features.facts import DATE_COLUMN, DIMENSIONS, FACTS
from cartwise.features.synth import Pricing, SynthConfig, generate, synth
from cartwise.features.synth.world import SEGMENTS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = SynthConfig(customers=200, days=30, seed=7, start=date(2026, 3, 2), products=300)
HEAVY = ("ray", "fastapi", "sqlalchemy", "sqlmodel", "uvicorn", "torch", "numpy", "pandas")


def read_fact(root: Path, name: str) -> pd.DataFrame:
    """All partitions of a fact table as one frame."""
    files = sorted((root / name).glob("date=*/part-0.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def read_truth(root: Path, name: str) -> pd.DataFrame:
    """A ground-truth table."""
    return pq.read_table(root / "ground_truth" / f"{name}.parquet").to_pandas()


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small run written to Parquet, shared by the module."""
    root = tmp_path_factory.mktemp("synth")
    synth(CONFIG, to="parquet", out=root)
    return root


@pytest.fixture(scope="module")
def facts(out: Path) -> dict[str, pd.DataFrame]:
    """The run's facts and dimensions, read back."""
    tables = {name: read_fact(out, name) for name in FACTS}
    tables.update({name: pd.read_parquet(out / f"{name}.parquet") for name in DIMENSIONS})
    return tables


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_files_other_seed_other_shop(out: Path, tmp_path: Path) -> None:
    synth(CONFIG, to="parquet", out=tmp_path / "again")
    assert _digest(out) == _digest(tmp_path / "again")
    other = SynthConfig(CONFIG.customers, CONFIG.days, 8, CONFIG.start, CONFIG.products)
    synth(other, to="parquet", out=tmp_path / "other")
    events = read_fact(tmp_path / "other", "events")
    assert not events["event_id"].isin(read_fact(out, "events")["event_id"]).any()
    orders = read_fact(tmp_path / "other", "orders")
    assert not orders["total"].equals(read_fact(out, "orders")["total"])


def test_parquet_has_exactly_the_facts_layout(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    for name, schema in FACTS.items():
        files = sorted((out / name).glob("date=*/part-0.parquet"))
        assert files, name
        for f in files:
            table = pq.read_table(f)
            assert table.schema.equals(schema), (name, table.schema)
            day = f.parent.name.removeprefix("date=")
            stamps = table.column(DATE_COLUMN[name]).to_pandas()
            assert (stamps.dt.strftime("%Y-%m-%d") == day).all(), (name, day)
    for name, schema in DIMENSIONS.items():
        assert pq.read_table(out / f"{name}.parquet").schema.equals(schema), name
    # Ids agree across tables.
    products, variants = facts["products"], facts["variants"]
    users = set(facts["customers"]["user_id"])
    orders = facts["orders"]
    lines = facts["order_lines"]
    assert set(lines["order_id"]) == set(orders["order_id"])
    assert set(lines["product_id"]) <= set(products["product_id"])
    assert set(zip(lines["variant_id"], lines["sku"], strict=True)) <= set(
        zip(variants["variant_id"], variants["sku"], strict=True)
    )
    assert set(orders["user_id"]) <= users
    assert set(facts["payments"]["order_id"]) <= set(orders["order_id"])
    ev = facts["events"]
    assert set(ev["product_id"].dropna().astype(int)) <= set(products["product_id"])
    assert set(ev["user_id"].dropna().astype(int)) <= users
    assert ev["event_id"].is_unique
    assert ev["id"].is_monotonic_increasing
    assert (ev["client_ts"] == ev["received_at"]).all()
    assert set(facts["stock_movements"]["sku"]) <= set(variants["sku"])
    assert set(products["category_id"]) <= set(facts["categories"]["category_id"])
    # Realistic texts, distinct names, one variant per product.
    assert products["name"].is_unique
    assert products["description"].str.contains(" — ").all()
    assert (products["product_id"] == variants["product_id"]).all()


def test_totals_add_up_like_checkout(facts: dict[str, pd.DataFrame]) -> None:
    orders, lines = facts["orders"], facts["order_lines"]
    sums = lines.groupby("order_id")["line_total"].sum()
    assert np.allclose(orders.set_index("order_id")["subtotal"], sums.reindex(orders["order_id"]))
    assert np.allclose(lines["line_total"], lines["unit_price"] * lines["quantity"])
    pricing = Pricing()
    goods = orders["subtotal"] - orders["discount"]
    free = goods >= float(pricing.free_shipping_over or 0)
    assert np.allclose(orders["shipping"], np.where(free, 0, float(pricing.shipping_flat)))
    tax = orders["total"] - goods - orders["shipping"]
    assert np.allclose(tax, (goods + orders["shipping"]) * float(pricing.tax_rate), atol=0.006)
    valid = {"pending_payment", "paid", "fulfilled", "shipped", "delivered", "cancelled"}
    assert set(orders["status"]) <= valid | {"refunded", "review"}
    refunded = orders["status"] == "refunded"
    assert refunded.any()
    assert np.allclose(orders.loc[refunded, "refunded_amount"], orders.loc[refunded, "total"])
    assert (orders.loc[~refunded, "refunded_amount"] == 0).all()
    assert (orders["updated_at"] >= orders["created_at"]).all()


def test_funnel_and_purchases_match_orders(facts: dict[str, pd.DataFrame]) -> None:
    ev, orders, lines = facts["events"], facts["orders"], facts["order_lines"]
    counts = ev["type"].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["search"] > 0
    assert counts["remove_from_cart"] > 0
    # One purchase event per line of every order whose payment went through.
    paid = lines[lines["status"] != "cancelled"]
    bought = ev[ev["type"] == "purchase"]
    assert len(bought) == len(paid)
    pairs = zip(bought["user_id"].astype(int), bought["product_id"].astype(int), strict=True)
    assert sorted(pairs) == sorted(zip(paid["user_id"], paid["product_id"], strict=True))
    # Clicks on search results carry the query and a 1-based position.
    search_clicks = ev[(ev["type"] == "click") & ev["query"].notna()]
    assert len(search_clicks) > 0
    assert (search_clicks["position"] >= 1).all()
    assert ev.loc[ev["type"] == "search", "product_id"].isna().all()
    # Some queries have typos: not every query is a prefix-free phrase of a product name.
    names = " ".join(facts["products"]["name"]).lower()
    queries = ev.loc[ev["type"] == "search", "query"]
    assert (~queries.map(lambda q: all(w in names for w in q.split()))).any()
    assert orders["created_at"].min() >= pd.Timestamp("2026-03-02", tz="UTC")


def test_segments_behave_as_the_truth_says(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    customers = read_truth(out, "customers").set_index("user_id")
    labels = read_truth(out, "order_labels")
    honest = labels[~labels["is_fraud"]]
    segment = customers["segment"]
    per_customer = (
        honest.groupby("user_id")
        .size()
        .reindex(customers.index[segment != "fraudster"], fill_value=0)
    )
    by_segment = per_customer.groupby(segment).mean()
    assert set(by_segment.index) == set(SEGMENTS)
    assert by_segment["loyal_regular"] > 2 * by_segment["gift_buyer"]
    assert by_segment["loyal_regular"] > by_segment["churner"]
    # Bargain hunters buy promoted and cheaper items.
    lines = facts["order_lines"].merge(honest[["order_id"]], on="order_id")
    demand = read_truth(out, "demand")
    demand["date"] = pd.to_datetime(demand["date"])
    lines["date"] = lines["created_at"].dt.tz_localize(None).dt.normalize()
    lines = lines.merge(demand[["product_id", "date", "promo"]], on=["product_id", "date"])
    lines["segment"] = segment.reindex(lines["user_id"]).to_numpy()
    bargain = lines["segment"] == "bargain_hunter"
    assert lines.loc[bargain, "promo"].mean() > 2 * lines.loc[~bargain, "promo"].mean()
    assert lines.loc[bargain, "unit_price"].median() < lines.loc[~bargain, "unit_price"].median()
    # Churners stop buying after their churn date.
    churners = customers[segment == "churner"]
    after = honest.merge(churners[["churn_at"]], left_on="user_id", right_index=True)
    late = after["created_at"] > after["churn_at"] + pd.Timedelta(days=15)
    assert late.mean() < 0.05


def test_purchases_follow_hidden_tastes(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    tastes = read_truth(out, "customer_tastes")
    products = read_truth(out, "products")[["product_id", "category_id"]]
    lines = facts["order_lines"].merge(products, on="product_id")
    top3 = (
        tastes.sort_values(["user_id", "weight"], ascending=[True, False])
        .groupby("user_id")
        .head(3)
    )
    hits = lines.merge(top3, on=["user_id", "category_id"], how="left")["weight"].notna()
    honest = lines["user_id"].isin(tastes["user_id"])
    categories = tastes["category_id"].nunique()
    assert hits[honest.to_numpy()].mean() > 3 * (3 / categories)


def test_weekly_and_demand_seasonality(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    peak = summary["model"]["traffic"]["weekly_peak_dow"]
    per_day = facts["events"].groupby(facts["events"]["received_at"].dt.date).size()
    by_dow = per_day.groupby([pd.Timestamp(d).dayofweek for d in per_day.index]).mean()
    assert by_dow.idxmax() in {peak, (peak - 1) % 7}
    assert by_dow.max() > 1.3 * by_dow.min()
    # The demand truth is the documented formula, and occasions are drawn from it.
    products = read_truth(out, "products").set_index("product_id")
    demand = read_truth(out, "demand")
    p = products.loc[demand["product_id"]].reset_index()
    when = pd.to_datetime(demand["date"])
    doy = when.dt.dayofyear.to_numpy()
    expected = (
        p["base_rate"]
        * (
            1
            + p["weekly_amplitude"]
            * np.cos(2 * np.pi * (when.dt.dayofweek - p["weekly_peak_dow"]) / 7)
        )
        * (1 + p["yearly_amplitude"] * np.cos(2 * np.pi * (doy - p["yearly_peak_doy"]) / 365.25))
        * (demand["price"] / p["reference_price"]) ** p["price_elasticity"]
        * np.where(demand["promo"], p["promo_lift"], 1.0)
    )
    assert np.allclose(expected, demand["expected"], rtol=1e-6)
    total = demand["expected"].sum()
    assert abs(demand["occasions"].sum() - total) < 4 * np.sqrt(total)
    assert demand.loc[demand["promo"], "discount"].gt(0).all()


def test_fraud_patterns_are_labelled(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    labels = read_truth(out, "order_labels")
    incidents = read_truth(out, "fraud_incidents")
    customers = read_truth(out, "customers").set_index("user_id")
    patterns = {"card_testing", "account_takeover", "reshipping"}
    assert set(labels.loc[labels["is_fraud"], "pattern"]) == patterns
    assert labels.loc[~labels["is_fraud"], "pattern"].isna().all()
    assert set(incidents["pattern"]) == patterns
    payments = facts["payments"].merge(labels[["order_id", "pattern"]], on="order_id")
    failed = payments["status"].eq("failed").groupby(payments["pattern"].fillna("honest")).mean()
    assert failed["card_testing"] > 0.5
    assert failed["card_testing"] > 5 * failed["honest"]
    orders = facts["orders"].merge(labels[["order_id", "pattern", "incident"]], on="order_id")
    # Card testers: brand-new accounts, small orders.
    cards = orders[orders["pattern"] == "card_testing"]
    age = cards["created_at"] - customers["signup_at"].reindex(cards["user_id"]).set_axis(
        cards.index
    )
    assert (age < pd.Timedelta(days=1)).all()
    assert cards["subtotal"].median() < orders.loc[orders["pattern"].isna(), "subtotal"].median()
    # Takeovers: old honest accounts shipping abroad; the truth flags the victims.
    taken = orders[orders["pattern"] == "account_takeover"]
    victims = customers.loc[taken["user_id"]]
    assert (victims["segment"] != "fraudster").all()
    assert victims["takeover_victim"].all()
    assert (taken["country"].to_numpy() != victims["country"].to_numpy()).all()
    age = taken["created_at"] - victims["signup_at"].set_axis(taken.index)
    assert (age > pd.Timedelta(days=180)).all()
    # Reshipping: several accounts per ring, one destination country.
    ring = orders[orders["pattern"] == "reshipping"].groupby("incident")
    assert (ring["user_id"].nunique() >= 2).all()
    assert (ring["country"].nunique() == 1).all()


def test_chargebacks_are_the_observed_fraud_outcomes(
    out: Path, facts: dict[str, pd.DataFrame]
) -> None:
    outcomes = facts["order_outcomes"]
    labels = read_truth(out, "order_labels").set_index("order_id")
    orders = facts["orders"].set_index("order_id")
    assert len(outcomes) > 0
    assert outcomes["order_id"].is_unique
    assert (outcomes["source"] == "chargeback").all()
    assert outcomes["decided_by"].isna().all()
    # Only orders that were paid can be disputed; the label follows the reason.
    paid = set(facts["payments"].loc[facts["payments"]["status"] != "failed", "order_id"])
    assert set(outcomes["order_id"]) <= paid
    assert (outcomes["is_fraud"] == (outcomes["reason"] == "fraudulent")).all()
    # A fraudulent chargeback is a true fraud; the truth is untouched (it still has every order).
    truth = labels["is_fraud"].reindex(outcomes["order_id"]).to_numpy(dtype=bool)
    assert (outcomes["is_fraud"].to_numpy(dtype=bool) == truth).all()
    assert len(labels) == len(orders)
    # 3 to 25 days after the order, and known by the end of the period.
    created = orders["created_at"].reindex(outcomes["order_id"]).to_numpy()
    assert (outcomes["order_created_at"].to_numpy() == created).all()
    delay = outcomes["decided_at"] - outcomes["order_created_at"]
    assert delay.between(pd.Timedelta(days=3), pd.Timedelta(days=25)).all()
    end = pd.Timestamp(CONFIG.start, tz="UTC") + pd.Timedelta(days=CONFIG.days)
    assert (outcomes["decided_at"] < end).all()
    assert (outcomes["user_id"].to_numpy() == orders["user_id"].reindex(outcomes["order_id"])).all()


def test_chargeback_shares_follow_the_config() -> None:
    config = SynthConfig(customers=2000, days=120, seed=3, start=date(2026, 1, 1), products=300)
    run = generate(config)
    orders, cb = run.shop.orders, run.shop.chargebacks
    # Orders old enough that any dispute of theirs has been raised by the end.
    settled = orders[
        (orders["paid_us"] >= 0) & (orders["created_us"] < run.world.end_us - 25 * 86_400_000_000)
    ]
    fraud, honest = settled[settled["is_fraud"]], settled[~settled["is_fraud"]]
    assert len(fraud) >= 20
    assert 0.45 <= fraud["order_id"].isin(cb["order_id"]).mean() <= 0.9  # default 0.7
    assert 0.001 <= honest["order_id"].isin(cb["order_id"]).mean() <= 0.015  # default 0.005
    assert set(cb.loc[~cb["is_fraud"], "reason"]) <= {
        "product_not_received",
        "product_unacceptable",
        "credit_not_processed",
        "duplicate",
    }
    assert set(cb.loc[cb["is_fraud"], "status"]) <= {"open", "lost"}
    # Configurable: no fraud chargebacks at rate 0, and the same seed gives the same disputes.
    none = generate(replace(config, chargeback_rate=0.0, dispute_rate=0.0))
    assert len(none.shop.chargebacks) == 0
    assert none.shop.orders["order_id"].tolist() == orders["order_id"].tolist()
    again = generate(config)
    pd.testing.assert_frame_equal(again.shop.chargebacks, cb)
    with pytest.raises(ValueError, match="chargeback_rate"):
        SynthConfig(chargeback_rate=1.5)


def test_stock_ledger_never_goes_negative(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    moves = facts["stock_movements"].sort_values("id")
    assert (moves["on_hand_after"] >= 0).all()
    assert set(moves["reason"]) == {"set", "restock", "sale", "refund"}
    running = moves.groupby("sku")["delta_on_hand"].cumsum()
    assert (running == moves["on_hand_after"]).all()
    assert moves.sort_values(["created_at", "id"])["id"].is_monotonic_increasing
    final = moves.groupby("sku")["on_hand_after"].last()
    variants = facts["variants"].set_index("sku")
    assert (variants.loc[final.index, "on_hand"] == final).all()
    assert (variants["reserved"] == 0).all()
    sold = moves.loc[moves["reason"] == "sale", "order_id"]
    paid = facts["orders"].loc[facts["orders"]["status"] != "cancelled", "order_id"]
    assert set(sold) == set(paid)
    # Stock-outs happen, and deliveries follow the suppliers' truths.
    demand = read_truth(out, "demand")
    assert (demand["on_hand_start"] == 0).any()
    assert demand["units_lost"].sum() > 0
    pos = read_truth(out, "purchase_orders").merge(read_truth(out, "suppliers"), on="supplier_id")
    assert (pos["received"] <= pos["ordered"]).all()
    assert pos["received"].sum() < pos["ordered"].sum()
    assert (pos["lead_days"] >= 1).all()


def test_purchase_orders_fact_matches_the_truth(out: Path, facts: dict[str, pd.DataFrame]) -> None:
    pos, suppliers = facts["purchase_orders"], facts["suppliers"]
    truth = read_truth(out, "purchase_orders")
    true_suppliers = read_truth(out, "suppliers")
    # The supplier dimension: one row per true supplier, promising its mean lead time.
    assert suppliers["supplier_id"].tolist() == true_suppliers["supplier_id"].tolist()
    assert suppliers["name"].is_unique
    assert (suppliers["lead_time_days"] == true_suppliers["lead_time_mean_days"].round()).all()
    assert suppliers["is_active"].all()
    # One fact row per simulated supplier order (one line each), ids sypo-<seed>-<n>.
    assert len(pos) == len(truth) > 0
    assert pos["po_id"].is_unique
    pos = pos.assign(n=pos["po_id"].str.removeprefix(f"sypo-{CONFIG.seed}-").astype(int))
    both = pos.merge(truth, left_on="n", right_on="po_id", suffixes=("", "_truth"))
    assert len(both) == len(truth)
    for ours, theirs in (("supplier_id", "supplier_id_truth"), ("product_id", "product_id_truth")):
        assert (both[ours] == both[theirs]).all(), ours
    assert (both["sku"] == both["sku_truth"]).all()
    assert (both["quantity_ordered"] == both["ordered"]).all()
    assert (both["placed_at"] == both["placed_at_truth"]).all()
    arrived = both["arrived"]
    assert (both["quantity_received"] == np.where(arrived, both["received"], 0)).all()
    assert (both.loc[arrived, "received_at"] == both.loc[arrived, "arrives_at"]).all()
    assert both.loc[~arrived, "received_at"].isna().all()
    expected = np.select(
        [~arrived, both["received"] >= both["ordered"]],
        ["placed", "received"],
        "partially_received",
    )
    assert (both["status"] == expected).all()
    assert set(both["status"]) == {"placed", "received", "partially_received"}
    promised = suppliers.set_index("supplier_id")["lead_time_days"].reindex(both["supplier_id"])
    lead = (both["expected_at"] - both["placed_at"]).dt.days.to_numpy()
    assert (lead == promised.to_numpy()).all()
    assert (both["updated_at"] == both["received_at"].fillna(both["placed_at"])).all()
    assert (both["unit_cost"] > 0).all()
    # Every delivery is the restock movement of its purchase order: the ledger agrees.
    moves = facts["stock_movements"]
    restocks = moves[moves["reason"] == "restock"]
    assert len(restocks) == int((pos["quantity_received"] > 0).sum())
    by_sku = restocks.groupby("sku")["delta_on_hand"].sum()
    received = pos.groupby("sku")["quantity_received"].sum()
    assert by_sku.sort_index().equals(received[received > 0].sort_index())


def test_feature_tables_build_from_the_synthetic_facts(out: Path, tmp_path: Path) -> None:
    from cartwise.features.tables import build_feature_tables

    counts = build_feature_tables(out, tmp_path / "tables")
    assert all(counts.values()), counts


def test_small_and_empty_worlds_do_not_break() -> None:
    for config in (
        SynthConfig(customers=1, days=1, seed=1, start=date(2026, 1, 1), products=1),
        SynthConfig(customers=5, days=3, seed=2, start=date(2026, 1, 1), products=2, fraud_rate=0),
    ):
        run = generate(config)
        assert len(run.shop.products) == config.products


# ------------------------------------------------------------------------ database


DB_CONFIG = SynthConfig(customers=100, days=35, seed=11, start=date(2026, 2, 2), products=80)


def _scalar(session: Session, sql: str) -> Any:
    return session.execute(text(sql)).scalar_one()


@pytest.fixture
def db_session(db_url: str) -> Iterator[Session]:
    """A session on the current backend (SQLite file or the test PostgreSQL)."""
    from cartwise.platform.db import make_engine

    engine = make_engine(db_url)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def test_database_path_keeps_invariants_and_is_idempotent(
    db_session: Session, tmp_path: Path
) -> None:
    first = synth(DB_CONFIG, to="db", out=tmp_path, session=db_session)
    s = db_session
    counts = first.counts
    assert first.written["orders"] == counts["orders"]
    assert first.written["events"] == counts["events"]
    assert first.written["customers"] == counts["customers"] + counts["fraud_accounts"]
    assert _scalar(s, 'SELECT count(*) FROM "order"') == counts["orders"]
    assert _scalar(s, "SELECT count(*) FROM shopper_event") == counts["events"]
    # Totals as checkout computes them (SQLite compares decimals as floats: allow a hair).
    checks = {
        "subtotal": 'SELECT count(*) FROM "order" o WHERE abs(o.subtotal - '
        "(SELECT sum(l.line_total) FROM order_line l WHERE l.order_id = o.id)) > 0.001",
        "total": 'SELECT count(*) FROM "order" '
        "WHERE abs(total - (subtotal - discount + shipping + tax)) > 0.001",
        "line": "SELECT count(*) FROM order_line "
        "WHERE abs(line_total - unit_price * quantity) > 0.001",
        # References.
        "line product": "SELECT count(*) FROM order_line l "
        "LEFT JOIN product p ON p.id = l.product_id WHERE p.id IS NULL",
        "event product": "SELECT count(*) FROM shopper_event e LEFT JOIN product p "
        "ON p.id = e.product_id WHERE e.product_id IS NOT NULL AND p.id IS NULL",
        "event user": 'SELECT count(*) FROM shopper_event e LEFT JOIN "user" u '
        "ON u.id = e.user_id WHERE e.user_id IS NOT NULL AND u.id IS NULL",
        "event time": "SELECT count(*) FROM shopper_event WHERE client_ts <> received_at",
        # Stock: never negative, the level is the ledger's last word.
        "ledger": "SELECT count(*) FROM stock_movement WHERE on_hand_after < 0",
        "level": "SELECT count(*) FROM stock_level WHERE on_hand < 0 OR reserved <> 0",
        "level vs ledger": "SELECT count(*) FROM stock_level l WHERE l.on_hand <> "
        "(SELECT m.on_hand_after FROM stock_movement m WHERE m.sku = l.sku "
        "ORDER BY m.created_at DESC, m.id DESC LIMIT 1)",
        "refund amount": 'SELECT count(*) FROM refund r JOIN "order" o ON o.id = r.order_id '
        "WHERE abs(r.amount - o.refunded_amount) > 0.001",
        "password": "SELECT count(*) FROM \"user\" WHERE hashed_password <> '!'",
    }
    assert {name: _scalar(s, sql) for name, sql in checks.items()} == dict.fromkeys(checks, 0)
    statuses = {r[0] for r in s.execute(text('SELECT DISTINCT status FROM "order"'))}
    assert statuses <= {
        "pending_payment",
        "paid",
        "fulfilled",
        "shipped",
        "delivered",
        "cancelled",
        "refunded",
    }
    # Payments, refunds and transitions.
    assert _scalar(s, "SELECT count(*) FROM payment WHERE status = 'failed'") > 0
    refunded = _scalar(s, "SELECT count(*) FROM \"order\" WHERE status = 'refunded'")
    assert _scalar(s, "SELECT count(*) FROM refund") == refunded > 0
    assert _scalar(s, "SELECT count(DISTINCT order_id) FROM order_transition") == counts["orders"]
    truth = read_truth(tmp_path, "customers")
    assert truth["db_user_id"].notna().all()
    assert read_truth(tmp_path, "suppliers")["db_supplier_id"].notna().all()
    # Purchase orders: each line received what its deliveries (restocks) put on the shelf.
    supplies = {
        "deliveries": "SELECT count(*) FROM purchase_order_line l WHERE l.quantity_received <> "
        "(SELECT coalesce(sum(m.delta_on_hand), 0) FROM stock_movement m "
        "WHERE m.purchase_order_id = l.purchase_order_id AND m.sku = l.sku)",
        "orphan restocks": "SELECT count(*) FROM stock_movement WHERE reason = 'restock' "
        "AND purchase_order_id IS NULL",
        "status": "SELECT count(*) FROM purchase_order p JOIN purchase_order_line l "
        "ON l.purchase_order_id = p.id WHERE (p.status = 'received') <> "
        "(l.quantity_received = l.quantity_ordered AND p.received_at IS NOT NULL)",
        "receipts": "SELECT count(*) FROM purchase_order_line l WHERE l.quantity_received > 0 "
        "AND NOT EXISTS (SELECT 1 FROM purchase_order_receipt r "
        "WHERE r.purchase_order_id = l.purchase_order_id)",
    }
    assert {n: _scalar(s, sql) for n, sql in supplies.items()} == dict.fromkeys(supplies, 0)
    assert first.written["purchase_orders"] == counts["purchase_orders"] > 0
    # Chargebacks: real rows, each on the payment that collected its order.
    assert first.written["chargebacks"] == counts["chargebacks"] > 0
    assert _scalar(s, "SELECT count(*) FROM chargeback") == counts["chargebacks"]
    orphans = (
        "SELECT count(*) FROM chargeback c JOIN payment p ON p.id = c.payment_id "
        "WHERE p.order_id <> c.order_id OR p.status = 'failed'"
    )
    assert _scalar(s, orphans) == 0
    assert (
        _scalar(s, "SELECT count(*) FROM chargeback WHERE reason = 'fraudulent'")
        == (counts["fraud_chargebacks"])
    )

    # A second run with the same config inserts nothing.
    tables = (
        "category",
        "product",
        "variant",
        '"user"',
        '"order"',
        "order_line",
        "order_transition",
        "payment",
        "refund",
        "stock_level",
        "stock_movement",
        "shopper_event",
        "supplier",
        "purchase_order",
        "purchase_order_line",
        "purchase_order_receipt",
        "chargeback",
    )
    before = {t: _scalar(s, f"SELECT count(*) FROM {t}") for t in tables}  # noqa: S608
    again = synth(DB_CONFIG, to="db", out=tmp_path, session=s)
    assert set(again.written.values()) == {0}
    assert {t: _scalar(s, f"SELECT count(*) FROM {t}") for t in tables} == before  # noqa: S608
    # The same seed with other arguments would mix two shops: refused.
    from cartwise.features.synth.write_db import SynthConflict

    longer = SynthConfig(
        DB_CONFIG.customers, DB_CONFIG.days + 1, DB_CONFIG.seed, DB_CONFIG.start, DB_CONFIG.products
    )
    with pytest.raises(SynthConflict):
        synth(longer, to="db", out=tmp_path, session=s)
    assert _scalar(s, 'SELECT count(*) FROM "order"') == before['"order"']


def test_database_export_equals_the_direct_parquet(db_session: Session, tmp_path: Path) -> None:
    """Both paths describe one shop: the DB, once exported, says what the Parquet path wrote."""
    from cartwise.features.export import export_facts

    synth(DB_CONFIG, to="db", out=tmp_path / "db", session=db_session)
    export_facts(db_session.get_bind(), tmp_path / "exported")  # type: ignore[arg-type]
    synth(DB_CONFIG, to="parquet", out=tmp_path / "direct")
    for name in FACTS:
        exported = read_fact(tmp_path / "exported", name)
        direct = read_fact(tmp_path / "direct", name)
        assert len(exported) == len(direct), name
    key = ["order_id"]
    exported = read_fact(tmp_path / "exported", "orders").sort_values(key).reset_index(drop=True)
    direct = read_fact(tmp_path / "direct", "orders").sort_values(key).reset_index(drop=True)
    for column in ("order_id", "status", "country", "created_at"):
        assert exported[column].tolist() == direct[column].tolist(), column
    for column in ("subtotal", "total", "refunded_amount"):
        assert np.allclose(exported[column], direct[column]), column
    key = ["po_id"]
    exported = read_fact(tmp_path / "exported", "purchase_orders").sort_values(key)
    direct = read_fact(tmp_path / "direct", "purchase_orders").sort_values(key)
    for column in (
        "po_id",
        "sku",
        "status",
        "quantity_ordered",
        "quantity_received",
        "placed_at",
        "expected_at",
        "received_at",
        "updated_at",
    ):
        assert exported[column].tolist() == direct[column].tolist(), column
    assert np.allclose(exported["unit_cost"], direct["unit_cost"])
    names = [pd.read_parquet(tmp_path / p / "suppliers.parquet") for p in ("exported", "direct")]
    assert sorted(names[0]["name"]) == sorted(names[1]["name"])
    events = [read_fact(tmp_path / p, "events") for p in ("exported", "direct")]
    kinds = [e["type"].value_counts().to_dict() for e in events]
    assert kinds[0] == kinds[1]
    assert sorted(events[0]["event_id"]) == sorted(events[1]["event_id"])
    # The chargebacks, exported from the database, are the outcomes the Parquet path wrote.
    key = ["order_id"]
    outcomes = [
        read_fact(tmp_path / p, "order_outcomes").sort_values(key).reset_index(drop=True)
        for p in ("exported", "direct")
    ]
    for column in ("order_id", "source", "is_fraud", "reason", "decided_at", "order_created_at"):
        assert outcomes[0][column].tolist() == outcomes[1][column].tolist(), column


# ------------------------------------------------------------------------------ CLI


def test_cli_synth_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from cartwise.pipelines.cli import app\n"
        "try:\n"
        "    app(['data', 'synth', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "LOADED=\n" in result.stdout, result.stdout[-500:]
    assert "--fraud-rate" in result.stdout
    assert "--chargeback-rate" in result.stdout
    assert "--dispute-rate" in result.stdout


def test_cli_synth_to_parquet_and_database(cli_env: dict[str, str], tmp_path: Path) -> None:
    from cartwise.pipelines.cli import app
    from cartwise.platform.settings import get_settings

    def invoke(*args: str) -> Any:
        get_settings.cache_clear()
        result = CliRunner().invoke(app, list(args), env=cli_env, catch_exceptions=False)
        get_settings.cache_clear()
        return result

    small = ("--customers", "40", "--days", "7", "--products", "50", "--start", "2026-01-05")
    result = invoke("data", "synth", *small, "--to", "parquet", "--out", str(tmp_path / "pq"))
    assert result.exit_code == 0, result.output
    assert "events" in result.output
    assert (tmp_path / "pq" / "ground_truth" / "summary.json").is_file()
    assert any((tmp_path / "pq" / "events").glob("date=2026-01-*/part-0.parquet"))
    assert invoke("data", "synth", "--start", "not-a-date").exit_code == 2

    assert invoke("db", "upgrade").exit_code == 0
    result = invoke("data", "synth", *small)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "synth" / "ground_truth" / "customers.parquet").is_file()
    result = invoke("data", "synth", *small)
    assert result.exit_code == 0, result.output
    assert "events 0" in result.output
    assert (
        invoke(
            "data", "synth", "--customers", "41", "--days", "7", "--start", "2026-01-05"
        ).exit_code
        == 2
    )
