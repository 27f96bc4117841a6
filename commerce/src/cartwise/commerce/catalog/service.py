"""Categories, products and variants: staff writes and the public listing (cached in Redis)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.cache import NAMESPACE, mark_dirty
from cartwise.commerce.catalog.models import (
    Category,
    CategoryCreate,
    CategoryPublic,
    CategoryUpdate,
    ImagePublic,
    Product,
    ProductCreate,
    ProductImage,
    ProductPage,
    ProductPublic,
    ProductStatus,
    ProductUpdate,
    Variant,
    VariantCreate,
    VariantPublic,
    VariantUpdate,
)
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import StockLevel
from cartwise.commerce.money import quantize
from cartwise.platform.cache import JsonCache
from cartwise.platform.errors import Conflict, NotFound, Unprocessable
from cartwise.platform.storage import Storage
from cartwise.platform.types import utcnow

INT_MAX = 2_147_483_647
MAX_ATTRIBUTES = 20
MAX_ATTRIBUTE_KEY = 40
MAX_ATTRIBUTE_VALUE = 200
MAX_VARIANTS = 100


class ProductSort(StrEnum):
    """Orderings of the product listing."""

    newest = "newest"
    price_asc = "price_asc"
    price_desc = "price_desc"
    name = "name"


@dataclass(frozen=True, slots=True)
class ProductFilters:
    """The query of a product listing; also the source of its cache key."""

    category_id: int | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None
    q: str | None = None
    status: ProductStatus = ProductStatus.active
    sort: ProductSort = ProductSort.newest
    page: int = 1
    page_size: int = 20

    def digest(self) -> str:
        """A stable hash of the query, for cache keys."""
        raw = json.dumps(asdict(self), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:40]


# ---------------------------------------------------------------------------- categories


def _all_categories(session: Session) -> dict[int, Category]:
    return {c.id: c for c in session.exec(select(Category)) if c.id is not None}


def _ancestry(categories: dict[int, Category], category_id: int) -> list[int]:
    """Ids from the root down to ``category_id``; stops at a cycle rather than looping."""
    chain: list[int] = []
    seen: set[int] = set()
    current: int | None = category_id
    while current is not None and current in categories and current not in seen:
        seen.add(current)
        chain.append(current)
        current = categories[current].parent_id
    chain.reverse()
    return chain


def _category_public(categories: dict[int, Category], category: Category) -> CategoryPublic:
    assert category.id is not None
    path = [categories[i].slug for i in _ancestry(categories, category.id)]
    return CategoryPublic.model_validate(category, from_attributes=True, update={"path": path})


def list_categories(*, session: Session) -> list[CategoryPublic]:
    """Every category with its slug path from the root, in tree (path) order."""
    categories = _all_categories(session)
    items = [_category_public(categories, c) for c in categories.values()]
    items.sort(key=lambda c: c.path)
    return items


def descendant_ids(*, session: Session, category_id: int) -> set[int]:
    """A category and every category below it (empty when it does not exist)."""
    categories = _all_categories(session)
    if category_id not in categories:
        return set()
    children: dict[int, list[int]] = {}
    for c in categories.values():
        if c.parent_id is not None and c.id is not None:
            children.setdefault(c.parent_id, []).append(c.id)
    found = {category_id}
    stack = [category_id]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _require_category(session: Session, category_id: int, what: str = "category") -> Category:
    category = session.get(Category, category_id) if 1 <= category_id <= INT_MAX else None
    if category is None:
        raise Unprocessable(f"The {what} {category_id} does not exist.", slug="unknown-category")
    return category


def _commit(session: Session, conflict: str) -> None:
    """Commit, turning a unique-constraint race into a 409."""
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(conflict) from exc


def create_category(*, session: Session, data: CategoryCreate) -> CategoryPublic:
    """Add a category under an existing parent (or at the root); 409 on a taken slug."""
    if data.parent_id is not None:
        _require_category(session, data.parent_id, "parent category")
    if session.exec(select(Category.id).where(Category.slug == data.slug)).first() is not None:
        raise Conflict(f"The category slug {data.slug!r} is taken.", slug="duplicate-slug")
    category = Category.model_validate(data)
    session.add(category)
    mark_dirty(session)
    _commit(session, f"The category slug {data.slug!r} is taken.")
    return _category_public(_all_categories(session), category)


def update_category(*, session: Session, category_id: int, data: CategoryUpdate) -> CategoryPublic:
    """Rename or move a category; a move under itself or a descendant is refused (422)."""
    categories = _all_categories(session)
    category = categories.get(category_id)
    if category is None:
        raise NotFound(f"Category {category_id} does not exist.")
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "description"):
        if field in changes and changes[field] is None:
            raise Unprocessable(f"{field} cannot be null.", slug="null-field")
    if "parent_id" in changes and changes["parent_id"] is not None:
        parent_id: int = changes["parent_id"]
        _require_category(session, parent_id, "parent category")
        if category_id in _ancestry(categories, parent_id):
            raise Unprocessable(
                "A category cannot be moved under itself or one of its descendants.",
                slug="category-cycle",
            )
    for field, value in changes.items():
        setattr(category, field, value)
    session.add(category)
    mark_dirty(session)
    session.commit()
    return _category_public(_all_categories(session), category)


# ------------------------------------------------------------------------------ products


def _check_attributes(attributes: dict[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise Unprocessable(f"At most {MAX_ATTRIBUTES} attributes per variant.")
    for key, value in attributes.items():
        if not 1 <= len(key) <= MAX_ATTRIBUTE_KEY or len(value) > MAX_ATTRIBUTE_VALUE:
            raise Unprocessable(
                f"Attribute names are 1-{MAX_ATTRIBUTE_KEY} characters and values at most "
                f"{MAX_ATTRIBUTE_VALUE}.",
                slug="invalid-attribute",
            )


def _check_currency(currency: str, shop_currency: str | None) -> None:
    if shop_currency is not None and currency != shop_currency:
        raise Unprocessable(
            f"This shop sells in {shop_currency}; {currency} prices are not accepted.",
            slug="unsupported-currency",
        )


def _check_new_skus(session: Session, skus: list[str]) -> None:
    if len(set(skus)) != len(skus):
        raise Conflict("The same SKU appears more than once.", slug="duplicate-sku")
    taken = list(session.exec(select(Variant.sku).where(col(Variant.sku).in_(skus))))
    if taken:
        raise Conflict(f"SKU already exists: {', '.join(sorted(taken))}.", slug="duplicate-sku")


def _new_variant(session: Session, product_id: int, data: VariantCreate) -> Variant:
    variant = Variant(
        product_id=product_id,
        sku=data.sku,
        attributes=dict(data.attributes),
        price=quantize(data.price),
        currency=data.currency,
    )
    session.add(variant)
    session.flush()
    inventory.ensure_stock_row(session=session, sku=data.sku, on_hand=data.initial_stock)
    return variant


def get_product(*, session: Session, product_id: int, staff: bool = False) -> Product:
    """A product; anything not active is 404 unless the caller is staff."""
    product = session.get(Product, product_id) if 1 <= product_id <= INT_MAX else None
    if product is None or (not staff and product.status != ProductStatus.active):
        raise NotFound(f"Product {product_id} does not exist.")
    return product


def create_product(
    *, session: Session, data: ProductCreate, shop_currency: str | None = None
) -> Product:
    """Create a product with its variants and their stock rows; 409 on a taken slug or SKU."""
    if data.category_id is not None:
        _require_category(session, data.category_id)
    currencies = {v.currency for v in data.variants}
    if len(currencies) > 1:
        raise Unprocessable("All variants of a product share one currency.", slug="mixed-currency")
    for v in data.variants:
        _check_currency(v.currency, shop_currency)
        _check_attributes(v.attributes)
    if session.exec(select(Product.id).where(Product.slug == data.slug)).first() is not None:
        raise Conflict(f"The product slug {data.slug!r} is taken.", slug="duplicate-slug")
    _check_new_skus(session, [v.sku for v in data.variants])
    product = Product(
        name=data.name,
        slug=data.slug,
        description=data.description,
        category_id=data.category_id,
        status=data.status,
    )
    session.add(product)
    try:
        session.flush()
        assert product.id is not None
        for v in data.variants:
            _new_variant(session, product.id, v)
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("The slug or a SKU is already taken.", slug="duplicate") from exc
    mark_dirty(session)
    _commit(session, "The slug or a SKU is already taken.")
    return product


def update_product(*, session: Session, product_id: int, data: ProductUpdate) -> Product:
    """Change a product's name, description, category or status."""
    product = get_product(session=session, product_id=product_id, staff=True)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "description", "status"):
        if field in changes and changes[field] is None:
            raise Unprocessable(f"{field} cannot be null.", slug="null-field")
    if changes.get("category_id") is not None:
        _require_category(session, changes["category_id"])
    for field, value in changes.items():
        setattr(product, field, value)
    product.updated_at = utcnow()
    session.add(product)
    mark_dirty(session)
    session.commit()
    return product


