"""LocalMLClient: the in-process ML client raises only ValueError, ModelUnavailable or Deadline.

HandleMLClient (through Ray Serve) is exercised in ``test_serve_app.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.client import LocalMLClient, MLClient, local_client_from_settings
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable

ROOT = Path(__file__).resolve().parents[2]


class StandIn:
    """A model service with every behaviour the client must translate."""

    async def ok(self, *, k: int) -> dict[str, Any]:
        return {"items": list(range(k)), "model": {"name": "m", "version": 1, "alias": None}}

    async def bad_input(self, *, product_id: int) -> dict[str, Any]:
        raise ValueError(f"unknown product {product_id}")

    async def untrained(self) -> dict[str, Any]:
        raise ModelUnavailable("model 'm' has no champion")

    async def slow(self) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    async def crash(self) -> dict[str, Any]:
        raise KeyError("bug")

    async def not_a_dict(self) -> list[int]:
        return [1]

    def sync(self, *, x: int) -> dict[str, Any]:
        return {"x": x}

    async def _private(self) -> dict[str, Any]:
        return {}


def call(client: LocalMLClient, method: str, timeout_s: float = 1.0, **kwargs: Any) -> Any:
    return asyncio.run(client.call("recommend", method, timeout_s=timeout_s, **kwargs))


def test_answers_and_translates_errors() -> None:
    client = LocalMLClient({"recommend": StandIn()})
    assert isinstance(client, MLClient)
    assert call(client, "ok", k=2)["items"] == [0, 1]
    assert call(client, "sync", x=3) == {"x": 3}
    with pytest.raises(ValueError, match="unknown product 9"):
        call(client, "bad_input", product_id=9)
    with pytest.raises(ModelUnavailable, match="no champion"):
        call(client, "untrained")
    with pytest.raises(Deadline):
        call(client, "slow", timeout_s=0.05)
    with pytest.raises(ModelUnavailable, match="KeyError"):
        call(client, "crash")
    with pytest.raises(ModelUnavailable, match="not a dict"):
        call(client, "not_a_dict")
    # Wrong arguments are the caller's bug: the shopper still gets a fallback, not a 500.
    with pytest.raises(ModelUnavailable, match="TypeError"):
        call(client, "ok", nope=1)
    for method in ("_private", "missing", "__init__"):
        with pytest.raises(ModelUnavailable):
            call(client, method)
    with pytest.raises(ModelUnavailable, match="no service"):
        asyncio.run(client.call("nowhere", "ok", timeout_s=1, k=1))


def test_factories_build_once_off_the_loop_and_outlive_a_deadline() -> None:
    gate = threading.Event()
    built: list[int] = []

    def factory() -> StandIn:
        gate.wait(5)
        built.append(1)
        return StandIn()

    client = LocalMLClient(factories={"recommend": factory})

    async def scenario() -> list[Any]:
        # Still starting: the caller gets Deadline, the build carries on.
        first = await asyncio.gather(
            client.call("recommend", "ok", timeout_s=0.05, k=1),
            client.call("recommend", "ok", timeout_s=0.05, k=1),
            return_exceptions=True,
        )
        gate.set()
        later = await client.call("recommend", "ok", timeout_s=5, k=1)
        return [*first, later]

    first, second, later = asyncio.run(scenario())
    assert isinstance(first, Deadline)
    assert isinstance(second, Deadline)
    assert later["items"] == [0]
    assert built == [1]


def test_a_failing_factory_is_unavailable_and_retried() -> None:
    attempts: list[int] = []

    def factory() -> StandIn:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("torch missing")
        return StandIn()

    client = LocalMLClient(factories={"recommend": factory})
    # Generous deadlines: a build also freezes the heap, which in this (large) test process
    # can take a while on a loaded machine; what is tested is the failure and the retry.
    with pytest.raises(ModelUnavailable, match="torch missing"):
        call(client, "ok", timeout_s=30.0, k=1)
    assert call(client, "ok", timeout_s=30.0, k=1)["items"] == [0]


def test_local_client_from_settings_loads_nothing_up_front() -> None:
    code = (
        "import sys\n"
        "from cartwise.serving.runtime.client import local_client_from_settings\n"
        "c = local_client_from_settings({'env': 'test'})\n"
        "print(sorted(c._factories), c.services)\n"
        "print(any(m in sys.modules for m in ('torch', 'ray', 'feast', 'mlflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    lines = out.stdout.strip().splitlines()
    assert lines == ["['customers', 'demand', 'fraud', 'recommend', 'search'] {}", "False"]


@pytest.mark.integration
def test_local_client_serves_the_trained_shop(trained_shop: Any) -> None:
    client = local_client_from_settings(trained_shop.overrides())

    async def scenario() -> dict[str, Any]:
        await client.call("recommend", "warmup", timeout_s=120)
        return await client.call("recommend", "status", timeout_s=5)

    status = asyncio.run(scenario())
    assert status["model"]["name"] == "recommend"
    assert status["model"]["version"] >= 1
    assert status["model"]["alias"] == "champion"


def test_a_build_started_on_one_event_loop_serves_callers_on_another() -> None:
    gate = threading.Event()

    def factory() -> StandIn:
        gate.wait(5)
        return StandIn()

    client = LocalMLClient(factories={"recommend": factory})
    with pytest.raises(Deadline):
        call(client, "ok", timeout_s=0.05, k=1)  # its event loop ends with the call
    gate.set()
    assert call(client, "ok", timeout_s=5, k=2)["items"] == [0, 1]
