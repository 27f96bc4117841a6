"""Invalidation of the cached public catalog listing.

The listing is cached in Redis under keys built from the ``catalog`` namespace version. Any
write that can change what the listing shows (products, variants, categories, images and
every stock change, including reservations made by checkout) marks its session dirty; when
that session commits, the namespace version is bumped. Bumping after the commit (not before)
means a reader can never cache pre-commit data under the new version.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cartwise.platform.cache import JsonCache

NAMESPACE = "catalog"
_DIRTY = "cartwise.catalog_dirty"

_caches: weakref.WeakKeyDictionary[Engine, JsonCache] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register(engine: Engine, cache: JsonCache) -> None:
    """Bump this cache's catalog version whenever a dirty session on ``engine`` commits."""
    with _lock:
        _caches[engine] = cache


def mark_dirty(session: Session) -> None:
    """Note that this transaction changes what the public catalog shows."""
    session.info[_DIRTY] = True


def invalidate(cache: JsonCache) -> None:
    """Invalidate every cached listing now."""
    cache.bump(NAMESPACE)


def _cache_for(session: Session) -> JsonCache | None:
    bind = session.bind
    if not isinstance(bind, Engine):
        return None
    with _lock:
        return _caches.get(bind)


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session: Session) -> None:
    if session.info.pop(_DIRTY, False):
        cache = _cache_for(session)
        if cache is not None:
            invalidate(cache)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_DIRTY, None)