def archive_product(*, session: Session, product_id: int) -> None:
    """Take a product off sale for good; it stays in the database for past orders."""
    product = get_product(session=session, product_id=product_id, staff=True)
    if product.status == ProductStatus.archived:
        return
    product.status = ProductStatus.archived
    product.updated_at = utcnow()
    session.add(product)
    mark_dirty(session)
    session.commit()


def add_variant(
    *, session: Session, product_id: int, data: VariantCreate, shop_currency: str | None = None
) -> Variant:
    """Add a SKU to a product, with its stock row; 409 when the SKU exists."""
    product = get_product(session=session, product_id=product_id, staff=True)
    _check_currency(data.currency, shop_currency)
    _check_attributes(data.attributes)
    existing = list(session.exec(select(Variant).where(Variant.product_id == product_id)))
    if len(existing) >= MAX_VARIANTS:
        raise Conflict(f"A product has at most {MAX_VARIANTS} variants.", slug="too-many-variants")
    if any(v.currency != data.currency for v in existing):
        raise Unprocessable("All variants of a product share one currency.", slug="mixed-currency")
    _check_new_skus(session, [data.sku])
    try:
        variant = _new_variant(session, product_id, data)
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"SKU {data.sku!r} already exists.", slug="duplicate-sku") from exc
    product.updated_at = utcnow()
    session.add(product)
    mark_dirty(session)
    _commit(session, f"SKU {data.sku!r} already exists.")
    return variant


