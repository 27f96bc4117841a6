"""Customer features (Feast ``customer_v1``) at cut-offs, and labels from the orders after them.

A *snapshot* is one row per customer seen (ordered) before a cut-off: the ``customer_v1``
features as of the cut-off (point in time correct through :meth:`Source.historical`), plus the
labels of the ``horizon`` days that follow (``churned``: no purchase; ``spend``: what they spent).
:func:`matrix` turns the feature columns into the model input (log-scaled counts and money,
affinity breadth from the category lists), the same way training and the predictor do.

Orders frames (for labels, BG/NBD and cohorts) have the columns of the ``orders`` facts:
``order_id, user_id, status, total, refunded_amount, created_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.source import Source

SERVICE = "customer_v1"
HORIZON_DAYS = 90
# Orders that count as a purchase (the feature tables count the same ones).
NOT_PURCHASES = ("cancelled", "refunded")

# The customer_stats columns of customer_v1 the models read (top_category_id is an id, not a
# quantity, so it stays out).
COUNTS = (
    "orders_7d",
    "orders_30d",
    "orders_90d",
    "returns_7d",
    "returns_30d",
    "returns_90d",
    "sessions_7d",
    "sessions_30d",
    "sessions_90d",
    "views_7d",
    "views_30d",
    "views_90d",
    "days_since_last_order",
    "orders_lifetime",
    "categories_90d",
)
MONEY = ("spend_7d", "spend_30d", "spend_90d", "spend_lifetime", "avg_order_value")
SHARES = (
    "purchases_per_view_7d",
    "purchases_per_view_30d",
    "purchases_per_view_90d",
    "top_category_share",
)
STATS = (*COUNTS, *MONEY, *SHARES)
AFFINITY = ("category_ids", "category_scores")
# Model inputs beyond STATS: derived from the affinity lists (0 when they are absent).
DERIVED = ("affinity_top", "affinity_breadth", "never_ordered")
INPUTS = (*STATS, *DERIVED)
# days_since_last_order of a customer who never ordered (the feature tables' sentinel).
NEVER = 9999
RECENCY_CAP = 400


def _check_columns(frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in STATS if c not in frame.columns]
    if missing:
        raise ValueError(f"customer features lack the columns {missing}")


def matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model input (n, len(INPUTS)) float32 from customer_v1 columns; ValueError if malformed.

    Counts and money are ``log1p``-scaled (clipped at 0), recency is capped at
    :data:`RECENCY_CAP` days with a ``never_ordered`` flag for the sentinel.
    """
    _check_columns(frame)
    columns: list[np.ndarray] = []
    for name in STATS:
        try:
            values = pd.to_numeric(frame[name], errors="raise").to_numpy(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r} is not numeric: {exc}") from None
        if not np.isfinite(values).all():
            raise ValueError(f"column {name!r} has NaN or infinite values")
        if name == "days_since_last_order":
            values = np.minimum(values, RECENCY_CAP)
        if name in COUNTS or name in MONEY:
            values = np.log1p(np.maximum(values, 0.0))
        columns.append(values)
    top, breadth = _affinity(frame)
    never = (pd.to_numeric(frame["days_since_last_order"]).to_numpy() >= NEVER).astype(float)
    columns += [top, breadth, never]
    return np.column_stack(columns).astype(np.float32)


