"""Feature tables: the commerce facts (Parquet exports) turned into Feast batch sources by DuckDB.

Every row carries ``event_timestamp``, the moment its values became known. Daily snapshots are
stamped at the midnight that ends their day (facts up to 23:59:59.999999 of day D are stamped
D+1 00:00), session rows at the event that produced them. Feast's point-in-time join then only
hands a training row features stamped at or before its own time, so nothing computed from
facts after an event can leak into that event's row.

The tables are rebuilt in full from the exports on each run (DuckDB does the whole of Online
Retail in seconds); the exports themselves are incremental, and materialisation to the online
store only loads rows newer than the last run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cartwise.features.facts import DIMENSIONS, FACTS
from cartwise.features.settings import SESSION_LAST_N

TABLES = (
    "customer_stats",
    "customer_affinity",
    "customer_fraud_profile",
    "product_stats",
    "product_demand_daily",
    "session_features",
)


def _register_facts(con: duckdb.DuckDBPyConnection, exports: Path) -> None:
    """Expose each fact and dimension as a view, empty (with its schema) when nothing exists."""
    for name, schema in {**FACTS, **DIMENSIONS}.items():
        files = (
            sorted((exports / name).glob("date=*/part-0.parquet"))
            if name in FACTS
            else [p for p in [exports / f"{name}.parquet"] if p.exists()]
        )
        if files:
            listing = ", ".join(f"'{f.as_posix()}'" for f in files)
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{listing}])"  # noqa: S608
            )
        else:
            con.register(f"{name}_empty", schema.empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_empty")  # noqa: S608


# Days are UTC; stamps are the midnight after the day (see the module docstring).
# The calendar spans the shop's activity: orders and events. Stock movements alone do not stretch
# it, since a catalog stocked today beside imported 2011 orders would otherwise put fifteen
# empty years on every customer's and product's daily grid; a ledger entry after the last
# active day still shows as the current stock (see product_stats).
_CALENDAR = """
CREATE OR REPLACE TEMP TABLE bounds AS
WITH activity AS (
    SELECT min(created_at) AS first_ts, max(created_at) AS last_ts FROM orders
    UNION ALL SELECT min(received_at), max(received_at) FROM events
)
SELECT
    coalesce(min(first_ts), (SELECT min(created_at) FROM stock_movements))::DATE AS first_day,
    coalesce(max(last_ts), (SELECT max(created_at) FROM stock_movements))::DATE AS last_day
FROM activity;

CREATE OR REPLACE TEMP TABLE calendar AS
SELECT d::DATE AS day
FROM bounds, range(bounds.first_day, bounds.last_day + 1, INTERVAL 1 DAY) AS t(d)
WHERE bounds.first_day IS NOT NULL;
"""

_CUSTOMER = """
CREATE OR REPLACE TEMP TABLE cust_orders AS
SELECT user_id AS customer_id, (created_at AT TIME ZONE 'UTC')::DATE AS day,
       count(*) FILTER (WHERE status NOT IN ('cancelled', 'refunded')) AS orders,
       sum(total - refunded_amount) FILTER (WHERE status <> 'cancelled') AS spend,
       count(*) FILTER (WHERE status = 'refunded' OR refunded_amount > 0) AS returns
FROM orders WHERE user_id IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE cust_events AS
SELECT user_id AS customer_id, (received_at AT TIME ZONE 'UTC')::DATE AS day,
       count(DISTINCT session_id) AS sessions,
       count(*) FILTER (WHERE type = 'view') AS views
FROM events WHERE user_id IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE cust_days AS
SELECT customer_id, day, coalesce(o.orders, 0) AS orders, coalesce(o.spend, 0) AS spend,
       coalesce(o.returns, 0) AS returns, coalesce(e.sessions, 0) AS sessions,
       coalesce(e.views, 0) AS views
FROM cust_orders o FULL OUTER JOIN cust_events e USING (customer_id, day);

CREATE OR REPLACE TEMP TABLE cust_span AS
SELECT customer_id, min(day) AS first_day FROM cust_days GROUP BY ALL;

