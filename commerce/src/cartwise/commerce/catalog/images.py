"""Product images: validated by content, re-encoded without metadata, WebP thumbnails.

Pillow work is CPU-bound, so the routes calling this are plain ``def`` (FastAPI's threadpool).
Nothing here trusts the file name or the declared content type: the bytes decide.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import func
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.cache import mark_dirty
from cartwise.commerce.catalog.models import ProductImage
from cartwise.commerce.catalog.service import get_product
from cartwise.platform.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    Problem,
    Unprocessable,
)
from cartwise.platform.storage import Storage
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

# Pillow format name -> (file extension, content type).
ALLOWED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
THUMB_SMALL = 200
THUMB_LARGE = 800
MAX_IMAGES_PER_PRODUCT = 50


class UnsupportedImage(Problem):
    """The upload is not a JPEG, PNG, WebP or GIF image."""

    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """A validated image: the re-encoded original and its WebP thumbnails by size."""

    format: str
    extension: str
    content_type: str
    width: int
    height: int
    original: bytes
    thumbnails: dict[int, bytes] = field(default_factory=dict)


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info


def _webp_thumbnail(img: Image.Image, size: int) -> bytes:
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, "WEBP", quality=82, method=4)
    return buf.getvalue()


def _reencode(img: Image.Image, fmt: str) -> bytes:
    """Write the image again without EXIF/XMP/text chunks (keeping the colour profile)."""
    buf = io.BytesIO()
    icc = img.info.get("icc_profile")
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        out = img if img.mode in ("RGB", "L", "CMYK") else img.convert("RGB")
        out.save(buf, "JPEG", quality=90, optimize=True, **extra)
    elif fmt == "PNG":
        img.save(buf, "PNG", **extra)
    else:
        img.save(buf, "WEBP", quality=90, **extra)
    return buf.getvalue()


def process_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ProcessedImage:
    """Validate an upload by its content and size, and make its WebP thumbnails.

    413 when the bytes exceed ``max_bytes``; 415 when Pillow does not recognise a JPEG, PNG,
    WebP or GIF; 422 when the declared dimensions exceed ``max_pixels`` (a decompression
    bomb) or the image is corrupt.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image exceeds {max_bytes} bytes.")
    if not data:
        raise Unprocessable("The uploaded file is empty.", slug="empty-upload")
    try:
        img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError as exc:
        raise Unprocessable("The image has too many pixels.", slug="image-too-many-pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedImage("Upload a JPEG, PNG, WebP or GIF image.") from exc
    with img:
        # Phones write JPEGs with extra frames, which Pillow's JPEG opener reports as MPO.
        fmt = "JPEG" if img.format == "MPO" else (img.format or "")
        if fmt not in ALLOWED_FORMATS:
            raise UnsupportedImage("Upload a JPEG, PNG, WebP or GIF image.")
        width, height = img.size
        # Checked from the header, before any pixel is decoded.
        if width < 1 or height < 1 or width * height > max_pixels:
            raise Unprocessable(
                f"The image is {width}x{height}; at most {max_pixels} pixels are accepted.",
                slug="image-too-many-pixels",
            )
        animated = fmt in ("GIF", "WEBP") and bool(getattr(img, "is_animated", False))
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
            target = "RGBA" if _has_alpha(upright) else "RGB"
            frame = upright if upright.mode == target else upright.convert(target)
            thumbnails = {size: _webp_thumbnail(frame, size) for size in (THUMB_SMALL, THUMB_LARGE)}
            # Animated images and GIFs (which carry no EXIF) are kept as uploaded; stills are
            # re-encoded so camera metadata (location, serial numbers) never leaves the shop.
            original = data if animated or fmt == "GIF" else _reencode(upright, fmt)
        except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            raise Unprocessable(
                "The image is corrupt or cannot be decoded.", slug="corrupt-image"
            ) from exc
    extension, content_type = ALLOWED_FORMATS[fmt]
    return ProcessedImage(
        format=fmt,
        extension=extension,
        content_type=content_type,
        width=frame.width,
        height=frame.height,
        original=original,
        thumbnails=thumbnails,
    )


def _put_all(storage: Storage, objects: list[tuple[str, bytes, str]]) -> None:
    done: list[str] = []
    try:
        for key, data, content_type in objects:
            storage.put(key, data, content_type)
            done.append(key)
    except Exception as exc:
        log.exception("image upload to storage failed")
        _delete_quietly(storage, done)
        raise Problem(
            "The image could not be stored; try again.",
            status=503,
            title="Storage unavailable",
            slug="storage-unavailable",
        ) from exc


def _delete_quietly(storage: Storage, keys: list[str]) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            log.warning("could not delete stored object %s", key, exc_info=True)


def add_image(
    *,
    session: Session,
    storage: Storage,
    product_id: int,
    data: bytes,
    max_bytes: int,
    max_pixels: int,
) -> ProductImage:
    """Validate an upload, store it and its thumbnails, and attach it to a product."""
    product = get_product(session=session, product_id=product_id, staff=True)
    count = session.exec(
        select(func.count()).select_from(ProductImage).where(ProductImage.product_id == product_id)
    ).one()
    if count >= MAX_IMAGES_PER_PRODUCT:
        raise Conflict(
            f"A product has at most {MAX_IMAGES_PER_PRODUCT} images.", slug="too-many-images"
        )
    processed = process_image(data, max_bytes=max_bytes, max_pixels=max_pixels)

    stem = f"products/{product_id}/{uuid.uuid4().hex}"
    key = f"{stem}.{processed.extension}"
    small_key = f"{stem}_{THUMB_SMALL}.webp"
    large_key = f"{stem}_{THUMB_LARGE}.webp"
    objects = [
        (key, processed.original, processed.content_type),
        (small_key, processed.thumbnails[THUMB_SMALL], "image/webp"),
        (large_key, processed.thumbnails[THUMB_LARGE], "image/webp"),
    ]
    _put_all(storage, objects)

    last = session.exec(
        select(func.max(col(ProductImage.position))).where(ProductImage.product_id == product_id)
    ).one()
    image = ProductImage(
        product_id=product_id,
        key=key,
        thumb_small_key=small_key,
        thumb_large_key=large_key,
        content_type=processed.content_type,
        width=processed.width,
        height=processed.height,
        position=(last + 1) if last is not None else 0,
    )
    product.updated_at = utcnow()
    session.add(image)
    session.add(product)
    mark_dirty(session)
    try:
        session.commit()
    except Exception:
        session.rollback()
        _delete_quietly(storage, [k for k, _, _ in objects])
        raise
    return image


def delete_image(*, session: Session, storage: Storage, product_id: int, image_id: int) -> None:
    """Detach an image from a product and remove its stored files."""
    product = get_product(session=session, product_id=product_id, staff=True)
    image = session.get(ProductImage, image_id)
    if image is None or image.product_id != product_id:
        raise NotFound(f"Image {image_id} of product {product_id} does not exist.")
    keys = [image.key, image.thumb_small_key, image.thumb_large_key]
    product.updated_at = utcnow()
    session.add(product)
    session.delete(image)
    mark_dirty(session)
    session.commit()
    # Files go after the commit: a failed commit must not leave a row pointing at nothing.
    _delete_quietly(storage, keys)
