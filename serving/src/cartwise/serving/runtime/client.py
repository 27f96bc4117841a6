"""How the ingress calls the model services: in-process, or through Serve deployment handles.

Both clients answer ``await ml.call(area, method, timeout_s=..., **kwargs)`` with the service's
dict, or raise exactly one of:

- ``ValueError``: the input is bad (unknown product, bad k); the ingress answers 4xx;
- ``ModelUnavailable``: no model (not trained, load failed), the deployment is unreachable, its
  replica died, or the service crashed; the ingress falls back;
- ``Deadline``: no answer within ``timeout_s``; the ingress falls back.

Areas: ``recommend``, ``search``, ``fraud``, ``customers``, ``demand``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cartwise.serving.runtime.errors import Deadline, ModelUnavailable

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)

AREAS: tuple[str, ...] = ("recommend", "search", "fraud", "customers", "demand")
# Where each area's service class lives (part C2), as "module:Class".
SERVICE_PATHS: dict[str, str] = {
    "recommend": "cartwise.serving.services.recommend:RecommenderService",
    "search": "cartwise.serving.services.search:SearchService",
    "fraud": "cartwise.serving.services.fraud:FraudService",
    "customers": "cartwise.serving.services.customers:CustomerService",
    "demand": "cartwise.serving.services.demand:DemandService",
}


@runtime_checkable
class MLClient(Protocol):
    """The ingress's port to the model services."""

    async def call(
        self, area: str, method: str, *, timeout_s: float, **kwargs: Any
    ) -> dict[str, Any]:
        """Call ``method`` of the area's service; see the module docstring for the errors."""
        ...


def import_object(path: str) -> Any:
    """The object at ``"package.module:Name"``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'module:Name', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


def _public_method(service: object, area: str, method: str) -> Callable[..., Any]:
    if method.startswith("_"):
        raise ModelUnavailable(f"{area}: {method!r} is not a service method")
    func: Callable[..., Any] | None = getattr(service, method, None)
    if func is None or not callable(func):
        raise ModelUnavailable(f"{area}: the service has no method {method!r}")
    return func


class LocalMLClient:
    """Calls the services in this process (plain uvicorn, ``cartwise api``, tests, benchmarks).

    Services are given built, or as factories that are run on first use in a worker thread
    (importing torch and building a service takes seconds; app creation must not pay it).
    """

    def __init__(
        self,
        services: Mapping[str, object] | None = None,
        *,
        factories: Mapping[str, Callable[[], object]] | None = None,
    ) -> None:
        self.services: dict[str, object] = dict(services or {})
        self._factories = dict(factories or {})
        self._building: dict[str, concurrent.futures.Future[object]] = {}
        self._lock = threading.Lock()

    async def call(
        self, area: str, method: str, *, timeout_s: float, **kwargs: Any
    ) -> dict[str, Any]:
        """Await the service's method within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            service = self.services.get(area)
            if service is None:
                service = await self._build(area, timeout_s)
            func = _public_method(service, area, method)
            left = max(deadline - loop.time(), 0.0)
            result = func(**kwargs)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, left)
        except (ValueError, ModelUnavailable, Deadline):
            raise
        except TimeoutError:
            raise Deadline(f"{area}.{method} took longer than {timeout_s:.3f}s") from None
        except Exception as exc:
            log.exception("%s.%s failed", area, method)
            raise ModelUnavailable(f"{area}.{method} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, dict):
            raise ModelUnavailable(f"{area}.{method} returned {type(result).__name__}, not a dict")
        return result

    async def _build(self, area: str, timeout_s: float) -> object:
        factory = self._factories.get(area)
        if factory is None:
            raise ModelUnavailable(f"no service for area {area!r}")
        with self._lock:
            building = self._building.get(area)
            if building is None or (building.done() and building.exception() is not None):
                # One build per area, shared by concurrent callers (on any event loop); it
                # outlives a caller's deadline, so a later call finds the service ready.
                building = _build_pool().submit(self._built, factory)
                self._building[area] = building
        try:
            service = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(building)), timeout_s
            )
        except TimeoutError:
            raise Deadline(f"{area}: the service is still starting") from None
        except Exception as exc:
            log.exception("building the %s service failed", area)
            raise ModelUnavailable(f"{area}: the service failed to start: {exc}") from exc
        self.services[area] = service
        return service

    @staticmethod
    def _built(factory: Callable[[], object]) -> object:
        """Run a service factory, then freeze the heap it loaded (see runtime.heap)."""
        from cartwise.serving.runtime.heap import freeze_heap

        service = factory()
        freeze_heap()
        return service


@functools.cache
def _build_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=len(AREAS), thread_name_prefix="ml-service-build"
    )


def _service_factory(area: str, overrides: Mapping[str, Any] | None) -> Callable[[], object]:
    def build() -> object:
        cls = import_object(SERVICE_PATHS[area])
        return cls(settings=dict(overrides or {}), config=None)

    return build