-- Every day from a customer's first activity to the data's last day: recency and the windows
-- keep moving after they lapse (a churn model needs exactly those customers).
CREATE OR REPLACE TEMP TABLE cust_grid AS
SELECT s.customer_id, c.day
FROM cust_span s JOIN calendar c ON c.day >= s.first_day;

CREATE OR REPLACE TEMP TABLE cust_rolling AS
SELECT g.customer_id, g.day,
    sum(coalesce(d.orders, 0)) OVER w7 AS orders_7d,
    sum(coalesce(d.orders, 0)) OVER w30 AS orders_30d,
    sum(coalesce(d.orders, 0)) OVER w90 AS orders_90d,
    sum(coalesce(d.spend, 0)) OVER w7 AS spend_7d,
    sum(coalesce(d.spend, 0)) OVER w30 AS spend_30d,
    sum(coalesce(d.spend, 0)) OVER w90 AS spend_90d,
    sum(coalesce(d.returns, 0)) OVER w7 AS returns_7d,
    sum(coalesce(d.returns, 0)) OVER w30 AS returns_30d,
    sum(coalesce(d.returns, 0)) OVER w90 AS returns_90d,
    sum(coalesce(d.sessions, 0)) OVER w7 AS sessions_7d,
    sum(coalesce(d.sessions, 0)) OVER w30 AS sessions_30d,
    sum(coalesce(d.sessions, 0)) OVER w90 AS sessions_90d,
    sum(coalesce(d.views, 0)) OVER w7 AS views_7d,
    sum(coalesce(d.views, 0)) OVER w30 AS views_30d,
    sum(coalesce(d.views, 0)) OVER w90 AS views_90d,
    sum(coalesce(d.orders, 0)) OVER wall AS orders_lifetime,
    sum(coalesce(d.spend, 0)) OVER wall AS spend_lifetime,
    max(CASE WHEN d.orders > 0 THEN g.day END) OVER wall AS last_order_day
