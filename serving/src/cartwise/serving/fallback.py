"""Baselines the ingress serves when a model cannot answer: popularity and BM25.

Both live in the ingress process and need nothing but the commerce database, so a shopper
still gets sensible results when a model is not trained yet, its deployment is down or slower
than its deadline. Every answer served this way is counted per area and reason
(:class:`FallbackCounter`, shown by ``GET /api/v1/ml/status``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus

log = logging.getLogger(__name__)

# Units sold over this window rank the popular products.
POPULARITY_WINDOW = timedelta(days=90)
POPULARITY_TTL_S = 30.0
# The BM25 index follows the catalogue; it is rebuilt at least this often even if no version
# change was seen (a write that bypassed the app's cache bump).
BM25_MAX_AGE_S = 300.0
# Orders that never turned into a sale do not make a product popular.
NOT_SALES = (OrderStatus.cancelled.value, OrderStatus.refunded.value)

_TOKEN = re.compile(r"[0-9a-z]+")
# A handful of words that only add noise to a product search.
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it"}
    | {"of", "on", "or", "the", "to", "with", "without"}
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of a text, without stopwords."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


class FallbackCounter:
    """Thread-safe counts of fallback answers per area and reason (since process start)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def record(self, area: str, reason: str) -> None:
        """Count one answer of ``area`` served by a fallback because of ``reason``."""
        with self._lock:
            per_area = self._counts.setdefault(area, {})
            per_area[reason] = per_area.get(reason, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counts: area → reason → answers."""
        with self._lock:
            return {area: dict(reasons) for area, reasons in self._counts.items()}


class Popularity:
    """Products ranked by units sold over the last 90 days of orders, cached for 30 s.

    The window ends at the newest order rather than now, so a shop whose data stopped
    (a demo database, an import) still has a ranking.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = POPULARITY_TTL_S,
        window: timedelta = POPULARITY_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._units: dict[int, float] = {}
        self._loaded_at: float | None = None

    @property
    def fresh(self) -> bool:
        """Whether the cached ranking is younger than the TTL (no query needed)."""
        loaded = self._loaded_at
        return loaded is not None and self._clock() - loaded < self.ttl_s

    def _query(self) -> dict[int, float]:
        o, ol = Order.__table__, OrderLine.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(o.c.created_at))).scalar()
            if newest is None:
                return {}
            stmt = (
                select(ol.c.product_id, func.sum(ol.c.quantity))
                .join(o, o.c.id == ol.c.order_id)
                .where(
                    ol.c.product_id.is_not(None),
                    o.c.created_at >= newest - self.window,
                    o.c.status.not_in(NOT_SALES),
                )
                .group_by(ol.c.product_id)
            )
            return {int(pid): float(units) for pid, units in conn.execute(stmt)}

    def units(self) -> dict[int, float]:
        """Units sold per product id (blocking: run it off the event loop when not fresh)."""
        if self.fresh:
            return self._units
        with self._lock:
            if self.fresh:
                return self._units
            try:
                self._units = self._query()
            except Exception:
                # A failing database leaves the last ranking (or none) in place.
                log.exception("popularity query failed")
            self._loaded_at = self._clock()
            return self._units

    def top(
        self,
        allowed: Iterable[int],
        k: int,
        *,
        exclude: Iterable[int] = (),
        units: dict[int, float] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` best sellers among ``allowed`` (minus ``exclude``), padded with the newest.

        Products that never sold keep a score of 0 and follow in descending id order (newest
        first), so a new shop or a new category still fills the list.
        """
        sold = self.units() if units is None else units
        skip = set(exclude)
        candidates = [pid for pid in allowed if pid not in skip]
        ranked = sorted(candidates, key=lambda pid: (-sold.get(pid, 0.0), -pid))
        return [(pid, sold.get(pid, 0.0)) for pid in ranked[: max(k, 0)]]


@dataclass(frozen=True, slots=True)
class Bm25Hit:
    """One lexical match: the product, its BM25 score and the query terms it contains."""

    product_id: int
    score: float
    matched: list[str]


class Bm25Fallback:
    """BM25 (``bm25s``) over the active products' name, description and category.

    Built lazily on the first search, rebuilt when the catalogue key changes (the caller passes
    the version its product cards were read at) or after ``max_age_s``.
    """

    def __init__(
        self, *, max_age_s: float = BM25_MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._key: object = None
        self._built_at = 0.0
        self._ids: list[int] = []
        self._tokens: list[set[str]] = []
        self._retriever: Any = None

    def _stale(self, key: object) -> bool:
        return (
            self._retriever is None
            or key != self._key
            or self._clock() - self._built_at >= self.max_age_s
        )

    def _build(self, key: object, docs: Sequence[tuple[int, str]]) -> None:
        import bm25s  # type: ignore[import-untyped]

        ids = [pid for pid, _ in docs]
        tokens = [tokenize(text) for _, text in docs]
        retriever = None
        if any(tokens):
            retriever = bm25s.BM25()
            # bm25s needs at least one token per document to index it.
            retriever.index([t or ["_"] for t in tokens], show_progress=False)
        self._ids, self._tokens, self._retriever = ids, [set(t) for t in tokens], retriever
        self._key, self._built_at = key, self._clock()

    def search(
        self, key: object, docs: Callable[[], Sequence[tuple[int, str]]], query: str, k: int
    ) -> list[Bm25Hit]:
        """Up to ``k`` products whose text shares terms with ``query``, best first."""
        terms = tokenize(query)
        with self._lock:
            if self._stale(key):
                self._build(key, docs())
            ids, doc_tokens, retriever = self._ids, self._tokens, self._retriever
        if not terms or retriever is None or not ids or k <= 0:
            return []
        found, scores = retriever.retrieve([terms], k=min(k, len(ids)), show_progress=False)
        hits: list[Bm25Hit] = []
        for index, score in zip(found[0].tolist(), scores[0].tolist(), strict=True):
            if score <= 0:
                continue
            matched = [t for t in dict.fromkeys(terms) if t in doc_tokens[index]]
            hits.append(Bm25Hit(ids[index], float(score), matched))
        return hits


def prefix_matches(names: Iterable[tuple[int, str]], prefix: str, k: int) -> list[str]:
    """Up to ``k`` names with a word that starts with ``prefix``; whole-name prefixes first.

    Words are runs of letters and digits, so punctuation in a name never hides a match.
    """
    wanted = " ".join(_TOKEN.findall(prefix.lower()))
    if not wanted or k <= 0:
        return []
    starts: list[str] = []
    inner: list[str] = []
    seen: set[str] = set()
    for _, name in names:
        words = " ".join(_TOKEN.findall(name.lower()))
        if name in seen:
            continue
        if words.startswith(wanted):
            starts.append(name)
            seen.add(name)
        elif f" {wanted}" in f" {words}":
            inner.append(name)
            seen.add(name)
    starts.sort(key=lambda n: (len(n), n.lower()))
    inner.sort(key=lambda n: (len(n), n.lower()))
    return (starts + inner)[:k]


__all__ = [
    "BM25_MAX_AGE_S",
    "POPULARITY_TTL_S",
    "POPULARITY_WINDOW",
    "Bm25Fallback",
    "Bm25Hit",
    "FallbackCounter",
    "Popularity",
    "prefix_matches",
    "tokenize",
]
