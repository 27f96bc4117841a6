"""``serve deploy infra/serve_config.yaml`` on a real two-node Ray cluster on this machine.

The cluster is two ``ray start --block`` processes (a head and a second raylet, one CPU each)
with their own temp dir, ports and auth token, so it never touches the Ray of the test session
or of anyone else on the machine. Teardown terminates exactly those two processes (``ray stop``
would stop every Ray on the machine) and then anything still carrying this cluster's token.
The test deploys a copy of the real config pointed at the trained shop, drives the shopper
journey over HTTP, and kills the ``Recommender`` replica in the middle of a request stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.test_e2e.conftest import E2E_REDIS_URL
from tests.test_e2e.test_shopper_journey import check_out_one
from tests.trained_shop import TrainedShop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADDRESS = {
    "full_name": "Multi Node",
    "line1": "2 Cluster Road",
    "city": "Leeds",
    "postcode": "LS1 1AA",
    "country": "GB",
}
# Two cores are shared with everything else: six replicas importing torch and loading their
# models take a while, and so does a replacement replica.
DEPLOY_TIMEOUT_S = 300
RECOVER_TIMEOUT_S = 150


@dataclass
class Cluster:
    """A running two-node Ray cluster with the Cartwise application deployed."""

    gcs_address: str
    dashboard_url: str
    url: str
    env: dict[str, str]
    temp_dir: Path
    token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a ``ray``/``serve``/python command against this cluster."""
        return subprocess.run(
            [str(arg) for arg in argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str, timeout: float = 120) -> Any:
        """Run ``code`` in a fresh interpreter connected to the cluster; its last stdout line
        is JSON."""
        prelude = (
            "import json, ray\n"
            f"ray.init(address={self.gcs_address!r}, log_to_driver=False, "
            "logging_level='ERROR')\n"
        )
        done = self.run(sys.executable, "-c", prelude + code, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _node_ports() -> list[str]:
    # Fixed defaults (the agent's 52365, metrics ...) would collide between the two nodes and
    # with any other Ray on the machine.
    agent_http, agent_grpc, metrics, runtime_env, node_manager, object_manager = _free_ports(6)
    return [
        "--dashboard-agent-listen-port",
        str(agent_http),
        "--dashboard-agent-grpc-port",
        str(agent_grpc),
        "--metrics-export-port",
        str(metrics),
        "--runtime-env-agent-port",
        str(runtime_env),
        "--node-manager-port",
        str(node_manager),
        "--object-manager-port",
        str(object_manager),
    ]


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own: teardown can signal the whole group it leads.
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(processes: list[subprocess.Popen[bytes]], token: str) -> None:
    # `ray start --block` drains and kills the node's processes on SIGTERM; the worker node
    # first, then the head (which also takes down the GCS, dashboard and Serve controller).
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    # Belt and braces: any process still carrying this cluster's token is one of ours.
    time.sleep(1)
    for pid in _pids_with_token(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids_with_token(token: str) -> list[int]:
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _make_admin(database_url: str) -> tuple[str, str]:
    from sqlmodel import Session

    from cartwise.commerce.customers.service import ensure_admin
    from cartwise.platform.db import make_engine

    email, password = f"mn-admin-{uuid.uuid4().hex[:8]}@example.com", "multinode-admin-pw-1"
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            ensure_admin(session=session, email=email, password=password)
    finally:
        engine.dispose()
    return email, password


def _config_copy(shop: TrainedShop, port: int, dest: Path) -> Path:
    config: dict[str, Any] = yaml.safe_load((ROOT / "infra" / "serve_config.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    # Both nodes share one host: a proxy on every node would bind the same port twice.
    config["proxy_location"] = "HeadOnly"
    (app,) = config["applications"]
    app["runtime_env"]["env_vars"].update(
        {**shop.env, "CARTWISE_REDIS_URL": E2E_REDIS_URL, "CARTWISE_LOG_LEVEL": "WARNING"}
    )
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _wait_running(cluster: Cluster, config: Path) -> None:
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        done = cluster.run(BIN / "serve", "status", "--address", cluster.dashboard_url)
        last = done.stdout or done.stderr
        status = yaml.safe_load(done.stdout) if done.returncode == 0 else None
        app = ((status or {}).get("applications") or {}).get("cartwise") or {}
        if app.get("status") == "RUNNING":
            return
        assert app.get("status") != "DEPLOY_FAILED", last[-4000:]
        time.sleep(3)
    ray_status = cluster.run(BIN / "ray", "status", "--address", cluster.gcs_address).stdout
    worker_log = (cluster.temp_dir / "worker.log").read_text()[-1500:]
    pytest.fail(
        f"cartwise did not reach RUNNING in {DEPLOY_TIMEOUT_S}s:\n{last[-4000:]}\n"
        f"ray status:\n{ray_status[-2000:]}\nworker node log:\n{worker_log}"
    )


@pytest.fixture(scope="module")
def cluster(trained_shop: TrainedShop) -> Iterator[Cluster]:
    """Two Ray nodes on this machine, with ``serve deploy`` of the infra config."""
    from cartwise.serving.launch import private_ports_env, serve_env

    # Short: Ray's socket paths under it must stay below the 107-byte Unix limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="cwmn-", dir="/tmp"))
    gcs_port, dashboard_port, http_port = _free_ports(3)
    token = secrets.token_hex(32)
    # Nothing inherited from this process's own Ray (the session's ray.init may have set
    # HAProxy variables) or settings: the cluster gets exactly what is written here and in
    # the config copy.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CARTWISE_"))}
    env = {
        **inherited,
        **serve_env("proxy"),
        **private_ports_env(),
        # A token of its own: Ray 2.60 turns token auth on when ~/.ray/auth_token exists, and
        # this cluster must not depend on (or leak into) the user's.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "RAY_ADDRESS": f"127.0.0.1:{gcs_port}",
        "RAY_USAGE_STATS_ENABLED": "0",
        # SIGTERM makes a node drain for up to 30 s so proxies stop routing to it first
        # (what Kubernetes wants); a test cluster going away wants none of it.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    common = ["--block", "--num-cpus", "1", "--object-store-memory", str(200 * 1024**2)]
    cluster = Cluster(
        gcs_address=f"127.0.0.1:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        url=f"http://127.0.0.1:{http_port}",
        env=env,
        temp_dir=temp_dir,
        token=token,
    )
    flushed = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        cluster.processes.append(
            _start(
                [
                    str(BIN / "ray"),
                    "start",
                    "--head",
                    "--port",
                    str(gcs_port),
                    "--dashboard-port",
                    str(dashboard_port),
                    "--dashboard-host",
                    "127.0.0.1",
                    "--include-dashboard",
                    "true",
                    "--temp-dir",
                    str(temp_dir),
                    *common,
                    *_node_ports(),
                ],
                env,
                temp_dir / "head.log",
            )
        )
        # `serve deploy` talks to the dashboard, the last thing the head starts.
        _wait_port(dashboard_port, cluster.processes[0], temp_dir / "head.log")
        # The second node joins while Serve deploys: replicas that do not fit the head's one
        # CPU wait for it (test_replicas_are_spread_over_both_nodes checks they land there).
        cluster.processes.append(
            _start(
                [
                    str(BIN / "ray"),
                    "start",
                    "--address",
                    cluster.gcs_address,
                    *common,
                    *_node_ports(),
                ],
                env,
                temp_dir / "worker.log",
            )
        )
        flushed.flushdb()
        config = _config_copy(trained_shop, http_port, temp_dir / "serve_config.yaml")
        done = cluster.run(BIN / "serve", "deploy", str(config), "--address", cluster.dashboard_url)
        assert done.returncode == 0, done.stdout + done.stderr
        _wait_running(cluster, config)
        yield cluster
    finally:
        _stop(cluster.processes, token)
        flushed.flushdb()
        flushed.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    pytest.fail(f"the Ray head did not listen on {port}: {log.read_text()[-3000:]}")


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _assert_ml_answer(body: dict[str, Any]) -> None:
    assert {"model", "fallback", "fallback_reason", "experiment"} <= set(body), body


def test_replicas_are_spread_over_both_nodes(cluster: Cluster) -> None:
    placed = cluster.python(
        "from ray.util.state import list_actors\n"
        "rows = list_actors(filters=[('state', '=', 'ALIVE')], limit=1000)\n"
        "print(json.dumps([[a.class_name, a.node_id] for a in rows "
        "if a.class_name.startswith('ServeReplica:cartwise:')]))\n"
    )
    names = {name.rsplit(":", 1)[1] for name, _ in placed}
    assert names == {
        "CommerceAPI",
        "Recommender",
        "Search",
        "FraudScorer",
        "CustomerInsights",
        "DemandPlanner",
    }
    # 1.75 CPUs of replicas cannot fit one 1-CPU node: both raylets host some.
    assert len({node for _, node in placed}) == 2


def test_shopper_journey_over_http(cluster: Cluster, trained_shop: TrainedShop) -> None:
    admin = _make_admin(trained_shop.database_url)
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        email, password = f"mn-{uuid.uuid4().hex[:8]}@example.com", "correct-horse-battery-1"
        r = http.post(
            "/api/v1/auth/register",
            json={"email": email, "password": password, "full_name": "Multi Node"},
        )
        assert r.status_code == 201, r.text
        shopper = _login(http, email, password)

        listing = http.get("/api/v1/products", params={"in_stock": True, "page_size": 20})
        assert listing.status_code == 200, listing.text
        products = listing.json()["items"]
        assert products
        product = http.get(f"/api/v1/products/{products[0]['id']}").json()

        recs = http.get(
            "/api/v1/recommendations", params={"context": "home", "k": 5}, headers=shopper
        )
        assert recs.status_code == 200, recs.text
        body = recs.json()
        _assert_ml_answer(body)
        assert 0 < len(body["items"]) <= 5

        word = product["name"].split()[0]
        found = http.get("/api/v1/search", params={"q": word, "per_page": 5})
        assert found.status_code == 200, found.text
        _assert_ml_answer(found.json())
        assert found.json()["items"], f"nothing found for {word!r}"

        variant = next(v for v in product["variants"] if v["available"] > 0)
        r = check_out_one(http, shopper, variant["sku"], ADDRESS)
        assert r.status_code == 201, r.text
        order_id = r.json()["order"]["id"]
        # Staff see the fraud check checkout stored with the order.
        staff = _login(http, *admin)
        order = http.get(f"/api/v1/orders/{order_id}", headers=staff)
        assert order.status_code == 200, order.text
        risk = order.json()["risk"]
        assert risk is not None
        assert risk["decision"] in ("allow", "review")
        assert 0.0 <= risk["score"] <= 1.0


_KILLER = """
import sys
from ray.util.state import list_actors

def replicas():
    rows = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return [a for a in rows if a.class_name == "ServeReplica:cartwise:Recommender"]

(victim,) = replicas()
print(json.dumps({"ready": victim.actor_id}), flush=True)
sys.stdin.readline()
ray.kill(ray.get_actor(victim.name, namespace=victim.ray_namespace), no_restart=True)
print(json.dumps({"killed": victim.actor_id}), flush=True)
"""


def test_killing_the_recommender_replica_never_gives_a_5xx(cluster: Cluster) -> None:
    params: dict[str, str | int] = {
        "context": "home",
        "k": 5,
        "session_id": f"mn-{uuid.uuid4().hex[:8]}",
    }
    with httpx.Client(base_url=cluster.url, timeout=30) as http:

        def ask() -> tuple[int, dict[str, Any]]:
            r = http.get("/api/v1/recommendations", params=params)
            return r.status_code, (r.json() if r.status_code < 500 else {"text": r.text})

        # The model answers before the kill (a cold replica may still be loading).
        deadline = time.monotonic() + RECOVER_TIMEOUT_S
        while True:
            status, body = ask()
            assert status == 200, body
            if not body["fallback"]:
                break
            assert time.monotonic() < deadline, f"the model never answered: {body}"
            time.sleep(0.5)

        killer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import json, ray\n"
                f"ray.init(address={cluster.gcs_address!r}, log_to_driver=False, "
                "logging_level='ERROR')\n" + _KILLER,
            ],
            env=cluster.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert killer.stdout is not None
            assert killer.stdin is not None
            victim = json.loads(killer.stdout.readline() or "{}").get("ready")
            assert victim, killer.stderr.read() if killer.stderr else ""

            answers: list[tuple[int, bool]] = []
            killed_at: list[int] = []

            def kill_after_a_few() -> None:
                while len(answers) < 20:
                    time.sleep(0.01)
                killed_at.append(len(answers))
                assert killer.stdin is not None
                killer.stdin.write("go\n")
                killer.stdin.flush()

            trigger = threading.Thread(target=kill_after_a_few, daemon=True)
            trigger.start()
            deadline = time.monotonic() + RECOVER_TIMEOUT_S
            recovered = False
            while time.monotonic() < deadline:
                status, body = ask()
                assert status < 500, (status, body)
                answers.append((status, bool(body.get("fallback"))))
                after = answers[killed_at[0] :] if killed_at else []
                fell_back = any(fallback for _, fallback in after)
                recovered = fell_back and not answers[-1][1]
                if len(answers) >= 100 and recovered:
                    break
                if fell_back:
                    # Serve is replacing the replica; no need to hammer two busy cores.
                    time.sleep(0.2)
            trigger.join(timeout=5)
            assert killer.stdout is not None
            killed = json.loads(killer.stdout.readline() or "{}").get("killed")
            assert killed == victim
        finally:
            killer.kill()
            killer.wait(timeout=10)

    assert len(answers) >= 100
    assert all(status == 200 for status, _ in answers), answers
    after_kill = [fallback for _, fallback in answers[killed_at[0] :]]
    # While no Recommender replica lives, the ingress answers from popularity.
    assert any(after_kill), "no fallback seen: was the replica really killed?"
    # Serve brought a replica back, and the model answers again.
    assert recovered, f"no model answer within {RECOVER_TIMEOUT_S}s after the kill"
    # The state API reads the dashboard's view of the actors, which may lag the replica that
    # already answers on a loaded machine: ask again for a while.
    replicas: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replicas = cluster.python(
            "from ray.util.state import list_actors\n"
            "rows = list_actors(filters=[('state', '=', 'ALIVE')], limit=1000)\n"
            "print(json.dumps([a.actor_id for a in rows "
            "if a.class_name == 'ServeReplica:cartwise:Recommender']))\n"
        )
        if len(replicas) == 1:
            break
        time.sleep(2)
    assert len(replicas) == 1, replicas
    assert replicas[0] != victim
