"""Start a local Ray, deploy the Serve application and wait for it (CLI, tests, benchmark).

Ray reads its ``RAY_*`` variables when its modules are first imported, in every process: this
module imports Ray only inside ``start_ray`` (after setting them) and later calls, so import it
(and ``cartwise.serving.args``) freely before the cluster starts.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Literal

from cartwise.serving.args import AppArgs

IngressMode = Literal["haproxy", "proxy"]
DASHBOARD_PORT = 8265

# How HTTP reaches the replicas.
# - "haproxy": Serve's HAProxy ingress (Ray 2.5x+): HAProxy listens on the HTTP port and
#   forwards to an HTTP server inside each ingress replica ("direct ingress"), so a request
#   crosses no Python proxy and no Ray RPC.
#   Measured on 2 cores (bench/api_load.py): ~0.7-0.9x plain uvicorn's throughput, against
#   ~0.4x for the Python proxy. Trade-off: the replica sees HAProxy's address (127.0.0.1) as
#   the client, and HAProxy adds no X-Forwarded-For, so anonymous per-IP rate limits are
#   shared by every client unless a load balancer in front sets X-Forwarded-For (and
#   CARTWISE_TRUST_FORWARDED_FOR=true).
# - "proxy": the classic Python proxy actor, which forwards each request to a replica over a
#   Ray actor call; it passes the real client address through.
INGRESS_ENV: dict[str, dict[str, str]] = {
    "haproxy": {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        # One HAProxy thread per core, up to its default of 4.
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, os.cpu_count() or 1))),
        # Replicas wait this long after removal for external load balancers to deregister
        # them (30 s by default). On one machine HAProxy is told at once; 30 s only delays
        # Ctrl-C and redeploys.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    },
    "proxy": {},
}
# Common to both: Serve keeps user code on the replica's main loop (one thread hop fewer).
COMMON_ENV: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # ... and routes handle calls on that loop too, not on a router thread of its own: no
    # cross-thread hand-off per call. Measured (bench/serving.py, recommendations at 8
    # clients): 115 -> 155 requests/s, p99 135 -> 87 ms.
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # On 2 busy cores a proxy can miss Serve's 5 s readiness check three times while workers
    # start, and Serve then kills it and fails the deploy; give it more time instead.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
}


# Serve variables meant for the replicas that the driver process must not keep.
REPLICA_ONLY_ENV = ("RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP",)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free right now on ``host``."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``."""
    return free_ports(1, host)[0]


def private_ports_env() -> dict[str, str]:
    """Free ports for Serve's side listeners, so several local Serve clusters can coexist.

    Serve binds fixed ports besides the HTTP one: the fallback proxy (8500, gRPC 9500) and, in
    HAProxy mode, the stats page (8404) and the Prometheus exporter (9101). Tests and the
    benchmark move them to free ports.
    """
    names = (
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
    )
    return dict(zip(names, map(str, free_ports(len(names))), strict=True))


def serve_env(mode: IngressMode) -> dict[str, str]:
    """The RAY_SERVE_* variables for an ingress mode (values already set in the env win)."""
    wanted = {**COMMON_ENV, **INGRESS_ENV[mode]}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def start_ray(
    *,
    num_cpus: int | None = None,
    dashboard: bool = True,
    ingress: IngressMode = "haproxy",
    log_to_driver: bool = True,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start a local Ray (the raylet and every worker inherit the Serve variables)."""
    # Set before Ray is imported here and before ray.init, so the raylet, the controller, the
    # proxies and the replicas (which inherit the raylet's environment) all see them.
    import sys

    if "ray" in sys.modules:
        import warnings

        warnings.warn(
            "ray was imported before start_ray(); RAY_* settings may not apply to this process",
            stacklevel=2,
        )
    wanted = serve_env(ingress)
    # For the raylet (and so the replicas) only: a driver that calls deployment handles from
    # one short-lived event loop after another (asyncio.run per call, as tests and scripts do)
    # needs Serve's router on its own thread, which outlives those loops.
    driver_own = {k: os.environ.get(k) for k in REPLICA_ONLY_ENV}
    os.environ.update(wanted)
    # Under `uv run`, Ray would package the working directory and start every worker with
    # `uv run`; a local cluster shares this virtualenv, so start workers with it directly.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.update(extra_env or {})
    try:
        return _init_ray(num_cpus=num_cpus, dashboard=dashboard, log_to_driver=log_to_driver)
    finally:
        for key, value in driver_own.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _init_ray(*, num_cpus: int | None, dashboard: bool, log_to_driver: bool) -> dict[str, Any]:
    import ray

    if ray.is_initialized():
        return {}
    options: dict[str, Any] = {
        "num_cpus": num_cpus or os.cpu_count() or 1,
        "include_dashboard": dashboard,
        "log_to_driver": log_to_driver,
        "configure_logging": True,
        "logging_level": "WARNING",
    }
    if dashboard:
        options.update(dashboard_host="127.0.0.1", dashboard_port=DASHBOARD_PORT)
    context = ray.init(**options)
    return {"dashboard_url": getattr(context, "dashboard_url", None)}


def deploy(
    args: AppArgs,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    blocking: bool = False,
    access_log: bool = False,
) -> None:
    """Start Serve's HTTP ingress on host:port and run the application at ``/``."""
    from ray import serve

    from cartwise.serving.app import APP_NAME, build_app

    serve.start(
        http_options={"host": host, "port": port},
        logging_config={"log_level": "WARNING", "enable_access_log": access_log},
    )
    # The app writes its own JSON access log with the request id; Serve's duplicate per-request
    # line costs throughput for nothing.
    serve.run(
        build_app(args),
        name=APP_NAME,
        route_prefix="/",
        blocking=blocking,
        logging_config={"enable_access_log": access_log, "log_level": "WARNING"},
    )


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200 (raise TimeoutError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not become ready in {timeout:.0f}s: {last}")


def shutdown() -> None:
    """Stop Serve and the local Ray."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()  # type: ignore[no-untyped-call]
