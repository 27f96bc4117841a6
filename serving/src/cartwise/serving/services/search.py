"""The search service: hybrid retrieval re-ranked by the learned ranker, facets and autocomplete.

:meth:`SearchService.search` wraps :class:`~cartwise.models.search.predict.SearchPredictor`:
spelling correction (``did_you_mean``), BM25 ⊕ MiniLM candidates fused and re-ranked, filters
(category, price, in stock) and paging, matched terms for highlighting. ``filters.allowed`` (live
stock, computed by the ingress) restricts the candidates *before* retrieval, so a narrow filter
still fills its page. Facets count the filtered candidates by category, price band and live stock
(from a catalogue snapshot of the database, refreshed in the background).

:meth:`SearchService.suggest` is the predictor's prefix search (binary search on a sorted array,
sub-millisecond): no Feast, no MiniLM, no cache round-trip, no thread hop once the model is loaded.

A ``baseline:bm25`` variant searches with BM25 only (the lexical baseline of an A/B test).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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

    from cartwise.models.search.predict import SearchPredictor
    from cartwise.serving.runtime.holder import LoadedModel

FILTER_KEYS = frozenset({"category", "in_stock", "min_price", "max_price", "allowed"})
log = logging.getLogger(__name__)

# Upper bounds of the price bands (the last band is open).
PRICE_BANDS: tuple[tuple[str, float], ...] = (
    ("<5", 5.0),
    ("5-20", 20.0),
    ("20-50", 50.0),
    ("50+", math.inf),
)
MAX_OFFSET = 1_000
# A/B baselines served by the same predictor without the learned parts: lexical BM25 only.
BASELINES = ("baseline:bm25",)
MAX_QUERY = 200
WARM_DAYS = 30
# MiniLM encodes one short query per call. Requests run concurrently on a few shared cores, so
# more intra-op threads only spin against each other: measured on 2 busy cores, one query took
# ~300 ms of CPU with torch's default 2 threads and ~30 ms with 1. (Ray already gives a replica
# OMP_NUM_THREADS=1; plain uvicorn runs the service in-process with torch's default.)
TORCH_THREADS = 1


def limit_torch_threads(threads: int = TORCH_THREADS) -> None:
    """Cap torch's intra-op threads for this process (MiniLM's query encoding)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch ships with the models package
        return
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)


def _band(price: float) -> str | None:
    if not math.isfinite(price):
        return None
    for name, upper in PRICE_BANDS:
        if price < upper:
            return name
    return PRICE_BANDS[-1][0]