def _affinity(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Top category score and the number of scored categories (zeros without the lists)."""
    n = len(frame)
    if "category_scores" not in frame.columns:
        return np.zeros(n), np.zeros(n)
    top, breadth = np.zeros(n), np.zeros(n)
    for i, scores in enumerate(frame["category_scores"].tolist()):
        if scores is None or (isinstance(scores, float) and np.isnan(scores)):
            continue
        values = np.asarray(scores, dtype=np.float64)
        if values.size:
            top[i] = float(np.nanmax(values))
            breadth[i] = float(np.sum(values > 0))
    return top, breadth


def purchases(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders that count as purchases: a known customer, not cancelled or refunded."""
    needed = {"user_id", "status", "total", "created_at"}
    missing = needed - set(orders.columns)
    if missing:
        raise ValueError(f"orders lack the columns {sorted(missing)}")
    keep = orders["user_id"].notna() & ~orders["status"].isin(NOT_PURCHASES)
    out = orders[keep].copy()
    out["user_id"] = out["user_id"].astype(np.int64)
    out["created_at"] = _utc(out["created_at"])
    return out


def net_spend(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders with the money kept: a known customer, not cancelled; ``spend`` net of refunds."""
    keep = orders["user_id"].notna() & (orders["status"] != "cancelled")
    out = orders[keep].copy()
    out["user_id"] = out["user_id"].astype(np.int64)
    out["created_at"] = _utc(out["created_at"])
    refunded = out.get("refunded_amount", 0.0)
    out["spend"] = (out["total"] - refunded).clip(lower=0.0)
    return out


def _utc(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, utc=True)
    return ts


def read_orders(source: Source, *, end: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """The orders facts (the columns labels, BG/NBD and cohorts need) before ``end``."""
    columns = ["order_id", "user_id", "status", "total", "refunded_amount", "created_at"]
    orders = source.facts("orders", columns=columns, end=end)
    orders["created_at"] = _utc(orders["created_at"])
    if end is not None:
        orders = orders[orders["created_at"] < pd.Timestamp(end, tz="UTC")]
    return orders.reset_index(drop=True)


def labels(
    orders: pd.DataFrame, cutoff: pd.Timestamp, customers: Sequence[int], horizon: int
) -> pd.DataFrame:
    """Per customer: ``churned`` (no purchase in [cutoff, cutoff + horizon)) and ``spend``."""
    end = cutoff + pd.Timedelta(days=horizon)
    bought = purchases(orders)
    bought = bought[(bought["created_at"] >= cutoff) & (bought["created_at"] < end)]
    kept = net_spend(orders)
    kept = kept[(kept["created_at"] >= cutoff) & (kept["created_at"] < end)]
    frame = pd.DataFrame({"customer_id": np.asarray(customers, dtype=np.int64)})
    frame["churned"] = (~frame["customer_id"].isin(set(bought["user_id"].tolist()))).astype(
        np.float32
    )
    spend = kept.groupby("user_id")["spend"].sum()
    frame["spend"] = frame["customer_id"].map(spend).fillna(0.0).astype(np.float64)
    return frame


def customers_before(orders: pd.DataFrame, cutoff: pd.Timestamp) -> np.ndarray:
    """Ids of the customers with a purchase before ``cutoff`` (sorted)."""
    bought = purchases(orders)
    return np.sort(bought.loc[bought["created_at"] < cutoff, "user_id"].unique())


@dataclass
class Snapshot:
    """Customers at one cut-off: their features, labels (when the window is known) and RFM."""

    cutoff: pd.Timestamp
    features: pd.DataFrame  # customer_id + the customer_v1 columns
    labels: pd.DataFrame | None  # customer_id, churned, spend (None: window not observed)
    rfm: pd.DataFrame  # customer_id, frequency, recency, T, monetary (BG/NBD inputs)

    @property
    def customer_ids(self) -> np.ndarray:
        """The customers' ids, row order."""
        ids: np.ndarray = self.features["customer_id"].to_numpy(np.int64)
        return ids


def snapshot(
    source: Source,
    cutoff: str | pd.Timestamp,
    *,
    orders: pd.DataFrame | None = None,
    horizon: int = HORIZON_DAYS,
    with_labels: bool = True,
    customers: Sequence[int] | None = None,
) -> Snapshot:
    """Features of the customers seen before ``cutoff`` (Feast), labels after it, RFM before it."""
    cut = _ts(cutoff)
    if orders is None:
        orders = read_orders(source)
    ids = customers_before(orders, cut) if customers is None else np.asarray(customers)
    if len(ids) == 0:
        raise ValueError(f"no customer purchased before {cut.date()}")
    entity = pd.DataFrame({"customer_id": ids.astype(np.int64), "event_timestamp": cut})
    feats = source.historical(entity, SERVICE)
    feats = feats.drop(columns=["event_timestamp"]).drop_duplicates("customer_id")
    feats = entity[["customer_id"]].merge(feats, on="customer_id", how="left")
    feats = fill_missing(feats)
    lab = labels(orders, cut, ids.tolist(), horizon) if with_labels else None
    return Snapshot(cut, feats.reset_index(drop=True), lab, rfm(orders, cut, ids))


def fill_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers without a feature row (past the TTL) as inactive: zeros, recency unknown."""
    out = frame.copy()
    for name in STATS:
        if name not in out.columns:
            out[name] = np.nan
        fill = NEVER if name == "days_since_last_order" else 0.0
        out[name] = pd.to_numeric(out[name]).fillna(fill)
    return out


def rfm(
    orders: pd.DataFrame, cutoff: pd.Timestamp, customers: Sequence[int] | np.ndarray
) -> pd.DataFrame:
    """BG/NBD inputs in days before ``cutoff``: repeat purchase days, recency, age, mean spend.

    ``frequency`` counts purchase days after the first, ``recency`` is the first to the last
    purchase day, ``T`` the first purchase day to the cut-off, ``monetary`` the mean spend of
    the repeat days (0 without repeats), ``spend`` everything spent and ``first`` the first day.
    """
    bought = net_spend(orders)
    bought = bought[(bought["created_at"] < cutoff) & ~bought["status"].isin(NOT_PURCHASES)]
    day = bought["created_at"].dt.tz_convert("UTC").dt.floor("D")
    daily = bought.assign(day=day).groupby(["user_id", "day"])["spend"].sum().reset_index()
    cut = cutoff.tz_convert("UTC") if cutoff.tzinfo else cutoff.tz_localize("UTC")
    out = pd.DataFrame({"customer_id": np.asarray(customers, dtype=np.int64)})
    if daily.empty:
        for col in ("frequency", "recency", "T", "monetary", "spend"):
            out[col] = 0.0
        return out
    grouped = daily.groupby("user_id")
    first = grouped["day"].min()
    last = grouped["day"].max()
    count = grouped["day"].count()
    total = grouped["spend"].sum()
    first_spend = daily.sort_values("day").groupby("user_id")["spend"].first()
    stats = pd.DataFrame(
        {
            "frequency": (count - 1).astype(float),
            "recency": (last - first).dt.days.astype(float),
            "T": ((cut - first).dt.total_seconds() / 86400.0).astype(float),
            "spend": total,
            "monetary": ((total - first_spend) / (count - 1).where(count > 1)).fillna(0.0),
        }
    )
    out = out.merge(stats, left_on="customer_id", right_index=True, how="left")
    return out.fillna({"frequency": 0.0, "recency": 0.0, "T": 1.0, "monetary": 0.0, "spend": 0.0})


def _ts(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass
class TrainData:
    """Training rows from several cut-offs, a validation cut-off, and the scaler's statistics."""

    x: np.ndarray  # (n, len(INPUTS)) float32, unscaled
    churned: np.ndarray  # (n,) float32
    spend: np.ndarray  # (n,) float64
    x_valid: np.ndarray
    churned_valid: np.ndarray
    spend_valid: np.ndarray
    mean: np.ndarray = field(init=False)
    scale: np.ndarray = field(init=False)
    # A sample of feature rows (customer_v1 columns) for the predictor's input example.
    example: pd.DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) == 0 or len(self.x_valid) == 0:
            raise ValueError("no training or validation customers")
        self.mean = self.x.mean(axis=0).astype(np.float32)
        std = self.x.std(axis=0)
        self.scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """``x`` standardised with the training statistics."""
        out: np.ndarray = ((x - self.mean) / self.scale).astype(np.float32)
        return out


def train_data(train: Sequence[Snapshot], valid: Snapshot, *, example_rows: int = 5) -> TrainData:
    """Stack the training snapshots' rows; ``valid`` is the validation cut-off."""
    if not train or any(s.labels is None for s in train) or valid.labels is None:
        raise ValueError("training and validation snapshots need labels")
    x = np.vstack([matrix(s.features) for s in train])
    churned = np.concatenate([s.labels["churned"].to_numpy(np.float32) for s in train])  # type: ignore[index]
    spend = np.concatenate([s.labels["spend"].to_numpy(np.float64) for s in train])  # type: ignore[index]
    example = valid.features.drop(columns=["customer_id"]).head(example_rows).reset_index(drop=True)
    if "category_scores" in example.columns:
        # Python floats: the signature then says Array(double), which JSON inputs satisfy.
        example["category_scores"] = [
            [float(v) for v in s] if s is not None else [] for s in example["category_scores"]
        ]
    if "category_ids" in example.columns:
        example["category_ids"] = [
            [int(v) for v in s] if s is not None else [] for s in example["category_ids"]
        ]
    return TrainData(
        x=x,
        churned=churned,
        spend=spend,
        x_valid=matrix(valid.features),
        churned_valid=valid.labels["churned"].to_numpy(np.float32),
        spend_valid=valid.labels["spend"].to_numpy(np.float64),
        example=example,
        info={
            "train_cutoffs": [str(s.cutoff.date()) for s in train],
            "valid_cutoff": str(valid.cutoff.date()),
            "train_rows": len(x),
            "valid_rows": len(valid.features),
        },
    )


def monthly_cutoffs(
    last: str | pd.Timestamp, count: int, step_days: int = 30
) -> list[pd.Timestamp]:
    """``count`` cut-offs ``step_days`` apart, the latest at ``last`` (oldest first)."""
    end = _ts(last)
    return [end - pd.Timedelta(days=step_days * k) for k in reversed(range(count))]


__all__ = [
    "AFFINITY",
    "DERIVED",
    "HORIZON_DAYS",
    "INPUTS",
    "SERVICE",
    "STATS",
    "Snapshot",
    "TrainData",
    "customers_before",
    "fill_missing",
    "labels",
    "matrix",
    "monthly_cutoffs",
    "net_spend",
    "purchases",
    "read_orders",
    "rfm",
    "snapshot",
    "train_data",
]
