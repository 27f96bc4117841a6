"""What every model service shares: settings, the model holder, the prediction cache, features.

A service is a plain class (run in-process by ``LocalMLClient`` or as a Serve deployment). It
builds nothing at import or construction time: the settings, the :class:`ModelHolder`, the
:class:`PredictionCache`, the Feast client and the database engine are created on first use, so
an app that never calls a model never loads one.

Blocking work (the first model load, MLflow, Feast, Redis, SQL, MiniLM) runs in a worker thread
(``asyncio.to_thread``); numpy scoring on a catalogue of a few thousand items takes well under a
millisecond and, where nothing else blocks, stays inline (suggest).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from cartwise.features.settings import FeatureSettings
    from cartwise.models.monitoring.feature_log import FeatureLogger
    from cartwise.models.settings import ModelSettings
    from cartwise.serving.runtime.cache import PredictionCache
    from cartwise.serving.runtime.features import OnlineFeatures
    from cartwise.serving.runtime.holder import LoadedModel, ModelHolder

log = logging.getLogger(__name__)

# The Serve ``user_config`` every service understands (see ``reconfigure``).
DEFAULT_CONFIG: dict[str, Any] = {
    "alias": "champion",
    "reload_interval_s": 10.0,
    "cache_ttl_s": 60.0,
    # How often the catalogue snapshot (active products, prices, live stock) is re-read.
    "catalog_refresh_s": 60.0,
}
# A variant is an alias, a version ("v3") or a baseline served without the model.
_VARIANT = re.compile(r"^(v[1-9][0-9]{0,8}|[A-Za-z][A-Za-z0-9_-]{0,63})$")
MAX_K = 100
# Set while a service warms itself up: its synthetic calls are not live traffic to log.
_NOT_LIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("cartwise_not_live", default=False)


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int within bounds; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {out}")
    return out


def check_k(k: Any, *, maximum: int = MAX_K) -> int:
    """A result count between 1 and ``maximum``."""
    return check_int(k, "k", minimum=1, maximum=maximum)


def check_ids(values: Any, name: str, *, limit: int = 10_000) -> list[int]:
    """A list of positive integer ids (``ValueError`` otherwise)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray | set):
        raise ValueError(f"{name} must be a list of ids, got {type(values).__name__}")
    items = list(values)
    if len(items) > limit:
        raise ValueError(f"{name} holds {len(items)} ids; at most {limit}")
    return [check_int(v, f"{name} entry", minimum=1) for v in items]


def parse_variant(variant: Any, baselines: Sequence[str] = ()) -> str | None:
    """None for the champion, else the checked variant: an alias, ``v<N>`` or a baseline.

    ``baselines`` are the ``baseline:<name>`` variants the service can serve without a model.
    """
    if variant is None or variant == "champion":
        return None
    if isinstance(variant, str) and variant in baselines:
        return variant
    if not isinstance(variant, str) or not _VARIANT.match(variant):
        known = ", ".join(["champion", "challenger", "v<N>", *baselines])
        raise ValueError(f"variant must be one of {known} (or another alias), got {variant!r}")
    return variant


