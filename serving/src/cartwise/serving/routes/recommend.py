"""Recommendation routes: for the shopper, similar products and complements of a cart.

What may be shown is decided here, not by the model: ``allowed`` is the set of active products
with stock right now (from the catalogue snapshot) minus what the context excludes, it is sent
to the model and every answer is filtered against it again. When the model cannot answer the
same set feeds the popularity baseline, flagged ``fallback: true``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Request
from sqlmodel import Session, col, select

from cartwise.commerce.carts import service as carts
from cartwise.commerce.deps import IntId, OptionalPrincipalDep
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus
from cartwise.platform.auth import Principal
from cartwise.platform.errors import PROBLEM_RESPONSES, NotFound, Unprocessable
from cartwise.serving.routes.catalog import CatalogSnapshot, CategoryNode
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
    experiment_unit,
    in_session,
    ingress,
    log_exposure,
    may_assign,
    model_ref,
    product_item,
    request_id,
)

router = APIRouter(prefix="/api/v1", tags=["recommendations"], responses=PROBLEM_RESPONSES)

MAX_K = 50
SURFACE = "recommendations"
POPULAR = "popular"
POPULARITY_REF = "baseline:popularity"

CartId = Annotated[str, Path(min_length=1, max_length=32)]
CartToken = Annotated[
    str | None, Header(max_length=128, description="The secret token of a guest cart.")
]
SessionIdQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00]+$",
        description="The storefront's session id (personalises anonymous shoppers).",
    ),
]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many products to return.")]


class Context(StrEnum):
    """Where the recommendations are shown."""

    home = "home"
    product = "product"
    cart = "cart"


class Recommendations(MLAnswer):
    """Products recommended for a shopper in a context."""

    context: Context
    strategy: str
    items: list[ProductItem]


class SimilarProducts(MLAnswer):
    """Products like a given one."""

    product_id: int
    strategy: str
    items: list[ProductItem]


class CartComplements(MLAnswer):
    """Products that go with what is in a cart."""

    cart_id: str
    strategy: str
    items: list[ProductItem]


@dataclass
class _Prepared:
    cart_products: list[int] = field(default_factory=list)
    purchased: set[int] = field(default_factory=set)
    assignment: Assignment | None = None


def _cart_products(
    session: Session, cart_id: str, principal: Principal | None, token: str | None
) -> list[int]:
    cart = carts.get_cart_for(session=session, cart_id=cart_id, principal=principal, token=token)
    lines = carts.cart_lines(session, cart.id)
    return list(dict.fromkeys(ln.product.id for ln in lines if ln.product.id is not None))


def _purchased(session: Session, user_id: int) -> set[int]:
    stmt = (
        select(OrderLine.product_id)
        .join(Order, col(Order.id) == col(OrderLine.order_id))
        .where(
            Order.user_id == user_id,
            col(Order.status).not_in([OrderStatus.cancelled, OrderStatus.refunded]),
            col(OrderLine.product_id).is_not(None),
        )
        .distinct()
    )
    return {int(pid) for pid in session.exec(stmt) if pid is not None}


def _allowed(
    snap: CatalogSnapshot, categories: Sequence[CategoryNode], exclude: Iterable[int]
) -> list[int]:
    """Active in-stock products, in the categories if any, minus the excluded ones."""
    skip = set(exclude)
    wanted = {c.id for c in categories}
    return [
        pid
        for pid in snap.in_stock_ids
        if pid not in skip and (not wanted or snap.products[pid].category_id in wanted)
    ]


def _items(
    snap: CatalogSnapshot, result: dict[str, Any], allowed: set[int], k: int
) -> list[ProductItem]:
    """The model's items that may be shown, enriched, at most ``k``, each once."""
    out: list[ProductItem] = []
    seen: set[int] = set()
    for raw in result.get("items") or []:
        try:
            pid, score = int(raw["product_id"]), float(raw.get("score", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        if pid in seen or pid not in allowed:
            continue
        seen.add(pid)
        out.append(product_item(snap.products[pid], score))
        if len(out) == k:
            break
    return out


async def _popular(
    state: IngressState,
    snap: CatalogSnapshot,
    allowed: Sequence[int],
    k: int,
    *,
    prefer_category: int | None = None,
) -> list[ProductItem]:
    """Best sellers among ``allowed`` (those of ``prefer_category`` first)."""
    units = (
        state.popularity.units()
        if state.popularity.fresh
        else await anyio.to_thread.run_sync(state.popularity.units)
    )
    first: list[int] = list(allowed)
    rest: list[int] = []
    if prefer_category is not None:
        first = [p for p in allowed if snap.products[p].category_id == prefer_category]
        rest = [p for p in allowed if snap.products[p].category_id != prefer_category]
    ranked = state.popularity.top(first, k, units=units)
    if len(ranked) < k:
        ranked += state.popularity.top(rest, k - len(ranked), units=units)
    return [product_item(snap.products[pid], score) for pid, score in ranked]


async def _answer(
    state: IngressState,
    snap: CatalogSnapshot,
    outcome: MLOutcome,
    allowed: list[int],
    k: int,
    *,
    prefer_category: int | None = None,
) -> tuple[list[ProductItem], str, dict[str, Any]]:
    """Items, strategy and the MLAnswer fields: the model's, or popularity on any failure."""
    reason = outcome.reason
    if outcome.result is not None:
        items = _items(snap, outcome.result, set(allowed), k)
        if items:
            strategy = str(outcome.result.get("strategy") or "model")
            return items, strategy, {"model": model_ref(outcome.result)}
        # Nothing the shopper may see survived the filters: the list must not stay empty.
        reason = "empty"
    assert reason is not None
    state.fallbacks.record("recommend", reason)
    items = await _popular(state, snap, allowed, k, prefer_category=prefer_category)
    return items, POPULAR, {"fallback": True, "fallback_reason": reason}


@router.get("/recommendations", response_model=Recommendations)
async def recommendations(
    request: Request,
    background: BackgroundTasks,
    principal: OptionalPrincipalDep,
    context: Annotated[Context, Query(description="home, product or cart.")] = Context.home,
    product_id: Annotated[
        int | None, Query(ge=1, le=2_147_483_647, description="The product shown (product).")
    ] = None,
    cart_id: Annotated[
        str | None, Query(min_length=1, max_length=32, description="The shopper's cart (cart).")
    ] = None,
    session_id: SessionIdQuery = None,
    k: K = 10,
    category: Annotated[
        str | None, Query(min_length=1, max_length=140, description="Category slug or name.")
    ] = None,
    in_stock: Annotated[
        bool,
        Query(description="Kept for symmetry with search: out-of-stock products never appear."),
    ] = True,
    exclude_purchased: Annotated[
        bool, Query(description="Leave out what the signed-in shopper already bought.")
    ] = False,
    x_cart_token: CartToken = None,
) -> Recommendations:
    """Recommendations for the signed-in shopper or the session, in a page context."""
    state = ingress(request)
    snap = await state.catalog.get()
    categories = snap.category_filter(category)
    user_id = principal.subject if principal is not None else None
    anchor: list[int] = []
    if context is Context.product:
        if product_id is None:
            raise Unprocessable("context=product needs product_id.", slug="missing-product-id")
        if product_id not in snap.products:
            raise NotFound(f"Product {product_id} does not exist.")
        anchor = [product_id]
    elif context is Context.cart and cart_id is None:
        raise Unprocessable("context=cart needs cart_id.", slug="missing-cart-id")
    unit = experiment_unit(user_id, session_id)

    def prepare(session: Session) -> _Prepared:
        prepared = _Prepared()
        if context is Context.cart and cart_id is not None:
            prepared.cart_products = _cart_products(session, cart_id, principal, x_cart_token)
        if exclude_purchased and user_id is not None:
            prepared.purchased = _purchased(session, user_id)
        prepared.assignment = assign(session, SURFACE, unit)
        return prepared

    needs_db = (
        may_assign(state.engine, SURFACE, unit)
        or context is Context.cart
        or (exclude_purchased and user_id is not None)
    )
    # Most anonymous home/product calls need no database at all: skip the thread hop.
    prepared = await in_session(state.engine, prepare) if needs_db else _Prepared()
    anchor = anchor or prepared.cart_products
    allowed = _allowed(snap, categories, [*anchor, *prepared.purchased])
    assignment = prepared.assignment
    variant = assignment.model if assignment is not None else None
    prefer = snap.products[anchor[0]].category_id if anchor else None

    fields: dict[str, Any]
    if variant is not None and variant.startswith("baseline:") and variant != POPULARITY_REF:
        # A lexical baseline has no meaning here; the ingress serves popularity for it.
        items = await _popular(state, snap, allowed, k, prefer_category=prefer)
        strategy, fields = POPULAR, {"model": baseline_ref(variant)}
    else:
        category_name = categories[0].name if categories else None
        outcome = await call_ml(
            state,
            "recommend",
            "recommend",
            timeout_s=DEADLINES["recommend"],
            # A session's live features can change the answer of a home or cart page: only
            # those answers are never reused at the ingress. A product page's answer is the
            # product's similar items, the same for every shopper and session.
            reuse=variant is None and (session_id is None or context is Context.product),
            reuse_key=(
                {
                    "context": context.value,
                    "product_id": product_id,
                    "k": k,
                    "category": category_name,
                    "allowed": allowed,
                }
                if context is Context.product
                else None
            ),
            user_id=user_id,
            session_id=session_id,
            k=k,
            context=context.value,
            product_id=product_id if context is Context.product else None,
            cart=prepared.cart_products,
            category=category_name,
            exclude_purchased=exclude_purchased,
            allowed=allowed,
            variant=variant,
        )
        items, strategy, fields = await _answer(
            state, snap, outcome, allowed, k, prefer_category=prefer
        )
    if assignment is not None:
        fields["experiment"] = assignment.ref()
    # An exposure counts only if the unit saw its variant: a model fallback would credit the
    # variant with popularity's results (except for the popularity baseline itself).
    if assignment is not None and (not fields.get("fallback") or variant == POPULARITY_REF):
        background.add_task(
            log_exposure,
            state.engine,
            assignment,
            user_id=user_id,
            session_id=session_id,
            request_id=request_id(),
            items=[i.product_id for i in items],
        )
    return Recommendations(context=context, strategy=strategy, items=items, **fields)


@router.get("/products/{product_id}/similar", response_model=SimilarProducts)
async def similar_products(request: Request, product_id: IntId, k: K = 10) -> SimilarProducts:
    """Products like this one (404 for an unknown or archived product)."""
    state = ingress(request)
    snap = await state.catalog.get()
    card = snap.products.get(product_id)
    if card is None:
        raise NotFound(f"Product {product_id} does not exist.")
    allowed = _allowed(snap, [], [product_id])
    outcome = await call_ml(
        state,
        "recommend",
        "similar",
        timeout_s=DEADLINES["recommend"],
        reuse=True,
        product_id=product_id,
        k=k,
        allowed=allowed,
        variant=None,
    )
    items, strategy, fields = await _answer(
        state, snap, outcome, allowed, k, prefer_category=card.category_id
    )
    return SimilarProducts(product_id=product_id, strategy=strategy, items=items, **fields)


@router.get("/carts/{cart_id}/complements", response_model=CartComplements)
async def cart_complements(
    request: Request,
    cart_id: CartId,
    principal: OptionalPrincipalDep,
    k: K = 10,
    x_cart_token: CartToken = None,
) -> CartComplements:
    """Products that go with the caller's cart (404 for a cart that is not theirs)."""
    state = ingress(request)
    snap = await state.catalog.get()
    in_cart = await in_session(
        state.engine, lambda s: _cart_products(s, cart_id, principal, x_cart_token)
    )
    allowed = _allowed(snap, [], in_cart)
    if not in_cart:
        # Nothing to complement: the best sellers are the honest answer, not a failure.
        items = await _popular(state, snap, allowed, k)
        return CartComplements(cart_id=cart_id, strategy=POPULAR, items=items)
    outcome = await call_ml(
        state,
        "recommend",
        "complements",
        timeout_s=DEADLINES["recommend"],
        reuse=True,
        product_ids=in_cart,
        k=k,
        allowed=allowed,
        variant=None,
    )
    first = snap.products.get(in_cart[0])
    items, strategy, fields = await _answer(
        state,
        snap,
        outcome,
        allowed,
        k,
        prefer_category=first.category_id if first is not None else None,
    )
    return CartComplements(cart_id=cart_id, strategy=strategy, items=items, **fields)
