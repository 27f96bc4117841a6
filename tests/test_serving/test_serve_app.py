"""The Serve application on a local Ray: composition, hot reload, errors and a killed replica.

One deployment of the whole app (the ingress and the five model deployments) is shared by the
module's tests. It serves the trained shop, but from a copy of its MLflow database, so moving
the ``champion`` alias here never leaks into other tests (the new version reuses the champion's
artifacts, so nothing is written to the shop's folder). Model calls go through the deployment
handles with ``HandleMLClient``, as the ingress makes them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from cartwise.serving.args import AppArgs
from cartwise.serving.runtime.client import HandleMLClient
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "c1-serve-test"
PREFIX = "/c1"
REDIS_URL = os.environ.get("CARTWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
RECOMMEND: dict[str, Any] = {
    "user_id": None,
    "session_id": None,
    "k": 5,
    "context": "home",
    "product_id": None,
    "cart": [],
    "category": None,
    "exclude_purchased": False,
    "allowed": None,
    "variant": None,
}
FRAUD: dict[str, Any] = {
    "order_id": 1,
    "customer_id": 1,
    "order_amount": 25.0,
    "shipping_country": "GB",
    "orders_last_hour": 0,
    "request_epoch": 1_700_000_000,
}


@dataclass
class Served:
    """The running app: its HTTP base URL, ML client and MLflow settings."""

    url: str
    ml: HandleMLClient
    model_settings: Any
    args: AppArgs

    def call(self, area: str, method: str, timeout_s: float = 10.0, **kwargs: Any) -> Any:
        return asyncio.run(self.ml.call(area, method, timeout_s=timeout_s, **kwargs))


def _app_args(shop: Any, tracking_uri: str, **recommender: Any) -> AppArgs:
    settings = shop.overrides(
        mlflow_tracking_uri=tracking_uri,
        redis_url=REDIS_URL,
        rate_limit_per_minute=100_000,
        auth_rate_limit_per_minute=100_000,
    )
    quiet = {"user_config": {"warmup": False}}
    return AppArgs.model_validate(
        {
            "settings": settings,
            # Below the defaults: the test shares 2 CPUs with the ingress and the controller.
            "num_cpus": 0.5,
            "models": {
                "Recommender": {"user_config": {"reload_interval_s": 0.5, **recommender}},
                "FraudScorer": {"user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
                # The model is missing: this alias does not exist in the registry.
                "DemandPlanner": {"user_config": {"alias": "c1-missing", "warmup": False}},
                "Search": quiet,
                "CustomerInsights": quiet,
            },
        }
    )


@pytest.fixture(scope="module")
def served(
    ray_session: None, trained_shop: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The app deployed once for the module; deleted (not Serve) at the end."""
    from ray import serve

    from cartwise.models.settings import ModelSettings
    from cartwise.serving.app import build_app
    from cartwise.serving.args import MODEL_DEPLOYMENTS
    from cartwise.serving.launch import free_port

    var = tmp_path_factory.mktemp("c1-mlflow")
    shutil.copy(trained_shop.var_dir / "mlflow.db", var / "mlflow.db")
    tracking_uri = f"sqlite:///{var / 'mlflow.db'}"
    model_settings = ModelSettings(env="test", var_dir=var, mlflow_tracking_uri=tracking_uri)
    cache = redis.Redis.from_url(REDIS_URL)
    cache.flushdb()

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = _app_args(trained_shop, tracking_uri)
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    handles = {
        area: serve.get_deployment_handle(name, app_name=APP)
        for area, name in MODEL_DEPLOYMENTS.items()
    }
    try:
        yield Served(
            f"http://127.0.0.1:{port}{PREFIX}", HandleMLClient(handles), model_settings, args
        )
    finally:
        serve.delete(APP)
        cache.flushdb()
        cache.close()


def _champion(settings: Any) -> Any:
    from cartwise.models import tracking

    found = tracking.current("recommend", "champion", settings=settings)
    assert found is not None
    return found


def test_the_app_composes_the_ingress_and_five_model_deployments(served: Served) -> None:
    from ray import serve

    app = serve.status().applications[APP]
    assert str(app.status).endswith("RUNNING")
    assert set(app.deployments) == {
        "CommerceAPI",
        "Recommender",
        "Search",
        "FraudScorer",
        "CustomerInsights",
        "DemandPlanner",
    }
    with urllib.request.urlopen(f"{served.url}/healthz", timeout=30) as response:  # noqa: S310
        assert response.status == 200
    status = served.call("recommend", "status")
    # The user_config reached the service through reconfigure.
    assert status["config"]["reload_interval_s"] == 0.5
    assert status["model"]["version"] == int(_champion(served.model_settings).version)
    # What the ingress asks to know which of its reused answers are current. This app's
    # replicas skip warm-up, so the first call loads the model (Search's takes seconds).
    for area in ("recommend", "search"):
        assert served.call(area, "version", timeout_s=90)["model"]["alias"] == "champion"
    assert served.call("recommend", "version")["model"]["version"] == status["model"]["version"]


def test_priming_starts_every_deployments_router_before_the_first_call(served: Served) -> None:
    from ray.serve.handle import DeploymentHandle

    from cartwise.serving.args import MODEL_DEPLOYMENTS

    # New handles (serve.get_deployment_handle may hand back ones other tests already used).
    handles = {area: DeploymentHandle(name, APP) for area, name in MODEL_DEPLOYMENTS.items()}
    client = HandleMLClient(handles)
    assert not any(h.is_initialized for h in handles.values())
    assert client.prime() == sorted(handles)
    assert all(h.is_initialized for h in handles.values())
    # The method handles share the primed router, and answer.
    status = asyncio.run(client.call("fraud", "status", timeout_s=10.0))
    assert status["area"] == "fraud"