class SearchService(ServiceBase):
    """Product search and autocomplete from ``models:/search@champion``."""

    area = "search"
    # warm_queries: how many of the most frequent queries of the last WARM_DAYS days a new
    # model version encodes at warm-up, off the request path (0: none).
    defaults = {"facets": True, "warm_queries": 500}

    def __init__(
        self, settings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__(settings, config)
        # (predictor, catalogue frame, (price, stocked, active)) of the last _live call.
        self._live_memo: tuple[Any, Any, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def prepare(self, loaded: LoadedModel) -> None:
        """Load MiniLM and build the speller index before the first query needs them."""
        predictor: SearchPredictor = loaded.predictor
        predictor.index_of(0)
        limit_torch_threads()
        predictor.warmup()
        self.warm_queries(predictor)

    def popular_queries(self, limit: int) -> list[str]:
        """The shop's most frequent search queries of the last ``WARM_DAYS`` days (the search
        events the events API logged), most frequent first; [] if the database cannot say."""
        from sqlalchemy import func
        from sqlmodel import Session, col, select

        from cartwise.commerce.events.models import EventType, ShopperEvent

        if limit <= 0:
            return []
        text = func.lower(func.trim(col(ShopperEvent.query)))
        since = datetime.now(UTC) - timedelta(days=WARM_DAYS)
        stmt = (
            select(text)
            .where(col(ShopperEvent.type) == EventType.search)
            .where(col(ShopperEvent.query).is_not(None))
            .where(col(ShopperEvent.received_at) >= since)
            .group_by(text)
            .order_by(func.count().desc(), text)
            .limit(limit)
        )
        try:
            with Session(self.engine) as session:
                return [q for q in session.exec(stmt) if q]
        except Exception:
            log.warning("reading popular queries failed; no query warm-up", exc_info=True)
            return []

    def warm_queries(self, predictor: SearchPredictor) -> int:
        """Encode the popular queries (as the speller corrects them) into the predictor's
        query-embedding cache, so their first search after a start or a promotion does not pay
        MiniLM's ~14 ms; returns how many were encoded."""
        queries = self.popular_queries(int(self.config["warm_queries"]))
        corrected = list(dict.fromkeys(predictor.speller.correct(q) for q in queries))
        if corrected:
            predictor.embed(corrected)
            log.info("search: encoded %d popular queries at warm-up", len(corrected))
        return len(corrected)

    async def exercise(self) -> None:
        """One search with facets (reads the catalogue snapshot) and one suggestion."""
        await self.search(q="gift", k=4)
        await self.suggest(prefix="gi", k=4)

    # ------------------------------------------------------------------ search

    @staticmethod
    def _filters(filters: Any) -> tuple[dict[str, Any], list[int] | None]:
        """The predictor's filters and the live ``allowed`` ids (validated)."""
        if filters is None:
            return {}, None
        if not isinstance(filters, Mapping):
            raise ValueError("filters must be an object")
        unknown = sorted(set(filters) - FILTER_KEYS)
        if unknown:
            raise ValueError(f"unknown filters {unknown}; known: {sorted(FILTER_KEYS)}")
        out = {k: v for k, v in filters.items() if v is not None and k != "allowed"}
        allowed = filters.get("allowed")
        ids = None if allowed is None else check_ids(allowed, "filters.allowed", limit=100_000)
        if ids is not None and out.get("in_stock") is True:
            # The live stock the ingress passed supersedes the stock as of training.
            del out["in_stock"]
        return out, ids

    def _run(
        self,
        predictor: SearchPredictor,
        catalog: pd.DataFrame | None,
        q: str,
        k: int,
        offset: int,
        filters: dict[str, Any],
        allowed: list[int] | None,
        mode: str,
        loaded: LoadedModel | None = None,
    ) -> dict[str, Any]:
        """One search: the predictor's pipeline with live prices, stock and ``allowed``.

        With ``loaded`` (a live request), a first page of ranked results logs the ranker's
        features of the top result and its score to the feature log (what drift monitoring of
        search compares with the reference).
        """
        from cartwise.models.search.data import normalize_query, tokenize

        price, stocked, active = self._live(predictor, catalog)
        # Category is static; price and stock come from the live catalogue, not training.
        mask = predictor._allowed({k: v for k, v in filters.items() if k == "category"} or None)
        live = active.copy()
        if filters.get("min_price") is not None:
            live &= price >= float(filters["min_price"])
        if filters.get("max_price") is not None:
            live &= price <= float(filters["max_price"])
        if filters.get("in_stock") is not None:
            live &= stocked if filters["in_stock"] else ~stocked
        if allowed is not None:
            live &= np.isin(predictor.product_ids, np.asarray(allowed, dtype=np.int64))
            stocked = stocked | live  # the ingress's ids are in stock by definition
        if not live.all():
            mask = live if mask is None else mask & live
        corrected = predictor.speller.correct(q)
        vector = predictor.embed([corrected])[0] if mode != "bm25" else None
        trace: dict[str, Any] | None = (
            {} if loaded is not None and mode == "ranked" and offset == 0 else None
        )
        if mask is not None and not mask.any():
            index, scores = np.zeros(0, dtype=np.int64), np.zeros(0)
        else:
            index, scores = predictor._score(corrected, vector, mode, mask, trace)
        if mask is not None and len(index):
            keep = mask[index]
            index, scores = index[keep], scores[keep]
        order = np.lexsort((index, -scores))
        page = order[offset : offset + k]
        if trace and loaded is not None and len(index):
            self._log_top(loaded, trace, int(index[order[0]]), corrected)
        tokens = set(tokenize(corrected))
        changed = corrected != normalize_query(q)
        rows = index[page].tolist()
        # Plain JSON types already (what ``answer``'s jsonable walk would make of them).
        body: dict[str, Any] = {
            "query": q,
            "corrected": corrected,
            "did_you_mean": corrected if changed else None,
            "total": len(index),
            "items": [
                {
                    "product_id": pid,
                    "score": score if math.isfinite(score) else None,
                    "matched": sorted(tokens & predictor.doc_tokens[row]),
                }
                for pid, score, row in zip(
                    predictor.product_ids[index[page]].tolist(),
                    scores[page].astype(np.float64).tolist(),
                    rows,
                    strict=True,
                )
            ],
            "mode": mode,
        }
        if self.config["facets"]:
            body["facets"] = self._facets(predictor, index, price, stocked)
        return body

    def _log_top(
        self, loaded: LoadedModel, trace: dict[str, Any], top: int, corrected: str
    ) -> None:
        """Log the ranker's input row of the top result and its score (the monitored pair)."""
        from cartwise.models.search.predict import FEATURES

        at = np.flatnonzero(np.asarray(trace["index"]) == top)
        if len(at) == 0:
            return
        row = np.asarray(trace["x"])[int(at[0])]
        score = float(np.asarray(trace["scores"])[int(at[0])])
        self.log_features(
            loaded, [dict(zip(FEATURES, map(float, row), strict=True))], [score], [corrected]
        )

    def _live(
        self, predictor: SearchPredictor, catalog: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per product: live price, in stock, active (the training values where unknown).

        Computed once per (predictor, catalogue snapshot) pair: the snapshot is a new frame
        on every refresh and a model version a new predictor, so identity is the key. The
        arrays are read-only and shared by the requests until either changes.
        """
        found = self._live_memo
        if found is not None and found[0] is predictor and found[1] is catalog:
            return found[2]
        arrays = self._live_arrays(predictor, catalog)
        for array in arrays:
            array.flags.writeable = False
        self._live_memo = (predictor, catalog, arrays)
        return arrays

    @staticmethod
    def _live_arrays(
        predictor: SearchPredictor, catalog: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from cartwise.models.search.data import STAT_COLUMNS

        price = predictor.stats[:, STAT_COLUMNS.index("price")].astype(np.float64)
        stocked = predictor.stats[:, STAT_COLUMNS.index("stock_on_hand")] > 0
        active = np.ones(predictor.n_products, dtype=bool)
        if catalog is None or catalog.empty:
            return price, stocked, active
        found = catalog.drop_duplicates("product_id").set_index("product_id")
        found = found.reindex(predictor.product_ids)
        known = found["status"].notna().to_numpy()
        live_price = found["price"].to_numpy(np.float64)
        price = np.where(np.isfinite(live_price), live_price, price)
        stocked = np.where(known, found["available"].fillna(0).to_numpy() > 0, stocked)
        # Archived and draft products are never shown; ones missing from the snapshot are.
        active = ~known | (found["status"].to_numpy() == "active")
        return price, stocked.astype(bool), active.astype(bool)

    @staticmethod
    def _facets(
        predictor: SearchPredictor,
        index: np.ndarray,
        price: np.ndarray,
        stocked: np.ndarray,
    ) -> dict[str, Any]:
        """Counts of the filtered candidates by category, price band and stock."""
        prices = price[index]
        in_stock = int(np.sum(stocked[index]))
        categories = [str(predictor.categories[i]) for i in index]
        by_category: dict[str, int] = {}
        for name in categories:
            by_category[name] = by_category.get(name, 0) + 1
        bands = {name: 0 for name, _ in PRICE_BANDS}
        for value in prices.tolist():
            band = _band(float(value))
            if band is not None:
                bands[band] += 1
        return {
            "category": [
                {"value": name, "count": count}
                for name, count in sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "price": [{"value": name, "count": bands[name]} for name, _ in PRICE_BANDS],
            "in_stock": [
                {"value": True, "count": in_stock},
                {"value": False, "count": len(index) - in_stock},
            ],
        }

    async def search(
        self,
        *,
        q: str,
        k: int = 10,
        offset: int = 0,
        filters: dict[str, Any] | None = None,
        variant: str | None = None,
    ) -> dict[str, Any]:
        """Ranked products for ``q`` with correction, matched terms, paging and facets."""
        from cartwise.models.search.data import normalize_query

        if not isinstance(q, str):
            raise ValueError("q must be a string")
        if len(q) > MAX_QUERY:
            raise ValueError(f"q must be at most {MAX_QUERY} characters")
        k = check_k(k)
        offset = check_int(offset, "offset", minimum=0, maximum=MAX_OFFSET)
        predictor_filters, allowed = self._filters(filters)
        variant = parse_variant(variant, BASELINES)
        mode = "bm25" if variant is not None and variant.startswith("baseline:") else "ranked"
        loaded = await self.model(variant)
        predictor: SearchPredictor = loaded.predictor
        # Validate the query and filters before the cache, so bad input never reaches it.
        if not normalize_query(q):
            raise ValueError("q is empty (no letters or digits)")
        predictor._allowed(predictor_filters or None)
        catalog = await self.catalog()
        key = {
            "q": q,
            "k": k,
            "offset": offset,
            "filters": {k_: predictor_filters[k_] for k_ in sorted(predictor_filters)},
            "allowed": None if allowed is None else sorted(allowed),
            "mode": mode,
        }

        def compute() -> dict[str, Any]:
            return self._run(
                predictor, catalog, q, k, offset, predictor_filters, allowed, mode, loaded
            )

        body, hit = await self.cached(loaded, "search", key, compute)
        # ``_run`` builds plain JSON types and a cached body is parsed JSON, so this is what
        # ``answer`` gives without its walk over every item (a new dict: the body is shared).
        return {**body, "model": loaded.info(), "cached": bool(hit)}

    async def suggest(self, *, prefix: str, k: int = 8) -> dict[str, Any]:
        """Autocomplete: popular queries and product names starting with ``prefix``."""
        if not isinstance(prefix, str):
            raise ValueError("prefix must be a string")
        if len(prefix) > MAX_QUERY:
            raise ValueError(f"prefix must be at most {MAX_QUERY} characters")
        k = check_k(k, maximum=20)
        loaded = await self.model(None)
        predictor: SearchPredictor = loaded.predictor
        suggestions = predictor.suggest(prefix, k)
        return answer(loaded, {"prefix": prefix, "suggestions": suggestions})