def update_variant(
    *,
    session: Session,
    variant_id: int,
    data: VariantUpdate,
    shop_currency: str | None = None,
) -> Variant:
    """Change a variant's price, currency, attributes or whether it is sold."""
    variant = session.get(Variant, variant_id) if 1 <= variant_id <= INT_MAX else None
    if variant is None:
        raise NotFound(f"Variant {variant_id} does not exist.")
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None:
            raise Unprocessable(f"{field} cannot be null.", slug="null-field")
    if "currency" in changes:
        _check_currency(changes["currency"], shop_currency)
        others = session.exec(
            select(Variant.currency).where(
                Variant.product_id == variant.product_id, col(Variant.id) != variant.id
            )
        ).all()
        if any(c != changes["currency"] for c in others):
            raise Unprocessable(
                "All variants of a product share one currency.", slug="mixed-currency"
            )
    if "attributes" in changes:
        _check_attributes(changes["attributes"])
    if "price" in changes:
        changes["price"] = quantize(changes["price"])
    for field, value in changes.items():
        setattr(variant, field, value)
    session.add(variant)
    product = session.get(Product, variant.product_id)
    if product is not None:
        product.updated_at = utcnow()
        session.add(product)
    mark_dirty(session)
    session.commit()
    return variant


# --------------------------------------------------------------------- public projections


def variant_public(variant: Variant, available: int) -> VariantPublic:
    """A variant with its availability."""
    return VariantPublic.model_validate(
        variant,
        from_attributes=True,
        update={"available": available, "in_stock": available > 0},
    )