def local_client_from_settings(overrides: Mapping[str, Any] | None = None) -> LocalMLClient:
    """A local client for all five services, built lazily on first call (settings overrides)."""
    return LocalMLClient(factories={area: _service_factory(area, overrides) for area in AREAS})


@functools.cache
def _exception_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(replica gone: retry once, overload/unavailable: fail fast) exception classes."""
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    retry = (
        ray_exc.RayActorError,  # includes ActorDiedError, ActorUnavailableError
        serve_exc.ReplicaUnavailableError,
    )
    unavailable = (
        *retry,
        serve_exc.BackPressureError,
        serve_exc.DeploymentUnavailableError,
        serve_exc.RayServeException,
        ray_exc.TaskCancelledError,
        ray_exc.RayError,
    )
    return retry, unavailable


def _cause(exc: BaseException) -> BaseException:
    """The user exception inside a ``RayTaskError`` (or the exception itself)."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


class HandleMLClient:
    """Calls the Serve deployments through their handles (inside the ingress replica)."""

    def __init__(self, handles: Mapping[str, DeploymentHandle[Any]], *, retries: int = 1) -> None:
        self._handles = dict(handles)
        self._retries = retries
        self._method_handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}

    @property
    def areas(self) -> list[str]:
        """The areas with a deployment."""
        return sorted(self._handles)

    def prime(self) -> list[str]:
        """Start every deployment's router now (the ingress replica's start-up), so the first
        shopper request does not wait for it to learn the replicas; returns the areas primed.

        ``options()`` initialises a handle's router, which then fetches the running replicas
        in the background; every method handle of the area shares it.
        """
        primed = []
        for area in self.areas:
            try:
                self._handle(area, "status")
            except Exception:  # a router that cannot start now is retried on the first call
                log.warning("%s: could not start the deployment handle", area, exc_info=True)
                continue
            primed.append(area)
        return primed

    def _handle(self, area: str, method: str) -> DeploymentHandle[Any]:
        key = (area, method)
        handle = self._method_handles.get(key)
        if handle is None:
            base = self._handles.get(area)
            if base is None:
                raise ModelUnavailable(f"no deployment for area {area!r}")
            if method.startswith("_"):
                raise ModelUnavailable(f"{area}: {method!r} is not a service method")
            handle = base.options(method_name=method)
            self._method_handles[key] = handle
        return handle

    async def call(
        self, area: str, method: str, *, timeout_s: float, **kwargs: Any
    ) -> dict[str, Any]:
        """Call through the deployment handle, one retry on a dead replica within the deadline."""
        handle = self._handle(area, method)
        retry_types, unavailable_types = _exception_types()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attempt = 0
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise Deadline(f"{area}.{method}: no answer within {timeout_s:.3f}s")
            try:
                response = handle.remote(**kwargs)
            except Exception as exc:
                # Arguments Serve cannot serialise, or a router that cannot start.
                raise _translate(exc, area, method, unavailable_types) from exc
            try:
                result = await asyncio.wait_for(_await(response), left)
            except TimeoutError:
                response.cancel()  # type: ignore[no-untyped-call]
                raise Deadline(f"{area}.{method}: no answer within {timeout_s:.3f}s") from None
            except asyncio.CancelledError:
                response.cancel()  # type: ignore[no-untyped-call]
                raise
            except Exception as exc:
                if isinstance(exc, retry_types) and attempt < self._retries:
                    attempt += 1
                    log.warning("%s.%s: replica lost (%s); retrying", area, method, exc)
                    continue
                raise _translate(exc, area, method, unavailable_types) from exc
            if not isinstance(result, dict):
                raise ModelUnavailable(
                    f"{area}.{method} returned {type(result).__name__}, not a dict"
                )
            return result


def _translate(
    exc: Exception, area: str, method: str, unavailable_types: tuple[type[BaseException], ...]
) -> Exception:
    """The contract's exception for what a handle call raised."""
    from ray.exceptions import RayTaskError

    cause = _cause(exc)
    if isinstance(cause, ValueError):
        return ValueError(str(cause))
    if isinstance(cause, ModelUnavailable):
        return ModelUnavailable(cause.reason)
    if isinstance(cause, Deadline):
        return Deadline(cause.reason)
    if isinstance(exc, RayTaskError) or not isinstance(exc, unavailable_types):
        # A bug in the service: the shopper gets the fallback, the log gets the trace.
        log.error("%s.%s failed in the replica: %r", area, method, exc)
        return ModelUnavailable(f"{area}.{method} failed: {type(cause).__name__}: {cause}")
    return ModelUnavailable(f"{area}.{method}: deployment unavailable: {type(exc).__name__}")


async def _await(response: Any) -> Any:
    # wait_for needs a coroutine; a DeploymentResponse is only awaitable.
    return await response