def test_errors_cross_the_handle_as_the_contract_says(served: Served) -> None:
    with pytest.raises(ValueError, match="k"):
        served.call("recommend", "recommend", **{**RECOMMEND, "k": 0})
    with pytest.raises(ModelUnavailable, match="c1-missing"):
        served.call("demand", "forecast", product_id=1, horizon=7)
    with pytest.raises(ModelUnavailable):
        served.call("recommend", "no_such_method")
    with pytest.raises(Deadline):
        served.call("recommend", "recommend", timeout_s=0.0001, **RECOMMEND)
    with pytest.raises(ModelUnavailable, match="no deployment"):
        served.call("nowhere", "recommend")


def test_fraud_scores_concurrent_orders_as_a_batch_each_with_its_own_answer(
    served: Served,
) -> None:
    requests = [{**FRAUD, "order_id": i, "order_amount": 10.0 * (i + 1)} for i in range(6)]
    # One bad order in the batch fails alone.
    requests[3] = {**requests[3], "order_amount": -1}

    async def scenario() -> list[Any]:
        calls = [
            served.ml.call("fraud", "score", timeout_s=30, request=request) for request in requests
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    answers = asyncio.run(scenario())
    assert isinstance(answers[3], ValueError)
    assert "order_amount" in str(answers[3])
    good = [a for i, a in enumerate(answers) if i != 3]
    assert [str(a["order_id"]) for a in good] == ["0", "1", "2", "4", "5"]
    for answer in good:
        assert answer["model"]["name"] == "fraud"
        assert answer["decision"] in ("allow", "review", "block")
        assert 0.0 <= answer["risk"] <= 1.0


def test_a_promotion_is_served_without_dropping_a_request(served: Served) -> None:
    from cartwise.models import tracking

    before = served.call("recommend", "recommend", **RECOMMEND)
    champion = _champion(served.model_settings)
    assert before["model"] == {
        "name": "recommend",
        "version": int(champion.version),
        "alias": "champion",
    }
    assert before["items"]

    async def scenario() -> tuple[list[Any], float]:
        outcomes: list[Any] = []
        stop = asyncio.Event()

        async def stream() -> None:
            while not stop.is_set():
                try:
                    answer = await served.ml.call(
                        "recommend", "recommend", timeout_s=10, **RECOMMEND
                    )
                    outcomes.append(answer["model"]["version"])
                except Exception as exc:
                    outcomes.append(exc)
                await asyncio.sleep(0.02)

        streams = [asyncio.create_task(stream()) for _ in range(3)]
        client = tracking.client(served.model_settings)
        assert champion.source is not None
        created = client.create_model_version("recommend", champion.source, run_id=champion.run_id)
        promoted = time.monotonic()
        tracking.set_alias("recommend", "champion", created.version, settings=served.model_settings)
        waited = 0.0
        while time.monotonic() - promoted < 15:
            answer = await served.ml.call("recommend", "recommend", timeout_s=10, **RECOMMEND)
            if answer["model"]["version"] == int(created.version):
                waited = time.monotonic() - promoted
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a few more calls on the new version
        stop.set()
        await asyncio.gather(*streams)
        return outcomes, waited

    outcomes, waited = asyncio.run(scenario())
    new_version = int(champion.version) + 1
    assert 0 < waited < 15, "the promotion was not served within 15 s"
    assert [o for o in outcomes if not isinstance(o, int)] == []
    assert set(outcomes) == {int(champion.version), new_version}
    # Once swapped, never back to the old version.
    assert outcomes[outcomes.index(new_version) :].count(int(champion.version)) <= 3


def test_killing_the_replica_gives_only_retries_or_unavailable(served: Served) -> None:
    import ray

    def replicas() -> list[str]:
        return [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{APP}#Recommender#")
        ]

    victims = replicas()
    assert len(victims) == 1

    async def scenario() -> list[Any]:
        outcomes: list[Any] = []
        killed = False
        started = time.monotonic()
        while time.monotonic() - started < 90:
            try:
                answer = await served.ml.call("recommend", "recommend", timeout_s=2, **RECOMMEND)
                outcomes.append(answer["model"]["name"])
            except Exception as exc:
                outcomes.append(exc)
            if not killed and len(outcomes) >= 5:
                ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
                killed = True
                outcomes.append("killed")
            elif killed and outcomes[-1] == "recommend" and replicas() not in ([], victims):
                break
            await asyncio.sleep(0.05)
        return outcomes

    outcomes = asyncio.run(scenario())
    kill = outcomes.index("killed")
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(e, ModelUnavailable | Deadline) for e in errors), errors
    assert outcomes[:kill] == ["recommend"] * kill
    # Serve replaced the replica and answers again.
    assert outcomes[-1] == "recommend"
    assert replicas() != victims


def test_user_config_changes_reach_the_running_service(served: Served, trained_shop: Any) -> None:
    from ray import serve

    from cartwise.serving.app import build_app

    tracking_uri = served.args.settings["mlflow_tracking_uri"]
    args = _app_args(trained_shop, tracking_uri, alias="challenger", cache_ttl_s=5)
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = served.call("recommend", "status", timeout_s=5)
        except (ModelUnavailable, Deadline):
            status = {}
        if status.get("config", {}).get("alias") == "challenger":
            break
        time.sleep(0.2)
    assert status["config"]["alias"] == "challenger"
    assert status["config"]["cache_ttl_s"] == 5
    answer = served.call("recommend", "recommend", **RECOMMEND)
    assert answer["model"]["alias"] == "challenger"
