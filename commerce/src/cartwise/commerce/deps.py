"""FastAPI dependency aliases shared by every commerce router."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import Depends, Header, Path, Request

from cartwise.platform.auth import (
    AdminDep,
    OptionalPrincipalDep,
    PrincipalDep,
    StaffDep,
)
from cartwise.platform.cache import JsonCache
from cartwise.platform.db import SessionDep
from cartwise.platform.settings import Settings
from cartwise.platform.storage import Storage


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.redis
    return client


async def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def _cache(request: Request) -> JsonCache:
    cache: JsonCache = request.app.state.cache
    return cache


# Integer ids in paths: bounded so PostgreSQL's INTEGER never overflows.
IntId = Annotated[int, Path(ge=1, le=2_147_483_647)]
# The header that makes a create-style POST safe to retry (checkout, purchase orders, receipts).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=120,
        description="Makes retries safe: the same key and body are applied once.",
    ),
]

SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[redis.Redis, Depends(_redis)]
StorageDep = Annotated[Storage, Depends(_storage)]
CacheDep = Annotated[JsonCache, Depends(_cache)]

__all__ = [
    "AdminDep",
    "CacheDep",
    "IntId",
    "OptionalPrincipalDep",
    "PrincipalDep",
    "RedisDep",
    "SessionDep",
    "SettingsDep",
    "StaffDep",
    "StorageDep",
]
