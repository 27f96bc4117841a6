"""The Serve application's typed arguments and launch settings (no Ray needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cartwise.serving.args import DEFAULT_MAX_ONGOING_REQUESTS, AppArgs
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


def test_private_ports_are_distinct() -> None:
    ports = private_ports_env()
    assert len(set(ports.values())) == len(ports) == 4
    assert len(set(free_ports(8))) == 8


def test_builder_works_as_a_serve_import_path() -> None:
    # What `serve run cartwise.serving.app:build_app num_replicas=2 database_url=...` and a
    # Serve config's import_path do; in a subprocess, so this session imports Ray only later.
    code = (
        "from ray.serve._private import api\n"
        "call = api.call_user_app_builder_with_args_if_necessary\n"
        "from cartwise.serving.app import build_app\n"
        "app = call(build_app, {'num_replicas': '2', 'database_url': 'sqlite:///x.db'})\n"
        "d = app._bound_deployment\n"
        "print(type(app).__name__, d.name, d.num_replicas, d.max_ongoing_requests)\n"
        "print(d.init_args)\n"
        "from cartwise.platform import db\n"
        "print('engines', len(db._engines))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == f"Application CommerceAPI 2 {DEFAULT_MAX_ONGOING_REQUESTS}"
    assert lines[1] == "({'database_url': 'sqlite:///x.db'},)"
    assert lines[2] == "engines 0"  # nothing connects on the driver
