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

Personal and new-customer answers log the customer to the feature log, as the drift check's
reference sample holds a customer (:class:`cartwise.models.monitoring.areas.RecommendAdapter`):
their ``recommend_v1`` statistics (``USER_COLUMNS``, missing values as 0) and the mean score of
their top 10 with no filter (NaN when the popular items stand in), keyed by the customer id.
A personal answer does not read ``recommend_v1``, so a background thread reads it (one Feast
call for the customers queued within a second) and scores the row; the request only queues the
customer (and a full queue drops it, counted in ``feature_log_skipped``). A personal or
new-customer answer is logged when it is computed, not when the cache answers it; session and
popular answers, and warm-up calls, are not logged. New-customer answers are cached too: their
``recommend_v1`` row is batch data, so the cache TTL bounds how late a refresh shows, and a hit
skips the Feast read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cartwise.serving.services.base import (
    _NOT_LIVE,
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
# Customers waiting for their feature-log row; more are dropped (and counted), never waited for.
LOG_QUEUE = 1_024
# Customers per online-feature read of the logging thread, and how long it gathers them: one
# Feast read per second at most, so the thread takes little CPU (and GIL) from the requests.
LOG_BATCH = 64
LOG_LINGER_S = 1.0
_AFFINITY = ("category_ids", "category_scores")


@dataclass(frozen=True)
class _LogJob:
    """A customer to log: the model version that answered, and the features it read (None:
    read ``recommend_v1`` in the logging thread)."""

    loaded: LoadedModel
    user_id: int
    features: Mapping[str, Any] | None


class _NoFeatures(Exception):
    """A customer the model never saw has no ``recommend_v1`` row (or the store failed)."""


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def monitored_row(
    predictor: Recommender, user_id: int, online: Mapping[str, Any]
) -> tuple[dict[str, float], float] | None:
    """A customer's row as the drift reference measures it: ``USER_COLUMNS`` (missing as 0)
    and the mean score of their top 10 without filters (NaN when the popular items stood in).

    None when ``online`` holds none of the statistics (no row for the customer, or the online
    store failed): logging zeros for them would read as drift.
    """
    from cartwise.models.monitoring.areas import TOP_K
    from cartwise.models.recommend.features import USER_COLUMNS

    if not any(_present(online.get(c)) for c in USER_COLUMNS):
        return None
    features: dict[str, float] = {}
    for name in USER_COLUMNS:
        value: Any = online.get(name)
        try:
            number = float(value) if _present(value) else 0.0
        except (TypeError, ValueError):
            number = 0.0
        features[name] = number if math.isfinite(number) else 0.0
    mapping = {
        name: value
        for name, value in online.items()
        if name in {*USER_COLUMNS, *_AFFINITY} and _present(value)
    }
    recs = predictor.recommend(user_id, k=TOP_K, features=mapping)
    if recs.fallback or not recs.scores:
        return features, math.nan
    return features, float(np.mean(recs.scores))


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
        # The feature-log thread and its queue (``_LogJob``; an Event marks a point to wait
        # for, None stops the thread).
        self._log_queue: queue.Queue[_LogJob | threading.Event | None] = queue.Queue(LOG_QUEUE)
        self._log_thread: threading.Thread | None = None
        self.feature_log_skipped = 0
        # (catalogue frame, its inactive product ids): see _inactive.
        self._inactive_memo: tuple[pd.DataFrame, list[int]] | None = None

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

    # ------------------------------------------------------------------ feature log

    def _log_customer(
        self, loaded: LoadedModel, user_id: int, features: Mapping[str, Any] | None = None
    ) -> None:
        """Queue a customer for the feature log (never blocks: a full queue drops them)."""
        if _NOT_LIVE.get() or self.feature_logger is None:
            return
        try:
            self._log_queue.put_nowait(_LogJob(loaded, user_id, features))
        except queue.Full:
            self.feature_log_skipped += 1
            return
        self._ensure_log_thread()

    def _ensure_log_thread(self) -> None:
        with self._lock:
            if self._log_thread is None or not self._log_thread.is_alive():
                self._log_thread = threading.Thread(
                    target=self._log_loop, name="recommend-feature-log", daemon=True
                )
                self._log_thread.start()

    def _log_loop(self) -> None:
        while True:
            items = [self._log_queue.get()]
            deadline = time.monotonic() + LOG_LINGER_S
            # Gather customers for one read, unless someone waits (a marker) or stops the thread.
            while len(items) < LOG_BATCH and isinstance(items[-1], _LogJob):
                try:
                    items.append(self._log_queue.get(timeout=max(deadline - time.monotonic(), 0.0)))
                except queue.Empty:
                    break
            jobs = [item for item in items if isinstance(item, _LogJob)]
            try:
                self._log_jobs(jobs)
            except Exception:
                log.warning("recommend: logging %d customers failed", len(jobs), exc_info=True)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is None for item in items):
                return

    def _log_jobs(self, jobs: list[_LogJob]) -> None:
        """Read the missing ``recommend_v1`` rows in one call, score and log each customer."""
        if not jobs:
            return
        from cartwise.models.recommend.features import USER_SERVICE

        wanted = sorted({job.user_id for job in jobs if job.features is None})
        found: dict[int, dict[str, Any]] = {}
        if wanted:
            rows = self.features.get(USER_SERVICE, [{"customer_id": u} for u in wanted])
            found = dict(zip(wanted, rows, strict=True))
        for job in jobs:
            online = job.features if job.features is not None else found.get(job.user_id, {})
            # The trained predictor, as the reference was scored (new products do not count).
            row = monitored_row(job.loaded.predictor, job.user_id, online)
            if row is not None:
                self.log_features(job.loaded, [row[0]], [row[1]], [job.user_id])

    def wait_feature_log(self, timeout: float = 30.0) -> bool:
        """Wait until the customers queued so far are logged (tests, shutdown); False on
        timeout."""
        if self._log_thread is None:
            return True
        marker = threading.Event()
        try:
            self._log_queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._ensure_log_thread()
        return marker.wait(timeout)

    def close(self) -> None:
        """Log the queued customers, stop the logging thread, write what is buffered."""
        thread = self._log_thread
        if thread is not None and thread.is_alive():
            try:
                self._log_queue.put(None, timeout=10.0)
                thread.join(timeout=10.0)
            except queue.Full:
                log.warning("recommend: the feature-log queue did not drain")
        super().close()

    # ------------------------------------------------------------------ helpers

    def _inactive(self) -> list[int]:
        """Products not active in the catalogue snapshot (computed once per snapshot: a
        pandas filter per request was a fifth of a request's CPU)."""
        catalog = self._catalog
        if catalog is None:
            return []
        memo = self._inactive_memo
        if memo is None or memo[0] is not catalog:
            ids = [int(p) for p in catalog.loc[catalog["status"] != "active", "product_id"]]
            memo = self._inactive_memo = (catalog, ids)
        return memo[1]

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

        # The cache key of a signed-in shopper's answer (personal or new-customer).
        user_key = (
            {
                "user": user_id,
                "k": k,
                "category": cat,
                "exclude": sorted(exclude),
                "allowed": None if allowed_ids is None else sorted(allowed_ids),
                "items": rec.n_items,
            }
            if user_id is not None
            else {}
        )
        if user_id is not None and rec.knows_user(user_id):
            key = {**user_key, "exclude_purchased": exclude_purchased}

            def personal() -> dict[str, Any]:
                recs = rec.recommend(
                    user_id,
                    k,
                    exclude=exclude,
                    in_stock=allowed_ids,
                    category=cat,
                    exclude_purchased=exclude_purchased,
                )
                self._log_customer(loaded, user_id)
                return self._body(recs, "personal")

            body, hit = await self.cached(loaded, "recommend", key, personal)
            return answer(loaded, body, hit)

        if user_id is not None and rec.towers is not None and rec.towers.spec is not None:
            spec = rec.towers.spec

            def new_customer() -> dict[str, Any]:
                rows = self.features.get("recommend_v1", [{"customer_id": user_id}])
                wanted = {*spec.user_columns, "category_ids", "category_scores"}
                features = {
                    name: value
                    for name, value in (rows[0] if rows else {}).items()
                    if name in wanted and value is not None
                }
                if not any(name in spec.user_columns for name in features):
                    raise _NoFeatures  # nothing cached: the popular items answer
                recs = rec.recommend(
                    user_id,
                    k,
                    exclude=exclude,
                    in_stock=allowed_ids,
                    category=cat,
                    features=features,
                )
                self._log_customer(loaded, user_id, features)
                return self._body(recs, "new_customer")

            try:
                body, hit = await self.cached(loaded, "new_customer", user_key, new_customer)
            except _NoFeatures:
                pass
            else:
                return answer(loaded, body, hit)
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
