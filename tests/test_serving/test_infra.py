"""The deployment artefacts in ``infra/`` agree with Ray's schema, the app and each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "infra" / "serve_config.yaml"
RAYSERVICE = ROOT / "infra" / "kuberay" / "rayservice.yaml"
MODEL_DEPLOYMENTS = {"Recommender", "Search", "FraudScorer", "CustomerInsights", "DemandPlanner"}


def _config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SERVE_CONFIG.read_text())
    return data


def _app(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = config["applications"]
    assert isinstance(app, dict)
    return app


def test_serve_config_passes_rays_own_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(_config())
    (app,) = schema.applications
    assert app.name == "cartwise"
    assert app.route_prefix == "/"
    assert app.import_path == "cartwise.serving.app:build_app"


def test_serve_config_args_are_valid_app_args() -> None:
    from cartwise.serving.args import AppArgs

    app = _app(_config())
    AppArgs.model_validate(app.get("args") or {})
    env = app["runtime_env"]["env_vars"]
    # Every variable the config sets is a cartwise setting (a typo would be silently ignored).
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.settings import ModelSettings

    known = {f"CARTWISE_{name.upper()}" for name in ModelSettings.model_fields} | {
        f"CARTWISE_{name.upper()}" for name in FeatureSettings.model_fields
    }
    assert set(env) <= known, set(env) - known
    assert all(isinstance(value, str) for value in env.values()), "env vars must be strings"


def test_serve_config_names_the_deployments_build_app_produces() -> None:
    # Serve rejects a config that names a deployment the application lacks; Ray's own
    # builder (what `serve deploy` runs in the controller) gives the real names.
    from ray.serve._private.build_app import build_app as build_serve_app

    from cartwise.serving.app import APP_NAME, DEPLOYMENT_NAME, AppArgs, build_app

    app = _app(_config())
    built = build_serve_app(build_app(AppArgs.model_validate(app.get("args") or {})), name=APP_NAME)
    names = {deployment.name for deployment in built.deployments}
    assert names == {DEPLOYMENT_NAME, *MODEL_DEPLOYMENTS}
    assert built.ingress_deployment_name == DEPLOYMENT_NAME
    assert {d["name"] for d in app["deployments"]} == names


def test_serve_config_fits_two_cores_and_configures_every_model() -> None:
    deployments = {d["name"]: d for d in _app(_config())["deployments"]}
    reserved = sum(
        d["num_replicas"] * d["ray_actor_options"]["num_cpus"] for d in deployments.values()
    )
    assert round(reserved, 6) <= 2.0, f"{reserved} CPUs reserved: the app must fit a 2-core machine"
    for name in MODEL_DEPLOYMENTS:
        config = deployments[name]["user_config"]
        assert config["alias"] == "champion"
        assert config["reload_interval_s"] > 0
        assert config["cache_ttl_s"] > 0


def test_serve_config_schedules_on_two_one_cpu_nodes_however_models_spread() -> None:
    # The multi-node test (and a small cluster) has two 1-CPU nodes; Serve spreads replicas,
    # so check every placement of the models leaves one node room for the ingress.
    import itertools

    deployments = {d["name"]: d for d in _app(_config())["deployments"]}
    ingress = deployments.pop("CommerceAPI")["ray_actor_options"]["num_cpus"]
    models = [d["ray_actor_options"]["num_cpus"] for d in deployments.values()]
    for placement in itertools.product((0, 1), repeat=len(models)):
        used = [0.0, 0.0]
        for node, cpus in zip(placement, models, strict=True):
            used[node] += cpus
        if max(used) > 1.0 + 1e-9:
            continue  # Ray would not place the models like this
        assert min(used) + ingress <= 1.0 + 1e-9, f"ingress stranded by placement {used}"


def test_model_services_accept_the_user_config() -> None:
    import importlib

    modules = {
        "Recommender": ("recommend", "RecommenderService"),
        "Search": ("search", "SearchService"),
        "FraudScorer": ("fraud", "FraudService"),
        "CustomerInsights": ("customers", "CustomerService"),
        "DemandPlanner": ("demand", "DemandService"),
    }
    deployments = {d["name"]: d for d in _app(_config())["deployments"]}
    for name, (module, cls) in modules.items():
        try:
            service_cls = getattr(
                importlib.import_module(f"cartwise.serving.services.{module}"), cls
            )
        except ImportError:
            pytest.skip(f"cartwise.serving.services.{module} is not there yet")
        # Building a service loads no model (that happens on the first call), so this only
        # checks that reconfigure takes the keys the config sends.
        service = service_cls(settings={}, config=None)
        service.reconfigure(deployments[name]["user_config"])


def test_rayservice_embeds_the_same_serve_config() -> None:
    service = yaml.safe_load(RAYSERVICE.read_text())
    assert service["apiVersion"] == "ray.io/v1"
    assert service["kind"] == "RayService"
    spec = service["spec"]
    assert yaml.safe_load(spec["serveConfigV2"]) == _config()
    cluster = spec["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__
    pods = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        # Settings reach every node (so every replica) from one Secret, and the Ray token
        # from another: nothing secret is written in the manifest.
        assert {"secretRef": {"name": "cartwise-env"}} in container["envFrom"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert not any(e["name"].startswith("CARTWISE_") and "value" in e for e in env.values())


def test_serve_panel_prints_docs_dashboard_mlflow_and_curl_lines(tmp_path: Path) -> None:
    from cartwise.models.settings import ModelSettings
    from cartwise.pipelines.cli import _serve_panel_lines

    uri = ModelSettings(var_dir=tmp_path / "my var").tracking_uri
    lines = _serve_panel_lines(
        "http://127.0.0.1:8000", dashboard_url="http://127.0.0.1:8265", tracking_uri=uri
    )
    text = "\n".join(lines)
    assert "http://127.0.0.1:8000/docs" in text
    assert "http://127.0.0.1:8265/#/serve" in text
    # The MLflow command is pasteable: the store path (with a space here) stays one argument.
    (mlflow,) = [line for line in lines if "mlflow ui" in line]
    import shlex

    argv = shlex.split(mlflow.split("MLflow UI", 1)[1])
    assert argv[:3] == ["mlflow", "ui", "--backend-store-uri"]
    assert argv[3] == uri
    assert uri.endswith("/my var/mlflow.db")
    assert "curl -s 'http://127.0.0.1:8000/api/v1/recommendations?" in text
    assert "curl -s 'http://127.0.0.1:8000/api/v1/search?q=" in text

    no_dashboard = _serve_panel_lines(
        "http://h:1", dashboard_url=None, tracking_uri="http://mlflow:5000"
    )
    assert not any("dashboard" in line for line in no_dashboard)
    assert "MLflow UI      http://mlflow:5000" in no_dashboard
