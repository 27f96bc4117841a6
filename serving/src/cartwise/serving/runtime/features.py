"""Online features for the model services, by feature-service name, that never raise.

The Feast ``FeatureStore`` is built on first use (importing Feast costs seconds and opens the
registry), and the feature-service objects are kept for a minute (the registry's own cache TTL).
A Feast or store failure is logged and answered with the request rows and ``None`` features, so
a model falls back to its no-history path instead of failing the request.

Example::

    online = OnlineFeatures(feature_settings)
    online.get("session_v1", [{"session_id": "s-1"}])
    # [{"session_id": "s-1", "last_products": [12, 7], "view_count": 2, ...}]
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cartwise.features.settings import FeatureSettings

log = logging.getLogger(__name__)

SERVICE_TTL_S = 60.0


class OnlineFeatures:
    """Reads feature services from the Feast online store (SQLite embedded, Redis production)."""

    def __init__(self, settings: FeatureSettings | None = None) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._store: Any = None
        self._services: dict[str, tuple[float, Any]] = {}
        # Feature names seen per service, so a failure can still answer every expected key.
        self._names: dict[str, list[str]] = {}
        self.calls = 0
        self.errors = 0
        self.last_error: str | None = None

    def store(self) -> Any:
        """The Feast FeatureStore, built on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from cartwise.features.settings import get_feature_settings
                    from cartwise.features.store import get_store

                    self._store = get_store(self._settings or get_feature_settings())
        return self._store

    def get(self, service: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One dict per row: the row's keys plus the service's features (None if unknown)."""
        if not rows:
            return []
        self.calls += 1
        try:
            store = self.store()
            feature_service = self._service(store, service)
            table = store.get_online_features(features=feature_service, entity_rows=rows)
            columns: dict[str, list[Any]] = table.to_dict()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{service}: {type(exc).__name__}: {exc}"
            log.warning("online features unavailable, serving without: %s", self.last_error)
            names = self._names.get(service, [])
            return [{**dict.fromkeys(names), **row} for row in rows]
        self._names[service] = [c for c in columns if c not in rows[0]]
        return [{name: values[i] for name, values in columns.items()} for i in range(len(rows))]

    async def aget(self, service: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``get`` in a worker thread, so a slow store does not hold the event loop."""
        return await asyncio.to_thread(self.get, service, rows)

    def status(self) -> dict[str, Any]:
        """Calls, errors and the last error."""
        return {
            "loaded": self._store is not None,
            "calls": self.calls,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def _service(self, store: Any, name: str) -> Any:
        now = time.monotonic()
        cached = self._services.get(name)
        if cached is not None and now - cached[0] < SERVICE_TTL_S:
            return cached[1]
        service = store.get_feature_service(name)
        self._services[name] = (now, service)
        return service
