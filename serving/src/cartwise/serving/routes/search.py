"""Search and autocomplete routes.

The model ranks up to :data:`CANDIDATES` products for a query; the ingress filters them against
the live catalogue (active products, category subtree, current prices, stock), computes facets
over what is left and cuts the page. When the model cannot answer, BM25 over the catalogue
answers instead (``fallback: true``). Every search is stored as a shopper event (with the
``search_id`` returned to the storefront, so it can log clicks against it) after the response
has gone out, and handed to the event sinks like any event the events API stores.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, FastAPI, Query, Request
from pydantic import BaseModel, Field

from cartwise.commerce.deps import OptionalPrincipalDep
from cartwise.platform.errors import PROBLEM_RESPONSES, Unprocessable
from cartwise.platform.types import utcnow
from cartwise.serving.fallback import prefix_matches, tokenize
from cartwise.serving.routes.catalog import CatalogSnapshot, CategoryNode, ProductCard
from cartwise.serving.routes.common import (
    DEADLINES,
    Assignment,
    IngressState,
    MLAnswer,
    MLOutcome,
    ProductItem,
    assign,
    baseline_ref,
    call_ml,
    card_fields,
    experiment_unit,
    in_session,
    ingress,
    log_exposure,
    may_assign,
    model_ref,
    request_id,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["search"], responses=PROBLEM_RESPONSES)

SURFACE = "search"
# The model ranks this many; pages, totals and facets are cut from them.
CANDIDATES = 100
MAX_QUERY = 200
# Price bands of the facet: (label, lower bound, upper bound exclusive; None = open).
PRICE_BANDS: tuple[tuple[str, Decimal | None, Decimal | None], ...] = (
    ("under 10", None, Decimal(10)),
    ("10-25", Decimal(10), Decimal(25)),
    ("25-50", Decimal(25), Decimal(50)),
    ("50-100", Decimal(50), Decimal(100)),
    ("100-250", Decimal(100), Decimal(250)),
    ("250 and over", Decimal(250), None),
)

SessionIdQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00]+$",
        description="The storefront's session id (search events and experiments use it).",
    ),
]


class SearchItem(ProductItem):
    """A search hit: the product, its score and its name with the matched terms marked."""

    position: int = Field(
        description="0-based rank over all pages: log a click with it and the search_id."
    )
    highlight: str
    matched: list[str]


class CategoryFacet(BaseModel):
    """How many hits fall in a category."""

    value: str
    slug: str | None
    count: int


class PriceFacet(BaseModel):
    """How many hits fall in a price band (``max`` exclusive)."""

    label: str
    min: Decimal | None
    max: Decimal | None
    count: int


class StockFacet(BaseModel):
    """How many hits can be bought now, and how many cannot."""

    in_stock: int
    out_of_stock: int


class Facets(BaseModel):
    """Counts over every hit of the query (not just the page)."""

    category: list[CategoryFacet]
    price: list[PriceFacet]
    stock: StockFacet


class SearchResults(MLAnswer):
    """One page of search results."""

    search_id: str
    query: str
    corrected: str | None
    did_you_mean: str | None
    total: int
    page: int
    per_page: int
    items: list[SearchItem]
    facets: Facets


class Suggestion(BaseModel):
    """An autocomplete entry: a query or product name, and the product it names if any."""

    text: str
    kind: str | None = None
    product_id: int | None = None


class Suggestions(MLAnswer):
    """Autocomplete entries for a prefix."""

    query: str
    suggestions: list[Suggestion]


def normalize_query(q: str) -> str:
    """The stored form of a query: lower case, single spaces, at most 200 characters."""
    return " ".join(q.lower().split())[:MAX_QUERY]


def highlight(name: str, terms: Iterable[str]) -> str:
    """The name, HTML-escaped, with each word starting with a term wrapped in ``<mark>``."""
    # The same names come back with the same terms on every page of popular queries.
    return _highlight(name, tuple(sorted({t.lower() for t in terms if t})))


@functools.lru_cache(maxsize=8192)
def _highlight(name: str, terms: tuple[str, ...]) -> str:
    words = sorted(terms, key=len, reverse=True)
    if not words:
        return html.escape(name)
    pattern = re.compile(
        r"(?<![0-9A-Za-z])(" + "|".join(re.escape(w) for w in words) + ")", re.IGNORECASE
    )
    out: list[str] = []
    last = 0
    for match in pattern.finditer(name):
        out.append(html.escape(name[last : match.start()]))
        out.append(f"<mark>{html.escape(match.group(0))}</mark>")
        last = match.end()
    out.append(html.escape(name[last:]))
    return "".join(out)


def _keeps(
    card: ProductCard,
    wanted: set[int],
    min_price: Decimal | None,
    max_price: Decimal | None,
    in_stock: bool | None,
) -> bool:
    if wanted and card.category_id not in wanted:
        return False
    if min_price is not None and (card.price is None or card.price < min_price):
        return False
    if max_price is not None and (card.price is None or card.price > max_price):
        return False
    return in_stock is None or card.in_stock == in_stock


@functools.lru_cache(maxsize=4096)
def _price_band(price: Decimal) -> int | None:
    """The index of the price band a price falls in (the bands do not overlap)."""
    for i, (_, low, high) in enumerate(PRICE_BANDS):
        if (low is None or price >= low) and (high is None or price < high):
            return i
    return None


def facets(cards: Sequence[ProductCard]) -> Facets:
    """Category, price-band and stock counts over the hits."""
    per_category: dict[tuple[str, str | None], int] = {}
    for card in cards:
        key = (card.category or "uncategorised", card.category_slug)
        per_category[key] = per_category.get(key, 0) + 1
    per_band = [0] * len(PRICE_BANDS)
    stocked = 0
    for card in cards:
        if card.price is not None:
            band = _price_band(card.price)
            if band is not None:
                per_band[band] += 1
        stocked += card.in_stock
    bands = [
        PriceFacet(label=label, min=low, max=high, count=count)
        for (label, low, high), count in zip(PRICE_BANDS, per_band, strict=True)
        if count
    ]
    return Facets(
        category=[
            CategoryFacet(value=value, slug=slug, count=n)
            for (value, slug), n in sorted(per_category.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        price=bands,
        stock=StockFacet(in_stock=stocked, out_of_stock=len(cards) - stocked),
    )


def store_search_event(app: FastAPI, row: dict[str, Any], *, dispatch: bool = True) -> None:
    """Store a search event (after the response); hand it to the app's event sinks if
    ``dispatch``. Concurrent searches' events share one INSERT and commit."""
    from cartwise.commerce.events import service as events

    try:
        new = events.store_combined(app.state.engine, [row])
    except Exception:
        log.exception("search event %s was not stored", row["properties"].get("search_id"))
        return
    if dispatch:
        events.dispatch(events.sinks_of(app), new)


