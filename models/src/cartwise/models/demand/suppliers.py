"""Supplier performance from purchase-order lines: on-time rate, fill rate, lead times.

The input follows the ``purchase_orders`` fact (one row per PO line): ``po_id, supplier_id,
product_id, sku, status`` (placed | partially_received | received | cancelled),
``quantity_ordered, quantity_received, unit_cost, placed_at, expected_at`` (promised arrival),
``received_at`` (nullable), ``updated_at``. Read it with :func:`read_purchase_orders`; a
generated run's ground truth converts with :func:`from_truth`.

Definitions, as of ``as_of`` (default: the latest timestamp in the data):

- a line is *due* when it is not cancelled and its promised arrival is at or before ``as_of``;
- ``on_time_rate``: due lines received (``received_at`` not null) no later than the promised
  day (by calendar day), over due lines; a due line not yet received is late;
- ``fill_rate``: units received over units ordered, over due lines;
- lead times (days from placing to receiving) over received lines: mean, standard deviation,
  90th percentile and coefficient of variation, the promised mean, and the mean delay.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PO_COLUMNS = [
    "po_id",
    "supplier_id",
    "product_id",
    "sku",
    "status",
    "quantity_ordered",
    "quantity_received",
    "unit_cost",
    "placed_at",
    "expected_at",
    "received_at",
    "updated_at",
]
STATUSES = ("placed", "partially_received", "received", "cancelled")
_DAY = pd.Timedelta(days=1)


def read_purchase_orders(source: Any) -> pd.DataFrame:
    """The ``purchase_orders`` fact of a source (an empty frame when the shop has none)."""
    frame: pd.DataFrame = source.facts("purchase_orders", columns=PO_COLUMNS)
    return frame


def from_truth(purchase_orders: pd.DataFrame, suppliers: pd.DataFrame) -> pd.DataFrame:
    """A generated run's ground-truth POs in the fact's schema (promised = mean lead time)."""
    promised = suppliers.set_index("supplier_id")["lead_time_mean_days"]
    po = purchase_orders
    placed = pd.to_datetime(po["placed_at"], utc=True)
    expected = placed + pd.to_timedelta(
        po["supplier_id"].map(promised).round().astype(np.int64), unit="D"
    )
    arrived = po["arrived"].astype(bool)
    received_at = pd.to_datetime(po["arrives_at"], utc=True).where(arrived)
    received = np.where(arrived, po["received"], 0).astype(np.int64)
    status = np.where(
        ~arrived, "placed", np.where(received >= po["ordered"], "received", "partially_received")
    )
    return pd.DataFrame(
        {
            "po_id": po["po_id"].astype(str),
            "supplier_id": po["supplier_id"].astype(np.int64),
            "product_id": po["product_id"].astype(np.int64),
            "sku": po["sku"].astype(str),
            "status": status,
            "quantity_ordered": po["ordered"].astype(np.int64),
            "quantity_received": received,
            "unit_cost": np.nan,
            "placed_at": placed,
            "expected_at": expected,
            "received_at": received_at,
            "updated_at": received_at.fillna(placed),
        }
    )


def _validate(po: pd.DataFrame) -> pd.DataFrame:
    needed = {
        "supplier_id",
        "status",
        "quantity_ordered",
        "quantity_received",
        "placed_at",
        "expected_at",
        "received_at",
    }
    missing = needed - set(po.columns)
    if missing:
        raise ValueError(f"purchase orders lack the columns {sorted(missing)}")
    bad = sorted(set(po["status"].dropna().astype(str)) - set(STATUSES))
    if bad or po["status"].isna().any():
        raise ValueError(f"unknown PO statuses {bad}; expected {', '.join(STATUSES)}")
    out = po.copy()
    for col in ("placed_at", "expected_at", "received_at"):
        out[col] = pd.to_datetime(out[col], utc=True)
    if out["placed_at"].isna().any() or out["expected_at"].isna().any():
        raise ValueError("purchase orders need placed_at and expected_at on every line")
    for col in ("quantity_ordered", "quantity_received"):
        values = pd.to_numeric(out[col], errors="coerce")
        if values.isna().any() or (values < 0).any():
            raise ValueError(f"{col} must be non-negative numbers")
        out[col] = values.astype(float)
    return out


def scores(po: pd.DataFrame, *, as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per supplier: lines, due lines, on-time rate, fill rate, lead-time statistics."""
    po = _validate(po)
    columns = [
        "supplier_id",
        "lines",
        "due_lines",
        "on_time_rate",
        "fill_rate",
        "lead_time_mean",
        "lead_time_sd",
        "lead_time_p90",
        "lead_time_cv",
        "promised_lead_time",
        "mean_delay_days",
        "open_lines",
        "cancelled_lines",
    ]
    if po.empty:
        return pd.DataFrame(columns=columns)
    if as_of is None:
        stamps = pd.concat([po["placed_at"], po["received_at"].dropna()])
        now = stamps.max()
    else:
        now = pd.Timestamp(as_of)
        now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    cancelled = po["status"] == "cancelled"
    received = po["received_at"].notna() & ~cancelled
    due = ~cancelled & (po["expected_at"] <= now)
    on_time = received & (po["received_at"].dt.normalize() <= po["expected_at"].dt.normalize())
    lead = (po["received_at"] - po["placed_at"]) / _DAY
    promised = (po["expected_at"] - po["placed_at"]) / _DAY
    delay = (po["received_at"] - po["expected_at"]) / _DAY
    frame = po.assign(
        _due=due,
        _on_time=on_time & due,
        _received=received,
        _lead=lead.where(received),
        _promised=promised,
        _delay=delay.where(received),
        _ordered_due=po["quantity_ordered"].where(due, 0.0),
        _received_due=po["quantity_received"].where(due, 0.0),
        _open=~cancelled & ~(po["status"] == "received"),
        _cancelled=cancelled,
    )
    rows = []
    for supplier, g in frame.groupby("supplier_id", sort=True):
        leads = g["_lead"].dropna().to_numpy(dtype=np.float64)
        n_due = int(g["_due"].sum())
        ordered = float(g["_ordered_due"].sum())
        mean = float(leads.mean()) if len(leads) else np.nan
        sd = float(leads.std(ddof=1)) if len(leads) > 1 else np.nan
        rows.append(
            {
                "supplier_id": supplier,
                "lines": len(g),
                "due_lines": n_due,
                "on_time_rate": float(g["_on_time"].sum()) / n_due if n_due else np.nan,
                "fill_rate": float(g["_received_due"].sum()) / ordered if ordered else np.nan,
                "lead_time_mean": mean,
                "lead_time_sd": sd,
                "lead_time_p90": float(np.quantile(leads, 0.9)) if len(leads) else np.nan,
                "lead_time_cv": sd / mean if len(leads) > 1 and mean > 0 else np.nan,
                "promised_lead_time": float(g.loc[~g["_cancelled"], "_promised"].mean()),
                "mean_delay_days": float(g["_delay"].mean()),
                "open_lines": int(g["_open"].sum()),
                "cancelled_lines": int(g["_cancelled"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def product_lead_times(
    po: pd.DataFrame,
    *,
    products: pd.DataFrame | None = None,
    suppliers: pd.DataFrame | None = None,
    default_days: float = 14.0,
) -> pd.DataFrame:
    """``product_id, supplier_id, lead_time_days, lead_time_sd`` for the reorder table.

    A product's supplier is ``products.supplier_id`` when given, else the supplier of its
    latest PO. Its lead time is that supplier's observed mean and spread, else the promised
    ``suppliers.lead_time_days`` (spread 0), else ``default_days``.
    """
    perf = scores(po) if len(po) else scores(pd.DataFrame(columns=PO_COLUMNS))
    if products is not None and "supplier_id" in products:
        mapping = products[["product_id", "supplier_id"]].dropna()
    elif len(po):
        latest = po.sort_values("placed_at").drop_duplicates("product_id", keep="last")
        mapping = latest[["product_id", "supplier_id"]]
    else:
        raise ValueError("no purchase orders and no product → supplier mapping")
    out = mapping.astype({"product_id": np.int64, "supplier_id": np.int64}).merge(
        perf[["supplier_id", "lead_time_mean", "lead_time_sd"]], on="supplier_id", how="left"
    )
    promised = (
        suppliers.set_index("supplier_id")["lead_time_days"].astype(float)
        if suppliers is not None and "lead_time_days" in suppliers
        else pd.Series(dtype=float)
    )
    out["lead_time_days"] = out["lead_time_mean"].fillna(out["supplier_id"].map(promised))
    out["lead_time_days"] = out["lead_time_days"].fillna(default_days)
    out["lead_time_sd"] = out["lead_time_sd"].fillna(0.0)
    return out[["product_id", "supplier_id", "lead_time_days", "lead_time_sd"]].reset_index(
        drop=True
    )


__all__ = [
    "PO_COLUMNS",
    "STATUSES",
    "from_truth",
    "product_lead_times",
    "read_purchase_orders",
    "scores",
]
