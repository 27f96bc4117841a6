"""Purchases → interactions: the customer x product data every recommender here trains on.

A *purchases* frame has one row per bought order line, with the columns of :data:`COLUMNS`:
``user`` and ``item`` (original ids, any hashable type), ``ts`` (naive UTC ``datetime64``),
``quantity`` and ``order`` (lines of one order share it; co-purchase counts come from it).

Sources:

- :func:`read_exports`: the commerce facts in the Parquet layout of
  :mod:`cartwise.features.facts` (``order_lines/date=YYYY-MM-DD/part-0.parquet``);
- :func:`from_online_retail`: the frame that the Online Retail importer's ``clean`` returns
  (this module does not import commerce: the caller passes the cleaned frame in).

:func:`encode` then maps ids to dense indices and gives the sparse matrices the models need.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp  # type: ignore[import-untyped]

COLUMNS = ("user", "item", "ts", "quantity", "order")
# Order statuses that mean the customer really bought (paid at least); cancelled and
# refunded orders, pending payments and fraud reviews are not taste signals.
PURCHASE_STATUSES = ("paid", "fulfilled", "shipped", "delivered")
DAY = np.timedelta64(1, "D")


def _frame(user: Any, item: Any, ts: Any, quantity: Any, order: Any) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user": np.asarray(user),
            "item": np.asarray(item),
            "ts": pd.to_datetime(ts),
            "quantity": np.asarray(quantity, dtype=np.int64),
            "order": np.asarray(order),
        }
    )
    if getattr(out["ts"].dt, "tz", None) is not None:
        out["ts"] = out["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    out["ts"] = out["ts"].astype("datetime64[us]")
    return out.sort_values(["ts", "order"], kind="stable").reset_index(drop=True)


def read_exports(
    root: Path | str,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    statuses: Collection[str] = PURCHASE_STATUSES,
) -> pd.DataFrame:
    """Purchases (registered customers only) from an exports folder's ``order_lines``.

    ``start`` is inclusive and ``end`` exclusive, both UTC.
    """
    folder = Path(root) / "order_lines"
    if not folder.is_dir():
        raise FileNotFoundError(f"no order_lines/ under {root}: not a facts export folder")
    import pyarrow.dataset as ds

    from_partitions = ds.dataset(folder, format="parquet", partitioning="hive")
    lines = from_partitions.to_table(columns=list(LINE_COLUMNS)).to_pandas()
    return window(from_order_lines(lines, statuses=statuses), start, end)


LINE_COLUMNS = ("order_id", "user_id", "product_id", "quantity", "status", "created_at")


def from_order_lines(
    lines: pd.DataFrame, *, statuses: Collection[str] = PURCHASE_STATUSES
) -> pd.DataFrame:
    """Purchases from ``order_lines`` facts: paid lines of registered customers."""
    missing = set(LINE_COLUMNS) - set(lines.columns)
    if missing:
        raise ValueError(f"not order_lines facts: lacks {sorted(missing)}")
    keep = lines["user_id"].notna() & lines["status"].isin(list(statuses))
    keep &= lines["quantity"] > 0
    lines = lines[keep]
    out = _frame(
        lines["user_id"].astype(np.int64),
        lines["product_id"].astype(np.int64),
        lines["created_at"],
        lines["quantity"],
        lines["order_id"].astype(str),
    )
    return out


def read_source(
    source: Any,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    statuses: Collection[str] = PURCHASE_STATUSES,
) -> pd.DataFrame:
    """Purchases from a models ``Source``'s ``order_lines`` facts (``start`` ≤ ts < ``end``)."""
    lines = source.facts("order_lines", columns=list(LINE_COLUMNS), start=start, end=end)
    if len(lines) == 0:
        return _frame([], [], pd.Series([], dtype="datetime64[us]"), [], [])
    return window(from_order_lines(lines, statuses=statuses), start, end)


