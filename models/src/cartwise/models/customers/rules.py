"""Co-purchase association rules (A → B) from order lines: support, confidence and lift.

``support`` is the share of orders holding both products, ``confidence`` the share of orders
with A that also hold B, ``lift`` the confidence over B's own share of orders (1 = independent).
Pairs are counted with one sparse product (orders x products), so the full Online Retail takes
a second or two. :func:`rules_for` answers "what goes with these products" from a rule table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp  # type: ignore[import-untyped]

COLUMNS = ["antecedent", "consequent", "count", "support", "confidence", "lift"]
NOT_PURCHASES = ("cancelled", "refunded")


def association_rules(
    lines: pd.DataFrame,
    *,
    order: str = "order_id",
    item: str = "product_id",
    min_count: int = 3,
    min_support: float = 0.0,
    min_confidence: float = 0.05,
    min_lift: float = 1.0,
    max_rules: int | None = 50_000,
) -> pd.DataFrame:
    """Rules between pairs of products bought in the same order, strongest lift first.

    ``lines`` has one row per order line (cancelled and refunded lines are dropped when there is
    a ``status`` column). A rule needs ``min_count`` orders with both products and the support,
    confidence and lift minimums. ``ValueError`` on missing columns or bad thresholds.
    """
    if not isinstance(lines, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(lines).__name__}")
    missing = [c for c in (order, item) if c not in lines.columns]
    if missing:
        raise ValueError(f"order lines lack the columns {missing}")
    if min_count < 1 or not 0 <= min_support <= 1 or not 0 <= min_confidence <= 1:
        raise ValueError("min_count must be >= 1 and min_support, min_confidence in [0, 1]")
    frame = lines[lines[order].notna() & lines[item].notna()]
    if "status" in frame.columns:
        frame = frame[~frame["status"].isin(NOT_PURCHASES)]
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    order_codes, _ = pd.factorize(frame[order])
    item_codes, items = pd.factorize(frame[item])
    n_orders = int(order_codes.max()) + 1
    baskets = sp.csr_matrix(
        (np.ones(len(frame), dtype=np.float32), (order_codes, item_codes)),
        shape=(n_orders, len(items)),
    )
    baskets.sum_duplicates()
    baskets.data[:] = 1.0
    item_count = np.asarray(baskets.sum(axis=0)).ravel()
    pairs = (baskets.T @ baskets).tocoo()
    keep = (pairs.row != pairs.col) & (pairs.data >= min_count)
    a, b, count = pairs.row[keep], pairs.col[keep], pairs.data[keep].astype(np.float64)
    support = count / n_orders
    confidence = count / item_count[a]
    lift = confidence / (item_count[b] / n_orders)
    ok = (support >= min_support) & (confidence >= min_confidence) & (lift >= min_lift)
    values = np.asarray(items)
    out = pd.DataFrame(
        {
            "antecedent": values[a[ok]],
            "consequent": values[b[ok]],
            "count": count[ok].astype(np.int64),
            "support": support[ok],
            "confidence": confidence[ok],
            "lift": lift[ok],
        }
    )
    out = out.sort_values(
        ["lift", "confidence", "count"], ascending=False, kind="stable"
    ).reset_index(drop=True)
    return out.head(max_rules) if max_rules is not None else out


def rules_for(rules: pd.DataFrame, product_ids: Iterable[Any], *, k: int = 10) -> pd.DataFrame:
    """The best ``k`` consequents of rules whose antecedent is in ``product_ids``.

    Products already in ``product_ids`` are left out; each consequent keeps its strongest rule
    (highest lift, then confidence). Empty when nothing matches.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(product_ids, str | bytes):
        raise ValueError("product_ids must be a collection of ids, not a string")
    basket = set(product_ids)
    if rules.empty or not basket:
        return pd.DataFrame(columns=COLUMNS)
    hits = rules[rules["antecedent"].isin(basket) & ~rules["consequent"].isin(basket)]
    hits = hits.sort_values(["lift", "confidence"], ascending=False, kind="stable")
    return hits.drop_duplicates("consequent").head(k).reset_index(drop=True)


__all__ = ["COLUMNS", "association_rules", "rules_for"]
