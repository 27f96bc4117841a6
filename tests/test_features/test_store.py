"""The feature store end to end: commerce rows → export → tables → Feast apply/materialise/serve.

Two set-ups, each over real services: SQLite commerce DB + SQLite online store + file registry
(embedded), and PostgreSQL commerce DB + the real Redis online store + a SQL registry on
PostgreSQL (production). A small shop with hand-set timestamps makes every expected value
computable by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session

from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.orders.models import Order
from cartwise.features.settings import FeatureSettings
from tests.test_features.shop import Shop, at, build_shop

pytestmark = pytest.mark.integration


@pytest.fixture
def refreshed(feature_env: tuple[FeatureSettings, Session]) -> tuple[FeatureSettings, Shop]:
    """The shop exported, built, applied and materialised."""
    from cartwise.features import store
    from cartwise.features.export import export_facts
    from cartwise.features.tables import build_feature_tables
    from cartwise.platform.db import get_engine

    settings, s = feature_env
    shop = build_shop(s)
    export_facts(get_engine(settings), settings.exports_dir)
    build_feature_tables(settings.exports_dir, settings.tables_dir)
    assert store.apply(settings) is True
    summary = store.materialize(settings)
    assert summary.rows["customer_stats"] > 0
    return settings, shop


def _online(settings: FeatureSettings, service: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from cartwise.features.store import get_store

    fs = get_store(settings)
    return fs.get_online_features(
        features=fs.get_feature_service(service), entity_rows=rows
    ).to_dict()


def test_online_features_match_the_commerce_data(refreshed: tuple[FeatureSettings, Shop]) -> None:
    settings, shop = refreshed
    got = _online(settings, "customer_v1", [{"customer_id": shop.customer}])
    # As of the end of 10 March: o1 (3 mugs, £30) and o3 (2 mugs, £20) count; o2 was refunded.
    assert got["orders_lifetime"] == [2]
    assert got["spend_lifetime"] == [50.0]
    assert got["returns_90d"] == [1]
    assert got["days_since_last_order"] == [0]
    assert got["views_30d"] == [2]
    assert got["sessions_30d"] == [1]
    assert got["top_category_id"] == [shop.kitchen]
    assert got["category_ids"][0][0] == shop.kitchen

    product = _online(settings, "product_v1", [{"product_id": shop.mug}, {"product_id": shop.rake}])
    assert product["units_30d"] == [5, 4]
    assert product["orders_30d"] == [2, 1]
    assert product["views_30d"] == [1, 1]
    assert product["search_clicks_30d"] == [1, 0]
    assert product["stock_on_hand"] == [45, 21]
    assert product["price"] == [10.0, 5.0]
    # The rake: 4 units kept (Bob) and 1 returned (Ann's refunded order) in 90 days.
    assert product["return_rate_90d"][1] == pytest.approx(1 / 5)

    session = _online(settings, "session_v1", [{"session_id": "s-ann"}])
    assert session["last_products"] == [[shop.mug, shop.rake, shop.mug]]
    assert session["view_count"] == [2]
    assert session["search_count"] == [1]
    assert session["cart_value"] == [10.0]


def test_fraud_service_combines_history_with_the_order(
    refreshed: tuple[FeatureSettings, Shop],
) -> None:
    settings, shop = refreshed
    now = int(datetime(2026, 3, 11, 12, tzinfo=UTC).timestamp())
    got = _online(
        settings,
        "fraud_v1",
        [
            {
                "customer_id": shop.customer,
                "order_amount": 55.0,
                "shipping_country": "DE",
                "orders_last_hour": 3,
                "request_epoch": now,
            },
            {
                "customer_id": shop.customer,
                "order_amount": 10.0,
                "shipping_country": "FR",
                "orders_last_hour": 0,
                "request_epoch": now,
            },
        ],
    )
    # History: o1 £30, o2 £5 (refunded, still placed), o3 £20 → average £55/3.
    assert got["amount_vs_avg"][0] == pytest.approx(55.0 / (55.0 / 3))
    assert got["is_new_country"] == [1, 0]
    assert got["order_velocity_1h"] == [3, 0]
    assert got["account_age_days"][0] == pytest.approx((now - 1767225600) / 86400)
    # One failed attempt out of three.
    assert got["failed_payment_share_now"][0] == pytest.approx(1 / 3)


def test_point_in_time_join_never_leaks_later_facts(
    refreshed: tuple[FeatureSettings, Shop],
) -> None:
    from cartwise.features.store import get_store

    settings, shop = refreshed
    fs = get_store(settings)
    times = [at(1, 9), at(1, 11), at(2, 0), at(5, 16), at(10, 8, 30), at(10, 9, 30), at(11, 0)]
    entity = pd.DataFrame({"customer_id": [shop.customer] * len(times), "event_timestamp": times})
    frame = (
        fs.get_historical_features(entity_df=entity, features=fs.get_feature_service("customer_v1"))
        .to_df()
        .sort_values("event_timestamp")
        .reset_index(drop=True)
    )
    # The facts, by hand: placed (not refunded) orders strictly before the row's day began.
    orders = [(at(1, 10), 30.0), (at(10, 9), 20.0)]
    for row in frame.itertuples():
        ts = row.event_timestamp
        day_start = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        known = [amount for when, amount in orders if when < day_start]
        if pd.isna(row.orders_lifetime):
            # No feature row yet: nothing may be known either.
            assert not known, f"{ts}: features missing though {known} were known"
            continue
        assert row.orders_lifetime == len(known), ts
        assert row.spend_lifetime == pytest.approx(sum(known)), ts
    by_time = dict(zip(frame.event_timestamp, frame.orders_lifetime, strict=True))
    # o1 at 10:00 on the 1st is not visible on that day, even an hour later...
    assert pd.isna(by_time[pd.Timestamp(at(1, 11))])
    # ...but is from midnight; o3 (9:00 on the 10th) only from the 11th.
    assert by_time[pd.Timestamp(at(2, 0))] == 1
    assert by_time[pd.Timestamp(at(10, 9, 30))] == 1
    assert by_time[pd.Timestamp(at(11, 0))] == 2


def test_export_is_incremental_and_idempotent(
    feature_env: tuple[FeatureSettings, Session],
) -> None:
    from cartwise.features.export import export_facts
    from cartwise.platform.db import get_engine

    settings, s = feature_env
    shop = build_shop(s)
    engine = get_engine(settings)
    first = export_facts(engine, settings.exports_dir)
    assert first.rows["orders"] == 4
    assert first.partitions["orders"] == 4  # the 1st, 5th, 9th and 10th
    assert first.rows["events"] == 5
    files = sorted(settings.exports_dir.glob("orders/date=*/part-0.parquet"))
    stamps = {f: f.stat().st_mtime_ns for f in files}

    again = export_facts(engine, settings.exports_dir)
    assert not again.changed
    assert {f: f.stat().st_mtime_ns for f in files} == stamps

    # A refund on an old order rewrites only that order's day.
    order = s.get(Order, "o1")
    assert order is not None
    order.status = "refunded"
    order.refunded_amount = order.total
    order.updated_at = datetime.now(UTC)
    s.add(order)
    s.add(
        ShopperEvent(
            event_id=str(uuid.uuid4()),
            type="view",
            session_id="s-2",
            user_id=shop.other,
            product_id=shop.rake,
            client_ts=at(12),
            received_at=at(12),
        )
    )
    s.commit()
    third = export_facts(engine, settings.exports_dir)
    assert third.partitions == {
        "orders": 1,
        "order_lines": 1,
        "events": 1,
        "payments": 0,
        "stock_movements": 0,
        "purchase_orders": 0,
        "order_outcomes": 0,
    }
    day1 = pd.read_parquet(settings.exports_dir / "orders" / "date=2026-03-01")
    assert day1.loc[0, "status"] == "refunded"
    assert len(pd.read_parquet(settings.exports_dir / "orders")) == 4
    assert len(pd.read_parquet(settings.exports_dir / "events")) == 6


def test_apply_is_skipped_when_nothing_changed_and_materialize_is_incremental(
    refreshed: tuple[FeatureSettings, Shop],
) -> None:
    from cartwise.features import store

    settings, _ = refreshed
    assert store.apply(settings) is False
    again = store.materialize(settings)
    assert again.skipped
    assert store.apply(settings, force=True) is True


def test_session_push_makes_new_events_visible_online(
    refreshed: tuple[FeatureSettings, Shop], make_client: Callable[..., Any]
) -> None:
    settings, shop = refreshed
    client, sink = make_client(settings)
    now = datetime.now(UTC).isoformat()
    events = [
        {"type": "view", "session_id": "s-new", "product_id": shop.rake, "client_ts": now},
        {"type": "view", "session_id": "s-new", "product_id": shop.mug, "client_ts": now},
        {"type": "search", "session_id": "s-new", "query": "rake", "client_ts": now},
        {"type": "add_to_cart", "session_id": "s-new", "product_id": shop.rake, "client_ts": now},
    ]
    r = client.post("/api/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    assert sink.flush(timeout=30)
    assert sink.failures == 0
    got = _online(settings, "session_v1", [{"session_id": "s-new"}])
    assert got["last_products"] == [[shop.mug, shop.rake]]
    assert got["view_count"] == [2]
    assert got["search_count"] == [1]
    assert got["event_count"] == [4]
    assert got["cart_value"] == [5.0]


def test_push_computes_what_the_batch_table_says(refreshed: tuple[FeatureSettings, Shop]) -> None:
    from cartwise.features.push import session_features
    from cartwise.platform.db import get_engine

    settings, _ = refreshed
    online = session_features(get_engine(settings), ["s-ann"]).iloc[0]
    batch = pd.read_parquet(settings.tables_dir / "session_features.parquet")
    last = batch[batch.session_id == "s-ann"].sort_values("event_timestamp").iloc[-1]
    for column in ("view_count", "search_count", "event_count", "cart_value"):
        assert online[column] == last[column], column
    assert list(online["last_products"]) == list(last["last_products"])
    assert online["event_timestamp"] == last["event_timestamp"]


def test_a_failing_push_loses_no_event(
    feature_env: tuple[FeatureSettings, Session], make_client: Callable[..., Any]
) -> None:
    settings, s = feature_env
    # Nothing applied: no registry (embedded) or no push source in it (SQL registry).
    client, sink = make_client(settings)
    now = datetime.now(UTC).isoformat()
    r = client.post(
        "/api/v1/events",
        json={"events": [{"type": "search", "session_id": "s-x", "query": "q", "client_ts": now}]},
    )
    assert r.status_code == 202
    assert sink.flush(timeout=30)
    assert sink.pushed == 0
    assert sink.failures + sink.dropped == 1
    assert s.query(ShopperEvent).filter(ShopperEvent.session_id == "s-x").count() == 1


def test_stock_stocked_today_does_not_stretch_history(
    feature_env: tuple[FeatureSettings, Session],
) -> None:
    """A catalog stocked today beside imported history: the grid ends with the history."""
    from cartwise.commerce.inventory.models import StockMovement
    from cartwise.features.export import export_facts
    from cartwise.features.tables import build_feature_tables
    from cartwise.platform.db import get_engine

    settings, s = feature_env
    shop = build_shop(s)
    s.add(
        StockMovement(
            sku="RAKE-1",
            reason="set",
            delta_on_hand=79,
            on_hand_after=100,
            reserved_after=0,
            created_at=datetime(2026, 11, 20, tzinfo=UTC),
        )
    )
    s.commit()
    export_facts(get_engine(settings), settings.exports_dir)
    build_feature_tables(settings.exports_dir, settings.tables_dir)
    stats = pd.read_parquet(settings.tables_dir / "product_stats.parquet")
    assert stats["event_timestamp"].max() == pd.Timestamp(at(11, 0))  # the end of 10 March
    rake = stats[stats.product_id == shop.rake].sort_values("event_timestamp")
    assert rake["stock_on_hand"].iloc[:-1].max() <= 25  # the ledger of March, never today's 100
