"""What serving loads: a picklable, torch-free :class:`Recommender` over numpy arrays.

It answers three questions, each with the business filters (``exclude`` ids, an
``in_stock`` set, a ``category``, and for consumables ``exclude_purchased``):

- :meth:`Recommender.recommend`: top-K for a customer (collaborative scores, optionally
  blended with the customer's own repurchase history);
- :meth:`Recommender.similar_items`: nearest items by cosine of the item vectors;
- :meth:`Recommender.complements`: what is bought together with a cart (co-purchase counts).

Inputs it does not know (a new customer, a new product, a cart of unknown items) get the
popular items instead, with ``fallback=True`` and the reason, so callers can tell.

A two-tower model (:mod:`.model`, exported to numpy as :class:`Towers`) adds cold start: a new
customer with ``recommend_v1`` features, and new products added with :meth:`Recommender.add_items`
(their MiniLM content vector and features), get real recommendations, not the fallback. A
session model (:class:`SessionModel`, a GRU in numpy) answers :meth:`Recommender.recommend_session`
from the session's last products. :meth:`Recommender.predict` is the pyfunc entry point.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp  # type: ignore[import-untyped]

from cartwise.models.recommend.baselines import blend_repurchase, minmax_rows, scale_rows_by_max
from cartwise.models.recommend.data import Interactions, product_texts
from cartwise.models.recommend.features import FeatureSpec, signed_log

INPUT_COLUMNS = ("user_id", "k", "session")
OUTPUT_COLUMNS = ("user_id", "rank", "product_id", "score", "fallback")
MAX_K = 1000


def mlp(layers: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """A ReLU MLP in numpy from ``[W1, b1, W2, b2, ...]`` (W as (in, out))."""
    for k in range(0, len(layers), 2):
        x = x @ layers[k] + layers[k + 1]
        if k + 2 < len(layers):
            x = np.maximum(x, 0.0)
    return x


@dataclass
class Towers:
    """The two-tower model in numpy: id tables (row 0 = unknown), tower MLPs, input scaling."""

    weights: dict[str, Any]  # see model.TwoTower.export
    spec: FeatureSpec | None = None  # how feature rows become inputs (None: given as matrices)
    content_mean: np.ndarray | None = None  # (384,) centre of the MiniLM vectors
    content_basis: np.ndarray | None = None  # (384, c) PCA projection of the MiniLM vectors

    def project(self, content: np.ndarray) -> np.ndarray:
        """MiniLM vectors → the item tower's content inputs (empty without content)."""
        if self.content_basis is None or self.content_mean is None:
            return np.zeros((len(content), 0), dtype=np.float32)
        out: np.ndarray = ((content - self.content_mean) @ self.content_basis).astype(np.float32)
        return out

    def users(self, ids: np.ndarray, features: np.ndarray) -> np.ndarray:
        """User vectors; ``ids`` are 1-based indices (0 = a customer unseen in training)."""
        w = self.weights
        x = (features.astype(np.float32) - w["user_mean"]) / w["user_std"]
        out: np.ndarray = w["user_id"][ids] + mlp(w["user_layers"], x)
        return out.astype(np.float32)

    def items(self, ids: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Item vectors from tower inputs (features ⊕ projected content); 0 = a new item."""
        w = self.weights
        x = (inputs.astype(np.float32) - w["item_mean"]) / w["item_std"]
        out: np.ndarray = w["item_id"][ids] + mlp(w["item_layers"], x)
        return out.astype(np.float32)


_PLAIN_NUMBER = (bool, int, float, np.bool_, np.integer, np.floating)


def user_row(spec: FeatureSpec, features: Mapping[str, Any]) -> np.ndarray:
    """``spec.user_row(features)`` for one customer, without building a pandas frame.

    Online features hold plain numbers (or None) and the category lists: those are converted
    here exactly as :meth:`FeatureSpec.users` converts a one-row frame (non-finite numbers as
    0, the presence flag set by any value that is not missing). Anything else (strings, an
    unknown feature, not a mapping) goes through ``spec.user_row``, which also raises its
    errors. A new customer is scored on every request (never cached), so this is on the hot
    path: the frame costs a few milliseconds, this a few microseconds.
    """
    if not isinstance(features, Mapping):
        return spec.user_row(features)
    known = {*spec.user_columns, "category_ids", "category_scores"}
    if set(features) - known - {"customer_id", "event_timestamp"}:
        return spec.user_row(features)
    numeric = np.zeros((1, len(spec.user_columns)), dtype=np.float64)
    present = False
    for j, column in enumerate(spec.user_columns):
        value = features.get(column)
        if value is None:
            continue
        if not isinstance(value, _PLAIN_NUMBER):
            return spec.user_row(features)
        try:
            number = float(value)
        except OverflowError:
            return spec.user_row(features)
        if math.isnan(number):
            continue
        present = True
        numeric[0, j] = number if math.isfinite(number) else 0.0
    affinity = spec._category_block(
        [features.get("category_ids")], [features.get("category_scores")]
    )
    flag = np.array([[1.0 if present else 0.0]])
    out: np.ndarray = np.hstack([signed_log(numeric), affinity, flag]).astype(np.float32)[0]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


@dataclass
class SessionModel:
    """The session GRU in numpy: item index + 1 is the input token (0 = padding)."""

    weights: dict[str, np.ndarray]  # see model.SessionGRU.export
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        """Items the GRU knows (the first ``n_items`` of the recommender's catalogue)."""
        return int(self.weights["embedding"].shape[0]) - 1

    def scores(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Next-item scores (len(sequences), n_items) after each sequence (oldest first)."""
        w = self.weights
        hidden = w["w_hh"].shape[1]
        n = len(sequences)
        steps = max((len(s) for s in sequences), default=0)
        # Left-padded, so every sequence ends at the last step.
        tokens = np.zeros((n, steps), dtype=np.int64)
        for row, seq in enumerate(sequences):
            if len(seq):
                tokens[row, steps - len(seq) :] = np.asarray(seq, dtype=np.int64) + 1
        h = np.zeros((n, hidden), dtype=np.float32)
        for t in range(steps):
            x = w["embedding"][tokens[:, t]]
            gi = x @ w["w_ih"].T + w["b_ih"]
            gh = h @ w["w_hh"].T + w["b_hh"]
            r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = _sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
            cand = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
            new = (1.0 - z) * cand + z * h
            # Padding steps leave the state as it was (the GRU never saw them in training).
            h = np.where((tokens[:, t] > 0)[:, None], new, h).astype(np.float32)
        logits = (h @ w["out_w"].T + w["out_b"]) @ w["embedding"].T
        out: np.ndarray = logits[:, 1:].astype(np.float64)
        return out


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
    towers: Towers | None = None  # the two-tower model, for new customers and new items
    item_content: np.ndarray | None = None  # (n_items, 384) unit MiniLM vectors
    session_model: SessionModel | None = None
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
        features: Mapping[str, Any] | None = None,
    ) -> Recommendations:
        """Top-k items for a customer; an unknown customer gets the popular items (flagged).

        With a two-tower model, an unknown customer with ``features`` (their ``recommend_v1``
        values, e.g. from the online store) is scored by the customer tower instead.
        """
        k = _check_k(k)
        u = self.user_index(user)
        if u is None:
            if features is not None and self.towers is not None and self.towers.spec is not None:
                scores = self.new_customer_scores(features)
                allowed = self._allowed(exclude, in_stock, category)
                items, values = self._top(scores, allowed, k)
                return Recommendations(items, values, reason="new customer: features")
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

    def new_customer_scores(self, features: Mapping[str, Any]) -> np.ndarray:
        """Scores of every item for a customer unseen in training, from their features."""
        if self.towers is None or self.towers.spec is None:
            raise ValueError("this model has no customer tower: cannot score new customers")
        row = user_row(self.towers.spec, features)
        vector = self.towers.users(np.zeros(1, dtype=np.int64), row[None, :])[0]
        scores: np.ndarray = (self.item_vectors @ vector + self.item_bias).astype(np.float64)
        return scores

    def session_scores(self, last_products: Sequence[Any]) -> np.ndarray | None:
        """Next-item scores from a session's products (newest first); None if none is known."""
        if self.session_model is None:
            return None
        # Items added after training (add_items) have no token in the GRU.
        vocabulary = self.session_model.n_items
        indices = (self.item_index(p) for p in last_products)
        known = [i for i in indices if i is not None and i < vocabulary]
        if not known:
            return None
        scores: np.ndarray = self.session_model.scores([known[::-1]])[0]
        if len(scores) < self.n_items:
            filler = np.full(self.n_items - len(scores), float(scores.min()))
            scores = np.concatenate([scores, filler])
        return scores

    def recommend_session(
        self,
        last_products: Sequence[Any],
        k: int = 10,
        *,
        user: Any = None,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Next items for a live session from its last products (newest first, as ``session_v1``).

        A known ``user`` blends their own ranking in (both scaled to [0, 1]); the session's
        products are left out unless ``exclude_seen`` is False. Without a session model or a
        known product, the customer's (or the popular) ranking stands in, flagged.
        """
        k = _check_k(k)
        if isinstance(last_products, str | bytes) or not isinstance(last_products, Sequence):
            raise ValueError("last_products must be a list of product ids")
        session = self.session_scores(last_products)
        seen = list(last_products) if exclude_seen else []
        if session is None:
            reason = "no session model" if self.session_model is None else "no known product"
            base = self.recommend(
                user, k, exclude=[*exclude, *seen], in_stock=in_stock, category=category
            )
            return Recommendations(base.items, base.scores, fallback=True, reason=reason)
        scores = minmax_rows(session[None, :])[0]
        u = self.user_index(user) if user is not None else None
        if u is not None:
            scores = scores + minmax_rows(self.score_users(np.array([u])))[0]
        allowed = self._allowed([*exclude, *seen], in_stock, category)
        items, values = self._top(scores, allowed, k)
        return Recommendations(items, values)

    # ------------------------------------------------------------------ new products

    def add_items(
        self,
        products: pd.DataFrame,
        *,
        features: pd.DataFrame | None = None,
        content: np.ndarray | None = None,
    ) -> Recommender:
        """A copy that also knows new products, placed by their content (and features).

        ``products`` has ``product_id`` and some of ``name``, ``description``, ``category``
        (and ``category_id``); ``features`` optional ``product_v1`` rows by ``product_id``;
        ``content`` optional precomputed MiniLM vectors (else they are encoded here).
        """
        if self.towers is None or self.towers.spec is None or self.item_content is None:
            raise ValueError("this model has no item tower with content: cannot add items")
        if not isinstance(products, pd.DataFrame) or "product_id" not in products.columns:
            raise ValueError("products must be a DataFrame with a product_id column")
        new = products[[self.item_index(p) is None for p in products["product_id"]]]
        new = new.drop_duplicates("product_id")
        if len(new) == 0:
            return self
        if content is None:
            from cartwise.models import text

            content = text.encode(product_texts(new))
        else:
            content = np.asarray(content, dtype=np.float32)
            if content.shape != (len(products), self.item_content.shape[1]):
                raise ValueError("content must have one row per product and the encoder's width")
            content = content[np.isin(products["product_id"].to_numpy(), new["product_id"])]
        frame = new.drop(columns=[c for c in new.columns if c in self.towers.spec.item_columns])
        if features is not None:
            frame = frame.merge(features, on="product_id", how="left", suffixes=("", "_f"))
        inputs = np.hstack([self.towers.spec.items(frame), self.towers.project(content)])
        vectors = self.towers.items(np.zeros(len(new), dtype=np.int64), inputs)
        m = len(new)
        categories = self.item_category
        if categories is not None:
            names = new["category"] if "category" in new.columns else [None] * m
            categories = np.concatenate([categories, np.array(list(names), dtype=object)])
        n = self.n_items
        return replace(
            self,
            item_ids=np.concatenate([self.item_ids, new["product_id"].to_numpy()]),
            item_vectors=np.vstack([self.item_vectors, vectors]),
            item_bias=np.concatenate([self.item_bias, np.zeros(m, np.float32)]),
            popularity=np.concatenate([self.popularity, np.zeros(m)]),
            own=sp.csr_matrix(
                (self.own.data, self.own.indices, self.own.indptr),
                shape=(len(self.user_ids), n + m),
            ),
            co_purchases=sp.block_diag(
                [self.co_purchases, sp.csr_matrix((m, m), dtype=np.float32)], format="csr"
            ),
            item_category=categories,
            item_content=np.vstack([self.item_content, content.astype(np.float32)]),
            _users={},
            _items={},
        )

    def similar_items(
        self,
        item: Any,
        k: int = 10,
        *,
        exclude: Iterable[Any] = (),
        in_stock: Collection[Any] | None = None,
        category: str | None = None,
        product: Mapping[str, Any] | None = None,
    ) -> Recommendations:
        """Items nearest to a product (never the item itself).

        Products with buyers use the cosine of their item vectors; products nobody bought yet
        (and an unknown ``item`` described by ``product``: name, description, category) use
        the cosine of their MiniLM content vectors, when the model has them.
        """
        k = _check_k(k)
        i = self.item_index(item)
        allowed = self._allowed(exclude, in_stock, category)
        if i is None:
            if product is not None and self.item_content is not None:
                if not isinstance(product, Mapping):
                    raise ValueError("product must be a mapping with name/description/category")
                from cartwise.models import text

                query = text.encode(product_texts(pd.DataFrame([dict(product)])))[0]
                cosine = self.item_content.astype(np.float64) @ query
                items, values = self._top(cosine, allowed, k)
                return Recommendations(items, values, reason="new item: content")
            return self.popular(
                k,
                exclude=[*exclude, item],
                in_stock=in_stock,
                category=category,
                reason="unknown item",
            )
        allowed[i] = False
        if self.item_content is not None and self.popularity[i] == 0:
            content = self.item_content.astype(np.float64)
            items, values = self._top(content @ content[i], allowed, k)
            return Recommendations(items, values, reason="new item: content")
        vectors = self.item_vectors.astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        cosine = vectors @ vectors[i] / np.maximum(norms * norms[i], 1e-12)
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

    # ------------------------------------------------------------------ pyfunc

    def predict(self, data: Any) -> pd.DataFrame:
        """Batch top-k: rows of ``user_id`` (optional ``k``, ``session``) → a long frame.

        ``session`` holds the session's last product ids, newest first (``session_v1``'s
        ``last_products``); when given, the session model's next-item scores are blended in.
        The output has one row per recommendation: user_id, rank (1 = best), product_id,
        score, fallback. Malformed input raises ``ValueError``.
        """
        frame = _input_frame(data)
        out: list[tuple[Any, int, Any, float, bool]] = []
        for row in frame.itertuples(index=False):
            user = _user_id(row.user_id)
            k = _row_k(getattr(row, "k", None))
            session = _row_session(getattr(row, "session", None))
            if session:
                recs = self.recommend_session(session, k, user=user)
            else:
                recs = self.recommend(user, k)
            for rank, (item, score) in enumerate(zip(recs.items, recs.scores, strict=True), 1):
                out.append((user, rank, item, float(score), bool(recs.fallback)))
        result = pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))
        return result.astype({"rank": np.int64, "score": np.float64, "fallback": bool})


def _input_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, Mapping):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"expected a DataFrame with columns {INPUT_COLUMNS}, got {type(data)}")
    unknown = [c for c in data.columns if c not in INPUT_COLUMNS]
    if unknown:
        raise ValueError(f"unknown input columns {unknown}; expected {list(INPUT_COLUMNS)}")
    if "user_id" not in data.columns:
        raise ValueError("input lacks the user_id column")
    return data


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _user_id(value: Any) -> Any:
    if _missing(value) or isinstance(value, bool):
        raise ValueError(f"user_id must be an id, got {value!r}")
    if isinstance(value, float | np.floating):
        if not float(value).is_integer():
            raise ValueError(f"user_id must be an integer id, got {value!r}")
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _row_k(value: Any) -> int:
    if _missing(value):
        return 10
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    k = _check_k(value)
    if k > MAX_K:
        raise ValueError(f"k must be at most {MAX_K}, got {k}")
    return k


def _row_session(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(f"session must be a list of product ids, got {value!r}")
    items = list(value)
    for item in items:
        if _missing(item) or isinstance(item, bool):
            raise ValueError(f"session holds a missing or invalid product id: {item!r}")
    return [int(i) if isinstance(i, np.integer) else i for i in items]


__all__ = [
    "INPUT_COLUMNS",
    "OUTPUT_COLUMNS",
    "Recommendations",
    "Recommender",
    "SessionModel",
    "Towers",
    "mlp",
    "user_row",
]
