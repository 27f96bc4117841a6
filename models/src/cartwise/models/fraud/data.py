"""Orders → the ``fraud_v1`` feature rows, with labels from a generated run's ground truth.

One row per order at its ``created_at``: the order facts give the request data the on-demand
view ``fraud_order_signals`` needs (``order_amount`` = the order total, ``shipping_country``,
``orders_last_hour`` = the same customer's orders in the hour before, ``request_epoch``), and
:meth:`Source.historical` of ``fraud_v1`` adds the customer's profile as of that moment, point in
time correct. The model's input is exactly :data:`FEATURES`: the eight ``fraud_v1`` features plus
``order_amount`` from the request, which is what serving gets from the same feature service and
the order it is checking.

A customer with no profile yet (a first order on the day of sign-up: the profile is stamped at
the end of each day) comes back with empty profile columns; :func:`fill_no_history` reads them
as "no history" (zero orders, zero attempts), which is what the on-demand view already does for
its own signals.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.source import Source

SERVICE = "fraud_v1"
FEATURES: tuple[str, ...] = (
    "orders_lifetime",
    "avg_order_amount",
    "payment_attempts",
    "amount_vs_avg",
    "is_new_country",
    "order_velocity_1h",
    "account_age_days",
    "failed_payment_share_now",
    # A request field, not a stored feature: the order's total, which serving always has.
    "order_amount",
)
# Heavy-tailed non-negative columns, log1p'd before scaling.
LOG_FEATURES: tuple[str, ...] = (
    "orders_lifetime",
    "avg_order_amount",
    "payment_attempts",
    "amount_vs_avg",
    "order_velocity_1h",
    "account_age_days",
    "order_amount",
)
# Every input counts or measures something: a negative value is malformed.
NON_NEGATIVE: tuple[str, ...] = FEATURES
REQUEST = ("order_amount", "shipping_country", "orders_last_hour", "request_epoch")


@dataclass
class Dataset:
    """Feature rows (one per order, in time order) with labels and the fraud pattern."""

    frame: pd.DataFrame  # order_id, customer_id, event_timestamp, FEATURES, is_fraud, pattern
    features: tuple[str, ...] = FEATURES
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def x(self) -> np.ndarray:
        """The feature matrix, float64."""
        return np.asarray(self.frame[list(self.features)].to_numpy(dtype=np.float64))

    @property
    def y(self) -> np.ndarray:
        """Labels, 0/1 float64."""
        return np.asarray(self.frame["is_fraud"].to_numpy(dtype=np.float64))

    @property
    def pattern(self) -> np.ndarray:
        """The fraud pattern per row ("" for legitimate orders)."""
        return np.asarray(self.frame["pattern"].fillna("").astype(str).to_numpy())

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, mask: np.ndarray) -> Dataset:
        """The rows where ``mask`` is true."""
        return Dataset(self.frame[mask].reset_index(drop=True), self.features, dict(self.info))

    def window(self) -> str:
        """``YYYY-MM-DD/YYYY-MM-DD`` of the rows' timestamps."""
        if self.frame.empty:
            return ""
        ts = pd.to_datetime(self.frame["event_timestamp"], utc=True)
        return f"{ts.min():%Y-%m-%d}/{ts.max():%Y-%m-%d}"


