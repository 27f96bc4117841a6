"""The S3 storage adapter against a real S3-compatible server (moto in server mode)."""

from __future__ import annotations

import io
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import Account

KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}  # moto accepts any


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free local port, for this module."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket() -> str:
    """A fresh bucket name per test."""
    return f"cartwise-test-{uuid.uuid4().hex[:12]}"


def test_s3_storage_roundtrip(s3_endpoint: str, bucket: str) -> None:
    from cartwise.platform.storage import S3Storage

    storage = S3Storage(bucket, endpoint_url=s3_endpoint, create_bucket=True, **KEYS)
    storage.ensure_bucket()  # idempotent
    key = "reports/2026/drift.html"
    assert storage.exists(key) is False
    with pytest.raises(KeyError):
        storage.get(key)

    storage.put(key, b"<h1>drift</h1>", "text/html")
    assert storage.exists(key) is True
    assert storage.get(key) == b"<h1>drift</h1>"
    head = storage.client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "text/html"

    url = storage.url(key)
    assert url.startswith(f"{s3_endpoint}/{bucket}/reports/2026/drift.html?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url  # SigV4: AWS refuses SigV2 presigning
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.content == b"<h1>drift</h1>"

    storage.delete(key)
    assert storage.exists(key) is False
    assert httpx.get(url).status_code == 404
    storage.delete(key)  # deleting a missing key is fine
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put("../escape", b"x", "text/plain")


def test_both_adapters_list_keys_under_a_prefix(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    from cartwise.platform.storage import LocalStorage, S3Storage

    adapters = [
        S3Storage(bucket, endpoint_url=s3_endpoint, create_bucket=True, **KEYS),
        LocalStorage(tmp_path / "media"),
    ]
    for storage in adapters:
        assert storage.list("logs/") == []
        for key in ("logs/a/date=1/x.parquet", "logs/a/date=2/y.parquet", "logs/b/z.parquet"):
            storage.put(key, b"1", "application/octet-stream")
        storage.put("other/q.txt", b"2", "text/plain")
        assert storage.list("logs/") == [
            "logs/a/date=1/x.parquet",
            "logs/a/date=2/y.parquet",
            "logs/b/z.parquet",
        ]
        assert storage.list("logs/a/date=2/") == ["logs/a/date=2/y.parquet"]
        storage.delete("logs/b/z.parquet")
        assert storage.list("logs/b/") == []
        assert "other/q.txt" in storage.list("")


def test_s3_storage_public_url(s3_endpoint: str, bucket: str) -> None:
    from cartwise.platform.storage import S3Storage

    storage = S3Storage(
        bucket,
        endpoint_url=s3_endpoint,
        create_bucket=True,
        public_url="https://cdn.example.com/media/",
        **KEYS,
    )
    assert storage.url("a/b.png") == "https://cdn.example.com/media/a/b.png"


def test_image_upload_through_the_api_to_s3(
    s3_endpoint: str,
    bucket: str,
    make_settings: Callable[..., Any],
    db_url: str,
    make_user: Callable[..., Account],
) -> None:
    from cartwise.commerce import create_app

    settings = make_settings(
        database_url=db_url,
        storage_backend="s3",
        s3_endpoint_url=s3_endpoint,
        s3_bucket=bucket,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    app = create_app(settings)
    staff = make_user("staff")
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/api/v1/products",
            json={"name": "Print", "slug": "print", "variants": [{"sku": "PR-1", "price": "9"}]},
            headers=staff.headers,
        )
        assert r.status_code == 201, r.text
        pid = r.json()["id"]

        img = Image.new("RGB", (1200, 900), (10, 120, 200))
        buf = io.BytesIO()
        img.save(buf, "JPEG")
        r = client.post(
            f"/api/v1/products/{pid}/images",
            files={"file": ("print.jpg", buf.getvalue(), "image/jpeg")},
            headers=staff.headers,
        )
        assert r.status_code == 201, r.text
        image = r.json()
        product = client.get(f"/api/v1/products/{pid}").json()

    listed = app.state.storage.client.list_objects_v2(Bucket=bucket, Prefix=f"products/{pid}/")
    keys = sorted(obj["Key"] for obj in listed["Contents"])
    assert len(keys) == 3
    assert [k.rsplit(".", 1)[1] for k in keys] == ["jpg", "webp", "webp"]
    assert any(k.endswith("_200.webp") for k in keys)
    assert any(k.endswith("_800.webp") for k in keys)

    expected = {
        "url": ("JPEG", (1200, 900)),
        "thumb_small_url": ("WEBP", (200, 150)),
        "thumb_large_url": ("WEBP", (800, 600)),
    }
    for field, (fmt, size) in expected.items():
        url = image[field]
        assert url.startswith(f"{s3_endpoint}/{bucket}/products/{pid}/")
        fetched = httpx.get(url)
        assert fetched.status_code == 200, field
        got = Image.open(io.BytesIO(fetched.content))
        assert (got.format, got.size) == (fmt, size)
    assert [i["id"] for i in product["images"]] == [image["id"]]
    assert httpx.get(product["images"][0]["thumb_small_url"]).status_code == 200
