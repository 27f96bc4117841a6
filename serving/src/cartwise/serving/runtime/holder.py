"""Keep a registered model loaded and follow its alias: hot reload without blocking requests.

A :class:`ModelHolder` loads ``models:/<name>@<alias>`` on first use. After that, ``current()``
never waits for MLflow: at most every ``reload_interval_s`` it starts one background thread that
asks the registry which version the alias points at and, if it moved, loads that version and
swaps it in with one assignment. Requests keep being answered by the old version meanwhile, so a
promotion is served within ``reload_interval_s`` plus the load time, and no request is dropped.
A failed check or load keeps the old model and is reported by ``status()``.

Example::

    holder = ModelHolder("recommend", reload_interval_s=10)
    model = holder.get(None)           # the champion, or ModelUnavailable
    model.predictor.recommend(...)     # the area's predictor object
    model.info()                       # {"name": "recommend", "version": 3, "alias": "champion"}
    holder.get("challenger")           # A/B variants: an alias or "v<N>", loaded lazily
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cartwise.serving.runtime.errors import ModelUnavailable

if TYPE_CHECKING:
    from cartwise.models.settings import ModelSettings

log = logging.getLogger(__name__)

CHAMPION = "champion"
# A/B tests compare a handful of variants; more would each hold a model in the replica's memory.
MAX_VARIANTS = 4
FIRST_LOAD_WAIT_S = 120.0
_VERSION_REF = re.compile(r"^v(\d+)$")
_ALIAS_REF = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model version and where it came from."""

    name: str
    version: int
    alias: str | None
    predictor: Any
    loaded_at: float
    tags: dict[str, str] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The ``model`` field of a service response."""
        return {"name": self.name, "version": self.version, "alias": self.alias}


# (name, alias or None, version or None, settings) -> LoadedModel; raises LookupError if missing.
Loader = Callable[[str, str | None, int | None, "ModelSettings | None"], LoadedModel]
# (name, alias, settings) -> the version number the alias points at, or None.
Resolver = Callable[[str, str, "ModelSettings | None"], int | None]


def mlflow_loader(
    name: str, alias: str | None, version: int | None, settings: ModelSettings | None
) -> LoadedModel:
    """Load a version from the MLflow registry (by number, so an alias move cannot mix two)."""
    from cartwise.models import tracking

    if version is None:
        if alias is None:
            raise ValueError("either alias or version is needed")
        version = mlflow_resolver(name, alias, settings)
        if version is None:
            raise LookupError(f"model {name!r} has no version with alias {alias!r}")
    loaded = tracking.load(name, version=version, settings=settings)
    return LoadedModel(
        name=name,
        version=loaded.version,
        alias=alias,
        predictor=loaded.predictor,
        loaded_at=time.time(),
        tags=dict(loaded.tags),
    )


def mlflow_resolver(name: str, alias: str, settings: ModelSettings | None) -> int | None:
    """The version ``alias`` points at (``MlflowClient.get_model_version_by_alias``), or None."""
    from cartwise.models import tracking

    found = tracking.current(name, alias, settings=settings)
    return None if found is None else int(found.version)


def parse_ref(ref: str | None) -> tuple[str | None, int | None]:
    """``None``/alias/``v<N>`` → (alias, version); ``ValueError`` for anything else."""
    if ref is None:
        return None, None
    match = _VERSION_REF.match(ref)
    if match:
        return None, int(match.group(1))
    if _ALIAS_REF.match(ref):
        return ref, None
    raise ValueError(f"bad model reference {ref!r}: expected an alias such as 'champion' or 'v3'")


class ModelHolder:
    """The version behind an alias, reloaded in the background when the alias moves."""

    def __init__(
        self,
        name: str,
        *,
        alias: str = CHAMPION,
        reload_interval_s: float = 10.0,
        settings: ModelSettings | None = None,
        loader: Loader | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        parse_ref(alias)  # validates
        self.name = name
        self._alias = alias
        self._interval = max(0.0, float(reload_interval_s))
        self._settings = settings
        self._loader: Loader = loader or mlflow_loader
        self._resolver: Resolver = resolver or mlflow_resolver
        self._lock = threading.RLock()
        # One load at a time: two versions in memory at once is the most a swap should cost.
        self._load_lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._started = False
        self._first_done = threading.Event()
        self._checking = False
        self._last_check = 0.0  # monotonic
        self._last_check_at: float | None = None  # wall clock, for status()
        self._last_error: str | None = None
        self._checks = 0
        self._loads = 0
        self._variants: OrderedDict[str, ModelHolder | LoadedModel] = OrderedDict()
        self._variant_failures: dict[str, tuple[float, str]] = {}

    @property
    def alias(self) -> str:
        """The alias this holder follows."""
        return self._alias

    @property
    def reload_interval_s(self) -> float:
        """Seconds between two registry checks."""
        return self._interval

    def current(self) -> LoadedModel | None:
        """The loaded model (None if none could be loaded); never waits on MLflow once started."""
        if not self._first_done.is_set():
            with self._lock:
                first = not self._started
                self._started = True
            if first:
                # The very first call has nothing to serve meanwhile: load synchronously.
                try:
                    self._check()
                finally:
                    self._first_done.set()
            else:
                # Callers racing the first load (threads) wait for it rather than fail.
                self._first_done.wait(FIRST_LOAD_WAIT_S)
            return self._current
        if self._interval_elapsed():
            self._start_background_check()
        return self._current

    def get(self, ref: str | None = None) -> LoadedModel:
        """The model for an A/B reference: None or the followed alias → ``current()``.

        Other aliases ("challenger") and fixed versions ("v3") are loaded on first use and
        kept (at most ``MAX_VARIANTS``, least recently used dropped). Raises
        ``ModelUnavailable`` if nothing can be loaded, ``ValueError`` for a malformed ref.
        """
        alias, version = parse_ref(ref)
        if ref is None or alias == self._alias:
            model = self.current()
            if model is None:
                raise ModelUnavailable(self._unavailable_reason(self._alias))
            return model
        assert ref is not None
        return self._variant(ref, alias, version)

    def refresh(self) -> LoadedModel | None:
        """Check the registry now and swap if the alias moved (blocks; tests and tooling)."""
        with self._lock:
            self._started = True
        try:
            self._check()
        finally:
            self._first_done.set()
        return self._current

    def reconfigure(
        self, *, alias: str | None = None, reload_interval_s: float | None = None
    ) -> None:
        """Follow another alias and/or check at another interval; the next call re-checks."""
        with self._lock:
            if reload_interval_s is not None:
                if reload_interval_s < 0:
                    raise ValueError("reload_interval_s must be >= 0")
                self._interval = float(reload_interval_s)
                for variant in self._variants.values():
                    if isinstance(variant, ModelHolder):
                        variant.reconfigure(reload_interval_s=reload_interval_s)
            if alias is not None and alias != self._alias:
                parse_ref(alias)
                self._alias = alias
                self._last_check = 0.0  # the old model keeps serving until the new one loads
            elif reload_interval_s is not None:
                # A shorter interval applies from now, not after the old one runs out.
                self._last_check = min(self._last_check, time.monotonic())

    def status(self) -> dict[str, Any]:
        """Name, alias, loaded version, last check and error, loaded variants."""
        model = self._current
        return {
            "name": self.name,
            "alias": self._alias,
            "version": model.version if model else None,
            "loaded_at": model.loaded_at if model else None,
            "last_check": self._last_check_at,
            "last_error": self._last_error,
            "reload_interval_s": self._interval,
            "checks": self._checks,
            "loads": self._loads,
            "variants": {
                ref: (v.version if isinstance(v, LoadedModel) else v.status()["version"])
                for ref, v in list(self._variants.items())
            },
        }

    # -- internals -------------------------------------------------------------------------

    def _interval_elapsed(self) -> bool:
        return not self._checking and time.monotonic() - self._last_check >= self._interval

    def _start_background_check(self) -> None:
        with self._lock:
            if self._checking or time.monotonic() - self._last_check < self._interval:
                return
            self._checking = True
        thread = threading.Thread(
            target=self._check, kwargs={"background": True}, name=f"model-check-{self.name}"
        )
        thread.daemon = True
        thread.start()

    def _check(self, *, background: bool = False) -> None:
        """Resolve the alias; load and swap if it points elsewhere. Never raises."""
        with self._lock:
            self._checking = True
            alias = self._alias
        try:
            version = self._resolver(self.name, alias, self._settings)
            if version is None:
                raise LookupError(f"model {self.name!r} has no version with alias {alias!r}")
            model = self._current
            if model is not None and model.version == version and model.alias != alias:
                # Reconfigured to an alias on the same version: no need to load it twice.
                with self._lock:
                    if alias == self._alias:
                        self._current = replace(model, alias=alias)
            elif model is None or model.version != version:
                with self._load_lock:
                    fresh = self._loader(self.name, alias, version, self._settings)
                with self._lock:
                    if alias == self._alias:  # not reconfigured meanwhile
                        self._current = fresh
                        self._loads += 1
                        if model is not None:
                            log.info(
                                "model %s: swapped v%s for v%s (@%s)",
                                self.name,
                                model.version,
                                fresh.version,
                                alias,
                            )
            self._last_error = None
        except Exception as exc:
            # Keep serving the old model; the next interval tries again.
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model %s@%s: check failed: %s", self.name, alias, self._last_error)
        finally:
            with self._lock:
                self._checks += 1
                self._last_check = time.monotonic()
                self._last_check_at = time.time()
                self._checking = False

    def _unavailable_reason(self, alias: str) -> str:
        detail = self._last_error or "not loaded"
        return f"model {self.name!r}@{alias} unavailable: {detail}"

    def _variant(self, ref: str, alias: str | None, version: int | None) -> LoadedModel:
        with self._lock:
            found = self._variants.get(ref)
            if found is not None:
                self._variants.move_to_end(ref)
            failed = self._variant_failures.get(ref)
        if (
            found is None
            and failed is not None
            and time.monotonic() - failed[0] < max(self._interval, 1.0)
        ):
            # Do not hit the registry on every request for a ref that just failed.
            raise ModelUnavailable(failed[1])
        if isinstance(found, LoadedModel):
            return found
        if isinstance(found, ModelHolder):
            return found.get(None)
        try:
            if alias is not None:
                holder = ModelHolder(
                    self.name,
                    alias=alias,
                    reload_interval_s=self._interval,
                    settings=self._settings,
                    loader=self._loader,
                    resolver=self._resolver,
                )
                entry: ModelHolder | LoadedModel = holder
                model = holder.get(None)
            else:
                with self._load_lock:
                    model = self._loader(self.name, None, version, self._settings)
                entry = model
        except Exception as exc:
            reason = f"model {self.name!r} {ref}: {type(exc).__name__}: {exc}"
            if isinstance(exc, ModelUnavailable):
                reason = exc.reason
            with self._lock:
                self._variant_failures[ref] = (time.monotonic(), reason)
            raise ModelUnavailable(reason) from exc
        with self._lock:
            self._variant_failures.pop(ref, None)
            self._variants[ref] = entry
            self._variants.move_to_end(ref)
            while len(self._variants) > MAX_VARIANTS:
                self._variants.popitem(last=False)
        return model
