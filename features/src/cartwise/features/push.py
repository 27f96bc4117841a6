"""Push fresh session features to Feast's online store after each stored batch of events.

The events API stores a batch, commits, and then hands the new rows to its sinks. This sink
only notes which sessions changed and returns; a background thread wakes within
``interval`` seconds, recomputes those sessions' features from the database (the same values
as the ``session_features`` table of :mod:`cartwise.features.tables`) and pushes them through
the ``session_events_push`` source (straight to the provider's online write, see
:func:`_online_rows`). The database stays the source of truth: if Feast or Redis
is down the push is logged and dropped, and the next refresh rebuilds the features from the
stored events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cartwise.commerce.catalog.models import Variant
from cartwise.commerce.events.models import ShopperEvent
from cartwise.features.settings import SESSION_LAST_N, SESSION_PUSH_SOURCE, FeatureSettings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Sessions pushed per online write.
MAX_SESSIONS_PER_PUSH = 500
VIEWS_REFRESH_SECONDS = 60.0


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def session_features(engine: Engine, session_ids: Iterable[str]) -> pd.DataFrame:
    """The current features of the sessions, computed from their stored events."""
    ids = sorted(set(session_ids))
    columns = [
        "session_id",
        "event_timestamp",
        "last_products",
        "view_count",
        "search_count",
        "event_count",
        "cart_value",
    ]
    if not ids:
        return pd.DataFrame(columns=columns)
    ev = ShopperEvent.__table__  # type: ignore[attr-defined]
    var = Variant.__table__  # type: ignore[attr-defined]
    prices = (
        select(var.c.product_id, func.min(var.c.price).label("price"))
        .group_by(var.c.product_id)
        .subquery()
    )
    stmt = (
        select(ev.c.session_id, ev.c.type, ev.c.product_id, ev.c.received_at, prices.c.price)
        .outerjoin(prices, prices.c.product_id == ev.c.product_id)
        .where(ev.c.session_id.in_(ids))
        .order_by(ev.c.session_id, ev.c.received_at, ev.c.id)
    )
    state: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for sid, kind, product_id, received_at, price in conn.execute(stmt):
            s = state.setdefault(
                sid, {"trail": [], "views": 0, "searches": 0, "events": 0, "cart": 0.0, "ts": None}
            )
            s["events"] += 1
            s["ts"] = received_at
            if kind in ("view", "click") and product_id is not None:
                s["trail"].append(int(product_id))
            if kind == "view":
                s["views"] += 1
            elif kind == "search":
                s["searches"] += 1
            elif kind == "add_to_cart":
                s["cart"] += float(price or 0)
            elif kind == "remove_from_cart":
                s["cart"] -= float(price or 0)
    rows = [
        {
            "session_id": sid,
            "event_timestamp": _as_utc(s["ts"]),
            "last_products": list(reversed(s["trail"]))[:SESSION_LAST_N],
            "view_count": s["views"],
            "search_count": s["searches"],
            "event_count": s["events"],
            "cart_value": max(round(s["cart"], 2), 0.0),
        }
        for sid, s in state.items()
    ]
    return pd.DataFrame(rows, columns=columns)


class SessionPushSink:
    """An event sink that pushes the touched sessions' features, off the request path."""

    def __init__(
        self, settings: FeatureSettings, engine: Engine, *, interval: float = 0.05
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.interval = interval
        # Insertion-ordered, so the oldest sessions go first and none starves.
        self._pending: dict[str, None] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._store: FeatureStore | None = None
        self._views: list[Any] | None = None
        self._views_at = 0.0
        self.pushed = 0
        self.failures = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="feast-session-push", daemon=True)
        self._thread.start()

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        """Note the sessions of newly stored events; the worker pushes them shortly."""
        sessions = {r["session_id"] for r in rows if r.get("session_id")}
        if not sessions:
            return
        with self._cond:
            self._pending.update(dict.fromkeys(sessions))
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything noted so far has been pushed (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Push what is pending and stop the worker."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _store_or_none(self) -> FeatureStore | None:
        if self._store is None:
            registry = self.settings.registry_url
            if "://" not in registry and not Path(registry).exists():
                # Nothing applied yet (no refresh has run): nowhere to push, and no reason to
                # load Feast into every API replica.
                return None
            from cartwise.features.store import get_store

            self._store = get_store(self.settings)
        return self._store

    def _run(self) -> None:
        try:
            # Load Feast and the registry now, not on the first event (seconds of imports).
            store = self._store_or_none()
            if store is not None:
                self._push_views(store)
        except Exception:
            log.warning("feature store not ready for session pushes yet", exc_info=True)
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                self._busy = True
            # Let a burst of batches coalesce into one push per session.
            time.sleep(self.interval)
            with self._cond:
                batch = list(self._pending)[:MAX_SESSIONS_PER_PUSH]
                for sid in batch:
                    del self._pending[sid]
            try:
                self.push(batch)
            except Exception:
                self.failures += 1
                log.warning(
                    "session feature push failed for %d sessions", len(batch), exc_info=True
                )
            finally:
                with self._cond:
                    self._busy = bool(self._pending)
                    self._cond.notify_all()

    def push(self, session_ids: list[str]) -> int:
        """Recompute and push the sessions now; returns how many were pushed."""
        store = self._store_or_none()
        if store is None:
            self.dropped += len(session_ids)
            return 0
        frame = session_features(self.engine, session_ids)
        if frame.empty:
            return 0
        views = self._push_views(store)
        rows = _online_rows(frame)
        provider = store._get_provider()
        for view in views:
            provider.online_write_batch(store.config, view, rows, progress=None)
        self.pushed += len(frame)
        return len(frame)

    def _push_views(self, store: FeatureStore) -> list[Any]:
        """The feature views fed by the push source, re-read from the registry once a minute."""
        now = time.monotonic()
        if self._views is None or now - self._views_at > VIEWS_REFRESH_SECONDS:
            views = [
                fv
                for fv in store.list_feature_views()
                if fv.stream_source is not None and fv.stream_source.name == SESSION_PUSH_SOURCE
            ]
            if not views:
                raise LookupError(f"no feature view reads the push source {SESSION_PUSH_SOURCE}")
            self._views, self._views_at = views, now
        return self._views


def _online_rows(frame: pd.DataFrame) -> list[Any]:
    """Session rows as the online store's (entity key, values, event time) records.

    This is what ``FeatureStore.push`` hands the provider, built directly: Feast's own push
    spends ~100 ms a call re-reading the registry and converting through pandas and Arrow,
    which on 2 cores would starve the API worker it shares the GIL with.
    """
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Int64List, Value

    rows: list[Any] = []
    for r in frame.itertuples(index=False):
        key = EntityKey(join_keys=["session_id"], entity_values=[Value(string_val=r.session_id)])
        values = {
            "last_products": Value(int64_list_val=Int64List(val=list(r.last_products))),
            "view_count": Value(int64_val=int(r.view_count)),
            "search_count": Value(int64_val=int(r.search_count)),
            "event_count": Value(int64_val=int(r.event_count)),
            "cart_value": Value(double_val=float(r.cart_value)),
        }
        rows.append((key, values, pd.Timestamp(r.event_timestamp).to_pydatetime(), None))
    return rows


def install(app: FastAPI, settings: FeatureSettings) -> SessionPushSink | None:
    """Register the session push on a commerce app (when enabled); closed on app shutdown."""
    from cartwise.commerce.events.service import add_sink
    from cartwise.platform.db import get_engine

    if not settings.feast_push_enabled:
        return None
    sink = SessionPushSink(settings, get_engine(settings))
    add_sink(app, sink)
    app.state.session_push = sink
    app.router.on_shutdown.append(sink.close)
    return sink
