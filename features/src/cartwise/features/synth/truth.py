"""The hidden truth of a run, written beside the data so tests can check what models recover.

``<out>/ground_truth/``:

- ``customers.parquet``: segment, activity, churn date, gift occasions, price sensitivity,
  promotion appetite, favourite category, latent factors (fraud accounts: segment
  ``fraudster`` and their pattern; takeover victims flagged);
- ``customer_tastes.parquet``: each honest shopper's preference weight per leaf category;
- ``products.parquet``: the demand process parameters (see :mod:`.world`), return rate,
  supplier, stock policy and latent factors;
- ``demand.parquet``: per product and day, the expected occasions (lambda), the drawn
  occasions, units sold and lost to stock-outs, stock at the start of the day, price, promo;
- ``promotions.parquet``, ``price_changes.parquet``;
- ``suppliers.parquet`` (true lead time mean and shape, fill rate, the promised lead time)
  and ``purchase_orders.parquet`` (every supplier order: placed, lead time, ordered,
  received; ``po_id`` n is the facts' ``sypo-<seed>-<n>``);
- ``order_labels.parquet``: every order with ``is_fraud``, ``pattern`` and ``incident``;
- ``fraud_incidents.parquet``: one row per incident with its accounts;
- ``summary.json``: the config, the model's constants and the counts of the run.

Ids are the run's synthetic ids (as in the Parquet facts); ``email``, ``sku`` and
``order_id`` are the same in the database, and after ``--to db`` the ``db_user_id`` and
``db_product_id`` columns give the database ids.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cartwise.features.synth import world as w
from cartwise.features.synth.fraud import FraudPlan
from cartwise.features.synth.shop import Pricing, Shop
from cartwise.features.synth.simulate import Simulation
from cartwise.features.synth.world import DAY_US, World

TS = pa.timestamp("us", tz="UTC")


def _ts(us: np.ndarray) -> pa.Array:
    values = np.asarray(us, dtype=np.int64)
    return pa.array(values, pa.int64(), mask=values < 0).cast(TS)


def _dates(start: date, days: np.ndarray) -> pa.Array:
    epoch = (start - date(1970, 1, 1)).days
    values = np.asarray(days, dtype=np.int64)
    return pa.array(values + epoch, pa.int64(), mask=values < 0).cast(pa.int32()).cast(pa.date32())


def _factors(matrix: np.ndarray) -> pa.Array:
    return pa.array(list(matrix.astype(np.float32)), pa.list_(pa.float32()))


def ground_truth_tables(
    world: World,
    sim: Simulation,
    fraud: FraudPlan,
    shop: Shop,
    db_ids: dict[str, dict[int, int]] | None = None,
) -> dict[str, pa.Table]:
    """Every ground-truth table of a run (see the module docstring)."""
    config, catalog, customers, prices = world.config, world.catalog, world.customers, world.prices
    start = config.first_day()
    leaves = len(customers.taste[0]) if len(customers) else 0
    leaf_ids = catalog.leaf_category
    leaf_names = [catalog.category_paths[i - 1][-1] for i in leaf_ids]
    n = len(customers)
    honest = customers.segment >= 0
    segment = np.array([*w.SEGMENTS, "fraudster"], dtype=object)[customers.segment]
    victims = np.zeros(n, dtype=bool)
    for incident in fraud.incidents:
        if incident["pattern"] == "account_takeover":
            victims[list(incident["users"])] = True  # type: ignore[call-overload]
    top = np.argmax(customers.taste, axis=1) if leaves else np.zeros(n, np.int64)
    churn_day = np.where(np.isfinite(customers.churn_day), customers.churn_day, -1)
    churn_us = np.where(churn_day >= 0, world.start_us + churn_day * DAY_US, -1)
    user_ids = np.arange(1, n + 1)
    tables: dict[str, pa.Table] = {}
    cust: dict[str, Any] = {
        "user_id": pa.array(user_ids, pa.int64()),
        "email": pa.array(shop.customers["email"].tolist(), pa.string()),
        "segment": pa.array(segment.tolist(), pa.string()),
        "fraud_pattern": pa.array([p or None for p in customers.fraud_pattern], pa.string()),
        "takeover_victim": pa.array(victims),
        "country": pa.array(customers.country, pa.string()),
        "signup_at": _ts(customers.signup_us),
        "activity": pa.array(customers.activity, pa.float64()),
        "churn_at": _ts(churn_us.astype(np.int64)),
        "gift_day_1": _dates(start, customers.gift_days[:, 0]),
        "gift_day_2": _dates(start, customers.gift_days[:, 1]),
        "price_sensitivity": pa.array(customers.price_sensitivity, pa.float64()),
        "promo_affinity": pa.array(customers.promo_affinity, pa.float64()),
        "top_category_id": pa.array(np.where(honest, leaf_ids[top], -1), pa.int64(), mask=~honest),
        "factors": _factors(customers.factors),
    }
    if db_ids and "users" in db_ids:
        cust["db_user_id"] = pa.array([db_ids["users"].get(int(u)) for u in user_ids], pa.int64())
    tables["customers"] = pa.table(cust)

    rows = np.flatnonzero(honest)
    tables["customer_tastes"] = pa.table(
        {
            "user_id": pa.array(np.repeat(rows + 1, leaves), pa.int64()),
            "category_id": pa.array(np.tile(leaf_ids, len(rows)), pa.int64()),
            "category": pa.array(np.tile(np.array(leaf_names, dtype=object), len(rows)).tolist()),
            "weight": pa.array(customers.taste[rows].ravel(), pa.float64()),
        }
    )

    p = len(catalog.sku)
    product_ids = np.arange(1, p + 1)
    prod: dict[str, Any] = {
        "product_id": pa.array(product_ids, pa.int64()),
        "sku": pa.array(catalog.sku, pa.string()),
        "name": pa.array(catalog.name, pa.string()),
        "category_id": pa.array(leaf_ids[catalog.leaf], pa.int64()),
        "category": pa.array([leaf_names[k] for k in catalog.leaf], pa.string()),
        "supplier_id": pa.array(catalog.supplier + 1, pa.int64()),
        "reference_price": pa.array(catalog.reference_cents / 100, pa.float64()),
        "base_rate": pa.array(catalog.base_rate, pa.float64()),
        "weekly_amplitude": pa.array(catalog.weekly_amplitude, pa.float64()),
        "weekly_peak_dow": pa.array(catalog.weekly_peak, pa.int64()),
        "yearly_amplitude": pa.array(catalog.yearly_amplitude, pa.float64()),
        "yearly_peak_doy": pa.array(catalog.yearly_peak, pa.int64()),
        "price_elasticity": pa.array(catalog.elasticity, pa.float64()),
        "promo_lift": pa.array(catalog.promo_lift, pa.float64()),
        "return_rate": pa.array(catalog.return_rate, pa.float64()),
        "popularity": pa.array(catalog.popularity, pa.float64()),
        "reorder_point": pa.array(catalog.reorder_point, pa.int64()),
        "order_quantity": pa.array(catalog.order_quantity, pa.int64()),
        "initial_stock": pa.array(catalog.initial_stock, pa.int64()),
        "factors": _factors(catalog.factors),
    }
    if db_ids and "products" in db_ids:
        prod["db_product_id"] = pa.array(
            [db_ids["products"].get(int(i)) for i in product_ids], pa.int64()
        )
    tables["products"] = pa.table(prod)

    d = sim.demand
    prod_i, day_i = d["product"].astype(np.int64), d["day"].astype(np.int64)
    tables["demand"] = pa.table(
        {
            "product_id": pa.array(prod_i + 1, pa.int64()),
            "date": _dates(start, day_i),
            "expected": pa.array(world.expected[prod_i, day_i], pa.float64()),
            "occasions": pa.array(d["occasions"], pa.int64()),
            "units_sold": pa.array(d["units_sold"], pa.int64()),
            "units_lost": pa.array(d["units_lost"], pa.int64()),
            "on_hand_start": pa.array(d["on_hand_start"], pa.int64()),
            "price": pa.array(prices.cents[prod_i, day_i] / 100, pa.float64()),
            "list_price": pa.array(prices.list_cents[prod_i, day_i] / 100, pa.float64()),
            "promo": pa.array(prices.promo[prod_i, day_i]),
            "discount": pa.array(prices.discount[prod_i, day_i], pa.float64()),
        }
    )
    promos = np.array(prices.promotions, dtype=float).reshape(-1, 4)
    tables["promotions"] = pa.table(
        {
            "product_id": pa.array(promos[:, 0].astype(np.int64) + 1, pa.int64()),
            "first_day": _dates(start, promos[:, 1].astype(np.int64)),
            "last_day": _dates(start, promos[:, 2].astype(np.int64)),
            "discount": pa.array(promos[:, 3], pa.float64()),
        }
    )
    changes = np.array(prices.changes, dtype=np.int64).reshape(-1, 4)
    tables["price_changes"] = pa.table(
        {
            "product_id": pa.array(changes[:, 0] + 1, pa.int64()),
            "date": _dates(start, changes[:, 1]),
            "old_price": pa.array(changes[:, 2] / 100, pa.float64()),
            "new_price": pa.array(changes[:, 3] / 100, pa.float64()),
        }
    )
    sup: dict[str, Any] = {
        "supplier_id": pa.array(np.arange(1, len(catalog.supplier_name) + 1), pa.int64()),
        "name": pa.array(catalog.supplier_name, pa.string()),
        "lead_time_mean_days": pa.array(catalog.lead_time_mean, pa.float64()),
        "lead_time_shape": pa.array(catalog.lead_time_shape, pa.float64()),
        "fill_rate": pa.array(catalog.fill_rate, pa.float64()),
    }
    if not shop.suppliers.empty:
        # What the supplier promises (the facts' lead_time_days) and its name as stored.
        sup["promised_lead_time_days"] = pa.array(
            shop.suppliers["lead_time_days"].to_numpy(), pa.int64()
        )
        sup["shop_name"] = pa.array(shop.suppliers["name"].tolist(), pa.string())
    if db_ids and "suppliers" in db_ids:
        sup["db_supplier_id"] = pa.array(
            [db_ids["suppliers"].get(int(i)) for i in range(1, len(catalog.supplier_name) + 1)],
            pa.int64(),
        )
    tables["suppliers"] = pa.table(sup)
    po = sim.purchase_orders
    po_product = po["product"].astype(np.int64)
    tables["purchase_orders"] = pa.table(
        {
            "po_id": pa.array(po["po"].astype(np.int64) + 1, pa.int64()),
            "supplier_id": pa.array(po["supplier"].astype(np.int64) + 1, pa.int64()),
            "product_id": pa.array(po_product + 1, pa.int64()),
            "sku": pa.array(np.array(catalog.sku, dtype=object)[po_product].tolist(), pa.string()),
            "placed_at": _ts(po["placed_us"]),
            "lead_days": pa.array(po["lead_days"].astype(np.int64), pa.int64()),
            "arrives_at": _ts(po["arrives_us"]),
            "ordered": pa.array(po["ordered"].astype(np.int64), pa.int64()),
            "received": pa.array(po["received"].astype(np.int64), pa.int64()),
            "arrived": pa.array(po["arrived"].astype(bool)),
        }
    )
    o = shop.orders
    tables["order_labels"] = pa.table(
        {
            "order_id": pa.array(o["order_id"].tolist(), pa.string()),
            "user_id": pa.array(o["user_id"].to_numpy(), pa.int64()),
            "created_at": _ts(o["created_us"].to_numpy()),
            "status": pa.array(o["status"].tolist(), pa.string()),
            "total": pa.array(o["total"].to_numpy() / 100, pa.float64()),
            "is_fraud": pa.array(o["is_fraud"].to_numpy()),
            "pattern": pa.array([x or None for x in o["pattern"].tolist()], pa.string()),
            "incident": pa.array(
                o["incident"].to_numpy(), pa.int64(), mask=o["incident"].to_numpy() <= 0
            ),
        }
    )
    per_incident = o[o["is_fraud"]].groupby("incident").size()
    tables["fraud_incidents"] = pa.table(
        {
            "incident": pa.array([int(i["incident"]) for i in fraud.incidents], pa.int64()),  # type: ignore[call-overload]
            "pattern": pa.array([str(i["pattern"]) for i in fraud.incidents], pa.string()),
            "user_ids": pa.array(
                [[int(u) + 1 for u in i["users"]] for i in fraud.incidents],  # type: ignore[attr-defined]
                pa.list_(pa.int64()),
            ),
            "begin_at": _ts(np.array([i["begin_us"] for i in fraud.incidents], dtype=np.int64)),
            "orders": pa.array(
                [int(per_incident.get(i["incident"], 0)) for i in fraud.incidents], pa.int64()
            ),
        }
    )
    return tables


def summary(
    world: World, shop: Shop, sessions: int, pricing: Pricing, fraud: FraudPlan
) -> dict[str, Any]:
    """The run's config, the generating model's constants and what was produced."""
    config = world.config
    orders, events = shop.orders, shop.events
    start = config.first_day()
    segments = pd.Series(world.customers.segment).map(
        dict(enumerate([*w.SEGMENTS])) | {-1: "fraudster"}
    )
    return {
        "generator": "cartwise.features.synth",
        "config": {
            **{k: v for k, v in asdict(config).items() if k != "start"},
            "start": start.isoformat(),
            "end": (start + timedelta(days=config.days - 1)).isoformat(),
        },
        "model": {
            "demand": (
                "lambda[i,t] = base_rate[i] * (1 + weekly_amplitude[i] * cos(2 pi (dow - "
                "weekly_peak_dow[i]) / 7)) * (1 + yearly_amplitude[i] * cos(2 pi (doy - "
                "yearly_peak_doy[i]) / 365.25)) * (price[i,t] / reference_price[i]) ** "
                "price_elasticity[i] * promo_lift[i] ** promo[i,t]; occasions ~ Poisson(lambda), "
                "dow 0 = Monday"
            ),
            "quantity_per_occasion": {
                "1": w.QUANTITY_P[0],
                "2": w.QUANTITY_P[1],
                "3": w.QUANTITY_P[2],
            },
            "traffic": {
                "weekly_amplitude": w.TRAFFIC_WEEKLY_AMPLITUDE,
                "weekly_peak_dow": w.TRAFFIC_WEEKLY_PEAK,
                "yearly_amplitude": w.TRAFFIC_YEARLY_AMPLITUDE,
                "yearly_peak_doy": w.TRAFFIC_YEARLY_PEAK,
            },
            "segments": {
                name: {
                    "share": w.SEGMENT_SHARES[i],
                    "activity": w.SEGMENT_ACTIVITY[i],
                    "price_sensitivity": w.SEGMENT_PRICE_SENSITIVITY[i],
                    "promo_affinity": w.SEGMENT_PROMO_AFFINITY[i],
                    "return_factor": w.SEGMENT_RETURN_FACTOR[i],
                }
                for i, name in enumerate(w.SEGMENTS)
            },
            "latent_factors": w.FACTORS,
            "pricing": {
                "currency": pricing.currency,
                "shipping_flat": str(pricing.shipping_flat),
                "free_shipping_over": None
                if pricing.free_shipping_over is None
                else str(pricing.free_shipping_over),
                "tax_rate": str(pricing.tax_rate),
            },
        },
        "counts": {
            "customers": int(config.customers),
            "fraud_accounts": int(len(world.customers) - config.customers),
            "customers_by_segment": {str(k): int(v) for k, v in segments.value_counts().items()},
            "products": len(shop.products),
            "categories": len(shop.categories),
            "suppliers": len(world.catalog.supplier_name),
            "purchase_orders": len(shop.purchase_orders),
            "sessions": int(sessions),
            "events": len(events),
            "events_by_type": {str(k): int(v) for k, v in events["type"].value_counts().items()},
            "orders": len(orders),
            "orders_by_status": {
                str(k): int(v) for k, v in orders["status"].value_counts().items()
            },
            "order_lines": len(shop.order_lines),
            "fraud_orders": int(orders["is_fraud"].sum()),
            "fraud_orders_by_pattern": {
                str(k): int(v)
                for k, v in orders.loc[orders["is_fraud"], "pattern"].value_counts().items()
            },
            "fraud_incidents": len(fraud.incidents),
            "chargebacks": len(shop.chargebacks),
            "fraud_chargebacks": int(shop.chargebacks["is_fraud"].sum())
            if len(shop.chargebacks)
            else 0,
            "returns": int((orders["status"] == "refunded").sum()),
            "payments": len(shop.payments),
            "failed_payments": int((shop.payments["status"] == "failed").sum()),
            "stock_movements": len(shop.stock_movements),
            "promotions": len(world.prices.promotions),
        },
    }


def write_ground_truth(
    out: Path,
    world: World,
    sim: Simulation,
    fraud: FraudPlan,
    shop: Shop,
    info: dict[str, Any],
    db_ids: dict[str, dict[int, int]] | None = None,
) -> Path:
    """Write ``<out>/ground_truth/*.parquet`` and ``summary.json``; returns the folder."""
    folder = out / "ground_truth"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in ground_truth_tables(world, sim, fraud, shop, db_ids).items():
        pq.write_table(table, folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder
