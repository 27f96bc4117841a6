"""What serving loads: a picklable, torch-free :class:`Recommender` over numpy arrays.

It answers three questions, each with the business filters (``exclude`` ids, an
``in_stock`` set, a ``category``, and for consumables ``exclude_purchased``):

- :meth:`Recommender.recommend`: top-K for a customer (collaborative scores, optionally
  blended with the customer's own repurchase history);
- :meth:`Recommender.similar_items`: nearest items by cosine of the item vectors;
- :meth:`Recommender.complements`: what is bought together with a cart (co-purchase counts).

Inputs it does not know (a new customer, a new product, a cart of unknown items) get the
popular items instead, with ``fallback=True`` and the reason, so callers can tell.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

from cartwise.models.recommend.baselines import blend_repurchase, scale_rows_by_max
from cartwise.models.recommend.data import Interactions


@dataclass
class Recommendations:
    """Ranked item ids with their scores; ``fallback`` says popularity stood in, and why."""

    items: list[Any]
    scores: list[float]
    fallback: bool = False
    reason: str = ""

    def __len__(self) -> int:
        return len(self.items)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


@dataclass
class Recommender:
    """A trained recommender as plain arrays: embeddings, popularity, history, co-purchases."""

    user_ids: np.ndarray  # index → original customer id
    item_ids: np.ndarray  # index → original product id
    user_vectors: np.ndarray  # (n_users, dim) float32
    item_vectors: np.ndarray  # (n_items, dim) float32
    item_bias: np.ndarray  # (n_items,) float32
    popularity: np.ndarray  # (n_items,) distinct buyers
    own: sp.csr_matrix  # users x items: recency-weighted purchase counts
    co_purchases: sp.csr_matrix  # items x items: orders containing both
    item_category: np.ndarray | None = None  # (n_items,) category name, object dtype
    repurchase_weight: float = 0.0  # 0: collaborative only; inf: own items first
    info: dict[str, Any] = field(default_factory=dict)  # config, data window, metrics
    _users: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)
    _items: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        data: Interactions,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        item_bias: np.ndarray | None = None,
        *,
        repurchase_weight: float = 0.0,
        half_life_days: float | None = None,
        categories: dict[Any, str] | None = None,
        info: dict[str, Any] | None = None,
    ) -> Recommender:
        """A recommender from trained vectors and the interactions they were trained on."""
        if user_vectors.shape[0] != data.n_users or item_vectors.shape[0] != data.n_items:
            raise ValueError("the vectors do not match the interactions' users and items")
        category = None
        if categories is not None:
            category = np.array([categories.get(i) for i in data.item_ids.tolist()], dtype=object)
        return cls(
            user_ids=data.user_ids,
            item_ids=data.item_ids,
            user_vectors=np.ascontiguousarray(user_vectors, dtype=np.float32),
            item_vectors=np.ascontiguousarray(item_vectors, dtype=np.float32),
            item_bias=(
                np.zeros(data.n_items, np.float32)
                if item_bias is None
                else np.asarray(item_bias, np.float32)
            ),
            popularity=data.popularity(),
            own=data.decayed(half_life_days).astype(np.float32),
            co_purchases=data.co_purchases().astype(np.float32),
            item_category=category,
            repurchase_weight=repurchase_weight,
            info=dict(info or {}),
        )

    # ------------------------------------------------------------------ lookups

    @property
    def n_items(self) -> int:
        """Number of items the model knows."""
        return len(self.item_ids)

    def user_index(self, user: Any) -> int | None:
        """The index of a customer id, or None when unknown."""
        if not self._users:
            self._users = {u: i for i, u in enumerate(self.user_ids.tolist())}
        return self._users.get(user)

    def item_index(self, item: Any) -> int | None:
        """The index of a product id, or None when unknown."""
        if not self._items:
            self._items = {v: i for i, v in enumerate(self.item_ids.tolist())}
        return self._items.get(item)

    def knows_user(self, user: Any) -> bool:
        """Whether the customer was seen in training."""
        return self.user_index(user) is not None

    def __getstate__(self) -> dict[str, Any]:
        # The id → index maps are rebuilt on demand; pickles stay small and version-proof.
        state = dict(self.__dict__)
        state["_users"], state["_items"] = {}, {}
        return state

    # ------------------------------------------------------------------ scoring

    def collaborative_scores(self, users: np.ndarray) -> np.ndarray:
        """Embedding scores (len(users), n_items) for user indices."""
        scores: np.ndarray = self.user_vectors[users] @ self.item_vectors.T + self.item_bias
        return scores.astype(np.float64)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Final scores (len(users), n_items) for user indices: collaborative ⊕ repurchase."""
        collab = self.collaborative_scores(users)
        if self.repurchase_weight == 0:
            return collab
        own = scale_rows_by_max(np.asarray(self.own[users].toarray(), dtype=np.float64))
        return blend_repurchase(own, collab, self.repurchase_weight)

    def _allowed(
        self,
        exclude: Iterable[Any],
        in_stock: Collection[Any] | None,
        category: str | None,
    ) -> np.ndarray:
        allowed = np.ones(self.n_items, dtype=bool)
        for item in exclude:
            i = self.item_index(item)
            if i is not None:
                allowed[i] = False
        if in_stock is not None:
            stocked = np.zeros(self.n_items, dtype=bool)
            for item in in_stock:
                i = self.item_index(item)
                if i is not None:
                    stocked[i] = True
            allowed &= stocked
        if category is not None:
            if self.item_category is None:
                raise ValueError("this model has no item categories: cannot filter by category")
            allowed &= self.item_category == category
        return allowed

    def _top(
        self, scores: np.ndarray, allowed: np.ndarray, k: int
    ) -> tuple[list[Any], list[float]]:
        candidates = np.flatnonzero(allowed & np.isfinite(scores))
        if len(candidates) == 0:
            return [], []
        values = scores[candidates]
        take = min(k, len(candidates))
        part = np.argpartition(-values, take - 1)[:take] if take < len(values) else np.arange(take)
        # Stable sort on (score desc, index asc), so equal scores come out in a fixed order.
        order = part[np.lexsort((candidates[part], -values[part]))]
        chosen = candidates[order]
        return self.item_ids[chosen].tolist(), [float(v) for v in scores[chosen]]

    def popular(
        self,
        k: int = 10,
        *,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
        reason: str = "",
    ) -> Recommendations:
        """The most bought items (the fallback for unknown inputs)."""
        k = _check_k(k)
        allowed = self._allowed(exclude, in_stock, category)
        items, scores = self._top(self.popularity.astype(np.float64), allowed, k)
        return Recommendations(items, scores, fallback=bool(reason), reason=reason)

    # ------------------------------------------------------------------ the three answers

    def recommend(
        self,
        user: Any,
        k: int = 10,
        *,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
        exclude_purchased: bool = False,
    ) -> Recommendations:
        """Top-k items for a customer; an unknown customer gets the popular items (flagged)."""
        k = _check_k(k)
        u = self.user_index(user)
        if u is None:
            return self.popular(
                k, exclude=exclude, in_stock=in_stock, category=category, reason="unknown user"
            )
        allowed = self._allowed(exclude, in_stock, category)
        if exclude_purchased:
            row = self.own[u]
            allowed[row.indices[row.data > 0]] = False
        scores = self.score_users(np.array([u]))[0]
        items, values = self._top(scores, allowed, k)
        return Recommendations(items, values)

    def similar_items(
        self,
        item: Any,
        k: int = 10,
        *,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
    ) -> Recommendations:
        """Items nearest to a product by cosine of the item vectors (never the item itself)."""
        k = _check_k(k)
        i = self.item_index(item)
        if i is None:
            return self.popular(
                k,
                exclude=[*exclude, item],
                in_stock=in_stock,
                category=category,
                reason="unknown item",
            )
        vectors = self.item_vectors.astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        cosine = vectors @ vectors[i] / np.maximum(norms * norms[i], 1e-12)
        allowed = self._allowed(exclude, in_stock, category)
        allowed[i] = False
        items, values = self._top(cosine, allowed, k)
        return Recommendations(items, values)

    def complements(
        self,
        cart: Iterable[Any],
        k: int = 10,
        *,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
    ) -> Recommendations:
        """Items most often bought in the same order as the cart's items (not in the cart)."""
        k = _check_k(k)
        cart = list(cart)
        known = [i for i in (self.item_index(item) for item in cart) if i is not None]
        allowed = self._allowed([*exclude, *cart], in_stock, category)
        if known:
            counts = np.asarray(self.co_purchases[known].sum(axis=0), dtype=np.float64).ravel()
            if counts[allowed].max(initial=0.0) > 0:
                # Popularity breaks ties among equally co-bought items, and fills the list
                # (below every co-bought item) when fewer than k were ever bought together.
                pop = self.popularity / max(float(self.popularity.max()), 1.0)
                scores = np.where(counts > 0, counts + 0.5 * pop, 0.5 * pop - 1.0)
                items, values = self._top(scores, allowed, k)
                return Recommendations(items, values)
        reason = "no co-purchases for the cart" if known else "no known item in the cart"
        return self.popular(
            k, exclude=[*exclude, *cart], in_stock=in_stock, category=category, reason=reason
        )


__all__ = ["Recommendations", "Recommender"]