def order_requests(
    source: Source,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One request per customer order from the facts: the entity frame ``fraud_v1`` needs.

    ``orders_last_hour`` counts the customer's earlier orders within the hour (over all
    history, so an order just after ``start`` still sees the ones before it).
    """
    columns = ["order_id", "user_id", "total", "country", "created_at"]
    orders = source.facts("orders", columns=columns, end=end)
    orders = orders.dropna(subset=["user_id"])  # guests have no customer entity to score
    if orders.empty:
        return pd.DataFrame(columns=["order_id", "customer_id", "event_timestamp", *REQUEST])
    orders = orders.assign(created_at=pd.to_datetime(orders["created_at"], utc=True))
    orders = orders.sort_values(["created_at", "order_id"], kind="stable").reset_index(drop=True)
    ts = orders["created_at"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    users = orders["user_id"].astype("int64").to_numpy()
    last_hour = np.zeros(len(orders), dtype=np.int64)
    by_user = pd.Series(np.arange(len(orders))).groupby(users)
    for _, idx in by_user:
        rows = idx.to_numpy()
        times = ts[rows]
        # Orders strictly before this one and at most an hour older.
        earlier = np.searchsorted(times, times - 3_600_000_000, side="left")
        last_hour[rows] = np.arange(len(rows)) - earlier
    frame = pd.DataFrame(
        {
            "order_id": orders["order_id"].astype(str),
            "customer_id": users,
            "event_timestamp": orders["created_at"],
            "order_amount": orders["total"].astype("float64").fillna(0.0),
            "shipping_country": orders["country"].astype(object),
            "orders_last_hour": last_hour,
            "request_epoch": ts // 1_000_000,
        }
    )
    if start is not None:
        frame = frame[frame["event_timestamp"] >= pd.Timestamp(start, tz="UTC")]
    return frame.reset_index(drop=True)


def fill_no_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing profile values mean "no history yet": zero orders, amount and attempts."""
    out = frame.copy()
    for name in FEATURES:
        if name in out.columns:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64").fillna(0.0)
    return out


def features(source: Source, requests: pd.DataFrame) -> pd.DataFrame:
    """``fraud_v1`` for each request row (same order as ``requests``), history gaps filled."""
    if requests.empty:
        return requests.assign(**{name: pd.Series(dtype="float64") for name in FEATURES})
    got = source.historical(requests, SERVICE)
    got = got.drop_duplicates("order_id").set_index("order_id")
    missing = [n for n in FEATURES if n not in got.columns and n not in requests.columns]
    if missing:
        raise RuntimeError(f"{SERVICE} returned no {missing}; is the feature store current?")
    served = [name for name in FEATURES if name not in requests.columns]
    out = requests.join(got[served], on="order_id")
    return fill_no_history(out)


def labels(source: Source) -> pd.DataFrame:
    """``order_id``, ``is_fraud``, ``pattern`` from the generated ground truth."""
    truth = source.truth("order_labels")
    return pd.DataFrame(
        {
            "order_id": truth["order_id"].astype(str),
            "is_fraud": truth["is_fraud"].fillna(False).astype(bool).to_numpy(),
            "pattern": truth["pattern"].fillna("").astype(str),
        }
    )


def load(
    source: Source,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Dataset:
    """The labelled feature rows of the orders in ``[start, end)``, in time order."""
    requests = order_requests(source, start=start, end=end)
    frame = features(source, requests)
    frame = frame.merge(labels(source), on="order_id", how="left")
    frame["is_fraud"] = frame["is_fraud"].fillna(False).astype(bool)
    frame["pattern"] = frame["pattern"].fillna("")
    frame = frame.sort_values(["event_timestamp", "order_id"], kind="stable")
    return Dataset(frame.reset_index(drop=True), info={"data_version": source.data_version()})


def time_cuts(
    timestamps: pd.Series, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> list[pd.Timestamp]:
    """Day boundaries that split the period into consecutive parts of ``fractions`` of its days."""
    ts = pd.to_datetime(timestamps, utc=True)
    first, last = ts.min().floor("D"), ts.max().floor("D") + pd.Timedelta(days=1)
    days = (last - first).days
    total = float(sum(fractions))
    cuts, acc = [], 0.0
    for share in fractions[:-1]:
        acc += share / total
        cuts.append(first + pd.Timedelta(days=max(1, round(days * acc))))
    return cuts


def split(data: Dataset, cuts: Sequence[pd.Timestamp]) -> list[Dataset]:
    """Consecutive time parts of ``data`` at ``cuts``."""
    ts = pd.to_datetime(data.frame["event_timestamp"], utc=True)
    bounds = [None, *cuts, None]
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        mask = np.ones(len(ts), dtype=bool)
        if lo is not None:
            mask &= (ts >= lo).to_numpy()
        if hi is not None:
            mask &= (ts < hi).to_numpy()
        parts.append(data.subset(mask))
    return parts


__all__ = [
    "FEATURES",
    "LOG_FEATURES",
    "NON_NEGATIVE",
    "REQUEST",
    "SERVICE",
    "Dataset",
    "features",
    "fill_no_history",
    "labels",
    "load",
    "order_requests",
    "split",
    "time_cuts",
]
