"""Orders → the ``fraud_v1`` feature rows, with fraud labels (see :func:`labels`).

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


OUTCOME_COLUMNS = ("order_id", "source", "is_fraud", "decided_at", "order_created_at")
# How a label was learned: a chargeback or a staff review verdict, an order old enough that
# a fraud outcome would have arrived, or (a generated shop) the hidden ground truth.
LABEL_SOURCES = ("chargeback", "review", "matured", "truth")


def has_outcomes(source: Source) -> bool:
    """Whether the export holds any ``order_outcomes`` (an old export has none)."""
    return not source.facts("order_outcomes", columns=["order_id"]).empty


# Orders whose payment went through: the only ones a chargeback can reach.
CHARGEABLE_STATUSES = ("paid", "fulfilled", "shipped", "delivered", "refunded")


def outcomes(source: Source, *, as_of: str | pd.Timestamp, maturity_days: int = 30) -> pd.DataFrame:
    """Fraud labels from what the shop learned by ``as_of``: ``order_id``, ``is_fraud``,
    ``label_source`` (one row per labelled order created before ``as_of``, sorted by id).

    - **fraud** when a fraud outcome (a chargeback with reason ``fraudulent``, or a staff
      review reject) was known at ``as_of`` (``decided_at <= as_of``); ``label_source`` is
      the source of the first one;
    - **legitimate** when staff approved it in review (``review``), or when it is at least
      ``maturity_days`` old at ``as_of``, was paid (:data:`CHARGEABLE_STATUSES`) and has no
      fraud outcome (``matured``): chargebacks arrive within weeks, so an old paid order
      without one is taken as honest;
    - an order never paid (declined, abandoned) can never be charged back: without a review
      verdict it stays unknown;
    - every other order is **unknown** and left out (younger than the maturity, no verdict;
      a dispute for another reason does not make an order legitimate before it matures).
    """
    at = _utc(as_of)
    known = source.facts("order_outcomes", columns=list(OUTCOME_COLUMNS), end=_day_after(at))
    known = known.assign(decided_at=pd.to_datetime(known["decided_at"], utc=True))
    known = known[known["decided_at"] <= at]
    known = known.assign(
        order_id=known["order_id"].astype(str),
        is_fraud=known["is_fraud"].astype("boolean").fillna(False).astype(bool),
    ).sort_values(["decided_at", "order_id"], kind="stable")
    fraud = known[known["is_fraud"]].drop_duplicates("order_id")
    approved = known[(known["source"] == "review") & ~known["is_fraud"]].drop_duplicates("order_id")
    approved = approved[~approved["order_id"].isin(fraud["order_id"])]

    orders = source.facts(
        "orders", columns=["order_id", "status", "created_at"], end=_day_after(at)
    )
    created = pd.to_datetime(orders["created_at"], utc=True)
    cutoff = at - pd.Timedelta(days=maturity_days)
    # Only money that moved can come back as a chargeback: an order never paid (a declined
    # card test, an abandoned checkout) stays unknown however old it is.
    paid = orders["status"].isin(CHARGEABLE_STATUSES).to_numpy()
    old = orders.loc[(created <= cutoff).to_numpy() & paid, "order_id"].astype(str)
    matured = old[~old.isin(fraud["order_id"]) & ~old.isin(approved["order_id"])].drop_duplicates()

    frame = pd.concat(
        [
            pd.DataFrame(
                {"order_id": fraud["order_id"], "is_fraud": True, "label_source": fraud["source"]}
            ),
            pd.DataFrame(
                {"order_id": approved["order_id"], "is_fraud": False, "label_source": "review"}
            ),
            pd.DataFrame({"order_id": matured, "is_fraud": False, "label_source": "matured"}),
        ],
        ignore_index=True,
    )
    frame = frame.astype({"order_id": str, "is_fraud": bool, "label_source": str})
    return frame.sort_values("order_id", kind="stable").reset_index(drop=True)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _day_after(ts: pd.Timestamp) -> pd.Timestamp:
    """The exclusive day-partition bound that still holds ``ts`` (naive UTC, as facts take)."""
    return (ts + pd.Timedelta(days=1)).normalize().tz_localize(None)


def data_end(source: Source) -> pd.Timestamp:
    """The latest moment the export knows about: its last order or its last outcome."""
    stamps = [
        pd.to_datetime(source.facts("orders", columns=["created_at"])["created_at"], utc=True),
        pd.to_datetime(
            source.facts("order_outcomes", columns=["decided_at"])["decided_at"], utc=True
        ),
    ]
    latest = [s.max() for s in stamps if not s.empty]
    if not latest:
        raise ValueError("no orders in the exported facts")
    return _utc(max(latest))


def labels(source: Source, *, maturity_days: int | None = None) -> pd.DataFrame:
    """``order_id``, ``is_fraud``, ``pattern``, ``label_source`` of the labelled orders.

    A generated shop (``cartwise data synth``) has its hidden ground truth: every order is
    labelled from it (``label_source`` ``truth``), so training learns the injected patterns
    exactly. A production shop has none: labels then come from :func:`outcomes` as of the
    export's end (chargebacks and review verdicts, plus orders old enough to have matured;
    ``maturity_days`` defaults to ``ModelSettings.fraud_label_maturity_days``), and orders
    whose outcome is not known yet are left out. ``pattern`` is empty for outcome labels.
    ``LookupError`` when the source has neither.
    """
    try:
        truth = source.truth("order_labels")
    except LookupError:
        truth = None
    if truth is not None:
        return pd.DataFrame(
            {
                "order_id": truth["order_id"].astype(str),
                "is_fraud": truth["is_fraud"].fillna(False).astype(bool).to_numpy(),
                "pattern": truth["pattern"].fillna("").astype(str),
                "label_source": "truth",
            }
        )
    if not has_outcomes(source):
        raise LookupError(
            "no fraud labels: no ground truth and no order outcomes (chargebacks, review "
            "verdicts) in this export"
        )
    if maturity_days is None:
        from cartwise.models.settings import get_model_settings

        maturity_days = get_model_settings().fraud_label_maturity_days
    got = outcomes(source, as_of=data_end(source), maturity_days=maturity_days)
    return got.assign(pattern="")[["order_id", "is_fraud", "pattern", "label_source"]]


def load(
    source: Source,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Dataset:
    """The labelled feature rows of the orders in ``[start, end)``, in time order."""
    requests = order_requests(source, start=start, end=end)
    frame = features(source, requests)
    known = labels(source)
    generated = bool((known["label_source"] == "truth").all())
    frame = frame.merge(known, on="order_id", how="left")
    if generated:
        frame["is_fraud"] = frame["is_fraud"].fillna(False).astype(bool)
    else:
        # Outcome labels: orders whose outcome is not known yet are not training rows.
        frame = frame[frame["is_fraud"].notna()]
        frame = frame.assign(is_fraud=frame["is_fraud"].astype(bool))
    frame["pattern"] = frame["pattern"].fillna("")
    frame["label_source"] = frame["label_source"].fillna("truth" if generated else "")
    frame = frame.sort_values(["event_timestamp", "order_id"], kind="stable")
    info = {"data_version": source.data_version(), "labels": "truth" if generated else "outcomes"}
    return Dataset(frame.reset_index(drop=True), info=info)


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
    "has_outcomes",
    "labels",
    "load",
    "order_requests",
    "outcomes",
    "split",
    "time_cuts",
]
