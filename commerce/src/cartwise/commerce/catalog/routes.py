"""HTTP routes of the catalog domain: categories, products, variants and images."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from cartwise.commerce.catalog import images, service
from cartwise.commerce.catalog.models import (
    CategoryCreate,
    CategoryPublic,
    CategoryUpdate,
    ImagePublic,
    ProductCreate,
    ProductPage,
    ProductPublic,
    ProductStatus,
    ProductUpdate,
    VariantCreate,
    VariantPublic,
    VariantUpdate,
)
from cartwise.commerce.deps import (
    CacheDep,
    IntId,
    OptionalPrincipalDep,
    SessionDep,
    SettingsDep,
    StaffDep,
    StorageDep,
)
from cartwise.platform.errors import PROBLEM_JSON, PROBLEM_RESPONSES, Forbidden

router = APIRouter(prefix="/api/v1", tags=["catalog"], responses=PROBLEM_RESPONSES)

MAX_PRICE = Decimal("9999999999.99")
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` ETag still matches."}
}
UNSUPPORTED_MEDIA: dict[int | str, dict[str, Any]] = {
    415: {
        "description": "Unsupported Media Type",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}


# ---------------------------------------------------------------------------- categories


@router.get("/categories", response_model=list[CategoryPublic])
def list_categories(session: SessionDep, cache: CacheDep, settings: SettingsDep) -> Response:
    """Every category, flat, each with its slug `path` from the root (tree order)."""
    body, hit = service.cached_categories(
        session=session, cache=cache, ttl=settings.catalog_cache_seconds
    )
    return Response(
        body, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.post("/categories", response_model=CategoryPublic, status_code=status.HTTP_201_CREATED)
def create_category(data: CategoryCreate, session: SessionDep, _: StaffDep) -> CategoryPublic:
    """Add a category (staff); the parent must exist and the slug be free."""
    return service.create_category(session=session, data=data)


@router.patch("/categories/{category_id}", response_model=CategoryPublic)
def update_category(
    category_id: IntId, data: CategoryUpdate, session: SessionDep, _: StaffDep
) -> CategoryPublic:
    """Rename or move a category (staff); moves that would make a cycle are refused."""
    return service.update_category(session=session, category_id=category_id, data=data)


# ------------------------------------------------------------------------------ products


@router.get("/products", response_model=ProductPage)
async def list_products(
    session: SessionDep,
    storage: StorageDep,
    cache: CacheDep,
    settings: SettingsDep,
    principal: OptionalPrincipalDep,
    category: Annotated[
        int | None, Query(ge=1, le=service.INT_MAX, description="Category id (and below).")
    ] = None,
    min_price: Annotated[Decimal | None, Query(ge=0, le=MAX_PRICE)] = None,
    max_price: Annotated[Decimal | None, Query(ge=0, le=MAX_PRICE)] = None,
    in_stock: Annotated[bool | None, Query(description="Only products you can buy now.")] = None,
    q: Annotated[
        str | None, Query(max_length=100, pattern=r"^[^\x00]*$", description="Name search.")
    ] = None,
    sort: service.ProductSort = service.ProductSort.newest,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    product_status: Annotated[
        ProductStatus | None,
        Query(alias="status", description="Staff only: list draft or archived products."),
    ] = None,
) -> Response:
    """Products on sale, filtered, sorted and paginated; cached until the catalog changes."""
    # Async: a cache hit is two Redis reads and no database work, answered on the event
    # loop; only a miss goes to the threadpool for the query.
    not_on_sale = product_status is not None and product_status != ProductStatus.active
    if not_on_sale and (principal is None or not principal.is_staff):
        raise Forbidden("Only staff may list products that are not on sale.")
    filters = service.ProductFilters(
        category_id=category,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        q=q.strip() if q and q.strip() else None,
        status=product_status or ProductStatus.active,
        sort=sort,
        page=page,
        page_size=page_size,
    )
    ttl = settings.catalog_cache_seconds
    key, body = service.lookup_listing(cache=cache, filters=filters, ttl=ttl)
    hit = body is not None
    if body is None:
        body = await run_in_threadpool(
            functools.partial(
                service.build_listing,
                session=session,
                storage=storage,
                cache=cache,
                filters=filters,
                key=key,
                ttl=ttl,
            )
        )
    return Response(
        body, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.post("/products", response_model=ProductPublic, status_code=status.HTTP_201_CREATED)
def create_product(
    data: ProductCreate,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    _: StaffDep,
) -> ProductPublic:
    """Create a product with its variants and starting stock (staff)."""
    product = service.create_product(session=session, data=data, shop_currency=settings.currency)
    assert product.id is not None
    return service.product_public(
        session=session, storage=storage, product_id=product.id, staff_view=True
    )


@router.get("/products/{product_id}", response_model=ProductPublic, responses=NOT_MODIFIED)
def read_product(
    product_id: IntId,
    session: SessionDep,
    storage: StorageDep,
    principal: OptionalPrincipalDep,
    if_none_match: Annotated[str | None, Header(max_length=4096)] = None,
) -> Response:
    """One product with a strong ETag; 304 when `If-None-Match` matches. Staff see archived."""
    staff_view = principal is not None and principal.is_staff
    product = service.product_public(
        session=session, storage=storage, product_id=product_id, staff_view=staff_view
    )
    body = service.canonical_json(product.model_dump(mode="json"))
    etag = service.strong_etag(body)
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache" if staff_view else "public, no-cache",
        "Vary": "Authorization",
    }
    if service.etag_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)


@router.patch("/products/{product_id}", response_model=ProductPublic)
def update_product(
    product_id: IntId,
    data: ProductUpdate,
    session: SessionDep,
    storage: StorageDep,
    _: StaffDep,
) -> ProductPublic:
    """Change a product's name, description, category or status (staff)."""
    service.update_product(session=session, product_id=product_id, data=data)
    return service.product_public(
        session=session, storage=storage, product_id=product_id, staff_view=True
    )


