"""The Feast definitions: entities, sources, feature views and the feature service per model.

Built by a function of the settings (the batch sources point at the feature tables under
``features_dir``), so the same objects are applied by ``cartwise features apply``, by the
refresh flow and by the ``feast`` CLI through the repo file ``features/repo_definitions.py``.
Models and serving never import this module: they ask for a feature service by name.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int64, String

from cartwise.features.settings import SESSION_PUSH_SOURCE, FeatureSettings

FEATURE_SERVICES = ("recommend_v1", "search_rank_v1", "customer_v1", "demand_v1", "fraud_v1")


def _source(tables: Path, name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str((tables / f"{name}.parquet").resolve()),
        timestamp_field="event_timestamp",
    )


def _ints(*names: str) -> list[Field]:
    return [Field(name=n, dtype=Int64) for n in names]


def _floats(*names: str) -> list[Field]:
    return [Field(name=n, dtype=Float64) for n in names]


def build(settings: FeatureSettings) -> list[Any]:
    """Every Feast object of the repo, with batch sources under ``settings.tables_dir``."""
    tables = settings.tables_dir
    ttl = timedelta(days=settings.feature_ttl_days)

    customer = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.INT64,
        description="A registered shopper (user id).",
    )
    product = Entity(
        name="product",
        join_keys=["product_id"],
        value_type=ValueType.INT64,
        description="A catalog product.",
    )
    session = Entity(
        name="session",
        join_keys=["session_id"],
        value_type=ValueType.STRING,
        description="A shopper's browsing session (client session id).",
    )

    customer_stats = FeatureView(
        name="customer_stats",
        description="RFM and behaviour over 7, 30 and 90 days, as of each day's end.",
        entities=[customer],
        ttl=ttl,
        schema=[
            *_ints("orders_7d", "orders_30d", "orders_90d"),
            *_floats("spend_7d", "spend_30d", "spend_90d"),
            *_ints("returns_7d", "returns_30d", "returns_90d"),
            *_ints("sessions_7d", "sessions_30d", "sessions_90d"),
            *_ints("views_7d", "views_30d", "views_90d"),
            *_floats("purchases_per_view_7d", "purchases_per_view_30d", "purchases_per_view_90d"),
            *_ints("days_since_last_order", "orders_lifetime"),
            *_floats("spend_lifetime", "avg_order_value"),
            *_ints("top_category_id"),
            *_floats("top_category_share"),
            *_ints("categories_90d"),
        ],
        source=_source(tables, "customer_stats"),
        tags={"team": "ml", "grain": "daily"},
    )
    customer_affinity = FeatureView(
        name="customer_affinity",
        description="Customer x category affinity over 90 days: top categories and scores.",
        entities=[customer],
        ttl=ttl,
        schema=[
            Field(name="category_ids", dtype=Array(Int64)),
            Field(name="category_scores", dtype=Array(Float32)),
        ],
        source=_source(tables, "customer_affinity"),
        tags={"team": "ml", "grain": "daily"},
    )
    customer_fraud_profile = FeatureView(
        name="customer_fraud_profile",
        description="What a customer's history says for fraud checks, as of each day's end.",
        entities=[customer],
        ttl=ttl,
        schema=[
            *_ints("account_created_epoch", "orders_lifetime"),
            *_floats("avg_order_amount"),
            Field(name="known_countries", dtype=Array(String)),
            *_ints("payment_attempts"),
            *_floats("failed_payment_share"),
        ],
        source=_source(tables, "customer_fraud_profile"),
        tags={"team": "ml", "grain": "daily"},
    )
    product_stats = FeatureView(
        name="product_stats",
        description="Popularity, conversion, price, stock and returns of a product.",
        entities=[product],
        ttl=ttl,
        schema=[
            *_ints("units_1d", "units_7d", "units_30d", "views_1d", "views_7d", "views_30d"),
            *_ints("carts_7d", "orders_1d", "orders_7d", "orders_30d"),
            *_floats("revenue_30d", "conversion_1d", "conversion_7d", "conversion_30d"),
            *_ints("search_clicks_30d"),
            *_floats("price", "price_change_30d"),
            *_ints("stock_on_hand"),
            *_floats("days_of_cover", "return_rate_90d"),
        ],
        source=_source(tables, "product_stats"),
        tags={"team": "ml", "grain": "daily"},
    )
    product_demand_daily = FeatureView(
        name="product_demand_daily",
        description="Units sold per product and day, with calendar features.",
        entities=[product],
        ttl=timedelta(days=2),
        schema=[
            Field(name="sales_date", dtype=String),
            *_ints("units"),
            *_floats("revenue"),
            *_ints("orders"),
            *_floats("avg_unit_price"),
            *_ints("day_of_week", "day_of_month", "month", "week_of_year", "is_weekend"),
        ],
        source=_source(tables, "product_demand_daily"),
        tags={"team": "ml", "grain": "daily"},
    )
    session_push = PushSource(
        name=SESSION_PUSH_SOURCE,
        batch_source=_source(tables, "session_features"),
        description="Session state pushed by the events API after each stored batch.",
    )
    session_features = FeatureView(
        name="session_features",
        description="The live session: last products viewed, cart value, searches.",
        entities=[session],
        ttl=timedelta(days=1),
        schema=[
            Field(name="last_products", dtype=Array(Int64)),
            *_ints("view_count", "search_count", "event_count"),
            *_floats("cart_value"),
        ],
        source=session_push,
        tags={"team": "ml", "freshness": "push"},
    )

    order_request = RequestSource(
        name="order_request",
        schema=[
            Field(name="order_amount", dtype=Float64),
            Field(name="shipping_country", dtype=String),
            Field(name="orders_last_hour", dtype=Int64),
            Field(name="request_epoch", dtype=Int64),
        ],
        description="The order being checked, sent with the request.",
    )

    @on_demand_feature_view(  # type: ignore[untyped-decorator]
        sources=[customer_fraud_profile, order_request],
        schema=[
            *_floats("amount_vs_avg"),
            *_ints("is_new_country", "order_velocity_1h"),
            *_floats("account_age_days", "failed_payment_share_now"),
        ],
        mode="pandas",
        description="Fraud signals of one order against the customer's history.",
    )
    def fraud_order_signals(inputs: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=inputs.index)
        avg = inputs["avg_order_amount"].fillna(0.0).astype("float64")
        amount = inputs["order_amount"].astype("float64")
        # No history yet: compare against nothing (ratio 1 means "ordinary").
        out["amount_vs_avg"] = (amount / avg.where(avg > 0)).fillna(1.0)
        known = inputs["known_countries"]
        country = inputs["shipping_country"]
        out["is_new_country"] = [
            int(c is not None and (k is None or c not in list(k)))
            for c, k in zip(country, known, strict=True)
        ]
        out["order_velocity_1h"] = inputs["orders_last_hour"].fillna(0).astype("int64")
        created = inputs["account_created_epoch"].astype("float64")
        age = (inputs["request_epoch"].astype("float64") - created) / 86_400.0
        out["account_age_days"] = age.fillna(0.0).clip(lower=0.0)
        out["failed_payment_share_now"] = (
            inputs["failed_payment_share"].fillna(0.0).astype("float64")
        )
        return out

    recommend_v1 = FeatureService(
        name="recommend_v1",
        features=[customer_stats, customer_affinity],
        description="Customer-side features of the recommenders (two-tower, reranking).",
    )
    search_rank_v1 = FeatureService(
        name="search_rank_v1",
        features=[
            product_stats[
                [
                    "views_30d",
                    "units_30d",
                    "orders_30d",
                    "conversion_30d",
                    "search_clicks_30d",
                    "price",
                    "stock_on_hand",
                ]
            ]
        ],
        description="Product features of the learned search ranker.",
    )
    customer_v1 = FeatureService(
        name="customer_v1",
        features=[customer_stats, customer_affinity],
        description="Segmentation, churn and lifetime value.",
    )
    demand_v1 = FeatureService(
        name="demand_v1",
        features=[
            product_demand_daily,
            product_stats[["price", "price_change_30d", "stock_on_hand", "days_of_cover"]],
        ],
        description="The demand forecaster: daily units with calendar, price and stock.",
    )
    fraud_v1 = FeatureService(
        name="fraud_v1",
        features=[
            customer_fraud_profile[["orders_lifetime", "avg_order_amount", "payment_attempts"]],
            fraud_order_signals,
        ],
        description="The fraud scorer: order signals against the customer's history.",
    )
    session_v1 = FeatureService(
        name="session_v1",
        features=[session_features],
        description="Real-time session state for session-based recommendations.",
    )
    product_v1 = FeatureService(
        name="product_v1",
        features=[product_stats],
        description="Item-side features of the recommenders.",
    )
    return [
        customer,
        product,
        session,
        customer_stats,
        customer_affinity,
        customer_fraud_profile,
        product_stats,
        product_demand_daily,
        session_push,
        session_features,
        order_request,
        fraud_order_signals,
        recommend_v1,
        search_rank_v1,
        customer_v1,
        demand_v1,
        fraud_v1,
        session_v1,
        product_v1,
    ]
