"""What serving loads: a picklable, torch-free :class:`SearchPredictor`.

A query goes through four steps:

1. **spelling**: each unknown word is corrected against the catalog vocabulary (SymSpell,
   frequencies from the catalog text and the words shoppers searched with), giving the
   ``did_you_mean`` suggestion and the query actually retrieved with;
2. **hybrid retrieval**: the top BM25 candidates (``bm25s`` over name + description + category)
   and the top MiniLM candidates (exact cosine against the float32 product vectors: at catalog
   size a numpy mat-vec is faster than building and probing an ANN index) are united and fused
   with reciprocal-rank fusion;
3. **learned ranking**: a small MLP (numpy weights, trained listwise on clicks) re-ranks the
   candidates on text scores, popularity, click-through, price, stock and past clicks for the
   same query;
4. **filters and paging**: category, in stock, price range, then ``offset``/``k``.

:meth:`SearchPredictor.suggest` completes prefixes from popular (correctly spelled) queries and
product names with a sorted key array (binary search; sub-millisecond). Only the query embedding
needs MiniLM at inference: it is loaded lazily through :func:`cartwise.models.text.shared_encoder`
(concurrent searches in one process share its forward passes), never pickled.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.search.data import STAT_COLUMNS, STOPWORDS, normalize_query, tokenize

# The ranker's input columns, in order.
FEATURES = (
    "bm25",
    "bm25_rel",
    "cosine",
    "cosine_rel",
    "rrf",
    "name_cover",
    "text_cover",
    "log_views_30d",
    "log_units_30d",
    "log_orders_30d",
    "conversion_30d",
    "log_search_clicks_30d",
    "search_ctr",
    "log_price",
    "in_stock",
    "log_query_clicks",
    "query_click_share",
)
N_BASE = 7  # the query-dependent text features at the front of FEATURES
MODES = ("bm25", "semantic", "hybrid", "ranked")
FILTER_KEYS = frozenset({"category", "in_stock", "min_price", "max_price"})
DEFAULT_CONFIG: dict[str, Any] = {
    "candidates": 50,  # per retriever; the union is re-ranked
    "rrf_k": 20,  # reciprocal-rank fusion constant (smaller favours the top of each list)
    "max_edit": 2,  # spelling: most edits for long words (short words get one)
}
_SUGGEST_CACHE = 2  # prefixes up to this length have precomputed completions
_SUGGEST_CACHE_K = 20


def _check_k(k: Any, name: str = "k", *, minimum: int = 1) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {k!r}")
    if k < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {k}")
    return int(k)


def _check_query(query: Any) -> str:
    if not isinstance(query, str):
        raise ValueError(f"query must be a string, got {type(query).__name__}")
    if not normalize_query(query):
        raise ValueError("query is empty (no letters or digits)")
    if len(query) > 500:
        raise ValueError("query is longer than 500 characters")
    return query


@dataclass
class SearchResult:
    """Ranked product ids with scores, the correction used, and per-item matched terms."""

    query: str
    corrected: str  # the normalised query retrieval used
    did_you_mean: str | None  # set when the correction changed the query
    items: list[int]
    scores: list[float]
    matched: list[list[str]]  # per item: the query terms found in its text (for highlighting)
    total: int  # candidates that passed the filters (for paging)

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "query": self.query,
            "corrected": self.corrected,
            "did_you_mean": self.did_you_mean,
            "total": self.total,
            "items": [
                {"product_id": i, "score": s, "matched": m}
                for i, s, m in zip(self.items, self.scores, self.matched, strict=True)
            ],
        }


class Speller:
    """Word-by-word correction against a vocabulary with frequencies (SymSpell, built lazily)."""

    def __init__(self, counts: Mapping[str, int], *, max_edit: int = 2) -> None:
        self.counts = {w: int(c) for w, c in counts.items() if w and c > 0}
        self.max_edit = max_edit
        self._symspell: Any = None
        self._cache: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # The SymSpell delete index is rebuilt on first use; the pickle keeps the counts only.
        return {"counts": self.counts, "max_edit": self.max_edit, "_symspell": None, "_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _index(self) -> Any:
        if self._symspell is None:
            from symspellpy import SymSpell  # type: ignore[import-untyped]

            sym = SymSpell(max_dictionary_edit_distance=self.max_edit, prefix_length=7)
            for word, count in self.counts.items():
                sym.create_dictionary_entry(word, count)
            self._symspell = sym
        return self._symspell

    def word(self, token: str) -> str:
        """The corrected form of one lower-case token (itself when known or too short)."""
        if token in self.counts or len(token) < 3 or token in STOPWORDS or token.isdigit():
            return token
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        from symspellpy import Verbosity  # type: ignore[import-untyped]

        # One edit for short words: two edits would turn most short words into another word.
        edits = 1 if len(token) <= 6 else self.max_edit
        found = self._index().lookup(token, Verbosity.CLOSEST, max_edit_distance=edits)
        best = str(found[0].term) if found else token
        if len(self._cache) < 100_000:
            self._cache[token] = best
        return best

    def correct(self, text: str) -> str:
        """The normalised text with every unknown word corrected."""
        return " ".join(self.word(t) for t in normalize_query(text).split())


class Autocomplete:
    """Prefix completion over weighted phrases via a sorted array of word-start keys."""

    def __init__(
        self,
        texts: Sequence[str],
        scores: Sequence[float],
        kinds: Sequence[str],
        product_ids: Sequence[int | None],
    ) -> None:
        best: dict[str, int] = {}
        for i, text in enumerate(texts):
            key = normalize_query(text)
            if key and (key not in best or scores[i] > scores[best[key]]):
                best[key] = i
        keep = sorted(best.values(), key=lambda i: (-float(scores[i]), len(texts[i]), texts[i]))
        self.texts = [texts[i] for i in keep]
        self.scores = np.array([float(scores[i]) for i in keep], dtype=np.float64)
        self.kinds = [kinds[i] for i in keep]
        self.product_ids = [product_ids[i] for i in keep]
        # Entry i is the i-th most popular; each is findable from the start of any of its words.
        pairs: list[tuple[str, int]] = []
        for rank, i in enumerate(keep):
            words = normalize_query(texts[i]).split()
            pairs += [(" ".join(words[j:]), rank) for j in range(len(words))]
        pairs.sort()
        self.keys = [p[0] for p in pairs]
        self.owner = np.array([p[1] for p in pairs], dtype=np.int64)
        self.cache: dict[str, list[int]] = {}
        for length in range(1, _SUGGEST_CACHE + 1):
            for prefix in {k[:length] for k in self.keys if len(k) >= length}:
                self.cache[prefix] = self._scan(prefix, _SUGGEST_CACHE_K)

    def __len__(self) -> int:
        return len(self.texts)

    def _scan(self, prefix: str, k: int) -> list[int]:
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, prefix + "\uffff", lo)
        if hi <= lo:
            return []
        owners = np.unique(self.owner[lo:hi])  # sorted: lower rank = more popular
        return [int(o) for o in owners[:k]]

    def suggest(self, prefix: str, k: int = 8) -> list[dict[str, Any]]:
        """Up to ``k`` completions, most popular first: text, score, kind, product_id."""
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}")
        k = _check_k(k)
        words = normalize_query(prefix)
        if not words:
            return []
        # A trailing space means the last word is complete: "table " must not match "tablet".
        key = words + " " if prefix[-1:].isspace() else words
        hits = self.cache.get(key) if len(key) <= _SUGGEST_CACHE and k <= _SUGGEST_CACHE_K else None
        ranks = (hits if hits is not None else self._scan(key, k))[:k]
        return [
            {
                "text": self.texts[r],
                "score": float(self.scores[r]),
                "kind": self.kinds[r],
                "product_id": self.product_ids[r],
            }
            for r in ranks
        ]


def mlp_scores(weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The exported ranker (see :func:`.model.export`) on an (n, F) matrix, in numpy."""
    h = x @ weights["w1"] + weights["b1"]
    if "w2" in weights:
        h = np.maximum(h, 0.0) @ weights["w2"] + weights["b2"]
    out: np.ndarray = np.asarray(h, dtype=np.float64)[:, 0]
    return out