def image_public(storage: Storage, image: ProductImage) -> ImagePublic:
    """An image with URLs from the storage adapter."""
    assert image.id is not None
    return ImagePublic(
        id=image.id,
        url=storage.url(image.key),
        thumb_small_url=storage.url(image.thumb_small_key),
        thumb_large_url=storage.url(image.thumb_large_key),
        width=image.width,
        height=image.height,
        content_type=image.content_type,
    )


def to_public(
    *,
    session: Session,
    storage: Storage,
    products: Sequence[Product],
    staff_view: bool = False,
) -> list[ProductPublic]:
    """Products with variants, availability and images, in three batched queries."""
    ids = [p.id for p in products if p.id is not None]
    if not ids:
        return []
    variant_stmt = select(Variant).where(col(Variant.product_id).in_(ids))
    if not staff_view:
        variant_stmt = variant_stmt.where(col(Variant.is_active).is_(True))
    variants = list(session.exec(variant_stmt.order_by(col(Variant.id))))
    available = inventory.available_by_sku(session=session, skus=[v.sku for v in variants])
    images = session.exec(
        select(ProductImage)
        .where(col(ProductImage.product_id).in_(ids))
        .order_by(col(ProductImage.position), col(ProductImage.id))
    ).all()
    variants_of: dict[int, list[Variant]] = {}
    for v in variants:
        variants_of.setdefault(v.product_id, []).append(v)
    images_of: dict[int, list[ProductImage]] = {}
    for img in images:
        images_of.setdefault(img.product_id, []).append(img)

    result: list[ProductPublic] = []
    for p in products:
        assert p.id is not None
        mine = variants_of.get(p.id, [])
        on_sale = [v for v in mine if v.is_active]
        cheapest = min(on_sale, key=lambda v: v.price, default=None)
        result.append(
            ProductPublic(
                id=p.id,
                name=p.name,
                slug=p.slug,
                description=p.description,
                category_id=p.category_id,
                status=p.status,
                created_at=p.created_at,
                updated_at=p.updated_at,
                variants=[variant_public(v, available.get(v.sku, 0)) for v in mine],
                images=[image_public(storage, img) for img in images_of.get(p.id, [])],
                price_min=quantize(cheapest.price) if cheapest is not None else None,
                currency=cheapest.currency if cheapest is not None else None,
                in_stock=any(available.get(v.sku, 0) > 0 for v in on_sale),
            )
        )
    return result


def product_public(
    *, session: Session, storage: Storage, product_id: int, staff_view: bool = False
) -> ProductPublic:
    """One product as the public (or staff) sees it; 404 when the public may not."""
    product = get_product(session=session, product_id=product_id, staff=staff_view)
    return to_public(session=session, storage=storage, products=[product], staff_view=staff_view)[0]


def variant_with_stock(*, session: Session, variant: Variant) -> VariantPublic:
    """A variant with its current availability."""
    available = inventory.available_by_sku(session=session, skus=[variant.sku])
    return variant_public(variant, available[variant.sku])


