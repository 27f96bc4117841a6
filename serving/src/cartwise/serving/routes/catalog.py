"""An in-process snapshot of the sellable catalogue: cards, categories and live stock.

Every ML answer is filtered and enriched against it, so out-of-stock and archived products
never reach a shopper whatever a model returns, and no route queries the database per item.
The snapshot is read in one short burst of queries. It is dropped as soon as the commerce
catalogue cache version moves (every product, price, image and stock write bumps it after its
commit; checked at most every ``version_check_s`` so a busy ingress does not ask Redis on each
request), and the next request waits for the reload. Past ``ttl_s`` (2 s) without such a write
it is reloaded in the background while still served: that refresh only catches writes that
bypassed the cache version (another process on an embedded in-process cache).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import anyio.to_thread
from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from cartwise.commerce.catalog import cache as catalog_cache
from cartwise.commerce.catalog.models import (
    Category,
    Product,
    ProductImage,
    ProductStatus,
    Variant,
)
from cartwise.commerce.inventory.models import StockLevel
from cartwise.platform.cache import JsonCache
from cartwise.platform.errors import Unprocessable
from cartwise.platform.storage import Storage

log = logging.getLogger(__name__)

CATALOG_TTL_S = 2.0
VERSION_CHECK_S = 0.25


@dataclass(frozen=True, slots=True)
class CategoryNode:
    """A category of the tree."""

    id: int
    name: str
    slug: str
    parent_id: int | None


@dataclass(frozen=True, slots=True)
class ProductCard:
    """What a shopper sees of an active product in a list: name, price, category, stock."""

    id: int
    name: str
    slug: str
    description: str
    category_id: int | None
    category: str | None
    category_slug: str | None
    price: Decimal | None
    currency: str | None
    image_url: str | None
    available: int

    @property
    def in_stock(self) -> bool:
        """Whether at least one unit of an active SKU can be bought now."""
        return self.available > 0 and self.price is not None


@dataclass(frozen=True)
class CatalogSnapshot:
    """The active products (by id) and the category tree, as read at ``version``."""

    version: int
    loaded_at: float
    products: dict[int, ProductCard]
    categories: dict[int, CategoryNode]
    in_stock_ids: tuple[int, ...] = field(init=False)
    # Changes only when the searchable text of the catalogue does (not with stock or prices).
    text_key: int = field(init=False)
    _children: dict[int, list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        stocked = tuple(sorted(pid for pid, card in self.products.items() if card.in_stock))
        object.__setattr__(self, "in_stock_ids", stocked)
        texts = tuple(
            (pid, card.name, card.category, card.description)
            for pid, card in sorted(self.products.items())
        )
        object.__setattr__(self, "text_key", hash(texts))
        children: dict[int, list[int]] = {}
        for node in self.categories.values():
            if node.parent_id is not None:
                children.setdefault(node.parent_id, []).append(node.id)
        object.__setattr__(self, "_children", children)

    def find_category(self, ref: str) -> CategoryNode | None:
        """A category by slug or name (case-insensitive)."""
        wanted = ref.strip().lower()
        for node in self.categories.values():
            if node.slug == wanted or node.name.lower() == wanted:
                return node
        return None

    def category_filter(self, ref: str | None) -> list[CategoryNode]:
        """The category a query names and its descendants ([] for none; 422 if unknown)."""
        if ref is None:
            return []
        node = self.find_category(ref)
        if node is None:
            raise Unprocessable(f"Unknown category {ref!r}.", slug="unknown-category")
        return self.subtree(node.id)

    def subtree(self, category_id: int) -> list[CategoryNode]:
        """The category and all its descendants."""
        out: list[CategoryNode] = []
        stack = [category_id]
        seen: set[int] = set()
        while stack:
            cid = stack.pop()
            if cid in seen or cid not in self.categories:
                continue
            seen.add(cid)
            out.append(self.categories[cid])
            stack.extend(self._children.get(cid, []))
        return out

    def names(self) -> list[tuple[int, str]]:
        """(product id, name) of every active product."""
        return [(pid, card.name) for pid, card in self.products.items()]

    def documents(self) -> list[tuple[int, str]]:
        """(product id, searchable text) of every active product, for the lexical fallback."""
        return [
            (pid, f"{card.name} {card.name} {card.category or ''} {card.description}")
            for pid, card in sorted(self.products.items())
        ]


def load_snapshot(engine: Engine, storage: Storage, version: int, now: float) -> CatalogSnapshot:
    """Read the catalogue snapshot (five small queries on one connection)."""
    p, v, s, img, c = (
        Product.__table__,  # type: ignore[attr-defined]
        Variant.__table__,  # type: ignore[attr-defined]
        StockLevel.__table__,  # type: ignore[attr-defined]
        ProductImage.__table__,  # type: ignore[attr-defined]
        Category.__table__,  # type: ignore[attr-defined]
    )
    free = s.c.on_hand - s.c.reserved
    with engine.connect() as conn:
        categories = {
            int(cid): CategoryNode(int(cid), name, slug, parent)
            for cid, name, slug, parent in conn.execute(
                select(c.c.id, c.c.name, c.c.slug, c.c.parent_id)
            )
        }
        prices = {
            int(pid): (price, currency)
            for pid, price, currency in conn.execute(
                select(v.c.product_id, func.min(v.c.price), func.min(v.c.currency))
                .where(v.c.is_active.is_(True))
                .group_by(v.c.product_id)
            )
        }
        stock = {
            int(pid): int(units or 0)
            for pid, units in conn.execute(
                select(v.c.product_id, func.sum(case((free > 0, free), else_=0)))
                .join(s, s.c.sku == v.c.sku)
                .where(v.c.is_active.is_(True))
                .group_by(v.c.product_id)
            )
        }
        images: dict[int, str] = {}
        for pid, key in conn.execute(
            select(img.c.product_id, img.c.thumb_large_key).order_by(
                img.c.product_id, img.c.position, img.c.id
            )
        ):
            images.setdefault(int(pid), key)
        rows = conn.execute(
            select(p.c.id, p.c.name, p.c.slug, p.c.description, p.c.category_id).where(
                p.c.status == ProductStatus.active.value
            )
        ).all()
    products: dict[int, ProductCard] = {}
    for pid, name, slug, description, category_id in rows:
        node = categories.get(category_id) if category_id is not None else None
        price, currency = prices.get(int(pid), (None, None))
        key = images.get(int(pid))
        products[int(pid)] = ProductCard(
            id=int(pid),
            name=name,
            slug=slug,
            description=description or "",
            category_id=category_id,
            category=node.name if node else None,
            category_slug=node.slug if node else None,
            price=Decimal(price).quantize(Decimal("0.01")) if price is not None else None,
            currency=currency,
            image_url=storage.url(key) if key else None,
            available=stock.get(int(pid), 0),
        )
    return CatalogSnapshot(version, now, products, categories)


class CatalogView:
    """The current :class:`CatalogSnapshot`, reloaded off the event loop when it goes stale."""

    def __init__(
        self,
        engine: Engine,
        storage: Storage,
        cache: JsonCache | None,
        *,
        ttl_s: float = CATALOG_TTL_S,
        version_check_s: float = VERSION_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.storage = storage
        self.cache = cache
        self.ttl_s = ttl_s
        self.version_check_s = version_check_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: CatalogSnapshot | None = None
        self._checked_at = 0.0
        self._seen_version = 0
        self._refreshing = False

    def _version(self) -> int:
        # JsonCache never raises: with Redis down it answers -1 and the TTL alone decides.
        return self.cache.version(catalog_cache.NAMESPACE) if self.cache is not None else 0

    def _state(self) -> tuple[CatalogSnapshot | None, bool]:
        """(snapshot, fresh): no snapshot once a write moved the version; not fresh once old."""
        snap = self._snapshot
        if snap is None:
            return None, False
        now = self._clock()
        if now - self._checked_at >= self.version_check_s:
            self._checked_at = now
            self._seen_version = self._version()
        if self._seen_version != snap.version:
            return None, False
        return snap, now - snap.loaded_at < self.ttl_s

    def invalidate(self) -> None:
        """Forget the snapshot; the next read loads a new one."""
        self._snapshot = None

    def load(self) -> CatalogSnapshot:
        """The snapshot, reloaded now unless fresh (blocking; one loader at a time)."""
        with self._lock:
            snap, fresh = self._state()
            if snap is not None and fresh:
                return snap
            # The version is read before the rows: a commit racing the load leaves a newer
            # version behind, which triggers one more load instead of hiding the change.
            version = self._version()
            snap = load_snapshot(self.engine, self.storage, version, self._clock())
            self._snapshot, self._seen_version, self._checked_at = snap, version, snap.loaded_at
            return snap

    def _refresh_in_background(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True

        def run() -> None:
            try:
                self.load()
            except Exception:
                log.exception("catalogue snapshot refresh failed; serving the previous one")
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="catalog-refresh", daemon=True).start()

    async def get(self) -> CatalogSnapshot:
        """The snapshot; only one a write invalidated costs a wait for the database.

        A snapshot that merely aged past the TTL (no write seen) is still served while a
        background thread reloads it: no request pays for the periodic refresh.
        """
        snap, fresh = self._state()
        if snap is not None:
            if not fresh:
                self._refresh_in_background()
            return snap
        return await anyio.to_thread.run_sync(self.load)


__all__ = [
    "CATALOG_TTL_S",
    "CatalogSnapshot",
    "CatalogView",
    "CategoryNode",
    "ProductCard",
    "load_snapshot",
]