@router.delete("/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
def archive_product(product_id: IntId, session: SessionDep, _: StaffDep) -> None:
    """Archive a product (staff): off sale and hidden, but kept for past orders."""
    service.archive_product(session=session, product_id=product_id)


# ------------------------------------------------------------------------------ variants


@router.post(
    "/products/{product_id}/variants",
    response_model=VariantPublic,
    status_code=status.HTTP_201_CREATED,
)
def add_variant(
    product_id: IntId,
    data: VariantCreate,
    session: SessionDep,
    settings: SettingsDep,
    _: StaffDep,
) -> VariantPublic:
    """Add a SKU to a product, with its starting stock (staff)."""
    variant = service.add_variant(
        session=session, product_id=product_id, data=data, shop_currency=settings.currency
    )
    return service.variant_with_stock(session=session, variant=variant)


@router.patch("/variants/{variant_id}", response_model=VariantPublic)
def update_variant(
    variant_id: IntId,
    data: VariantUpdate,
    session: SessionDep,
    settings: SettingsDep,
    _: StaffDep,
) -> VariantPublic:
    """Change a variant's price, attributes or whether it is sold (staff)."""
    variant = service.update_variant(
        session=session, variant_id=variant_id, data=data, shop_currency=settings.currency
    )
    return service.variant_with_stock(session=session, variant=variant)


# -------------------------------------------------------------------------------- images


@router.post(
    "/products/{product_id}/images",
    response_model=ImagePublic,
    status_code=status.HTTP_201_CREATED,
    responses=UNSUPPORTED_MEDIA,
)
def upload_image(
    product_id: IntId,
    file: UploadFile,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    _: StaffDep,
) -> ImagePublic:
    """Upload a JPEG, PNG, WebP or GIF (staff); it gets 200px and 800px WebP thumbnails."""
    # One byte past the limit is enough to know it is too big, without reading it all.
    data = file.file.read(settings.max_upload_bytes + 1)
    image = images.add_image(
        session=session,
        storage=storage,
        product_id=product_id,
        data=data,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
    )
    return service.image_public(storage, image)


@router.delete("/products/{product_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(
    product_id: IntId, image_id: IntId, session: SessionDep, storage: StorageDep, _: StaffDep
) -> None:
    """Remove an image and its thumbnails (staff)."""
    images.delete_image(session=session, storage=storage, product_id=product_id, image_id=image_id)