# ------------------------------------------------------------------------------- listing


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(session: Session, filters: ProductFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [col(Product.status) == filters.status]
    if filters.category_id is not None:
        ids = descendant_ids(session=session, category_id=filters.category_id)
        conds.append(col(Product.category_id).in_(ids or [-1]))
    if filters.min_price is not None or filters.max_price is not None:
        price_conds: list[ColumnElement[bool]] = [
            col(Variant.product_id) == col(Product.id),
            col(Variant.is_active).is_(True),
        ]
        if filters.min_price is not None:
            price_conds.append(col(Variant.price) >= filters.min_price)
        if filters.max_price is not None:
            price_conds.append(col(Variant.price) <= filters.max_price)
        conds.append(exists().where(*price_conds))
    if filters.in_stock is not None:
        stocked = (
            exists()
            .where(
                col(Variant.product_id) == col(Product.id),
                col(Variant.is_active).is_(True),
                col(StockLevel.sku) == col(Variant.sku),
                col(StockLevel.on_hand) - col(StockLevel.reserved) > 0,
            )
            .correlate(Product)
        )
        conds.append(stocked if filters.in_stock else not_(stocked))
    if filters.q:
        pattern = f"%{_escape_like(filters.q.strip())}%"
        conds.append(col(Product.name).ilike(pattern, escape="\\"))
    return conds


def list_products(*, session: Session, storage: Storage, filters: ProductFilters) -> ProductPage:
    """One page of products matching the filters, in the requested order."""
    if (
        filters.min_price is not None
        and filters.max_price is not None
        and filters.min_price > filters.max_price
    ):
        raise Unprocessable("min_price is greater than max_price.", slug="invalid-price-range")
    conds = _conditions(session, filters)
    total = session.exec(select(func.count()).select_from(Product).where(and_(*conds))).one()

    price_min = (
        select(col(Variant.product_id), func.min(Variant.price).label("price_min"))
        .where(col(Variant.is_active).is_(True))
        .group_by(col(Variant.product_id))
        .subquery()
    )
    order: list[Any]
    if filters.sort == ProductSort.price_asc:
        order = [price_min.c.price_min.asc().nulls_last(), col(Product.id).asc()]
    elif filters.sort == ProductSort.price_desc:
        order = [price_min.c.price_min.desc().nulls_last(), col(Product.id).desc()]
    elif filters.sort == ProductSort.name:
        order = [func.lower(col(Product.name)).asc(), col(Product.id).asc()]
    else:
        order = [col(Product.created_at).desc(), col(Product.id).desc()]
    stmt = (
        select(Product)
        .outerjoin(price_min, price_min.c.product_id == col(Product.id))
        .where(and_(*conds))
        .order_by(*order)
        .offset((filters.page - 1) * filters.page_size)
        .limit(filters.page_size)
    )
    products = list(session.exec(stmt))
    items = to_public(
        session=session,
        storage=storage,
        products=products,
        staff_view=filters.status != ProductStatus.active,
    )
    return ProductPage(items=items, total=total, page=filters.page, page_size=filters.page_size)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def lookup_listing(
    *, cache: JsonCache, filters: ProductFilters, ttl: int
) -> tuple[str | None, bytes | None]:
    """The listing's cache key (None when not cacheable) and its cached bytes, if fresh.

    Bytes go to and from Redis untouched: a hit costs no JSON decoding or re-encoding, and no
    database work, so the route can answer it on the event loop.
    """
    version = cache.version(NAMESPACE)
    if version < 0 or ttl <= 0 or filters.status != ProductStatus.active:
        return None, None
    key = f"{NAMESPACE}:{version}:products:{filters.digest()}"
    return key, cache.get_raw(key)


def build_listing(
    *,
    session: Session,
    storage: Storage,
    cache: JsonCache,
    filters: ProductFilters,
    key: str | None,
    ttl: int,
) -> bytes:
    """Query the listing, serialise it, and cache it under ``key`` when given."""
    page = list_products(session=session, storage=storage, filters=filters)
    body = _json_bytes(page.model_dump(mode="json"))
    if key is not None:
        cache.set_raw(key, body, ttl)
    return body


def cached_categories(*, session: Session, cache: JsonCache, ttl: int) -> tuple[bytes, bool]:
    """The category list as JSON bytes, from Redis when fresh; returns (body, was_cached)."""
    version = cache.version(NAMESPACE)
    key = f"{NAMESPACE}:{version}:categories"
    if version >= 0 and ttl > 0:
        hit = cache.get_raw(key)
        if hit is not None:
            return hit, True
    body = _json_bytes([c.model_dump(mode="json") for c in list_categories(session=session)])
    if version >= 0 and ttl > 0:
        cache.set_raw(key, body, ttl)
    return body, False


# ---------------------------------------------------------------------------------- ETags


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes, so equal content always gets an equal ETag."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def strong_etag(body: bytes) -> str:
    """A strong ETag for exact response bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header matches (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates: Iterable[str] = (t.strip() for t in if_none_match.split(","))
    return any((t[2:] if t.startswith("W/") else t) == etag for t in candidates)
