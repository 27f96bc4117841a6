"""Customer and product features for the two-tower model, from the Feast feature services.

The customer tower reads ``recommend_v1`` (``customer_stats``: RFM and behaviour over 7/30/90
days; ``customer_affinity``: the customer's top categories and their scores); the item tower
reads ``product_v1`` (``product_stats``: popularity, conversion, price, stock, returns) plus the
product's category from the ``products`` dimension and its MiniLM content vector.

:class:`FeatureSpec` turns those rows (training frames from ``Source.historical`` or the online
features serving reads) into the fixed-width float matrices the towers take, the same way at
training and at serving time. Torch-free: the predictor uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

USER_COLUMNS = (
    "orders_7d",
    "orders_30d",
    "orders_90d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "returns_90d",
    "sessions_7d",
    "sessions_30d",
    "sessions_90d",
    "views_7d",
    "views_30d",
    "views_90d",
    "purchases_per_view_90d",
    "days_since_last_order",
    "orders_lifetime",
    "spend_lifetime",
    "avg_order_value",
    "top_category_share",
    "categories_90d",
)
ITEM_COLUMNS = (
    "units_7d",
    "units_30d",
    "views_7d",
    "views_30d",
    "carts_7d",
    "orders_30d",
    "revenue_30d",
    "conversion_30d",
    "search_clicks_30d",
    "price",
    "price_change_30d",
    "stock_on_hand",
    "return_rate_90d",
)
USER_SERVICE = "recommend_v1"
ITEM_SERVICE = "product_v1"


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: counts and money on a scale an MLP can use."""
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        if column not in frame.columns:
            continue
        try:
            values = pd.to_numeric(frame[column], errors="raise").to_numpy(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"feature {column!r} must be numeric") from exc
        out[:, j] = np.where(np.isfinite(values), values, 0.0)
    return signed_log(out)


def _present(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """1.0 where a row has any of the feature values (0: a customer or product with no row)."""
    known = [c for c in columns if c in frame.columns]
    if not known:
        return np.zeros(len(frame))
    values = frame[known].apply(pd.to_numeric, errors="coerce")
    return np.asarray(values.notna().any(axis=1).to_numpy(np.float64))


@dataclass(frozen=True)
class FeatureSpec:
    """How feature rows become tower inputs: the columns, and the category vocabulary."""

    categories: tuple[int, ...] = ()  # category ids of the affinity / one-hot blocks
    user_columns: tuple[str, ...] = USER_COLUMNS
    item_columns: tuple[str, ...] = ITEM_COLUMNS

    @property
    def user_width(self) -> int:
        """Columns of :meth:`users`."""
        return len(self.user_columns) + len(self.categories) + 1

    @property
    def item_width(self) -> int:
        """Columns of :meth:`items` (before the content vector)."""
        return len(self.item_columns) + len(self.categories) + 1

    def _category_block(self, ids: Iterable[Any], scores: Iterable[Any]) -> np.ndarray:
        position = {c: j for j, c in enumerate(self.categories)}
        rows = []
        for row_ids, row_scores in zip(ids, scores, strict=True):
            row = np.zeros(len(self.categories))
            if row_ids is not None and row_scores is not None:
                for c, value in zip(list(row_ids), list(row_scores), strict=False):
                    j = position.get(int(c)) if c is not None else None
                    if j is not None and value is not None and np.isfinite(float(value)):
                        row[j] = float(value)
            rows.append(row)
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(self.categories))

    def users(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, user_width) float32 from ``recommend_v1`` rows (missing values count as 0)."""
        numeric = _numeric(frame, self.user_columns)
        n = len(frame)
        ids = frame["category_ids"] if "category_ids" in frame.columns else [None] * n
        scores = frame["category_scores"] if "category_scores" in frame.columns else [None] * n
        affinity = self._category_block(ids, scores)
        flag = _present(frame, self.user_columns)[:, None]
        return np.hstack([numeric, affinity, flag]).astype(np.float32)

    def items(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, item_width) float32 from ``product_v1`` rows plus a ``category_id`` column."""
        numeric = _numeric(frame, self.item_columns)
        n = len(frame)
        ids = (
            [[c] if pd.notna(c) else None for c in frame["category_id"]]
            if "category_id" in frame.columns
            else [None] * n
        )
        onehot = self._category_block(ids, [[1.0]] * n)
        flag = _present(frame, self.item_columns)[:, None]
        return np.hstack([numeric, onehot, flag]).astype(np.float32)

    def user_row(self, features: Mapping[str, Any]) -> np.ndarray:
        """One customer's tower input from a mapping of feature values (online features)."""
        if not isinstance(features, Mapping):
            raise ValueError("customer features must be a mapping of name to value")
        known = {*self.user_columns, "category_ids", "category_scores"}
        unknown = set(features) - known - {"customer_id", "event_timestamp"}
        if unknown:
            raise ValueError(f"unknown customer features: {sorted(unknown)}")
        row = {k: [v] for k, v in features.items() if k in known}
        out: np.ndarray = self.users(pd.DataFrame(row, index=[0]))[0]
        return out


def _at(entity: str, ids: Sequence[int], at: pd.Timestamp) -> pd.DataFrame:
    stamp = pd.Timestamp(at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return pd.DataFrame({entity: np.asarray(ids, dtype=np.int64), "event_timestamp": stamp})


def historical_users(source: Any, user_ids: Sequence[int], at: pd.Timestamp) -> pd.DataFrame:
    """``recommend_v1`` rows of the customers as of ``at`` (point in time), in input order."""
    entity = _at("customer_id", user_ids, at)
    if len(entity) == 0:
        return entity
    found = source.historical(entity, USER_SERVICE).drop(columns=["event_timestamp"])
    found = found.drop_duplicates("customer_id")
    return entity[["customer_id"]].merge(found, on="customer_id", how="left")


def historical_items(source: Any, item_ids: Sequence[int], at: pd.Timestamp) -> pd.DataFrame:
    """``product_v1`` rows plus ``category_id`` of the products as of ``at``, in input order."""
    entity = _at("product_id", item_ids, at)
    if len(entity) == 0:
        return entity
    found = source.historical(entity, ITEM_SERVICE).drop(columns=["event_timestamp"])
    found = found.drop_duplicates("product_id")
    out = entity[["product_id"]].merge(found, on="product_id", how="left")
    products = source.dimension("products", columns=["product_id", "category_id"])
    return out.merge(products.drop_duplicates("product_id"), on="product_id", how="left")


def category_vocabulary(source: Any) -> tuple[int, ...]:
    """The category ids of the catalogue (the affinity and one-hot blocks), sorted."""
    products = source.dimension("products", columns=["product_id", "category_id"])
    ids = pd.to_numeric(products["category_id"], errors="coerce").dropna().astype(np.int64)
    return tuple(int(c) for c in sorted(set(ids.tolist())))


__all__ = [
    "ITEM_COLUMNS",
    "ITEM_SERVICE",
    "USER_COLUMNS",
    "USER_SERVICE",
    "FeatureSpec",
    "category_vocabulary",
    "historical_items",
    "historical_users",
    "signed_log",
]