def product_texts(products: pd.DataFrame) -> list[str]:
    """One text per product for the content encoder: name, description and category."""
    parts = [
        products[c].fillna("").astype(str) if c in products.columns else None
        for c in ("name", "description", "category")
    ]
    present = [p for p in parts if p is not None]
    if not present:
        raise ValueError("products need at least one of name, description, category")
    joined = present[0]
    for part in present[1:]:
        joined = joined.str.cat(part, sep=". ")
    return [t.strip(". ") for t in joined.tolist()]


def read_categories(root: Path | str) -> dict[Any, str]:
    """Product id → category name from an exports folder's ``products.parquet``."""
    products = pd.read_parquet(Path(root) / "products.parquet", columns=["product_id", "category"])
    return {
        int(p): str(c) for p, c in zip(products["product_id"], products["category"], strict=True)
    }


def from_online_retail(cleaned: pd.DataFrame) -> pd.DataFrame:
    """Purchases from the importer's cleaned frame: known customers, sales (not cancellations).

    Customers are CustomerIDs, items StockCodes, orders InvoiceNos.
    """
    needed = {"customer", "code", "date", "invoice", "cancel", "qty"}
    missing = needed - set(cleaned.columns)
    if missing:
        raise ValueError(f"not a cleaned Online Retail frame: lacks {sorted(missing)}")
    sales = cleaned[cleaned["customer"].notna() & ~cleaned["cancel"] & (cleaned["qty"] > 0)]
    return _frame(
        sales["customer"].astype(np.int64),
        sales["code"].astype(str),
        sales["date"],
        sales["qty"],
        sales["invoice"].astype(str),
    )