def jsonable(value: Any) -> Any:
    """Plain JSON types from numpy/pandas values; NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str):
        return value
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def read_catalog(engine: Engine) -> pd.DataFrame:
    """Every product: id, name, description, category (name and id), status, price, stock.

    ``price`` is the lowest active variant price and ``available`` the on-hand minus reserved
    units over the product's active variants (live stock, for facets and new-item placement).
    """
    import pandas as pd
    from sqlalchemy import func, select

    from cartwise.commerce.catalog.models import Category, Product, Variant
    from cartwise.commerce.inventory.models import StockLevel

    product = Product.__table__  # type: ignore[attr-defined]
    category = Category.__table__  # type: ignore[attr-defined]
    variant = Variant.__table__  # type: ignore[attr-defined]
    stock = StockLevel.__table__  # type: ignore[attr-defined]
    per_product = (
        select(
            variant.c.product_id,
            func.min(variant.c.price).label("price"),
            func.coalesce(func.sum(stock.c.on_hand - stock.c.reserved), 0).label("available"),
        )
        .select_from(variant.outerjoin(stock, stock.c.sku == variant.c.sku))
        .where(variant.c.is_active.is_(True))
        .group_by(variant.c.product_id)
        .subquery()
    )
    stmt = (
        select(
            product.c.id.label("product_id"),
            product.c.name,
            product.c.description,
            product.c.status,
            product.c.category_id,
            category.c.name.label("category"),
            per_product.c.price,
            per_product.c.available,
        )
        .select_from(
            product.outerjoin(category, category.c.id == product.c.category_id).outerjoin(
                per_product, per_product.c.product_id == product.c.id
            )
        )
        .order_by(product.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    columns = [
        "product_id",
        "name",
        "description",
        "status",
        "category_id",
        "category",
        "price",
        "available",
    ]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce").astype("float64")
    frame["available"] = pd.to_numeric(frame["available"], errors="coerce").fillna(0).astype(int)
    frame["status"] = frame["status"].astype(str)
    return frame


class ServiceBase:
    """Lazy settings, model holder, prediction cache, online features and catalogue snapshot."""

    area: ClassVar[str] = ""
    # Area-specific user_config keys and their defaults (merged over DEFAULT_CONFIG).
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, settings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        self._overrides = dict(settings or {})
        self.config: dict[str, Any] = {**DEFAULT_CONFIG, **self.defaults}
        self._check_config(config or {})
        self.config.update(config or {})
        self._lock = threading.RLock()
        self._feature_settings: FeatureSettings | None = None
        self._model_settings: ModelSettings | None = None
        self._holder: ModelHolder | None = None
        self._cache: PredictionCache | None = None
        self._features: OnlineFeatures | None = None
        # Refs whose model was loaded once: from then on ModelHolder.get does not block.
        self._warm: set[str] = set()
        # (name, version) already prepared (warm-up, derived state).
        self._prepared: set[tuple[str, int]] = set()
        self._preparing: set[tuple[str, int]] = set()
        self._prepare_lock = threading.Lock()
        self._loading: dict[str, concurrent.futures.Future[LoadedModel]] = {}
        self._catalog: pd.DataFrame | None = None
        self._catalog_at = 0.0
        self._catalog_busy = False
        self._feature_logger: FeatureLogger | None = None
        self._feature_logger_built = False
        self.started_at = time.time()

    # ------------------------------------------------------------------ lazy parts

    @property
    def settings(self) -> FeatureSettings:
        """Feature (and platform) settings: the environment plus the overrides."""
        if self._feature_settings is None:
            from cartwise.features.settings import FeatureSettings, get_feature_settings

            self._feature_settings = (
                FeatureSettings(**self._overrides) if self._overrides else get_feature_settings()
            )
        return self._feature_settings

    @property
    def model_settings(self) -> ModelSettings:
        """Model settings (MLflow URIs): the environment plus the overrides."""
        if self._model_settings is None:
            from cartwise.models.settings import ModelSettings, get_model_settings

            self._model_settings = (
                ModelSettings(**self._overrides) if self._overrides else get_model_settings()
            )
        return self._model_settings

    @property
    def model_name(self) -> str:
        """The registered model this service serves."""
        from cartwise.models.areas import spec

        return spec(self.area).model_name

    @property
    def holder(self) -> ModelHolder:
        """The model holder (built on first use)."""
        with self._lock:
            if self._holder is None:
                from cartwise.serving.runtime.holder import ModelHolder

                self._holder = ModelHolder(
                    self.model_name,
                    alias=str(self.config["alias"]),
                    reload_interval_s=float(self.config["reload_interval_s"]),
                    settings=self.model_settings,
                )
            return self._holder

    @property
    def cache(self) -> PredictionCache:
        """The prediction cache (Redis, or in-process without a Redis URL)."""
        with self._lock:
            if self._cache is None:
                from cartwise.serving.runtime.cache import cache_from_settings

                self._cache = cache_from_settings(
                    self.settings, ttl_s=float(self.config["cache_ttl_s"])
                )
            return self._cache

    @property
    def features(self) -> OnlineFeatures:
        """The online feature reader (Feast loads on its first call)."""
        with self._lock:
            if self._features is None:
                from cartwise.serving.runtime.features import OnlineFeatures

                self._features = OnlineFeatures(self.settings)
            return self._features

    @property
    def feature_logger(self) -> FeatureLogger | None:
        """The feature log of what this service scores (None when ``feature_log_enabled`` is off
        or the logger cannot be built)."""
        if self._feature_logger_built:
            return self._feature_logger
        with self._lock:
            if not self._feature_logger_built:
                try:
                    if self.model_settings.feature_log_enabled:
                        from cartwise.models.monitoring.feature_log import FeatureLogger

                        self._feature_logger = FeatureLogger(
                            self.area, self.model_name, self.model_settings
                        )
                except Exception:
                    log.warning("%s: no feature log", self.area, exc_info=True)
                self._feature_logger_built = True
            return self._feature_logger

    def log_features(
        self,
        loaded: LoadedModel,
        rows: Sequence[Mapping[str, Any]],
        predictions: Sequence[float],
        keys: Sequence[str | int | None],
    ) -> None:
        """Append scored rows to the feature log (a list append; never raises, never waits)."""
        if _NOT_LIVE.get():
            return
        try:
            logger = self.feature_logger
            if logger is not None:
                logger.log(loaded.version, rows, predictions, keys)
        except Exception:
            log.warning("%s: feature logging failed", self.area, exc_info=True)

    def close(self) -> None:
        """Write what the feature log still buffers (a replica's shutdown)."""
        logger = self._feature_logger
        if logger is not None:
            try:
                logger.close()
            except Exception:
                log.warning("%s: the last feature-log flush failed", self.area, exc_info=True)

    @property
    def engine(self) -> Engine:
        """The commerce database engine (read-only use)."""
        from cartwise.platform.db import get_engine

        return get_engine(self.settings)

    # ------------------------------------------------------------------ models

    async def model(self, variant: str | None = None) -> LoadedModel:
        """The loaded model for a variant (None: the champion); raises ModelUnavailable."""
        ref = None if variant is None or variant.startswith("baseline:") else variant
        key = ref or "champion"
        if key in self._warm:
            loaded = self.holder.get(ref)  # loaded once: never waits on MLflow again
        else:
            with self._lock:
                pending = self._loading.get(key)
                if pending is None or pending.done():
                    # One loading thread per ref, shared by every caller: requests arriving
                    # during a load (seconds) wait on it instead of each taking a pool thread,
                    # and a caller's deadline does not abandon the load.
                    pending = concurrent.futures.Future()
                    self._loading[key] = pending
                    threading.Thread(
                        target=self._load,
                        args=(pending, ref, key),
                        name=f"{self.area}-load",
                        daemon=True,
                    ).start()
            loaded = await asyncio.wrap_future(pending)
        marker = (loaded.name, loaded.version)
        if marker not in self._prepared and marker not in self._preparing:
            # A hot reload: keep answering (un-warmed) while the new version warms up.
            self._preparing.add(marker)
            threading.Thread(
                target=self._prepare_once,
                args=(loaded,),
                name=f"{self.area}-prepare",
                daemon=True,
            ).start()
        return loaded

    def _load(
        self, pending: concurrent.futures.Future[LoadedModel], ref: str | None, key: str
    ) -> None:
        try:
            loaded = self.holder.get(ref)
            if not self._prepared:
                # Nothing served yet: the first answer waits for the warm-up too.
                self._prepare_once(loaded)
            self._warm.add(key)
        except BaseException as exc:
            pending.set_exception(exc)
        else:
            pending.set_result(loaded)

    def _prepare_once(self, loaded: LoadedModel) -> None:
        # Its own lock: a warm-up takes seconds and must not hold up the holder or the cache.
        with self._prepare_lock:
            marker = (loaded.name, loaded.version)
            if marker in self._prepared:
                return
            try:
                self.prepare(loaded)
            except Exception:
                # A failed warm-up only makes the first requests slower.
                log.warning("preparing %s v%s failed", *marker, exc_info=True)
            from cartwise.serving.runtime.heap import freeze_heap

            # The version and what its warm-up built stay for good: out of the collector.
            freeze_heap()
            self._prepared.add(marker)
            self._preparing.discard(marker)

    def prepare(self, loaded: LoadedModel) -> None:
        """Per-version warm-up run once off the request path (override in a service)."""

    async def cached(
        self,
        loaded: LoadedModel,
        method: str,
        key: Mapping[str, Any],
        compute: Callable[[], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool]:
        """``compute()`` through the prediction cache (keyed by the model version)."""
        return await asyncio.to_thread(self.cache.get_or_compute, loaded, method, key, compute)

    async def online(self, service: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Online features of a Feast feature service for the entity rows (never raises)."""
        return await asyncio.to_thread(self.features.get, service, rows)

    # ------------------------------------------------------------------ catalogue

    def load_catalog(self) -> pd.DataFrame | None:
        """Re-read the catalogue snapshot now (blocking); None if the database is unreachable."""
        try:
            frame = read_catalog(self.engine)
        except Exception:
            log.warning("reading the catalogue failed", exc_info=True)
            with self._lock:
                self._catalog_busy = False
                self._catalog_at = time.monotonic()
            return self._catalog
        with self._lock:
            self._catalog, self._catalog_at, self._catalog_busy = frame, time.monotonic(), False
        self.catalog_loaded(frame)
        return frame

    def catalog_loaded(self, frame: pd.DataFrame) -> None:
        """Hook run after each catalogue refresh, in the refreshing thread."""

    async def catalog(self) -> pd.DataFrame | None:
        """The catalogue snapshot; loaded on first use, then refreshed in the background."""
        if self._catalog is None and not self._catalog_busy:
            return await asyncio.to_thread(self.load_catalog)
        self._refresh_catalog_if_stale()
        return self._catalog

    def _refresh_catalog_if_stale(self) -> None:
        with self._lock:
            stale = time.monotonic() - self._catalog_at > float(self.config["catalog_refresh_s"])
            if not stale or self._catalog_busy:
                return
            self._catalog_busy = True
        threading.Thread(target=self.load_catalog, name=f"{self.area}-catalog", daemon=True).start()

    # ------------------------------------------------------------------ Serve hooks

    def _check_config(self, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError("config must be a mapping")
        known = {*DEFAULT_CONFIG, *self.defaults}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown {self.area} config keys {unknown}; known: {sorted(known)}")

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply a Serve ``user_config`` (alias, reload interval, cache TTL, area options)."""
        self._check_config(config or {})
        with self._lock:
            old_alias = self.config["alias"]
            self.config.update(config or {})
            if self._holder is not None:
                self._holder.reconfigure(
                    alias=str(self.config["alias"]),
                    reload_interval_s=float(self.config["reload_interval_s"]),
                )
            if self._cache is not None:
                self._cache.ttl_s = float(self.config["cache_ttl_s"])
            if self.config["alias"] != old_alias:
                # The champion ref now names another alias: let its first load block again.
                self._warm.discard("champion")

    async def version(self) -> dict[str, Any]:
        """The champion version answering now (``{"model": {...}}``); raises ModelUnavailable.

        The ingress asks about once a second to know which reused answers are current; the
        call also lets the holder check its alias when no other request reaches the replica.
        """
        loaded = await self.model(None)
        return {"model": loaded.info()}

    async def status(self) -> dict[str, Any]:
        """Model name/version/alias and load time, cache hits/misses, features, config."""
        holder = await asyncio.to_thread(self.holder.status)
        cache = await asyncio.to_thread(self._cache.stats) if self._cache is not None else None
        out: dict[str, Any] = jsonable(
            {
                "area": self.area,
                "model": holder,
                "cache": cache,
                "features": None if self._features is None else self._features.status(),
                "config": dict(self.config),
                "catalog_products": None if self._catalog is None else len(self._catalog),
                "feature_log": (
                    None if self._feature_logger is None else self._feature_logger.stats()
                ),
                "started_at": self.started_at,
            }
        )
        return out

    async def warmup(self) -> dict[str, Any]:
        """Load and prepare the champion now (e.g. in a replica's constructor); returns status."""
        await self.model(None)
        token = _NOT_LIVE.set(True)
        try:
            # One real call opens what the first request would otherwise pay for under its
            # deadline: the Feast store, the database pool, the catalogue snapshot.
            await self.exercise()
        except Exception:
            log.warning("%s: warm-up call failed", type(self).__name__, exc_info=True)
        finally:
            _NOT_LIVE.reset(token)
        return await self.status()

    async def exercise(self) -> None:
        """A representative call made at warm-up (areas override it)."""


def answer(loaded: LoadedModel, body: dict[str, Any], cached: bool = False) -> dict[str, Any]:
    """A JSON-able response: ``body`` plus ``model`` and ``cached``."""
    out: dict[str, Any] = jsonable(body)
    out["model"] = loaded.info()
    out["cached"] = bool(cached)
    return out
