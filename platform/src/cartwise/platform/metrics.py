"""Prometheus metrics: process-wide event counters and the per-app hub that renders ``/metrics``.

Two kinds of numbers, on purpose:

- **Events** that exist nowhere else (HTTP requests, checkout failures, ML calls) are counters
  in this process (:data:`PROCESS_REGISTRY`). Each replica reports its own; Prometheus scrapes
  every replica and sums.
- **Facts** that live in a database (orders, revenue, carts, drift reports) are read at scrape
  time by a :class:`CachedCollector`, so every replica reports the same truth and a burst of
  scrapes costs one query per ``ttl_s``.

An app owns a :class:`MetricsHub` (``app.state.metrics``) that renders the process counters
plus the collectors registered for that app (reading its own engine and state).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from cartwise.platform.errors import Problem

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# The ``*_created`` series double the output and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The classic text format: every Prometheus 2.x and 3.x server reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
UNMATCHED_ROUTE = "unmatched"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# ML deadlines are 50 ms (suggest) to 10 s (staff analytics).
ML_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.3, 0.5, 1.0, 2.5, 10.0)

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "cartwise_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=PROCESS_REGISTRY,
)
HTTP_LATENCY = Histogram(
    "cartwise_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
    registry=PROCESS_REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "cartwise_http_requests_in_flight",
    "HTTP requests being handled by this process right now.",
    registry=PROCESS_REGISTRY,
)
CHECKOUT_FAILURES = Counter(
    "cartwise_checkout_failures",
    "Checkouts that did not place an order, by problem type (e.g. empty-cart, order-blocked).",
    ["reason"],
    registry=PROCESS_REGISTRY,
)
ML_PREDICTIONS = Counter(
    "cartwise_ml_predictions",
    "Model answers received by this ingress, by area, registered model and version.",
    ["area", "model", "version"],
    registry=PROCESS_REGISTRY,
)
ML_CALL_LATENCY = Histogram(
    "cartwise_ml_call_duration_seconds",
    "ML calls from the ingress, by area, method and outcome (ok or the fallback reason).",
    ["area", "method", "outcome"],
    buckets=ML_LATENCY_BUCKETS,
    registry=PROCESS_REGISTRY,
)
ML_PREDICTION_CACHE = Counter(
    "cartwise_ml_prediction_cache",
    "Model answers by whether they came from the Redis prediction cache (result=hit|miss).",
    ["area", "result"],
    registry=PROCESS_REGISTRY,
)


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (bounded cardinality), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    if hasattr(route, "routes") or type(route).__name__ == "Mount":
        # A mount (static media) serves any path below it: one series for all of them.
        return path.rstrip("/") + "/{path}"
    return path


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request and its latency."""
    # Clients choose the method token: anything unusual shares one series.
    labels = (method if method in HTTP_METHODS else "other", route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(seconds)


def counts_failures(counter: Counter) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a service so each problem it raises counts once, labelled by the problem slug."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except Problem as exc:
                counter.labels(exc.slug).inc()
                raise
            except Exception:
                counter.labels("error").inc()
                raise

        return wrapper

    return decorate


class CachedCollector(Collector):
    """Metric families read by ``fetch`` at most once per ``ttl_s``; the last good ones on error.

    ``fetch`` runs in the scrape (a worker thread for ``/metrics``), so it may query a database.
    """

    def __init__(self, source: str, fetch: Callable[[], list[Metric]], ttl_s: float) -> None:
        self.source = source
        self.fetch = fetch
        self.ttl_s = ttl_s
        self.up = 0.0
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._fetched_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        """The cached families, refreshed first when older than ``ttl_s``."""
        with self._lock:
            now = time.monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self.ttl_s:
                try:
                    self._families = self.fetch()
                    self.up = 1.0
                except Exception:
                    # A broken source must not take the other metrics down with it.
                    log.warning("metrics source %s failed", self.source, exc_info=True)
                    self.up = 0.0
                self._fetched_at = now
            families = list(self._families)
        yield from families


class _ProcessCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        return PROCESS_REGISTRY.collect()


class _SourcesCollector(Collector):
    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "cartwise_metrics_source_up",
            "1 when the last read of a scrape-time metrics source succeeded.",
            labels=["source"],
        )
        for cached in self.hub.cached:
            family.add_metric([cached.source], cached.up)
        yield family


class MetricsHub:
    """What one app's ``/metrics`` shows: the process counters plus its own collectors."""

    def __init__(self) -> None:
        # No auto-describe: collectors are only read when a scrape renders them.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProcessCollector())
        self.cached: list[CachedCollector] = []
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        # Rendered last, after the cached sources have been read by this scrape.
        self._sources = CollectorRegistry(auto_describe=False)
        self._sources.register(_SourcesCollector(self))

    def add(self, collector: Collector) -> None:
        """Register a collector for this app (a CachedCollector also reports whether it is up)."""
        if isinstance(collector, CachedCollector):
            self.cached.append(collector)
        self.registry.register(collector)

    def add_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run ``refresh`` on the event loop before each render (async sources, e.g. ML status)."""
        self._refreshers.append(refresh)

    async def refresh(self) -> None:
        """Run the async refreshers; one that fails is logged, not raised."""
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception:
                log.warning("metrics refresher failed", exc_info=True)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry) + generate_latest(self._sources)


__all__ = [
    "CHECKOUT_FAILURES",
    "CONTENT_TYPE",
    "HTTP_IN_FLIGHT",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "ML_CALL_LATENCY",
    "ML_PREDICTIONS",
    "ML_PREDICTION_CACHE",
    "PROCESS_REGISTRY",
    "CachedCollector",
    "MetricsHub",
    "counts_failures",
    "observe_request",
    "route_template",
]