FROM cust_grid g LEFT JOIN cust_days d USING (customer_id, day)
WINDOW
    w7 AS (PARTITION BY g.customer_id ORDER BY g.day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
    w30 AS (PARTITION BY g.customer_id ORDER BY g.day ROWS BETWEEN 29 PRECEDING AND CURRENT ROW),
    w90 AS (PARTITION BY g.customer_id ORDER BY g.day ROWS BETWEEN 89 PRECEDING AND CURRENT ROW),
    wall AS (PARTITION BY g.customer_id ORDER BY g.day
             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- Spend per customer, category and day, for the category shares and the affinity.
CREATE OR REPLACE TEMP TABLE cust_cat_days AS
SELECT l.user_id AS customer_id, coalesce(p.category_id, -1) AS category_id,
       (l.created_at AT TIME ZONE 'UTC')::DATE AS day, sum(l.line_total) AS spend, 0 AS views
FROM order_lines l LEFT JOIN products p USING (product_id)
WHERE l.user_id IS NOT NULL AND l.status NOT IN ('cancelled', 'refunded')
GROUP BY ALL
UNION ALL
SELECT e.user_id, coalesce(p.category_id, -1), (e.received_at AT TIME ZONE 'UTC')::DATE, 0,
       count(*)
FROM events e LEFT JOIN products p USING (product_id)
WHERE e.user_id IS NOT NULL AND e.type IN ('view', 'click', 'add_to_cart')
GROUP BY ALL;

-- As of each day a customer was active: 90-day spend and view shares per category.
CREATE OR REPLACE TEMP TABLE cust_cat_window AS
WITH active AS (SELECT DISTINCT customer_id, day FROM cust_cat_days),
agg AS (
    SELECT a.customer_id, a.day, c.category_id, sum(c.spend) AS spend, sum(c.views) AS views
    FROM active a JOIN cust_cat_days c
      ON c.customer_id = a.customer_id AND c.day BETWEEN a.day - 89 AND a.day
    GROUP BY ALL
)
SELECT *,
    coalesce(spend / nullif(sum(spend) OVER (PARTITION BY customer_id, day), 0), 0) AS spend_share,
    coalesce(views / nullif(sum(views) OVER (PARTITION BY customer_id, day), 0), 0) AS view_share
FROM agg;

CREATE OR REPLACE TEMP TABLE customer_stats AS
SELECT r.customer_id,
    (r.day + 1)::TIMESTAMPTZ AS event_timestamp,
    r.orders_7d::BIGINT AS orders_7d, r.orders_30d::BIGINT AS orders_30d,
    r.orders_90d::BIGINT AS orders_90d,
    r.spend_7d::DOUBLE AS spend_7d, r.spend_30d::DOUBLE AS spend_30d,
    r.spend_90d::DOUBLE AS spend_90d,
    r.returns_7d::BIGINT AS returns_7d, r.returns_30d::BIGINT AS returns_30d,
    r.returns_90d::BIGINT AS returns_90d,
    r.sessions_7d::BIGINT AS sessions_7d, r.sessions_30d::BIGINT AS sessions_30d,
    r.sessions_90d::BIGINT AS sessions_90d,
    r.views_7d::BIGINT AS views_7d, r.views_30d::BIGINT AS views_30d,
    r.views_90d::BIGINT AS views_90d,
    coalesce(r.orders_7d / nullif(r.views_7d, 0), 0)::DOUBLE AS purchases_per_view_7d,
    coalesce(r.orders_30d / nullif(r.views_30d, 0), 0)::DOUBLE AS purchases_per_view_30d,
    coalesce(r.orders_90d / nullif(r.views_90d, 0), 0)::DOUBLE AS purchases_per_view_90d,
    -- 9999: never ordered (a sentinel models can split on, unlike a null).
    coalesce(r.day - r.last_order_day, 9999)::BIGINT AS days_since_last_order,
    r.orders_lifetime::BIGINT AS orders_lifetime, r.spend_lifetime::DOUBLE AS spend_lifetime,
    coalesce(r.spend_lifetime / nullif(r.orders_lifetime, 0), 0)::DOUBLE AS avg_order_value,
    coalesce(t.top_category_id, -1)::BIGINT AS top_category_id,
    coalesce(t.top_category_share, 0)::DOUBLE AS top_category_share,
    coalesce(t.categories_90d, 0)::BIGINT AS categories_90d
FROM cust_rolling r
LEFT JOIN (
    SELECT customer_id, day, arg_max(category_id, spend_share) AS top_category_id,
           max(spend_share) AS top_category_share,
           count(*) FILTER (WHERE spend > 0) AS categories_90d
    FROM cust_cat_window GROUP BY ALL
) t ON t.customer_id = r.customer_id
   AND t.day = (SELECT max(x.day) FROM cust_cat_window x
                WHERE x.customer_id = r.customer_id AND x.day <= r.day);

CREATE OR REPLACE TEMP TABLE customer_affinity AS
WITH scored AS (
    SELECT customer_id, day, category_id,
           0.7 * spend_share + 0.3 * view_share AS score
    FROM cust_cat_window WHERE category_id >= 0
)
SELECT customer_id, (day + 1)::TIMESTAMPTZ AS event_timestamp,
    list(category_id ORDER BY score DESC, category_id)[1:{top_n}] AS category_ids,
    list(score::FLOAT ORDER BY score DESC, category_id)[1:{top_n}] AS category_scores
FROM scored GROUP BY ALL;

-- Fraud profile as of each day a customer ordered or paid.
CREATE OR REPLACE TEMP TABLE customer_fraud_profile AS
WITH pay AS (
    SELECT o.user_id AS customer_id, (p.created_at AT TIME ZONE 'UTC')::DATE AS day,
           count(*) AS attempts, count(*) FILTER (WHERE p.status = 'failed') AS failed
    FROM payments p JOIN orders o USING (order_id) WHERE o.user_id IS NOT NULL GROUP BY ALL
),
ord AS (
    SELECT user_id AS customer_id, (created_at AT TIME ZONE 'UTC')::DATE AS day,
           count(*) AS orders, sum(total) AS amount, list(DISTINCT country) AS countries
    FROM orders WHERE user_id IS NOT NULL AND status <> 'cancelled' GROUP BY ALL
),
days AS (
    SELECT customer_id, day, coalesce(ord.orders, 0) AS orders, coalesce(ord.amount, 0) AS amount,
           coalesce(ord.countries, []) AS countries, coalesce(pay.attempts, 0) AS attempts,
           coalesce(pay.failed, 0) AS failed
    FROM ord FULL OUTER JOIN pay USING (customer_id, day)
),
running AS (
    SELECT customer_id, day,
        sum(orders) OVER w AS orders_lifetime, sum(amount) OVER w AS amount_lifetime,
        sum(attempts) OVER w AS attempts, sum(failed) OVER w AS failed,
        list(countries) OVER w AS country_lists
    FROM days
    WINDOW w AS (PARTITION BY customer_id ORDER BY day
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT r.customer_id, (r.day + 1)::TIMESTAMPTZ AS event_timestamp,
    epoch(u.created_at)::BIGINT AS account_created_epoch,
    r.orders_lifetime::BIGINT AS orders_lifetime,
    coalesce(r.amount_lifetime / nullif(r.orders_lifetime, 0), 0)::DOUBLE AS avg_order_amount,
    list_sort(list_distinct(list_filter(flatten(r.country_lists), lambda x: x IS NOT NULL)))
        AS known_countries,
    r.attempts::BIGINT AS payment_attempts,
    coalesce(r.failed / nullif(r.attempts, 0), 0)::DOUBLE AS failed_payment_share
FROM running r LEFT JOIN customers u ON u.user_id = r.customer_id;
"""

_PRODUCT = """
CREATE OR REPLACE TEMP TABLE prod_sales AS
SELECT product_id, (created_at AT TIME ZONE 'UTC')::DATE AS day,
    sum(quantity) FILTER (WHERE status NOT IN ('cancelled', 'refunded')) AS units,
    sum(line_total) FILTER (WHERE status NOT IN ('cancelled', 'refunded')) AS revenue,
    count(DISTINCT order_id) FILTER (WHERE status NOT IN ('cancelled', 'refunded')) AS orders,
    sum(quantity) FILTER (WHERE status = 'refunded') AS returned_units,
    sum(line_total) / nullif(sum(quantity), 0) AS avg_unit_price
FROM order_lines WHERE product_id IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE prod_events AS
SELECT product_id, (received_at AT TIME ZONE 'UTC')::DATE AS day,
    count(*) FILTER (WHERE type = 'view') AS views,
    count(*) FILTER (WHERE type = 'add_to_cart') AS carts,
    count(*) FILTER (WHERE type = 'click' AND query IS NOT NULL) AS search_clicks
FROM events WHERE product_id IS NOT NULL GROUP BY ALL;

-- Stock on hand per product at each day's end, from the ledger (summed over its variants).
CREATE OR REPLACE TEMP TABLE prod_stock AS
WITH last_of_day AS (
    SELECT sku, (created_at AT TIME ZONE 'UTC')::DATE AS day,
           arg_max(on_hand_after, struct_pack(created_at, id)) AS on_hand
    FROM stock_movements GROUP BY ALL
)
SELECT v.product_id, s.sku, s.day, s.on_hand FROM last_of_day s JOIN variants v USING (sku);

CREATE OR REPLACE TEMP TABLE prod_days AS
SELECT product_id, day, coalesce(s.units, 0) AS units, coalesce(s.revenue, 0) AS revenue,
    coalesce(s.orders, 0) AS orders, coalesce(s.returned_units, 0) AS returned_units,
    s.avg_unit_price, coalesce(e.views, 0) AS views, coalesce(e.carts, 0) AS carts,
    coalesce(e.search_clicks, 0) AS search_clicks
FROM prod_sales s FULL OUTER JOIN prod_events e USING (product_id, day);

CREATE OR REPLACE TEMP TABLE prod_grid AS
WITH span AS (
    SELECT product_id, min(day) AS first_day
    FROM (SELECT product_id, day FROM prod_days UNION ALL SELECT product_id, day FROM prod_stock)
    GROUP BY ALL
)
SELECT s.product_id, c.day FROM span s JOIN calendar c ON c.day >= s.first_day;

CREATE OR REPLACE TEMP TABLE prod_rolling AS
SELECT g.product_id, g.day,
    coalesce(d.units, 0) AS units_1d, sum(coalesce(d.units, 0)) OVER w7 AS units_7d,
    sum(coalesce(d.units, 0)) OVER w30 AS units_30d,
    coalesce(d.views, 0) AS views_1d, sum(coalesce(d.views, 0)) OVER w7 AS views_7d,
    sum(coalesce(d.views, 0)) OVER w30 AS views_30d,
    sum(coalesce(d.carts, 0)) OVER w7 AS carts_7d,
    coalesce(d.orders, 0) AS orders_1d,
    sum(coalesce(d.orders, 0)) OVER w7 AS orders_7d,
    sum(coalesce(d.orders, 0)) OVER w30 AS orders_30d,
    sum(coalesce(d.revenue, 0)) OVER w30 AS revenue_30d,
    sum(coalesce(d.search_clicks, 0)) OVER w30 AS search_clicks_30d,
    sum(coalesce(d.units, 0)) OVER w90 AS units_90d,
    sum(coalesce(d.returned_units, 0)) OVER w90 AS returned_units_90d,
    last_value(d.avg_unit_price IGNORE NULLS) OVER wall AS price_seen,
    last_value(st.on_hand IGNORE NULLS) OVER wall AS on_hand_seen
FROM prod_grid g
LEFT JOIN prod_days d USING (product_id, day)
LEFT JOIN (SELECT product_id, day, sum(on_hand) AS on_hand FROM prod_stock GROUP BY ALL) st
  USING (product_id, day)
WINDOW
    w7 AS (PARTITION BY g.product_id ORDER BY g.day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
    w30 AS (PARTITION BY g.product_id ORDER BY g.day ROWS BETWEEN 29 PRECEDING AND CURRENT ROW),
    w90 AS (PARTITION BY g.product_id ORDER BY g.day ROWS BETWEEN 89 PRECEDING AND CURRENT ROW),
    wall AS (PARTITION BY g.product_id ORDER BY g.day
             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

CREATE OR REPLACE TEMP TABLE product_stats AS
WITH list_price AS (
    SELECT product_id, min(price) AS price, sum(on_hand) AS on_hand
    FROM variants WHERE is_active GROUP BY ALL
),
priced AS (
    SELECT r.*, coalesce(r.price_seen, lp.price, 0) AS price,
        lag(coalesce(r.price_seen, lp.price, 0), 30)
            OVER (PARTITION BY r.product_id ORDER BY r.day) AS price_30d_ago,
        -- Without a ledger entry (imported history) stock is unknown: 0 on past days, so no
        -- training row sees today's stock, and today's level on the newest row, the one the
        -- online store serves.
        coalesce(
            r.on_hand_seen,
            CASE WHEN r.day = (SELECT last_day FROM bounds) THEN lp.on_hand END,
            0
        ) AS stock_on_hand
    FROM prod_rolling r LEFT JOIN list_price lp USING (product_id)
)
SELECT product_id, (day + 1)::TIMESTAMPTZ AS event_timestamp,
    units_1d::BIGINT AS units_1d, units_7d::BIGINT AS units_7d, units_30d::BIGINT AS units_30d,
    views_1d::BIGINT AS views_1d, views_7d::BIGINT AS views_7d, views_30d::BIGINT AS views_30d,
    carts_7d::BIGINT AS carts_7d, orders_1d::BIGINT AS orders_1d,
    orders_7d::BIGINT AS orders_7d,
    orders_30d::BIGINT AS orders_30d, revenue_30d::DOUBLE AS revenue_30d,
    coalesce(orders_1d / nullif(views_1d, 0), 0)::DOUBLE AS conversion_1d,
    coalesce(orders_7d / nullif(views_7d, 0), 0)::DOUBLE AS conversion_7d,
    coalesce(orders_30d / nullif(views_30d, 0), 0)::DOUBLE AS conversion_30d,
    search_clicks_30d::BIGINT AS search_clicks_30d,
    price::DOUBLE AS price,
    coalesce(price / nullif(price_30d_ago, 0) - 1, 0)::DOUBLE AS price_change_30d,
    stock_on_hand::BIGINT AS stock_on_hand,
    coalesce(stock_on_hand / nullif(units_30d / 30.0, 0), 9999)::DOUBLE AS days_of_cover,
    -- Returned units over all units that left the shop (kept plus returned), so in [0, 1].
    coalesce(returned_units_90d / nullif(units_90d + returned_units_90d, 0), 0)::DOUBLE
        AS return_rate_90d
FROM priced;

-- Dense daily demand from each product's first sale, with the calendar; stamped at day end.
CREATE OR REPLACE TEMP TABLE product_demand_daily AS
WITH span AS (
    SELECT product_id, min(day) AS first_day FROM prod_sales WHERE units > 0 GROUP BY ALL
)
SELECT s.product_id, (c.day + 1)::TIMESTAMPTZ AS event_timestamp,
    strftime(c.day, '%Y-%m-%d') AS sales_date,
    coalesce(d.units, 0)::BIGINT AS units, coalesce(d.revenue, 0)::DOUBLE AS revenue,
    coalesce(d.orders, 0)::BIGINT AS orders,
    coalesce(d.avg_unit_price, 0)::DOUBLE AS avg_unit_price,
    isodow(c.day)::BIGINT AS day_of_week, dayofmonth(c.day)::BIGINT AS day_of_month,
    month(c.day)::BIGINT AS month, weekofyear(c.day)::BIGINT AS week_of_year,
    (isodow(c.day) >= 6)::BIGINT AS is_weekend
FROM span s JOIN calendar c ON c.day >= s.first_day
LEFT JOIN prod_days d ON d.product_id = s.product_id AND d.day = c.day;
"""

# One row per session event: the session as it stood right after that event. The online push
# (cartwise.features.push) computes the same values from the database.
_SESSION = """
CREATE OR REPLACE TEMP TABLE session_features AS
WITH ev AS (
    SELECT e.*, coalesce(v.price, 0) AS price FROM events e
    LEFT JOIN (SELECT product_id, min(price) AS price FROM variants GROUP BY ALL) v
      USING (product_id)
),
running AS (
    SELECT session_id, received_at AS event_timestamp, id,
        list(CASE WHEN type IN ('view', 'click') THEN product_id END) OVER w AS trail,
        count(*) FILTER (WHERE type = 'view') OVER w AS view_count,
        count(*) FILTER (WHERE type = 'search') OVER w AS search_count,
        count(*) OVER w AS event_count,
        sum(CASE type WHEN 'add_to_cart' THEN price WHEN 'remove_from_cart' THEN -price
                      ELSE 0 END) OVER w AS cart_value,
        row_number() OVER (PARTITION BY session_id, received_at ORDER BY id DESC) AS newest
    FROM ev
    WINDOW w AS (PARTITION BY session_id ORDER BY received_at, id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT session_id, event_timestamp,
    list_reverse(list_filter(trail, lambda x: x IS NOT NULL))[1:{last_n}] AS last_products,
    view_count::BIGINT AS view_count, search_count::BIGINT AS search_count,
    event_count::BIGINT AS event_count, greatest(cart_value, 0)::DOUBLE AS cart_value
FROM running WHERE newest = 1;
"""


def build_feature_tables(
    exports: Path, out: Path, *, on_table: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Compute every feature table from the exports into ``out/<name>.parquet``; returns rows."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        _register_facts(con, exports)
        con.execute(_CALENDAR)
        fmt = {"top_n": 5, "last_n": SESSION_LAST_N}
        for script in (_CUSTOMER, _PRODUCT, _SESSION):
            con.execute(script.format(**fmt))
        counts: dict[str, int] = {}
        for name in TABLES:
            table: pa.Table = con.sql(
                f"SELECT * FROM {name} ORDER BY event_timestamp"  # noqa: S608
            ).to_arrow_table()
            table = _utc_microseconds(table)
            tmp = out / f"{name}.parquet.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, out / f"{name}.parquet")
            counts[name] = table.num_rows
            if on_table:
                on_table(name, table.num_rows)
        return counts
    finally:
        con.close()


def _utc_microseconds(table: pa.Table) -> pa.Table:
    """Store event_timestamp as timestamp[us, UTC], the type Feast's sources expect."""
    idx = table.schema.get_field_index("event_timestamp")
    col = table.column(idx).cast(pa.timestamp("us", tz="UTC"))
    return table.set_column(idx, "event_timestamp", col)
