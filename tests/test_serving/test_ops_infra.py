"""infra/ for operations: compose stack, Dockerfile, Prometheus scrape config, Grafana dashboard.

Docker is not available on the build machines, so nothing here builds an image or starts the
stack. What is checked is what can drift silently: the files parse; compose names every
service with the image, command and settings it needs; the settings it passes are real
``CARTWISE_*`` fields that pass the production validation; and every metric the dashboard
queries is exported by ``/metrics`` of a running app (or, for ``ray_*``, by Ray's own panels).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.test_serving.routes_support import MODEL, FakeML, category, items_answer, product, sell

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IMAGE = "${CARTWISE_IMAGE:-ghcr.io/cartwise/cartwise:latest}"
SERVICES = {
    "postgres",
    "redis",
    "minio",
    "minio-buckets",
    "mlflow",
    "prefect-server",
    "migrate",
    "ray-head",
    "ray-worker",
    "flows-worker",
    "prometheus",
    "grafana",
}
CARTWISE_PROCESSES = ("migrate", "ray-head", "ray-worker", "flows-worker")
SECRETS = {
    "POSTGRES_PASSWORD": "pg-password-for-tests",
    "CARTWISE_JWT_SECRET": "j" * 48,
    "CARTWISE_METRICS_TOKEN": "m" * 32,
    "MINIO_ROOT_USER": "cartwise",
    "MINIO_ROOT_PASSWORD": "minio-password-for-tests",
    "RAY_AUTH_TOKEN": "r" * 32,
}
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message} with the test secrets."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in SECRETS:
            return SECRETS[name]
        default = re.match(r"\$\{[A-Z0-9_]+:-([^}]*)\}", match.group(0))
        assert default is not None, f"{name} has neither a test value nor a default"
        return default.group(1)

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file (YAML anchors and merge keys resolved)."""
    data: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_names_every_service_with_the_cartwise_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name in (*CARTWISE_PROCESSES, "mlflow", "prefect-server"):
        assert services[name]["image"] == IMAGE, name
    head = _command(services["ray-head"])
    assert "ray start --head" in head
    assert "serve deploy infra/serve_config.yaml" in head
    assert (ROOT / "infra" / "serve_config.yaml").is_file()
    assert "--address=ray-head:6380" in _command(services["ray-worker"])
    assert _command(services["flows-worker"]) == "cartwise flows serve"
    assert "cartwise db upgrade head" in _command(services["migrate"])
    for name in ("ray-head", "ray-worker"):
        assert "--metrics-export-port=8080" in _command(services[name]), name
    mlflow = _command(services["mlflow"])
    assert "postgresql+psycopg://" in mlflow
    assert "--artifacts-destination=s3://mlflow" in mlflow
    assert (
        "postgresql+asyncpg://"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    # The one-shot services are waited for by what needs them.
    assert services["ray-head"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_settings_are_real_fields_that_pass_production_validation(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cartwise.commerce.metrics import check_production
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.settings import ModelSettings
    from cartwise.platform.settings import Settings

    known = {
        f"CARTWISE_{name.upper()}"
        for cls in (Settings, FeatureSettings, ModelSettings)
        for name in cls.model_fields
    }
    feast_yaml = (ROOT / "features" / "feature_store.production.yaml").read_text()
    for name in CARTWISE_PROCESSES:
        env = _env(compose["services"][name])
        for key in (k for k in env if k.startswith("CARTWISE_")):
            # CARTWISE_FEAST_REDIS is read by Feast's own YAML, not by a settings class.
            assert key in known or f"${{{key}}}" in feast_yaml, f"{name}: unknown setting {key}"
        assert env["CARTWISE_ENV"] == "production"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # Exactly what the container would build: production validation must pass.
        settings = FeatureSettings(_env_file=None)  # type: ignore[call-arg]
        models = ModelSettings(_env_file=None)  # type: ignore[call-arg]
        check_production(settings)
        assert settings.effective_database_url.startswith("postgresql+psycopg://")
        assert settings.storage_backend == "s3"
        assert settings.online_store_kind == "redis"
        assert models.tracking_uri == "http://mlflow:5000"
    # Prometheus reads the same token the API checks.
    assert compose["secrets"]["metrics_token"]["environment"] == "CARTWISE_METRICS_TOKEN"
    assert "metrics_token" in compose["services"]["prometheus"]["secrets"]


def test_dockerfile_builds_the_workspace_from_the_lock_as_a_non_root_user() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 3  # uv, build, runtime
    assert "COPY pyproject.toml uv.lock ./" in text
    syncs = re.findall(r"uv sync ([^\n]+)", text)
    assert syncs
    assert all("--locked" in s and "--no-dev" in s for s in syncs)
    for member in ("platform", "commerce", "features", "models", "serving", "pipelines"):
        assert f"COPY {member}/pyproject.toml" in text, member
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    root_toml = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in root_toml
    assert "ARG PYTHON_VERSION=3.11" in text


def test_prometheus_scrapes_the_api_with_the_token_and_ray_metrics(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["cartwise-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"]["type"] == "Bearer"
    assert api["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert api["static_configs"][0]["targets"] == ["ray-head:8000"]
    assert "8000:8000" in compose["services"]["ray-head"]["ports"]
    ray_targets = {t for group in jobs["ray"]["static_configs"] for t in group["targets"]}
    assert ray_targets == {"ray-head:8080", "ray-worker:8080"}
    mounted = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted


@pytest.fixture
def running_app(make_settings: Callable[..., Any], tmp_path: Path) -> Iterator[TestClient]:
    """The served app (commerce + ML routes, the ML double) on SQLite, with some traffic."""
    from sqlmodel import Session

    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine
    from cartwise.serving.asgi import create_app

    url = f"sqlite:///{tmp_path / 'ops.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    settings = make_settings(database_url=url, feast_push_enabled=False)
    fake = FakeML()
    app = create_app(settings.model_dump(), ml=fake)
    with Session(app.state.engine) as session:
        variant = product(session, "Mug", cat=category(session, "Kitchen"))
        sell(session, variant, 2)
        fake.set("recommend", "recommend", items_answer(variant.product_id))
    fake.set("recommend", "status", {"model": {**MODEL, "loaded_at": 1.0}, "cache": {}})
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/v1/recommendations", params={"session_id": "s"}).status_code == 200
        assert client.get("/api/v1/search", params={"q": "mug"}).status_code == 200
        yield client


def _exported(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_dashboard_metric_is_exported(running_app: TestClient) -> None:
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "cartwise.json").read_text())
    datasource = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            exprs.append(target["expr"])
    queried = {name for e in exprs for name in re.findall(r"\b(cartwise_[a-z0-9_]+)", e)}
    ray_queried = {name for e in exprs for name in re.findall(r"\b(ray_[a-z0-9_]+)", e)}
    assert len(queried) >= 20

    r = running_app.get("/metrics")
    assert r.status_code == 200
    missing = queried - _exported(r.text)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"

    # Ray's series are not ours: they must be names Ray's own dashboards query.
    import importlib.util

    spec = importlib.util.find_spec("ray")
    assert spec is not None
    assert spec.origin is not None
    panels_dir = Path(spec.origin).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    ray_text = "".join(p.read_text() for p in panels_dir.glob("*.py"))
    for name in ray_queried:
        assert name.removeprefix("ray_") in ray_text, name
    # The provider loads the folder the compose file mounts the dashboards into.
    provider = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "dashboards" / "cartwise.yaml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
