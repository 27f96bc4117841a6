"""Object storage port with a local-folder adapter and an S3 adapter (boto3)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from cartwise.platform.settings import Settings, get_settings


class Storage(Protocol):
    """Where images, reports, exports and model artifacts go."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store bytes under a key."""

    def get(self, key: str) -> bytes:
        """Read the bytes of a key (KeyError when missing)."""

    def delete(self, key: str) -> None:
        """Remove a key; missing keys are ignored."""

    def exists(self, key: str) -> bool:
        """Whether a key is stored."""

    def url(self, key: str) -> str:
        """A URL a client can fetch the object from."""

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""


def _safe_key(key: str) -> str:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid storage key: {key!r}")
    return "/".join(parts)


class LocalStorage:
    """A folder on disk, served under ``public_url`` by the app."""

    def __init__(self, root: Path, public_url: str = "/media") -> None:
        self.root = root
        self.public_url = public_url.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write atomically (temp file, then rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        """Read a file."""
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return path.read_bytes()

    def delete(self, key: str) -> None:
        """Delete a file."""
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Every file key under ``prefix`` (recursively), sorted; temporary files left out."""
        root = self.root.resolve()
        base = root / _safe_key(prefix) if prefix.strip("/") else root
        if base.is_file():
            return [base.relative_to(root).as_posix()]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )

    def url(self, key: str) -> str:
        """The app-relative URL."""
        return f"{self.public_url}/{_safe_key(key)}"


class S3Storage:
    """Any S3-compatible endpoint through boto3."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        presign_seconds: int = 3600,
        public_url: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.presign_seconds = presign_seconds
        self.public_url = public_url if public_url and public_url.startswith("http") else None
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            # SigV4 explicitly: botocore would presign with SigV2, which AWS refuses for
            # buckets created since 2020.
            config=Config(
                signature_version="s3v4",
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload an object."""
        self.client.put_object(
            Bucket=self.bucket, Key=_safe_key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        """Download an object."""
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=_safe_key(key))
        except ClientError as exc:
            raise KeyError(key) from exc
        body: bytes = obj["Body"].read()
        return body

    def delete(self, key: str) -> None:
        """Delete an object."""
        self.client.delete_object(Bucket=self.bucket, Key=_safe_key(key))

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=_safe_key(key))
        except ClientError:
            return False
        return True

    def url(self, key: str) -> str:
        """A public URL when configured, else a presigned GET URL."""
        key = _safe_key(key)
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/{key}"
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.presign_seconds,
        )
        return url

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (S3 lists by prefix, so recursively), sorted."""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.lstrip("/")):
            keys += [str(item["Key"]) for item in page.get("Contents", [])]
        return sorted(keys)


_storages: dict[str, Storage] = {}
_lock = threading.Lock()


def make_storage(settings: Settings) -> Storage:
    """The adapter chosen by ``CARTWISE_STORAGE_BACKEND``."""
    if settings.storage_backend == "s3":
        secret = settings.s3_secret_access_key
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            presign_seconds=settings.s3_presign_seconds,
            public_url=settings.storage_public_url,
            create_bucket=not settings.is_production,
        )
    return LocalStorage(settings.effective_storage_path, settings.storage_public_url)


def get_storage(settings: Settings | None = None) -> Storage:
    """The cached storage adapter."""
    settings = settings or get_settings()
    key = (
        f"{settings.storage_backend}:{settings.s3_endpoint_url}:{settings.s3_bucket}:"
        f"{settings.effective_storage_path}"
    )
    with _lock:
        storage = _storages.get(key)
        if storage is None:
            storage = make_storage(settings)
            _storages[key] = storage
        return storage
