"""The Serve application's typed arguments and launch settings (no Ray needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cartwise.serving.args import (
    DEFAULT_MAX_ONGOING_REQUESTS,
    DEFAULT_MODEL_MAX_ONGOING_REQUESTS,
    DEFAULT_MODEL_NUM_CPUS,
    DEFAULT_USER_CONFIG,
    MODEL_DEPLOYMENTS,
    AppArgs,
    DeploymentOptions,
)
from cartwise.serving.launch import free_ports, private_ports_env, serve_env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    args = AppArgs()
    assert args.num_replicas == 1
    assert args.max_ongoing_requests == DEFAULT_MAX_ONGOING_REQUESTS >= 20
    assert args.settings == {}


def test_flat_setting_keys_move_into_settings() -> None:
    # As `serve run cartwise.serving.app:build_app database_url=... num_replicas=2` passes them.
    args = AppArgs.model_validate(
        {"database_url": "postgresql://u@h/db", "num_replicas": "2", "settings": {"env": "test"}}
    )
    assert args.num_replicas == 2
    assert args.settings == {"database_url": "postgresql://u@h/db", "env": "test"}


@pytest.mark.parametrize(
    "raw",
    [
        {"settings": {"no_such_setting": 1}},
        {"no_such_option": 1},
        {"num_replicas": 0},
        {"max_ongoing_requests": 0},
    ],
)
def test_bad_arguments_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AppArgs.model_validate(raw)


def test_args_module_does_not_import_ray() -> None:
    code = (
        "import sys, cartwise.serving, cartwise.serving.args, cartwise.serving.launch; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_serve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    monkeypatch.delenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", raising=False)
    haproxy = serve_env("haproxy")
    assert haproxy["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert haproxy["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_env("proxy")
    # A value already in the environment wins over ours.
    monkeypatch.setenv("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "1")
    assert serve_env("proxy")["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "1"


def test_the_router_variable_reaches_ray_but_does_not_stay_in_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cartwise.serving import launch

    key = "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"
    # start_ray sets these for the session's Ray; record them so they are put back after.
    for name in [*launch.serve_env("proxy"), "RAY_ENABLE_UV_RUN_RUNTIME_ENV"]:
        monkeypatch.setenv(name, "recorded")
        monkeypatch.delenv(name)
    seen: dict[str, str | None] = {}

    def init(**_: object) -> dict[str, object]:
        seen["at_init"] = os.environ.get(key)  # what the raylet, and so the replicas, inherit
        return {}

    monkeypatch.setattr(launch, "_init_ray", init)
    launch.start_ray(ingress="proxy")
    assert seen["at_init"] == "0"
    assert key not in os.environ
    # A value the driver set itself is put back.
    monkeypatch.setenv(key, "1")
    launch.start_ray(ingress="proxy")
    assert seen["at_init"] == "1"
    assert os.environ[key] == "1"


def test_private_ports_are_distinct() -> None:
    ports = private_ports_env()
    assert len(set(ports.values())) == len(ports) == 4
    assert len(set(free_ports(8))) == 8


def test_builder_works_as_a_serve_import_path() -> None:
    # What `serve run cartwise.serving.app:build_app num_replicas=2 database_url=...` and a
    # Serve config's import_path do; in a subprocess, so this session imports Ray only later.
    code = (
        "import sys\n"
        "from ray.serve._private import api\n"
        "call = api.call_user_app_builder_with_args_if_necessary\n"
        "from cartwise.serving.app import build_app\n"
        "app = call(build_app, {'num_replicas': '2', 'database_url': 'sqlite:///x.db',\n"
        "  'models': {'recommend': {'user_config': {'alias': 'challenger'}}}})\n"
        "d = app._bound_deployment\n"
        "print(type(app).__name__, d.name, d.num_replicas, d.max_ongoing_requests)\n"
        "settings, handles = d.init_args\n"
        "print(settings)\n"
        "for area, bound in handles.items():\n"
        "    m = bound._bound_deployment\n"
        "    print(area, m.name, m.num_replicas, m.max_ongoing_requests,\n"
        "          m.ray_actor_options['num_cpus'], m.user_config['alias'], m.init_args[0])\n"
        "from cartwise.platform import db\n"
        "print('engines', len(db._engines))\n"
        "print('heavy', [m for m in ('torch', 'feast', 'mlflow') if m in sys.modules])\n"
        "alone = call(build_app, {'ml': False})._bound_deployment\n"
        "print('alone', alone.init_args)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == f"Application CommerceAPI 2 {DEFAULT_MAX_ONGOING_REQUESTS}"
    assert lines[1] == "{'database_url': 'sqlite:///x.db'}"
    cpus, ongoing = DEFAULT_MODEL_NUM_CPUS, DEFAULT_MODEL_MAX_ONGOING_REQUESTS
    pkg = "cartwise.serving.services"
    assert lines[2:7] == [
        f"recommend Recommender 1 {ongoing} {cpus} challenger {pkg}.recommend:RecommenderService",
        f"search Search 1 {ongoing} {cpus} champion {pkg}.search:SearchService",
        f"fraud FraudScorer 1 {ongoing} {cpus} champion {pkg}.fraud:FraudService",
        f"customers CustomerInsights 1 {ongoing} {cpus} champion {pkg}.customers:CustomerService",
        f"demand DemandPlanner 1 {ongoing} {cpus} champion {pkg}.demand:DemandService",
    ]
    assert lines[7] == "engines 0"  # nothing connects on the driver
    assert lines[8] == "heavy []"  # the services (torch, Feast, MLflow) load in the replicas
    assert lines[9] == "alone ({}, {})"


def test_model_deployment_options() -> None:
    args = AppArgs.model_validate(
        {
            "models": {
                "recommend": {"user_config": {"reload_interval_s": 0.5}, "max_ongoing_requests": 8},
                "Search": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}},
            }
        }
    )
    assert set(args.models) == {"Recommender", "Search"}  # areas become deployment names
    recommender = args.model_options("Recommender").serve_options()
    assert recommender == {
        "max_ongoing_requests": 8,
        "ray_actor_options": {"num_cpus": DEFAULT_MODEL_NUM_CPUS},
        "user_config": {**DEFAULT_USER_CONFIG, "reload_interval_s": 0.5},
        "num_replicas": 1,
    }
    search = args.model_options("Search").serve_options()
    assert search["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2}
    assert "num_replicas" not in search
    assert args.model_options("FraudScorer") == DeploymentOptions()
    assert set(MODEL_DEPLOYMENTS.values()) == {
        "Recommender",
        "Search",
        "FraudScorer",
        "CustomerInsights",
        "DemandPlanner",
    }


def test_the_default_app_fits_on_two_cpus() -> None:
    # Ray schedules by reservation: the ingress and the five models must fit a 2-CPU Ray.
    args = AppArgs()
    total = args.num_cpus + sum(
        args.model_options(n).serve_options()["ray_actor_options"]["num_cpus"]
        for n in MODEL_DEPLOYMENTS.values()
    )
    assert total <= 2.0


@pytest.mark.parametrize(
    "models",
    [
        {"Ranker": {}},
        {"recommend": {}, "Recommender": {}},
        {"Search": {"num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}},
        {"Search": {"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}},
        {"Search": {"user_config": {"alias": "no spaces"}}},
        {"Search": {"user_config": {"reload_interval_s": -1}}},
        {"Search": {"user_config": {"warmup": "yes"}}},
        {"Search": {"service": "not a path"}},
        {"Search": {"num_cpus": -0.1}},
        {"Search": {"replicas": 1}},
    ],
)
def test_bad_model_options_are_refused(models: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"models": models})


def test_feature_and_model_settings_are_accepted() -> None:
    args = AppArgs.model_validate({"feast_project": "p1", "mlflow_tracking_uri": "sqlite:///m.db"})
    assert args.settings == {"feast_project": "p1", "mlflow_tracking_uri": "sqlite:///m.db"}
