"""The recommendation service: personal, session, new-customer, similar, complements, popular.

Strategies of :meth:`RecommenderService.recommend` (``strategy`` in the answer says which one
produced the items):

- ``session``: the live session's ``last_products`` (Feast ``session_v1``, pushed by the events
  API) through the session GRU, blended with the signed-in customer's own ranking, plus a bonus
  for the categories the session browsed (their share of the session's products), so three views
  in one category put that category on top at once;
- ``personal``: a customer seen in training (collaborative scores ⊕ repurchase);
- ``new_customer``: a customer unseen in training with ``recommend_v1`` features (the customer
  tower);
- ``similar`` (context ``product``), ``complements`` (context ``cart``), ``popular`` otherwise or
  for the ``baseline:popularity`` variant.

Products created after training reach the model through :meth:`Recommender.add_items` (their
MiniLM content vector): a background refresh reads the active catalogue every
``catalog_refresh_s`` and extends a per-version copy of the predictor, off the request path.
Session answers are never cached (they change with every event); the others are cached per model
version and catalogue generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from cartwise.serving.services.base import (
    ServiceBase,
    answer,
    check_ids,
    check_int,
    check_k,
    parse_variant,
)

if TYPE_CHECKING:
    import pandas as pd

    from cartwise.models.recommend.predict import Recommendations, Recommender
    from cartwise.serving.runtime.holder import LoadedModel

log = logging.getLogger(__name__)

CONTEXTS = ("home", "product", "cart")
POPULARITY = "baseline:popularity"


def _minmax(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values, dtype=np.float64)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values, dtype=np.float64)
    return np.where(finite, out, 0.0)


class RecommenderService(ServiceBase):
    """Recommendations from ``models:/recommend@champion`` (or an A/B variant)."""

    area = "recommend"
    defaults = {
        # Weight of the session's category share: 1.0 lifts a category every session product
        # belongs to above every other item (the blended model scores are in [0, 1]).
        "session_category_weight": 1.0,
    }

    def __init__(
        self, settings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__(settings, config)
        # Per (name, version): the predictor extended with products added after training.
        self._extended: dict[tuple[str, int], Recommender] = {}
        self._extend_busy: set[tuple[str, int]] = set()

    async def exercise(self) -> None:
        """A guest's home page: reads ``session_v1`` and the catalogue once."""
        await self.recommend(session_id="warmup", k=4)

    # ------------------------------------------------------------------ predictor

    def prepare(self, loaded: LoadedModel) -> None:
        """Build the id maps now and place new catalogue products (content) for this version."""
        rec: Recommender = loaded.predictor
        rec.item_index(-1)
        rec.user_index(-1)
        catalog = self._catalog if self._catalog is not None else self.load_catalog()
        if catalog is not None:
            self._extend(loaded, catalog)

    def _extend(self, loaded: LoadedModel, catalog: pd.DataFrame) -> None:
        key = (loaded.name, loaded.version)
        base: Recommender = loaded.predictor
        current = self._extended.get(key, base)
        active = catalog[catalog["status"] == "active"]
        new = active[[current.item_index(int(p)) is None for p in active["product_id"]]]
        if new.empty or base.towers is None or base.item_content is None:
            return
        frame = new[["product_id", "name", "description", "category", "category_id"]].copy()
        frame["name"] = frame["name"].fillna("")
        frame["description"] = frame["description"].fillna("")
        frame["category"] = frame["category"].fillna("")
        frame["category_id"] = frame["category_id"].fillna(0).astype("int64")
        try:
            extended = current.add_items(frame)
        except Exception:
            log.warning("placing %d new products failed", len(frame), exc_info=True)
            return
        with self._lock:
            self._extended[key] = extended
            # Older versions will not be asked for again once the holder moved on.
            for old in [k for k in self._extended if k[0] == key[0] and k[1] < key[1] - 1]:
                del self._extended[old]
        log.info("recommender v%s: placed %d new products by content", loaded.version, len(frame))

    def catalog_loaded(self, frame: pd.DataFrame) -> None:
        """Place new products in every prepared version (runs in the refresh thread)."""
        holder = self._holder
        if holder is None:
            return
        current = holder.current()
        if current is not None and (current.name, current.version) in self._prepared:
            self._extend(current, frame)

    def predictor(self, loaded: LoadedModel) -> Recommender:
        """The version's predictor, extended with the new products placed so far."""
        self._refresh_catalog_if_stale()
        found = self._extended.get((loaded.name, loaded.version))
        return found if found is not None else loaded.predictor  # type: ignore[no-any-return]

    async def refresh(self) -> dict[str, Any]:
        """Re-read the catalogue and place new products now (tests, admin); returns counts."""
        loaded = await self.model(None)
        await asyncio.to_thread(self.load_catalog)
        catalog = self._catalog
        if catalog is not None:
            await asyncio.to_thread(self._extend, loaded, catalog)
        rec = self.predictor(loaded)
        return answer(
            loaded,
            {"items": int(rec.n_items), "trained_items": int(loaded.predictor.n_items)},
        )

    # ------------------------------------------------------------------ helpers

    def _inactive(self) -> list[int]:
        catalog = self._catalog
        if catalog is None:
            return []
        return [int(p) for p in catalog.loc[catalog["status"] != "active", "product_id"]]

    @staticmethod
    def _category(rec: Recommender, category: Any) -> tuple[str | None, bool]:
        """The model's spelling of a category, and False if no item has it."""
        if category is None:
            return None, True
        if not isinstance(category, str) or not category.strip():
            raise ValueError("category must be a non-empty string")
        if rec.item_category is None:
            raise ValueError("this model has no item categories: cannot filter by category")
        names = {str(c) for c in rec.item_category.tolist() if c is not None}
        if category in names:
            return category, True
        folded = {n.casefold(): n for n in names}
        hit = folded.get(category.strip().casefold())
        return (hit, True) if hit is not None else (category, False)

    @staticmethod
    def _items(recs: Recommendations) -> list[dict[str, Any]]:
        return [
            {"product_id": int(i), "score": float(s)}
            for i, s in zip(recs.items, recs.scores, strict=True)
        ]

    def _body(self, recs: Recommendations, strategy: str) -> dict[str, Any]:
        return {"items": self._items(recs), "strategy": strategy, "reason": recs.reason or None}

    # ------------------------------------------------------------------ answers

    async def recommend(
        self,
        *,
        user_id: int | None = None,
        session_id: str | None = None,
        k: int = 10,
        context: str = "home",
        product_id: int | None = None,
        cart: list[int] | None = None,
        category: str | None = None,
        exclude_purchased: bool = False,
        allowed: list[int] | None = None,
        variant: str | None = None,
    ) -> dict[str, Any]:
        """Top-k products for the shopper and context (see the module docstring)."""
        k = check_k(k)
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {list(CONTEXTS)}, got {context!r}")
        if user_id is not None:
            user_id = check_int(user_id, "user_id", minimum=1)
        if session_id is not None and (
            not isinstance(session_id, str) or not 0 < len(session_id) <= 128
        ):
            raise ValueError("session_id must be a string of 1 to 128 characters")
        if not isinstance(exclude_purchased, bool):
            raise ValueError("exclude_purchased must be true or false")
        allowed_ids = None if allowed is None else check_ids(allowed, "allowed", limit=100_000)
        cart_ids = check_ids(cart or [], "cart", limit=500)
        variant = parse_variant(variant, (POPULARITY,))
        if context == "product":
            if product_id is None:
                raise ValueError("context=product needs a product_id")
            return await self.similar(
                product_id=product_id,
                k=k,
                allowed=allowed_ids,
                variant=variant,
                category=category,
            )
        if context == "cart" and cart_ids:
            return await self.complements(
                product_ids=cart_ids, k=k, allowed=allowed_ids, variant=variant, category=category
            )

        loaded = await self.model(variant)
        rec = self.predictor(loaded)
        cat, known_category = self._category(rec, category)
        exclude = [*self._inactive(), *cart_ids]
        if not known_category:
            return answer(
                loaded, {"items": [], "strategy": "popular", "reason": "unknown category"}
            )
        if variant == POPULARITY:
            return await self._popular(loaded, rec, k, exclude, allowed_ids, cat)

        if session_id is not None:
            rows = await self.online("session_v1", [{"session_id": session_id}])
            last = (rows[0].get("last_products") if rows else None) or []
            last = [int(p) for p in last if p is not None]
            if last:
                recs = self._session(
                    rec,
                    last,
                    k,
                    user_id=user_id,
                    exclude=exclude,
                    allowed=allowed_ids,
                    category=cat,
                    exclude_purchased=exclude_purchased,
                )
                body = self._body(recs, "session")
                body["session_products"] = last
                return answer(loaded, body)

        if user_id is not None and rec.knows_user(user_id):
            key = {
                "user": user_id,
                "k": k,
                "category": cat,
                "exclude": sorted(exclude),
                "exclude_purchased": exclude_purchased,
                "allowed": None if allowed_ids is None else sorted(allowed_ids),
                "items": rec.n_items,
            }

            def personal() -> dict[str, Any]:
                recs = rec.recommend(
                    user_id,
                    k,
                    exclude=exclude,
                    in_stock=allowed_ids,
                    category=cat,
                    exclude_purchased=exclude_purchased,
                )
                return self._body(recs, "personal")

            body, hit = await self.cached(loaded, "recommend", key, personal)
            return answer(loaded, body, hit)

        if user_id is not None and rec.towers is not None and rec.towers.spec is not None:
            rows = await self.online("recommend_v1", [{"customer_id": user_id}])
            spec = rec.towers.spec
            wanted = {*spec.user_columns, "category_ids", "category_scores"}
            features = {
                name: value
                for name, value in (rows[0] if rows else {}).items()
                if name in wanted and value is not None
            }
            if any(name in spec.user_columns for name in features):
                recs = await asyncio.to_thread(
                    rec.recommend,
                    user_id,
                    k,
                    exclude=exclude,
                    in_stock=allowed_ids,
                    category=cat,
                    features=features,
                )
                return answer(loaded, self._body(recs, "new_customer"))
        return await self._popular(loaded, rec, k, exclude, allowed_ids, cat)

    async def _popular(
        self,
        loaded: LoadedModel,
        rec: Recommender,
        k: int,
        exclude: list[int],
        allowed: list[int] | None,
        category: str | None,
    ) -> dict[str, Any]:
        key = {
            "k": k,
            "category": category,
            "exclude": sorted(exclude),
            "allowed": None if allowed is None else sorted(allowed),
            "items": rec.n_items,
        }

        def popular() -> dict[str, Any]:
            recs = rec.popular(k, exclude=exclude, in_stock=allowed, category=category)
            return self._body(recs, "popular")

        body, hit = await self.cached(loaded, "popular", key, popular)
        return answer(loaded, body, hit)

    def _session(
        self,
        rec: Recommender,
        last: list[int],
        k: int,
        *,
        user_id: int | None,
        exclude: list[int],
        allowed: list[int] | None,
        category: str | None,
        exclude_purchased: bool,
    ) -> Recommendations:
        """Session GRU ⊕ the customer's ranking, plus the session's category shares."""
        from cartwise.models.recommend.predict import Recommendations

        parts: list[np.ndarray] = []
        session = rec.session_scores(last)
        if session is not None:
            parts.append(_minmax(session))
        u = rec.user_index(user_id) if user_id is not None else None
        if u is not None:
            parts.append(_minmax(rec.score_users(np.array([u]))[0]))
        if not parts:
            # Only products the GRU never saw (added after training): popularity as the base.
            parts.append(_minmax(np.log1p(rec.popularity.astype(np.float64))))
        scores = np.mean(parts, axis=0)
        if rec.item_category is not None:
            seen = [rec.item_category[i] for i in map(rec.item_index, last) if i is not None]
            shares = Counter(c for c in seen if c is not None)
            weight = float(self.config["session_category_weight"])
            for name, count in shares.items():
                scores = scores + weight * (count / len(seen)) * (rec.item_category == name)
        mask = rec._allowed([*exclude, *last], allowed, category)
        if exclude_purchased and u is not None:
            row = rec.own[u]
            mask[row.indices[row.data > 0]] = False
        items, values = rec._top(scores, mask, k)
        return Recommendations(items, values)

    async def similar(
        self,
        *,
        product_id: int,
        k: int = 10,
        allowed: list[int] | None = None,
        variant: str | None = None,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Products like ``product_id``; new catalogue products are placed by content."""
        product_id = check_int(product_id, "product_id", minimum=1)
        k = check_k(k)
        allowed_ids = None if allowed is None else check_ids(allowed, "allowed", limit=100_000)
        variant = parse_variant(variant, (POPULARITY,))
        loaded = await self.model(variant)
        rec = self.predictor(loaded)
        cat, known_category = self._category(rec, category)
        if not known_category:
            return answer(
                loaded, {"items": [], "strategy": "similar", "reason": "unknown category"}
            )
        exclude = [*self._inactive(), product_id]
        if variant == POPULARITY:
            return await self._popular(loaded, rec, k, exclude, allowed_ids, cat)
        described: dict[str, Any] | None = None
        if rec.item_index(product_id) is None:
            described = await self._describe(product_id)
        key = {
            "product": product_id,
            "k": k,
            "category": cat,
            "exclude": sorted(exclude),
            "allowed": None if allowed_ids is None else sorted(allowed_ids),
            "items": rec.n_items,
        }

        def compute() -> dict[str, Any]:
            recs = rec.similar_items(
                product_id,
                k,
                exclude=exclude,
                in_stock=allowed_ids,
                category=cat,
                product=described,
            )
            return self._body(recs, "popular" if recs.fallback else "similar")

        body, hit = await self.cached(loaded, "similar", key, compute)
        return answer(loaded, body, hit)

    async def _describe(self, product_id: int) -> dict[str, Any]:
        """Name, description and category of a product the model does not know (or ValueError)."""
        catalog = await self.catalog()
        if catalog is None or product_id not in set(catalog["product_id"].tolist()):
            catalog = await asyncio.to_thread(self.load_catalog)
        if catalog is None:
            raise ValueError(f"unknown product {product_id}")
        row = catalog[catalog["product_id"] == product_id]
        if row.empty:
            raise ValueError(f"unknown product {product_id}")
        first = row.iloc[0]
        return {
            "name": str(first["name"] or ""),
            "description": str(first["description"] or ""),
            "category": str(first["category"] or ""),
        }

    async def complements(
        self,
        *,
        product_ids: list[int],
        k: int = 10,
        allowed: list[int] | None = None,
        variant: str | None = None,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Products bought together with the cart's products (never the cart's own)."""
        ids = check_ids(product_ids, "product_ids", limit=500)
        if not ids:
            raise ValueError("product_ids must name at least one product")
        k = check_k(k)
        allowed_ids = None if allowed is None else check_ids(allowed, "allowed", limit=100_000)
        variant = parse_variant(variant, (POPULARITY,))
        loaded = await self.model(variant)
        rec = self.predictor(loaded)
        cat, known_category = self._category(rec, category)
        if not known_category:
            return answer(
                loaded, {"items": [], "strategy": "complements", "reason": "unknown category"}
            )
        unknown = [p for p in ids if rec.item_index(p) is None]
        if unknown:
            catalog = await self.catalog()
            if catalog is None or not set(unknown) <= set(catalog["product_id"].tolist()):
                catalog = await asyncio.to_thread(self.load_catalog)
            missing = sorted(set(unknown) - set([] if catalog is None else catalog["product_id"]))
            if missing:
                raise ValueError(f"unknown product ids {missing[:10]}")
        exclude = [*self._inactive(), *ids]
        if variant == POPULARITY:
            return await self._popular(loaded, rec, k, exclude, allowed_ids, cat)
        key = {
            "cart": sorted(set(ids)),
            "k": k,
            "category": cat,
            "exclude": sorted(exclude),
            "allowed": None if allowed_ids is None else sorted(allowed_ids),
            "items": rec.n_items,
        }

        def compute() -> dict[str, Any]:
            recs = rec.complements(ids, k, exclude=exclude, in_stock=allowed_ids, category=cat)
            return self._body(recs, "popular" if recs.fallback else "complements")

        body, hit = await self.cached(loaded, "complements", key, compute)
        return answer(loaded, body, hit)
