"""Acquisition cohorts: customers by the month of their first purchase, followed month by month.

Analytics, not a model: :func:`cohort_table` is what the API's analytics routes and the
notebooks call on an orders frame (the ``orders`` facts, or any frame with a customer, a time
and an amount).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Order statuses that are not purchases (the feature tables use the same rule).
NOT_PURCHASES = ("cancelled", "refunded")


def cohort_table(
    orders: pd.DataFrame,
    *,
    customer: str = "user_id",
    ts: str = "created_at",
    amount: str = "total",
    max_months: int | None = None,
) -> pd.DataFrame:
    """Acquisition month x months since → active customers, retention share and revenue.

    One row per (``cohort``, ``months_since``) with at least one active customer: ``cohort``
    (``YYYY-MM`` of the customer's first purchase), ``months_since`` (calendar months after it,
    0 = the acquisition month), ``cohort_size``, ``customers`` (distinct buyers that month),
    ``retention`` (``customers / cohort_size``) and ``revenue`` (sum of ``amount``, net of
    ``refunded_amount`` when present). Orders without a customer, and cancelled or refunded
    orders when there is a ``status`` column, are left out. ``ValueError`` on missing columns.
    """
    if not isinstance(orders, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(orders).__name__}")
    missing = [c for c in (customer, ts, amount) if c not in orders.columns]
    if missing:
        raise ValueError(f"orders lack the columns {missing}")
    if max_months is not None and max_months < 0:
        raise ValueError("max_months must be >= 0")
    frame = orders[orders[customer].notna()]
    if "status" in frame.columns:
        frame = frame[~frame["status"].isin(NOT_PURCHASES)]
    columns = ["cohort", "months_since", "cohort_size", "customers", "retention", "revenue"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    when = pd.to_datetime(frame[ts], utc=True)
    if when.isna().any():
        raise ValueError(f"column {ts!r} has missing or unparseable times")
    money = pd.to_numeric(frame[amount], errors="coerce")
    if money.isna().any():
        raise ValueError(f"column {amount!r} has missing or non-numeric values")
    if "refunded_amount" in frame.columns:
        money = money - pd.to_numeric(frame["refunded_amount"], errors="coerce").fillna(0.0)
    # Month numbers as integers (year * 12 + month) avoid Period arithmetic across time zones.
    month = when.dt.year.to_numpy() * 12 + when.dt.month.to_numpy() - 1
    work = pd.DataFrame(
        {"customer": frame[customer].to_numpy(), "month": month, "revenue": money.to_numpy()}
    )
    work["first"] = work.groupby("customer")["month"].transform("min")
    work["months_since"] = work["month"] - work["first"]
    if max_months is not None:
        work = work[work["months_since"] <= max_months]
    sizes = work.groupby("first")["customer"].nunique()
    table = (
        work.groupby(["first", "months_since"])
        .agg(customers=("customer", "nunique"), revenue=("revenue", "sum"))
        .reset_index()
    )
    table["cohort_size"] = table["first"].map(sizes).astype(np.int64)
    table["retention"] = table["customers"] / table["cohort_size"]
    table["cohort"] = [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in table["first"].tolist()]
    table["customers"] = table["customers"].astype(np.int64)
    table["months_since"] = table["months_since"].astype(np.int64)
    table["revenue"] = table["revenue"].astype(np.float64)
    return table[columns].sort_values(["cohort", "months_since"]).reset_index(drop=True)


def retention_matrix(table: pd.DataFrame, value: str = "retention") -> pd.DataFrame:
    """The cohort table pivoted: cohorts as rows, months since as columns (NaN: no buyers)."""
    if value not in {"retention", "customers", "revenue"}:
        raise ValueError("value must be retention, customers or revenue")
    return table.pivot(index="cohort", columns="months_since", values=value)


__all__ = ["cohort_table", "retention_matrix"]
