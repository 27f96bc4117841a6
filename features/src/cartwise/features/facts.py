"""The commerce facts as Parquet: the contract between the exporters and the feature tables.

``cartwise features export`` writes these from the commerce database and ``cartwise data synth
--to parquet`` writes them directly; the feature tables (:mod:`cartwise.features.tables`) read
only this layout. Layout under the export root::

    <table>/date=YYYY-MM-DD/part-0.parquet   # partitioned facts, by the UTC day of DATE_COLUMN
    <dimension>.parquet                      # dimensions, one snapshot per export

Timestamps are UTC (``timestamp[us, tz=UTC]``); money is ``float64`` in the order currency
(features are statistics, not accounting; the database keeps the Decimals).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

FACTS: dict[str, pa.Schema] = {
    # One row per order; cancellations/refunds keep their order with status and refunded_amount.
    "orders": pa.schema(
        [
            ("order_id", pa.string()),
            ("user_id", pa.int64()),  # null for guests
            ("status", pa.string()),
            ("currency", pa.string()),
            ("subtotal", pa.float64()),
            ("discount", pa.float64()),
            ("shipping", pa.float64()),
            ("total", pa.float64()),
            ("refunded_amount", pa.float64()),
            ("country", pa.string()),  # ISO alpha-2 shipping country, may be null
            ("created_at", TS),
            ("updated_at", TS),
        ]
    ),
    # One row per order line, with the order's user, status and time copied in.
    "order_lines": pa.schema(
        [
            ("order_id", pa.string()),
            ("user_id", pa.int64()),
            ("product_id", pa.int64()),
            ("variant_id", pa.int64()),
            ("sku", pa.string()),
            ("quantity", pa.int64()),
            ("unit_price", pa.float64()),
            ("line_total", pa.float64()),
            ("status", pa.string()),
            ("created_at", TS),
        ]
    ),
    # Shopper events; event time for features is received_at (when the platform knew it).
    "events": pa.schema(
        [
            ("id", pa.int64()),
            ("event_id", pa.string()),
            ("type", pa.string()),
            ("session_id", pa.string()),
            ("user_id", pa.int64()),
            ("product_id", pa.int64()),
            ("sku", pa.string()),
            ("query", pa.string()),
            ("position", pa.int64()),
            ("client_ts", TS),
            ("received_at", TS),
        ]
    ),
    # Payment attempts (failed ones feed the fraud features).
    "payments": pa.schema(
        [
            ("payment_id", pa.int64()),
            ("order_id", pa.string()),
            ("status", pa.string()),
            ("amount", pa.float64()),
            ("created_at", TS),
            ("updated_at", TS),
        ]
    ),
    # The stock ledger.
    "stock_movements": pa.schema(
        [
            ("id", pa.int64()),
            ("sku", pa.string()),
            ("reason", pa.string()),
            ("delta_on_hand", pa.int64()),
            ("on_hand_after", pa.int64()),
            ("order_id", pa.string()),
            ("created_at", TS),
        ]
    ),
    # One row per purchase-order line, with the order's supplier, status and times copied in.
    # Mutable (receipts, cancellation): exported again when the order's updated_at moves.
    "purchase_orders": pa.schema(
        [
            ("po_id", pa.string()),
            ("supplier_id", pa.int64()),
            ("product_id", pa.int64()),
            ("sku", pa.string()),
            ("status", pa.string()),  # placed, partially_received, received, cancelled
            ("quantity_ordered", pa.int64()),
            ("quantity_received", pa.int64()),
            ("unit_cost", pa.float64()),  # in the purchase order's currency
            ("placed_at", TS),
            ("expected_at", TS),  # placed_at + the supplier's promised lead time, or as given
            ("received_at", TS),  # the last delivery; null until something arrived
            ("updated_at", TS),
        ]
    ),
    # One row per known fraud outcome of an order: a staff review verdict on an order held for
    # fraud review, or a chargeback (payment dispute). is_fraud: a review reject, or a
    # chargeback whose reason is ``fraudulent``; an approve and other dispute reasons are false.
    # An order may have several (a review approve, later a chargeback): readers combine them.
    "order_outcomes": pa.schema(
        [
            ("order_id", pa.string()),
            ("user_id", pa.int64()),  # null for guests
            ("source", pa.string()),  # "review" | "chargeback"
            ("is_fraud", pa.bool_()),
            ("reason", pa.string()),  # review: approve | reject; chargeback: the dispute reason
            ("decided_by", pa.int64()),  # the reviewing staff user; null for chargebacks
            ("decided_at", TS),  # when the platform learned the outcome
            ("order_created_at", TS),
        ]
    ),
}

DATE_COLUMN: dict[str, str] = {
    "orders": "created_at",
    "order_lines": "created_at",
    "events": "received_at",
    "payments": "created_at",
    "stock_movements": "created_at",
    "purchase_orders": "placed_at",
    "order_outcomes": "decided_at",
}

DIMENSIONS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("user_id", pa.int64()),
            ("role", pa.string()),
            ("is_active", pa.bool_()),
            ("created_at", TS),
        ]
    ),
    "products": pa.schema(
        [
            ("product_id", pa.int64()),
            ("name", pa.string()),
            ("description", pa.string()),
            ("category_id", pa.int64()),
            ("category", pa.string()),  # the category's name
            ("status", pa.string()),
            ("created_at", TS),
        ]
    ),
    # One row per variant: SKU, list price and current stock.
    "variants": pa.schema(
        [
            ("variant_id", pa.int64()),
            ("product_id", pa.int64()),
            ("sku", pa.string()),
            ("price", pa.float64()),
            ("currency", pa.string()),
            ("is_active", pa.bool_()),
            ("on_hand", pa.int64()),
            ("reserved", pa.int64()),
        ]
    ),
    "categories": pa.schema(
        [
            ("category_id", pa.int64()),
            ("name", pa.string()),
            ("parent_id", pa.int64()),
        ]
    ),
    # lead_time_days is what the supplier promises; purchase_orders show what it delivers.
    "suppliers": pa.schema(
        [
            ("supplier_id", pa.int64()),
            ("name", pa.string()),
            ("lead_time_days", pa.int64()),
            ("is_active", pa.bool_()),
        ]
    ),
}