@dataclass
class SearchPredictor:
    """A trained search stack as plain arrays: BM25 index, vectors, speller, ranker weights."""

    product_ids: np.ndarray  # (n,) int64
    names: list[str]
    categories: np.ndarray  # (n,) object
    stats: np.ndarray  # (n, len(STAT_COLUMNS)) float64, as of training (search_rank_v1)
    bm25: Any  # bm25s.BM25 over the tokenized product texts
    vectors: np.ndarray  # (n, 384) float32, unit length
    name_tokens: list[frozenset[str]]
    doc_tokens: list[frozenset[str]]
    speller: Speller
    autocomplete: Autocomplete
    # corrected query → {product index: clicks}, from the training window's searches
    query_clicks: dict[str, dict[int, float]] = field(default_factory=dict)
    ranker: dict[str, np.ndarray] | None = None  # numpy MLP weights
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    info: dict[str, Any] = field(default_factory=dict)
    _index: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _qcache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"], state["_qcache"] = {}, {}
        return state

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        catalog: Any,
        vectors: np.ndarray,
        stats: np.ndarray | None = None,
        *,
        queries: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> SearchPredictor:
        """An unranked predictor over a :class:`~.data.Catalog`, its vectors and stats.

        ``queries`` are past searches (one entry per search): they weight the speller's
        vocabulary and feed autocomplete (only queries spelled as the catalog spells them).
        """
        import bm25s  # type: ignore[import-untyped]

        n = len(catalog)
        if vectors.shape[0] != n:
            raise ValueError(f"{vectors.shape[0]} vectors for {n} products")
        if stats is None:
            stats = np.zeros((n, len(STAT_COLUMNS)))
        if stats.shape != (n, len(STAT_COLUMNS)):
            raise ValueError(f"stats must be ({n}, {len(STAT_COLUMNS)}), got {stats.shape}")
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        texts = catalog.texts()
        doc_tokens = [tokenize(t) for t in texts]
        retriever = bm25s.BM25()
        retriever.index(doc_tokens, show_progress=False)

        counts: dict[str, int] = {}
        for name, tokens in zip(catalog.names, doc_tokens, strict=True):
            for t in tokens:
                counts[t] = counts.get(t, 0) + 1
            # Name words are what shoppers type: weight them above description words.
            for t in tokenize(name):
                counts[t] = counts.get(t, 0) + 2
        query_counts: dict[str, int] = {}
        for q in queries:
            key = normalize_query(q)
            if key:
                query_counts[key] = query_counts.get(key, 0) + 1
        for key, c in query_counts.items():
            for t in key.split():
                # Only words the catalog knows: a popular typo must not become a word.
                if t in counts:
                    counts[t] += c
        speller = Speller(counts, max_edit=int(cfg["max_edit"]))

        popularity = np.log1p(stats[:, STAT_COLUMNS.index("units_30d")]) + np.log1p(
            stats[:, STAT_COLUMNS.index("search_clicks_30d")]
        )
        good = [(q, c) for q, c in query_counts.items() if c >= 2 and speller.correct(q) == q]
        suggest_texts = [q for q, _ in good] + list(catalog.names)
        suggest_scores = [float(c) for _, c in good] + [float(p) for p in popularity]
        kinds = ["query"] * len(good) + ["product"] * n
        pids: list[int | None] = [None] * len(good) + [int(p) for p in catalog.product_ids]
        return cls(
            product_ids=np.asarray(catalog.product_ids, dtype=np.int64),
            names=list(catalog.names),
            categories=np.array(catalog.categories, dtype=object),
            stats=np.asarray(stats, dtype=np.float64),
            bm25=retriever,
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            name_tokens=[frozenset(tokenize(nm)) for nm in catalog.names],
            doc_tokens=[frozenset(t) for t in doc_tokens],
            speller=speller,
            autocomplete=Autocomplete(suggest_texts, suggest_scores, kinds, pids),
            config=cfg,
            info=dict(info or {}),
        )

    # ------------------------------------------------------------------ pieces

    @property
    def n_products(self) -> int:
        """Number of searchable products."""
        return len(self.product_ids)

    def index_of(self, product_id: int) -> int | None:
        """The row of a product id, or None when unknown."""
        if not self._index:
            self._index = {int(p): i for i, p in enumerate(self.product_ids.tolist())}
        return self._index.get(int(product_id))

    def correct(self, query: str) -> dict[str, Any]:
        """``{"query", "corrected", "did_you_mean"}``; did_you_mean is None when unchanged."""
        _check_query(query)
        corrected = self.speller.correct(query)
        changed = corrected != normalize_query(query)
        return {
            "query": query,
            "corrected": corrected,
            "did_you_mean": corrected if changed else None,
        }

    def suggest(self, prefix: str, k: int = 8) -> list[dict[str, Any]]:
        """Autocomplete: up to ``k`` popular queries and product names starting with ``prefix``."""
        return self.autocomplete.suggest(prefix, k)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length MiniLM vectors for query texts (cached per text)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._qcache))
        if missing:
            vectors = _encoder()(missing)
            if len(self._qcache) > 50_000:
                self._qcache.clear()
            for text, vector in zip(missing, vectors, strict=True):
                self._qcache[text] = np.asarray(vector, dtype=np.float32)
        return np.stack([self._qcache[t] for t in texts]) if texts else np.zeros((0, 0))

    def warmup(self) -> None:
        """Load MiniLM and build the speller index now rather than on the first request."""
        self.speller.word("warmup")
        self.embed(["warmup"])

    def bm25_scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 of every product for the query tokens (float64, zeros for no known token)."""
        if not tokens:
            return np.zeros(self.n_products)
        return np.asarray(self.bm25.get_scores(list(tokens)), dtype=np.float64)

    def cosine_scores(self, vector: np.ndarray) -> np.ndarray:
        """Exact cosine of every product with a unit query vector."""
        return np.asarray(self.vectors @ vector.astype(np.float32), dtype=np.float64)

    def candidates(
        self, corrected: str, vector: np.ndarray, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hybrid candidates (indices) and their query features (C, N_BASE).

        With ``allowed`` (a filter mask) candidates are drawn from the allowed products only,
        so a narrow filter still fills its page; the features stay those of the whole catalog.
        """
        tokens = tokenize(corrected)
        bm = self.bm25_scores(tokens)
        cos = self.cosine_scores(vector)
        c = int(self.config["candidates"])
        if allowed is None:
            by_bm, by_cos = _top(bm, c, positive=True), _top(cos, c)
        else:
            by_bm = _top(np.where(allowed, bm, 0.0), c, positive=True)
            by_cos = _top(np.where(allowed, cos, -np.inf), min(c, int(allowed.sum())))
        index = np.union1d(by_bm, by_cos).astype(np.int64)
        rrf_k = float(self.config["rrf_k"])
        fused = np.zeros(self.n_products)
        fused[by_bm] += 1.0 / (rrf_k + 1.0 + np.arange(len(by_bm)))
        fused[by_cos] += 1.0 / (rrf_k + 1.0 + np.arange(len(by_cos)))
        base = np.zeros((len(index), N_BASE))
        base[:, 0] = bm[index]
        top_bm = float(bm.max(initial=0.0))
        base[:, 1] = bm[index] / top_bm if top_bm > 0 else 0.0
        base[:, 2] = cos[index]
        base[:, 3] = cos[index] - float(cos.max(initial=0.0))
        base[:, 4] = fused[index] * (rrf_k + 1.0)  # 2.0: top of both lists
        if tokens:
            q = set(tokens)
            base[:, 5] = [len(q & self.name_tokens[i]) / len(q) for i in index]
            base[:, 6] = [len(q & self.doc_tokens[i]) / len(q) for i in index]
        return index, base

    def features(
        self,
        index: np.ndarray,
        base: np.ndarray,
        corrected: str,
        *,
        stats: np.ndarray | None = None,
        exclude_clicks: Mapping[int, float] | None = None,
    ) -> np.ndarray:
        """The ranker's (C, len(FEATURES)) matrix for candidates ``index``.

        ``stats`` overrides the stored product stats (training uses each search's own point in
        time); ``exclude_clicks`` removes a search's own clicks from the query-click counts
        (leave-one-out, so training never sees its label as a feature).
        """
        s = (self.stats if stats is None else stats)[index]
        col = {name: s[:, i] for i, name in enumerate(STAT_COLUMNS)}
        clicks = dict(self.query_clicks.get(corrected, {}))
        for i, c in (exclude_clicks or {}).items():
            clicks[i] = clicks.get(i, 0.0) - c
        total = max(sum(v for v in clicks.values() if v > 0), 0.0)
        qc = np.array([max(clicks.get(int(i), 0.0), 0.0) for i in index])
        extra = np.column_stack(
            [
                np.log1p(np.maximum(col["views_30d"], 0)),
                np.log1p(np.maximum(col["units_30d"], 0)),
                np.log1p(np.maximum(col["orders_30d"], 0)),
                np.clip(col["conversion_30d"], 0, 1),
                np.log1p(np.maximum(col["search_clicks_30d"], 0)),
                col["search_clicks_30d"] / (col["views_30d"] + 1.0),
                np.log1p(np.maximum(col["price"], 0)),
                (col["stock_on_hand"] > 0).astype(np.float64),
                np.log1p(qc),
                qc / total if total > 0 else np.zeros(len(index)),
            ]
        )
        return np.hstack([base, extra])

    def rank_scores(self, x: np.ndarray) -> np.ndarray:
        """The learned ranker's scores for a feature matrix."""
        if self.ranker is None or self.feature_mean is None or self.feature_std is None:
            raise ValueError("this predictor has no learned ranker")
        return mlp_scores(self.ranker, (x - self.feature_mean) / self.feature_std)

    def _allowed(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        if filters is None:
            return None
        if not isinstance(filters, Mapping):
            raise ValueError("filters must be a dict")
        unknown = set(filters) - FILTER_KEYS
        if unknown:
            raise ValueError(f"unknown filters {sorted(unknown)}; known: {sorted(FILTER_KEYS)}")
        allowed = np.ones(self.n_products, dtype=bool)
        category = filters.get("category")
        if category is not None:
            wanted = {category} if isinstance(category, str) else set(category)
            if not all(isinstance(c, str) for c in wanted):
                raise ValueError("category filter must be a string or a list of strings")
            allowed &= np.array([c in wanted for c in self.categories], dtype=bool)
        in_stock = filters.get("in_stock")
        if in_stock is not None:
            if not isinstance(in_stock, bool):
                raise ValueError("in_stock filter must be true or false")
            stocked = self.stats[:, STAT_COLUMNS.index("stock_on_hand")] > 0
            allowed &= stocked if in_stock else ~stocked
        price = self.stats[:, STAT_COLUMNS.index("price")]
        for key, keep in (("min_price", price.__ge__), ("max_price", price.__le__)):
            bound = filters.get(key)
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, int | float) or math.isnan(bound):
                raise ValueError(f"{key} filter must be a number")
            allowed &= keep(float(bound))
        return allowed

    # ------------------------------------------------------------------ answers

    def search(
        self,
        query: str,
        k: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        *,
        mode: str = "ranked",
        spell: bool = True,
    ) -> SearchResult:
        """Ranked products for a query: items, scores, correction and matched terms.

        ``mode`` picks the stack (``bm25``, ``semantic``, ``hybrid`` or ``ranked``, the
        default, which falls back to ``hybrid`` without a ranker); ``spell=False`` searches the
        query as typed. ``filters``: ``category`` (name or list), ``in_stock`` (bool),
        ``min_price``, ``max_price``.
        """
        return self.search_batch([query], k, offset, filters, mode=mode, spell=spell)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        *,
        mode: str = "ranked",
        spell: bool = True,
    ) -> list[SearchResult]:
        """:meth:`search` for many queries, embedding them in one MiniLM batch."""
        k = _check_k(k)
        offset = _check_k(offset, "offset", minimum=0)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for q in queries:
            _check_query(q)
        allowed = self._allowed(filters)
        corrected = [self.speller.correct(q) if spell else normalize_query(q) for q in queries]
        needs_vectors = mode != "bm25"
        vectors = self.embed(corrected) if needs_vectors else None
        out = []
        for i, (query, fixed) in enumerate(zip(queries, corrected, strict=True)):
            vector = vectors[i] if vectors is not None else None
            index, scores = self._score(fixed, vector, mode, allowed)
            if allowed is not None:
                keep = allowed[index]
                index, scores = index[keep], scores[keep]
            order = np.lexsort((index, -scores))
            page = order[offset : offset + k]
            tokens = set(tokenize(fixed))
            changed = fixed != normalize_query(query)
            out.append(
                SearchResult(
                    query=query,
                    corrected=fixed,
                    did_you_mean=fixed if changed else None,
                    items=[int(self.product_ids[index[j]]) for j in page],
                    scores=[float(scores[j]) for j in page],
                    matched=[sorted(tokens & self.doc_tokens[int(index[j])]) for j in page],
                    total=len(index),
                )
            )
        return out

    def _score(
        self,
        corrected: str,
        vector: np.ndarray | None,
        mode: str,
        allowed: np.ndarray | None,
        trace: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates and their scores; ``trace`` (ranked mode) receives the ranker's input
        matrix ``x`` with its ``index`` and ``scores`` (what the feature log records)."""
        if mode == "bm25":
            bm = self.bm25_scores(tokenize(corrected))
            index = np.flatnonzero(bm > 0)
            return index, bm[index]
        assert vector is not None
        if mode == "semantic":
            cos = self.cosine_scores(vector)
            if allowed is not None:
                cos = np.where(allowed, cos, -np.inf)
            index = _top(cos, max(int(self.config["candidates"]) * 2, 100))
            return index, cos[index]
        index, base = self.candidates(corrected, vector, allowed)
        if mode == "hybrid" or self.ranker is None:
            return index, base[:, 4]
        x = self.features(index, base, corrected)
        scores = self.rank_scores(x)
        if trace is not None:
            trace.update(index=index, x=x, scores=scores)
        return index, scores

    def predict(self, data: Any) -> pd.DataFrame:
        """pyfunc: a frame with ``query`` (and optional ``k``) → one row per (query, rank).

        Output columns: ``row`` (input row), ``rank`` (1 = best), ``product_id``, ``score``,
        ``corrected`` (the query searched with).
        """
        if not isinstance(data, pd.DataFrame):
            raise ValueError("input must be a pandas DataFrame with a 'query' column")
        unknown = set(data.columns) - {"query", "k"}
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}; expected 'query' and 'k'")
        if "query" not in data.columns:
            raise ValueError("input needs a 'query' column")
        queries = data["query"].tolist()
        for q in queries:
            if not isinstance(q, str):
                raise ValueError(f"every query must be a string, got {q!r}")
        ks = [10] * len(queries)
        if "k" in data.columns:
            ks = []
            for value in data["k"].tolist():
                if value is None or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(f"k must be a positive integer, got {value!r}")
                ks.append(_check_k(int(value)) if isinstance(value, float) else _check_k(value))
        results = self.search_batch(queries, max(ks, default=10))
        rows: list[dict[str, Any]] = []
        for r, (result, k) in enumerate(zip(results, ks, strict=True)):
            for rank, (item, score) in enumerate(
                zip(result.items[:k], result.scores[:k], strict=True), start=1
            ):
                rows.append(
                    {
                        "row": r,
                        "rank": rank,
                        "product_id": item,
                        "score": score,
                        "corrected": result.corrected,
                    }
                )
        columns = ["row", "rank", "product_id", "score", "corrected"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"row": "int64", "rank": "int64", "product_id": "int64"})


def _top(scores: np.ndarray, k: int, *, positive: bool = False) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties by index); only > 0 if positive."""
    pool = np.flatnonzero(scores > 0) if positive else np.arange(len(scores))
    if len(pool) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    values = scores[pool]
    if len(pool) > k:
        part = np.argpartition(-values, k - 1)[:k]
        pool, values = pool[part], values[part]
    order = np.lexsort((pool, -values))
    out: np.ndarray = pool[order].astype(np.int64)
    return out


def _encoder() -> Callable[[Sequence[str]], np.ndarray]:
    # Concurrent searches (the service's worker threads) share MiniLM batches.
    from cartwise.models.text import shared_encoder

    return shared_encoder()


__all__ = [
    "DEFAULT_CONFIG",
    "FEATURES",
    "FILTER_KEYS",
    "MODES",
    "Autocomplete",
    "SearchPredictor",
    "SearchResult",
    "Speller",
    "mlp_scores",
]
