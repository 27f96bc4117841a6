"""Search data: the catalog, searches with their clicks, and product stats from Feast.

- :func:`tokenize`: the one tokenizer BM25, the spelling corrector and highlighting share;
- :func:`catalog_from_source`: the ``products`` dimension as a :class:`Catalog`;
- :func:`search_sessions`: one row per search (session + query) with the products clicked
  after it, read from the ``events`` facts (``search`` events carry ``query``; the ``click`` and
  ``view`` events of its results carry ``query`` and ``position``);
- :func:`product_stats`: the ``search_rank_v1`` feature service (popularity, conversion,
  search clicks, price, stock) for products at given times, point in time correct.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cartwise.models.source import Source

FEATURE_SERVICE = "search_rank_v1"
STAT_COLUMNS = (
    "views_30d",
    "units_30d",
    "orders_30d",
    "conversion_30d",
    "search_clicks_30d",
    "price",
    "stock_on_hand",
)
_TOKEN = re.compile(r"[a-z0-9]+")
# Words too common to carry a query (kept small: product text is short and nouns matter).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "your",
        "you",
        "this",
        "that",
        "its",
        "our",
    ]
)


def tokenize(text: str, *, stopwords: bool = True) -> list[str]:
    """Lower-cased alphanumeric tokens, without stop words unless ``stopwords=False``."""
    tokens = _TOKEN.findall(text.lower())
    if not stopwords:
        return tokens
    return [t for t in tokens if t not in STOPWORDS]


def normalize_query(text: str) -> str:
    """The canonical form of a query: its tokens joined by single spaces."""
    return " ".join(_TOKEN.findall(text.lower()))


@dataclass(frozen=True)
class Catalog:
    """The searchable products: ids and the text fields indexed."""

    product_ids: np.ndarray  # int64
    names: list[str]
    descriptions: list[str]
    categories: list[str]

    def __post_init__(self) -> None:
        n = len(self.product_ids)
        if not (len(self.names) == len(self.descriptions) == len(self.categories) == n):
            raise ValueError("catalog fields must have one entry per product")

    def __len__(self) -> int:
        return len(self.product_ids)

    def texts(self) -> list[str]:
        """name + description + category, the text BM25 and MiniLM index."""
        return [
            f"{n}. {d} {c}".strip()
            for n, d, c in zip(self.names, self.descriptions, self.categories, strict=True)
        ]

    def subset(self, index: np.ndarray) -> Catalog:
        """The products at ``index``."""
        idx = [int(i) for i in index]
        return Catalog(
            self.product_ids[idx],
            [self.names[i] for i in idx],
            [self.descriptions[i] for i in idx],
            [self.categories[i] for i in idx],
        )


def catalog_from_frame(products: pd.DataFrame) -> Catalog:
    """A catalog from a frame with ``product_id``, ``name`` and optional description/category."""
    if "product_id" not in products or "name" not in products:
        raise ValueError("products need product_id and name columns")
    frame = products.drop_duplicates("product_id").sort_values("product_id")
    n = len(frame)

    def text(column: str) -> list[str]:
        if column not in frame:
            return [""] * n
        return [str(v) if isinstance(v, str) else "" for v in frame[column].tolist()]

    return Catalog(
        frame["product_id"].to_numpy(dtype=np.int64),
        text("name"),
        text("description"),
        text("category"),
    )


def catalog_from_source(source: Source, *, active_only: bool = True) -> Catalog:
    """The ``products`` dimension (active products by default) as a catalog."""
    products = source.dimension("products")
    if active_only and "status" in products:
        products = products[products["status"].fillna("active") == "active"]
    return catalog_from_frame(products)


SESSION_COLUMNS = ("session_id", "ts", "query", "clicked", "lead")


def search_sessions(
    source: Source,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per search: ``session_id``, ``ts`` (UTC), ``query``, ``clicked`` product ids
    (clicks after it carrying the same query, first click first) and ``lead`` (the product
    listed first, -1 if none was shown). ``start`` inclusive, ``end`` exclusive."""
    columns = ["type", "session_id", "product_id", "query", "position", "received_at"]
    events = source.facts("events", columns=columns, start=start, end=end)
    events = events[events["query"].notna() & events["session_id"].notna()]
    if events.empty:
        return pd.DataFrame(columns=list(SESSION_COLUMNS))
    events = events.assign(ts=pd.to_datetime(events["received_at"], utc=True))
    key = ["session_id", "query"]
    searches = events[events["type"] == "search"].groupby(key, sort=False)["ts"].min().reset_index()
    clicks = events[(events["type"] == "click") & events["product_id"].notna()].sort_values("ts")
    clicked = (
        clicks.groupby(key, sort=False)["product_id"]
        .agg(lambda s: list(dict.fromkeys(int(v) for v in s)))
        .rename("clicked")
    )
    views = events[(events["type"] == "view") & (events["position"] == 1)]
    lead = views.groupby(key, sort=False)["product_id"].first().rename("lead")
    out = searches.join(clicked, on=key).join(lead, on=key)
    out["clicked"] = [c if isinstance(c, list) else [] for c in out["clicked"]]
    out["lead"] = out["lead"].fillna(-1).astype(np.int64)
    return out.sort_values(["ts", "session_id"]).reset_index(drop=True)[list(SESSION_COLUMNS)]


def product_stats(
    source: Source, product_ids: Sequence[int] | np.ndarray, at: Iterable[pd.Timestamp]
) -> pd.DataFrame:
    """``search_rank_v1`` for every product at every time in ``at`` (point in time correct).

    Columns: ``product_id``, ``event_timestamp`` and :data:`STAT_COLUMNS` (missing values 0).
    """
    times = sorted({_utc(t) for t in at})
    ids = np.asarray(product_ids, dtype=np.int64)
    entity = pd.DataFrame(
        {
            "product_id": np.tile(ids, len(times)),
            "event_timestamp": np.repeat(np.array(times, dtype=object), len(ids)),
        }
    )
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True)
    rows = source.historical(entity, FEATURE_SERVICE)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    for column in STAT_COLUMNS:
        if column not in rows:
            rows[column] = 0.0
        rows[column] = pd.to_numeric(rows[column], errors="coerce").fillna(0.0).astype(float)
    out = entity.merge(
        rows[["product_id", "event_timestamp", *STAT_COLUMNS]],
        on=["product_id", "event_timestamp"],
        how="left",
    ).drop_duplicates(["product_id", "event_timestamp"])
    out[list(STAT_COLUMNS)] = out[list(STAT_COLUMNS)].fillna(0.0)
    return out.reset_index(drop=True)


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def stats_matrix(stats: pd.DataFrame, product_ids: np.ndarray) -> np.ndarray:
    """(n_products, len(STAT_COLUMNS)) float64 in ``product_ids`` order (0 for unknown)."""
    frame = stats.drop_duplicates("product_id", keep="last").set_index("product_id")
    frame = frame.reindex(np.asarray(product_ids, dtype=np.int64))
    out: np.ndarray = frame[list(STAT_COLUMNS)].fillna(0.0).to_numpy(dtype=np.float64)
    return out


__all__ = [
    "FEATURE_SERVICE",
    "SESSION_COLUMNS",
    "STAT_COLUMNS",
    "STOPWORDS",
    "Catalog",
    "catalog_from_frame",
    "catalog_from_source",
    "normalize_query",
    "product_stats",
    "search_sessions",
    "stats_matrix",
    "tokenize",
]
