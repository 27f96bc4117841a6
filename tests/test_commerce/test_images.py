"""Product images: validation by content, size and pixel count; WebP thumbnails in storage."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, func, select

from tests.conftest import Account, assert_problem


def image_bytes(fmt: str, size: tuple[int, int] = (1600, 800), **save: Any) -> bytes:
    """A real image of the given format and size."""
    mode = "RGBA" if fmt in ("PNG", "WEBP") else "RGB"
    img = Image.new(mode, size, (200, 30, 60, 255) if mode == "RGBA" else (200, 30, 60))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header declares enormous dimensions (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def new_product(client: TestClient, staff: Account, slug: str = "poster") -> int:
    """Create a product and return its id."""
    r = client.post(
        "/api/v1/products",
        json={"name": "Poster", "slug": slug, "variants": [{"sku": slug.upper(), "price": "5"}]},
        headers=staff.headers,
    )
    assert r.status_code == 201, r.text
    pid: int = r.json()["id"]
    return pid


def upload(
    client: TestClient,
    staff: Account,
    pid: int,
    data: bytes,
    filename: str = "photo.png",
    content_type: str = "image/png",
) -> Any:
    """POST an image file as multipart form data."""
    return client.post(
        f"/api/v1/products/{pid}/images",
        files={"file": (filename, data, content_type)},
        headers=staff.headers,
    )


def _images(session: Session) -> int:
    from cartwise.commerce.catalog.models import ProductImage

    session.expire_all()
    return session.exec(select(func.count()).select_from(ProductImage)).one()


def _stored_files(app: FastAPI) -> list[str]:
    root = app.state.storage.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _key(url: str) -> str:
    return url.removeprefix("/media/")


def test_png_upload_makes_webp_thumbnails(client: TestClient, staff: Account, app: FastAPI) -> None:
    pid = new_product(client, staff)
    r = upload(client, staff, pid, image_bytes("PNG", (1600, 800)))
    assert r.status_code == 201, r.text
    image = r.json()
    assert (image["width"], image["height"], image["content_type"]) == (1600, 800, "image/png")
    assert image["url"].startswith(f"/media/products/{pid}/")
    assert image["url"].endswith(".png")

    storage = app.state.storage
    for url, expected in (
        (image["thumb_small_url"], (200, 100)),
        (image["thumb_large_url"], (800, 400)),
    ):
        assert url.endswith(".webp")
        thumb = Image.open(io.BytesIO(storage.get(_key(url))))
        assert thumb.format == "WEBP"
        assert thumb.size == expected
        # The files are served too.
        served = client.get(url)
        assert served.status_code == 200
        assert served.content == storage.get(_key(url))
    original = Image.open(io.BytesIO(storage.get(_key(image["url"]))))
    assert original.format == "PNG"
    assert original.size == (1600, 800)

    product = client.get(f"/api/v1/products/{pid}").json()
    assert product["images"] == [image]


def test_jpeg_upload_strips_exif_and_applies_orientation(
    client: TestClient, staff: Account, app: FastAPI
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif[0x010F] = "SpyCam"  # camera make: must not survive
    data = image_bytes("JPEG", (1000, 500), exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "SpyCam"

    pid = new_product(client, staff)
    r = upload(client, staff, pid, data, "holiday.jpg", "image/jpeg")
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["content_type"] == "image/jpeg"
    assert image["url"].endswith(".jpg")
    assert (image["width"], image["height"]) == (500, 1000)  # upright
    stored = Image.open(io.BytesIO(app.state.storage.get(_key(image["url"]))))
    assert stored.format == "JPEG"
    assert stored.size == (500, 1000)
    assert dict(stored.getexif()) == {}
    large = Image.open(io.BytesIO(app.state.storage.get(_key(image["thumb_large_url"]))))
    assert large.size == (400, 800)


def test_phone_mpo_jpeg_is_a_jpeg(client: TestClient, staff: Account, app: FastAPI) -> None:
    exif = Image.Exif()
    exif[0x8825] = {1: "N"}  # a GPS block: must not survive
    frames = [Image.new("RGB", (640, 480), c) for c in ((1, 2, 3), (4, 5, 6))]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:], exif=exif.tobytes())
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"

    pid = new_product(client, staff)
    r = upload(client, staff, pid, buf.getvalue(), "phone.jpg", "image/jpeg")
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == "image/jpeg"
    stored = Image.open(io.BytesIO(app.state.storage.get(_key(r.json()["url"]))))
    assert stored.format == "JPEG"
    assert dict(stored.getexif()) == {}


@pytest.mark.parametrize(
    ("fmt", "ctype", "ext"),
    [("GIF", "image/gif", "gif"), ("WEBP", "image/webp", "webp")],
)
def test_gif_and_webp_are_accepted(
    client: TestClient, staff: Account, fmt: str, ctype: str, ext: str
) -> None:
    pid = new_product(client, staff)
    # The declared type and name are wrong on purpose: only the content counts.
    r = upload(client, staff, pid, image_bytes(fmt, (300, 150)), "x.bin", "text/plain")
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == ctype
    assert r.json()["url"].endswith(f".{ext}")


def test_animated_gif_keeps_its_frames(client: TestClient, staff: Account, app: FastAPI) -> None:
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pid = new_product(client, staff)
    image = upload(client, staff, pid, buf.getvalue(), "spin.gif", "image/gif").json()
    stored = Image.open(io.BytesIO(app.state.storage.get(_key(image["url"]))))
    assert (stored.format, stored.n_frames) == ("GIF", 3)
    small = Image.open(io.BytesIO(app.state.storage.get(_key(image["thumb_small_url"]))))
    assert (small.format, small.size) == ("WEBP", (200, 200))


def test_small_images_are_not_upscaled(client: TestClient, staff: Account, app: FastAPI) -> None:
    pid = new_product(client, staff)
    image = upload(client, staff, pid, image_bytes("PNG", (120, 60))).json()
    for url in (image["thumb_small_url"], image["thumb_large_url"]):
        assert Image.open(io.BytesIO(app.state.storage.get(_key(url)))).size == (120, 60)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"hello, I am plain text pretending to be a PNG\n" * 10, 415),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", 415),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 415),  # a PNG signature and garbage
        (b"", 422),
    ],
)
def test_non_images_are_refused_and_nothing_is_stored(
    client: TestClient,
    staff: Account,
    app: FastAPI,
    session: Session,
    data: bytes,
    status: int,
) -> None:
    pid = new_product(client, staff)
    before = _stored_files(app)
    assert_problem(upload(client, staff, pid, data, "evil.png", "image/png"), status)
    assert _images(session) == 0
    assert _stored_files(app) == before


def test_tiff_and_bmp_are_refused(client: TestClient, staff: Account) -> None:
    pid = new_product(client, staff)
    for fmt in ("TIFF", "BMP"):
        assert_problem(upload(client, staff, pid, image_bytes(fmt, (10, 10))), 415)


def test_truncated_image_is_422(client: TestClient, staff: Account, session: Session) -> None:
    pid = new_product(client, staff)
    data = image_bytes("JPEG", (400, 400), quality=95)
    assert_problem(upload(client, staff, pid, data[: len(data) // 3], "a.jpg", "image/jpeg"), 422)
    assert _images(session) == 0


def test_decompression_bomb_is_refused(
    client: TestClient, staff: Account, app: FastAPI, session: Session
) -> None:
    pid = new_product(client, staff)
    bomb = png_bomb()
    assert len(bomb) < 200
    body = assert_problem(upload(client, staff, pid, bomb), 422)
    assert body["type"].endswith("image-too-many-pixels")
    # Below Pillow's own limit but above the shop's (40 megapixels by default).
    assert_problem(upload(client, staff, pid, png_bomb(8000, 8000)), 422)
    assert _images(session) == 0
    assert _stored_files(app) == []


@pytest.fixture
def make_client(
    make_settings: Callable[..., Any], db_url: str
) -> Iterator[Callable[..., TestClient]]:
    """A client on an app built with overridden settings (same database)."""
    from cartwise.commerce import create_app

    clients: list[TestClient] = []

    def build(**overrides: Any) -> TestClient:
        c = TestClient(
            create_app(make_settings(database_url=db_url, **overrides)),
            raise_server_exceptions=False,
        )
        c.__enter__()
        clients.append(c)
        return c

    yield build
    for c in clients:
        c.__exit__(None, None, None)


def test_pixel_limit_comes_from_settings(
    client: TestClient, staff: Account, make_client: Callable[..., TestClient]
) -> None:
    pid = new_product(client, staff)
    small = make_client(max_image_pixels=10_000)
    assert upload(small, staff, pid, image_bytes("PNG", (100, 100))).status_code == 201
    assert_problem(upload(small, staff, pid, image_bytes("PNG", (101, 100))), 422)


def test_oversized_upload_is_413(
    client: TestClient, staff: Account, make_client: Callable[..., TestClient], session: Session
) -> None:
    pid = new_product(client, staff)
    tight = make_client(max_upload_bytes=20_000)
    noisy = Image.frombytes("RGB", (200, 200), random.Random(7).randbytes(200 * 200 * 3))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    assert len(buf.getvalue()) > 20_000
    assert_problem(upload(tight, staff, pid, buf.getvalue()), 413)
    assert upload(tight, staff, pid, image_bytes("PNG", (50, 50))).status_code == 201
    assert _images(session) == 1


def test_size_limit_is_checked_by_the_service_too() -> None:
    from cartwise.commerce.catalog.images import process_image
    from cartwise.platform.errors import PayloadTooLarge

    data = image_bytes("PNG", (64, 64))
    with pytest.raises(PayloadTooLarge):
        process_image(data, max_bytes=len(data) - 1, max_pixels=10**6)
    assert process_image(data, max_bytes=len(data), max_pixels=10**6).width == 64


def test_uploads_are_staff_only_and_need_a_product(
    client: TestClient, staff: Account, customer: Account, session: Session
) -> None:
    pid = new_product(client, staff)
    files = {"file": ("a.png", image_bytes("PNG", (10, 10)), "image/png")}
    url = f"/api/v1/products/{pid}/images"
    assert_problem(client.post(url, files=files), 401)
    assert_problem(client.post(url, files=files, headers=customer.headers), 403)
    assert_problem(
        client.post("/api/v1/products/999/images", files=files, headers=staff.headers), 404
    )
    assert_problem(client.post(url, headers=staff.headers), 422)  # no file at all
    assert_problem(client.post(url, data={"file": "not a file"}, headers=staff.headers), 422)
    assert _images(session) == 0


def test_delete_image_removes_files_and_invalidates_listing(
    client: TestClient, staff: Account, app: FastAPI, customer: Account
) -> None:
    pid = new_product(client, staff)
    assert client.get("/api/v1/products").json()["items"][0]["images"] == []
    assert client.get("/api/v1/products").headers["x-cache"] == "hit"

    image = upload(client, staff, pid, image_bytes("PNG", (400, 400))).json()
    listed = client.get("/api/v1/products")
    assert listed.headers["x-cache"] == "miss"
    assert [i["id"] for i in listed.json()["items"][0]["images"]] == [image["id"]]
    assert len(_stored_files(app)) == 3

    url = f"/api/v1/products/{pid}/images/{image['id']}"
    assert_problem(client.delete(url, headers=customer.headers), 403)
    assert_problem(client.delete(f"/api/v1/products/{pid}/images/999", headers=staff.headers), 404)
    assert client.delete(url, headers=staff.headers).status_code == 204
    assert _stored_files(app) == []
    listed = client.get("/api/v1/products")
    assert listed.headers["x-cache"] == "miss"
    assert listed.json()["items"][0]["images"] == []