def window(
    purchases: pd.DataFrame,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The purchases with ``start <= ts < end`` (either bound may be open)."""
    keep = pd.Series(True, index=purchases.index)
    if start is not None:
        keep &= purchases["ts"] >= pd.Timestamp(start)
    if end is not None:
        keep &= purchases["ts"] < pd.Timestamp(end)
    return purchases[keep]


def subsample_users(purchases: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """The purchases of a random share of the users (for quick runs)."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    users = np.sort(purchases["user"].unique())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(users, size=max(1, round(len(users) * fraction)), replace=False)
    return purchases[purchases["user"].isin(set(chosen.tolist()))]


@dataclass
class Interactions:
    """Purchases mapped to dense user and item indices, with the matrices models need."""

    user_ids: np.ndarray  # index → original id
    item_ids: np.ndarray
    user: np.ndarray  # per purchase line: user index
    item: np.ndarray  # per purchase line: item index
    age_days: np.ndarray  # per line: days between the purchase and ``now``
    order: np.ndarray  # per line: dense order index
    now: pd.Timestamp  # the reference time (end of the period)
    _user_index: dict[Any, int] = field(default_factory=dict, repr=False)
    _item_index: dict[Any, int] = field(default_factory=dict, repr=False)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    def user_index(self) -> dict[Any, int]:
        """Original user id → index."""
        if not self._user_index:
            self._user_index = {u: i for i, u in enumerate(self.user_ids.tolist())}
        return self._user_index

    def item_index(self) -> dict[Any, int]:
        """Original item id → index."""
        if not self._item_index:
            self._item_index = {v: i for i, v in enumerate(self.item_ids.tolist())}
        return self._item_index

    def counts(self) -> sp.csr_matrix:
        """users x items: the number of purchase lines of each pair."""
        ones = np.ones(len(self.user), dtype=np.float32)
        shape = (self.n_users, self.n_items)
        matrix = sp.csr_matrix((ones, (self.user, self.item)), shape=shape)
        matrix.sum_duplicates()
        return matrix

    def binary(self) -> sp.csr_matrix:
        """users x items: 1 where the user bought the item at least once."""
        matrix = self.counts()
        matrix.data[:] = 1.0
        return matrix

    def decayed(self, half_life_days: float | None) -> sp.csr_matrix:
        """users x items: purchase lines weighted ``0.5 ** (age / half_life)`` (None: counts)."""
        if half_life_days is None:
            return self.counts()
        weights = np.power(0.5, self.age_days / half_life_days).astype(np.float32)
        matrix = sp.csr_matrix(
            (weights, (self.user, self.item)), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        return matrix

    def last_purchase_age(self) -> sp.csr_matrix:
        """users x items: 1 + days since the user last bought the item (0 = never)."""
        frame = pd.DataFrame({"u": self.user, "i": self.item, "age": self.age_days})
        last = frame.groupby(["u", "i"], sort=True)["age"].min()
        rows = last.index.get_level_values(0).to_numpy()
        cols = last.index.get_level_values(1).to_numpy()
        return sp.csr_matrix(
            (last.to_numpy(np.float32) + 1.0, (rows, cols)), shape=(self.n_users, self.n_items)
        )

    def popularity(self, window_days: float | None = None) -> np.ndarray:
        """Distinct buyers per item (only purchases of the last ``window_days`` if given)."""
        keep = np.ones(len(self.user), dtype=bool)
        if window_days is not None:
            keep = self.age_days < window_days
        pairs = np.unique(self.user[keep] * np.int64(self.n_items) + self.item[keep])
        counts: np.ndarray = np.bincount(pairs % self.n_items, minlength=self.n_items)
        return counts.astype(np.float64)

    def co_purchases(self) -> sp.csr_matrix:
        """items x items: in how many orders both items were bought (diagonal zero)."""
        n_orders = int(self.order.max()) + 1 if len(self.order) else 0
        baskets = sp.csr_matrix(
            (np.ones(len(self.order), dtype=np.float32), (self.order, self.item)),
            shape=(n_orders, self.n_items),
        )
        baskets.sum_duplicates()
        baskets.data[:] = 1.0
        co = (baskets.T @ baskets).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        result: sp.csr_matrix = co
        return result


def encode(
    purchases: pd.DataFrame,
    *,
    now: str | pd.Timestamp | None = None,
    items: Iterable[Any] | None = None,
) -> Interactions:
    """Map a purchases frame to :class:`Interactions` (ids sorted; ``now`` = the last purchase).

    ``items`` fixes the item catalogue (purchases of other items are dropped), so that
    models trained on different windows can share one item index.
    """
    missing = set(COLUMNS) - set(purchases.columns)
    if missing:
        raise ValueError(f"purchases lack the columns {sorted(missing)}")
    if len(purchases) == 0:
        raise ValueError("no purchases to encode")
    if items is not None:
        item_ids = np.array(sorted(set(items)))
        purchases = purchases[purchases["item"].isin(set(item_ids.tolist()))]
        if len(purchases) == 0:
            raise ValueError("no purchases of the given items")
    else:
        item_ids = np.sort(purchases["item"].unique())
    user_ids = np.sort(purchases["user"].unique())
    user = np.searchsorted(user_ids, purchases["user"].to_numpy())
    item = np.searchsorted(item_ids, purchases["item"].to_numpy())
    ts = purchases["ts"].to_numpy().astype("datetime64[us]")
    reference = pd.Timestamp(now) if now is not None else pd.Timestamp(ts.max())
    age = (np.datetime64(reference.to_datetime64(), "us") - ts) / DAY
    _, order = np.unique(purchases["order"].to_numpy(), return_inverse=True)
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        age_days=np.maximum(age.astype(np.float64), 0.0),
        order=order.astype(np.int64).ravel(),
        now=reference,
    )


def targets(
    test: pd.DataFrame, data: Interactions, *, known_items_only: bool = False
) -> dict[int, set[int]]:
    """Test truth: user index → item indices bought in ``test``, for users known to ``data``.

    Items unknown to ``data`` get negative indices (no model can rank them, but they still
    count as relevant, so recall stays honest) unless ``known_items_only``.
    """
    users = data.user_index()
    items = data.item_index()
    truth: dict[int, set[int]] = {}
    unknown: dict[Any, int] = {}
    for user_id, item_id in zip(test["user"].tolist(), test["item"].tolist(), strict=True):
        u = users.get(user_id)
        if u is None:
            continue
        i = items.get(item_id)
        if i is None:
            if known_items_only:
                continue
            i = unknown.setdefault(item_id, -1 - len(unknown))
        truth.setdefault(u, set()).add(i)
    return {u: s for u, s in truth.items() if s}


@dataclass
class TrainData:
    """What one training trial needs: the training interactions and, optionally, validation."""

    train: Interactions
    valid: dict[int, set[int]] | None = None  # user index → item indices (validation window)
    categories: dict[Any, str] | None = None  # item id → category, for the business filters


def split(
    purchases: pd.DataFrame, cutoff: str | pd.Timestamp, end: str | pd.Timestamp | None = None
) -> tuple[Interactions, dict[int, set[int]]]:
    """Encode purchases before ``cutoff`` and the truth of ``cutoff <= ts < end``."""
    train = encode(window(purchases, None, cutoff), now=cutoff)
    return train, targets(window(purchases, cutoff, end), train)


SESSION_EVENTS = ("view", "click", "add_to_cart")
EVENT_COLUMNS = ("id", "type", "session_id", "product_id", "received_at")


@dataclass
class Sessions:
    """Product sequences of shopper sessions (item indices, oldest first) and their start."""

    sequences: list[np.ndarray]
    started: np.ndarray  # datetime64[us] of each session's first event

    def window(
        self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> Sessions:
        """The sessions that started in ``[start, end)``."""
        keep = np.ones(len(self.sequences), dtype=bool)
        if start is not None:
            keep &= self.started >= np.datetime64(pd.Timestamp(start).to_datetime64(), "us")
        if end is not None:
            keep &= self.started < np.datetime64(pd.Timestamp(end).to_datetime64(), "us")
        chosen = np.flatnonzero(keep)
        return Sessions([self.sequences[i] for i in chosen], self.started[chosen])


def sessions_from_events(
    events: pd.DataFrame,
    item_index: dict[Any, int],
    *,
    types: Collection[str] = SESSION_EVENTS,
    min_length: int = 2,
) -> Sessions:
    """Per session, the products viewed, clicked or carted in order (repeats in a row merged).

    Products outside ``item_index`` are dropped; sessions shorter than ``min_length`` too.
    """
    missing = set(EVENT_COLUMNS) - set(events.columns)
    if missing:
        raise ValueError(f"not events facts: lacks {sorted(missing)}")
    frame = events[events["type"].isin(list(types)) & events["product_id"].notna()]
    frame = frame[["id", "session_id", "product_id", "received_at"]].copy()
    frame["item"] = frame["product_id"].astype(np.int64).map(item_index)
    frame = frame[frame["item"].notna() & frame["session_id"].notna()]
    frame = frame.sort_values(["session_id", "received_at", "id"], kind="stable")
    session = frame["session_id"].to_numpy()
    item = frame["item"].to_numpy(np.int64)
    ts = pd.to_datetime(frame["received_at"], utc=True).dt.tz_localize(None)
    stamps = ts.to_numpy().astype("datetime64[us]")
    new_session = np.r_[True, session[1:] != session[:-1]] if len(session) else np.zeros(0, bool)
    repeat = np.r_[False, (item[1:] == item[:-1]) & ~new_session[1:]] if len(item) else new_session
    keep = ~repeat
    session, item, stamps, new_session = (
        session[keep],
        item[keep],
        stamps[keep],
        new_session[keep],
    )
    starts = np.flatnonzero(new_session)
    bounds = np.r_[starts, len(item)]
    sequences, started = [], []
    for a, b in itertools.pairwise(bounds):
        if b - a >= min_length:
            sequences.append(item[a:b])
            started.append(stamps[a])
    return Sessions(sequences, np.asarray(started, dtype="datetime64[us]"))


__all__ = [
    "COLUMNS",
    "EVENT_COLUMNS",
    "PURCHASE_STATUSES",
    "SESSION_EVENTS",
    "Interactions",
    "Sessions",
    "TrainData",
    "encode",
    "from_online_retail",
    "from_order_lines",
    "product_texts",
    "read_categories",
    "read_exports",
    "read_source",
    "sessions_from_events",
    "split",
    "subsample_users",
    "targets",
    "window",
]