def _model_filters(
    categories: Sequence[CategoryNode],
    min_price: Decimal | None,
    max_price: Decimal | None,
    allowed: list[int] | None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if categories:
        names = [c.name for c in categories]
        filters["category"] = names[0] if len(names) == 1 else names
    if min_price is not None:
        filters["min_price"] = float(min_price)
    if max_price is not None:
        filters["max_price"] = float(max_price)
    if allowed is not None:
        # Live stock: the model's own stock figures are as old as its training data.
        filters["allowed"] = allowed
    return filters


@router.get("/search", response_model=SearchResults)
async def search(
    request: Request,
    background: BackgroundTasks,
    principal: OptionalPrincipalDep,
    q: Annotated[
        str, Query(min_length=1, max_length=MAX_QUERY, pattern=r"^[^\x00]*$", description="Query")
    ],
    page: Annotated[int, Query(ge=1, le=100)] = 1,
    per_page: Annotated[int, Query(ge=1, le=50)] = 20,
    category: Annotated[
        str | None, Query(min_length=1, max_length=140, description="Category slug or name.")
    ] = None,
    min_price: Annotated[Decimal | None, Query(ge=0, le=10_000_000)] = None,
    max_price: Annotated[Decimal | None, Query(ge=0, le=10_000_000)] = None,
    in_stock: Annotated[
        bool | None, Query(description="true: only buyable now; false: only out of stock.")
    ] = None,
    session_id: SessionIdQuery = None,
) -> SearchResults:
    """Hybrid search with typo tolerance, facets, highlights and a did-you-mean suggestion."""
    query = q.strip()
    if not query:
        raise Unprocessable("The query is empty.", slug="empty-query")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise Unprocessable("min_price is greater than max_price.", slug="invalid-price-range")
    state = ingress(request)
    snap = await state.catalog.get()
    categories = snap.category_filter(category)
    user_id = principal.subject if principal is not None else None
    unit = experiment_unit(user_id, session_id)
    assignment: Assignment | None = (
        await in_session(state.engine, lambda s: assign(s, SURFACE, unit))
        if may_assign(state.engine, SURFACE, unit)
        else None
    )
    variant = assignment.model if assignment is not None else None
    allowed: list[int] | None = None
    if in_stock is True:
        allowed = list(snap.in_stock_ids)
    elif in_stock is False:
        allowed = [pid for pid, card in snap.products.items() if not card.in_stock]

    fields: dict[str, Any] = {}
    corrected: str | None = None
    did_you_mean: str | None = None
    hits: list[tuple[int, float, list[str]]]
    if variant == "baseline:bm25":
        hits = await _bm25(state, snap, query)
        fields["model"] = baseline_ref(variant)
    else:
        outcome = await call_ml(
            state,
            "search",
            "search",
            timeout_s=DEADLINES["search"],
            reuse=variant is None,
            q=query,
            k=CANDIDATES,
            offset=0,
            filters=_model_filters(categories, min_price, max_price, allowed),
            variant=variant,
        )
        if outcome.result is not None:
            hits = _model_hits(outcome.result)
            corrected = outcome.result.get("corrected") or None
            did_you_mean = outcome.result.get("did_you_mean") or None
            fields["model"] = model_ref(outcome.result)
        else:
            assert outcome.reason is not None
            state.fallbacks.record("search", outcome.reason)
            hits = await _bm25(state, snap, query)
            fields.update(fallback=True, fallback_reason=outcome.reason)

    wanted = {c.id for c in categories}
    kept: list[tuple[ProductCard, float, list[str]]] = []
    seen: set[int] = set()
    for pid, score, matched in hits:
        card = snap.products.get(pid)
        if card is None or pid in seen or not _keeps(card, wanted, min_price, max_price, in_stock):
            continue
        seen.add(pid)
        kept.append((card, score, matched))
    start = (page - 1) * per_page
    fallback_terms = tokenize(corrected or query)
    items = [
        _search_item(card, score, start + offset, matched, fallback_terms)
        for offset, (card, score, matched) in enumerate(kept[start : start + per_page])
    ]
    search_id = uuid.uuid4().hex
    now = utcnow()
    background.add_task(
        store_search_event,
        request.app,
        {
            "event_id": str(uuid.uuid4()),
            "type": "search",
            # Without a storefront session the search still counts, in a session of its own.
            "session_id": session_id or (f"user-{user_id}" if user_id else f"search-{search_id}"),
            "user_id": user_id,
            "product_id": None,
            "sku": None,
            "query": normalize_query(query),
            "position": None,
            "properties": {"search_id": search_id, "results": len(kept), "corrected": corrected},
            "client_ts": now,
            "received_at": now,
        },
        # Only a storefront session has session features to update (the Feast push);
        # the made-up session of a search without one is never read.
        dispatch=session_id is not None,
    )
    if assignment is not None:
        fields["experiment"] = assignment.ref()
    # An exposure counts only if the unit saw its variant, not the fallback.
    if assignment is not None and not fields.get("fallback"):
        background.add_task(
            log_exposure,
            state.engine,
            assignment,
            user_id=user_id,
            session_id=session_id,
            request_id=request_id(),
            items=[i.product_id for i in items],
        )
    return SearchResults(
        search_id=search_id,
        query=query,
        corrected=corrected,
        did_you_mean=did_you_mean,
        total=len(kept),
        page=page,
        per_page=per_page,
        items=items,
        facets=facets([card for card, _, _ in kept]),
        **fields,
    )


def _search_item(
    card: ProductCard, score: float, position: int, matched: list[str], fallback: list[str]
) -> SearchItem:
    """A search hit: the card's fields (``card_fields``) plus its position and highlight."""
    # Every value has its field's type already: no validation pass (FastAPI validates and
    # serialises the response once, in pydantic-core).
    return SearchItem.model_construct(
        **card_fields(card, score),
        position=position,
        matched=matched,
        highlight=highlight(card.name, matched or fallback),
    )


def _model_hits(result: dict[str, Any]) -> list[tuple[int, float, list[str]]]:
    hits: list[tuple[int, float, list[str]]] = []
    for raw in result.get("items") or []:
        try:
            pid, score = int(raw["product_id"]), float(raw.get("score", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        matched = [str(t) for t in raw.get("matched") or [] if isinstance(t, str)]
        hits.append((pid, score, matched))
    return hits


async def _bm25(
    state: IngressState, snap: CatalogSnapshot, query: str
) -> list[tuple[int, float, list[str]]]:
    found = await anyio.to_thread.run_sync(
        lambda: state.bm25.search(snap.text_key, snap.documents, query, CANDIDATES)
    )
    return [(h.product_id, h.score, h.matched) for h in found]


@router.get("/search/suggest", response_model=Suggestions)
async def suggest(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")],
    k: Annotated[int, Query(ge=1, le=20)] = 8,
) -> Suggestions:
    """Autocomplete for a prefix: cheap, no database query per request."""
    prefix = q.lstrip()
    if not prefix.strip():
        raise Unprocessable("The prefix is empty.", slug="empty-query")
    state = ingress(request)
    snap = await state.catalog.get()
    key = (prefix.lower(), k)
    cached = state.suggestions.get(key)
    if cached is not None:
        outcome = MLOutcome(cached)
    else:
        outcome = await call_ml(
            state, "search", "suggest", timeout_s=DEADLINES["suggest"], prefix=prefix, k=k
        )
        if outcome.result is not None:
            state.suggestions.put(key, outcome.result)
    if outcome.result is not None:
        entries: list[Suggestion] = []
        for raw in outcome.result.get("suggestions") or []:
            entry = _suggestion(raw)
            # A product entry for a product no longer on sale is not suggested.
            if entry is None or (
                entry.product_id is not None and entry.product_id not in snap.products
            ):
                continue
            entries.append(entry)
        return Suggestions(query=prefix, suggestions=entries[:k], model=model_ref(outcome.result))
    assert outcome.reason is not None
    state.fallbacks.record("suggest", outcome.reason)
    by_name = {card.name: pid for pid, card in snap.products.items()}
    names = prefix_matches(snap.names(), prefix, k)
    return Suggestions(
        query=prefix,
        suggestions=[Suggestion(text=n, kind="product", product_id=by_name.get(n)) for n in names],
        fallback=True,
        fallback_reason=outcome.reason,
    )


def _suggestion(raw: Any) -> Suggestion | None:
    if isinstance(raw, str):
        return Suggestion(text=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        return None
    pid = raw.get("product_id")
    return Suggestion(
        text=raw["text"],
        kind=str(raw["kind"]) if raw.get("kind") is not None else None,
        product_id=int(pid) if isinstance(pid, int) else None,
    )
