"""ModelHolder against a real MLflow registry (SQLite under tmp_path): load, follow, swap."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cartwise.models.settings import ModelSettings
from cartwise.serving.runtime.errors import ModelUnavailable
from cartwise.serving.runtime.holder import LoadedModel, ModelHolder, mlflow_loader, parse_ref

NAME = "c1-holder"


class Scaler:
    """A tiny picklable predictor: multiplies its input by ``factor``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, data: Any) -> Any:
        return data * self.factor


def _example() -> pd.DataFrame:
    return pd.DataFrame({"x": [1.0, 2.0]})


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with v1 (champion) and v2 (challenger, the same artifacts)."""
    from cartwise.models import tracking

    var = tmp_path_factory.mktemp("holder-registry") / "var"
    settings = ModelSettings(env="test", var_dir=var)
    tracking.register(
        NAME, Scaler(1.0), area="c1", input_example=_example(), alias="champion", settings=settings
    )
    _new_version(settings, alias="challenger", like=1)
    return var


@pytest.fixture
def settings(base_registry: Path, tmp_path: Path) -> ModelSettings:
    """Settings on this test's own copy of the registry (aliases move freely)."""
    var = tmp_path / "var"
    var.mkdir()
    shutil.copy(base_registry / "mlflow.db", var / "mlflow.db")
    return ModelSettings(env="test", var_dir=var)


def _new_version(settings: ModelSettings, *, alias: str = "champion", like: int = 1) -> int:
    """Register another version (the artifacts of ``like``: fast) and point ``alias`` at it."""
    from cartwise.models import tracking

    client = tracking.client(settings)
    source = client.get_model_version(NAME, str(like))
    assert source.source is not None
    created = client.create_model_version(NAME, source.source, run_id=source.run_id)
    tracking.set_alias(NAME, alias, created.version, settings=settings)
    return int(created.version)


def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def test_first_call_loads_the_champion(settings: ModelSettings) -> None:
    holder = ModelHolder(NAME, settings=settings, reload_interval_s=60)
    model = holder.current()
    assert model is not None
    assert model.info() == {"name": NAME, "version": 1, "alias": "champion"}
    assert model.predictor.predict(2.0) == 2.0
    assert holder.get(None) is model
    assert holder.get("champion") is model
    status = holder.status()
    assert status["version"] == 1
    assert status["last_error"] is None
    assert status["loaded_at"] <= time.time()


def test_promotion_is_served_within_the_interval_without_blocking(settings: ModelSettings) -> None:
    holder = ModelHolder(NAME, settings=settings, reload_interval_s=0.2)
    assert holder.current() is not None
    seen: set[int] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(holder.get(None).version)
            except BaseException as exc:
                failures.append(exc)
            time.sleep(0.001)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        version = _new_version(settings)
        _wait_for(lambda: holder.get(None).version == version)
        # current() never waited for MLflow: a call takes far less than a load.
        started = time.perf_counter()
        for _ in range(200):
            holder.current()
        assert (time.perf_counter() - started) / 200 < 0.005
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen == {1, version}
    assert holder.status()["loads"] == 2


def test_missing_model_is_unavailable_until_registered(tmp_path: Path) -> None:
    from cartwise.models import tracking

    settings = ModelSettings(env="test", var_dir=tmp_path / "var")
    holder = ModelHolder("c1-not-yet", settings=settings, reload_interval_s=0.2)
    assert holder.current() is None
    with pytest.raises(ModelUnavailable, match="c1-not-yet"):
        holder.get(None)
    assert "no version with alias 'champion'" in holder.status()["last_error"]

    tracking.register(
        "c1-not-yet",
        Scaler(3.0),
        area="c1",
        input_example=_example(),
        alias="champion",
        settings=settings,
    )
    _wait_for(lambda: holder.current() is not None)
    assert holder.get(None).predictor.factor == 3.0
    assert holder.status()["last_error"] is None


def test_failed_load_keeps_the_old_model(settings: ModelSettings) -> None:
    broken: set[int] = set()

    def loader(
        name: str, alias: str | None, version: int | None, s: ModelSettings | None
    ) -> LoadedModel:
        if version in broken:
            raise OSError(f"artifact of v{version} unreadable")
        return mlflow_loader(name, alias, version, s)

    holder = ModelHolder(NAME, settings=settings, reload_interval_s=0.1, loader=loader)
    assert holder.get(None).version == 1
    version = _new_version(settings)
    broken.add(version)
    # Checks run when requests come: each current() call may start one.
    _wait_for(lambda: holder.current() is not None and holder.status()["last_error"] is not None)
    assert holder.get(None).version == 1  # still serving
    assert f"v{version} unreadable" in holder.status()["last_error"]
    broken.clear()
    _wait_for(lambda: holder.get(None).version == version)
    assert holder.status()["last_error"] is None


def test_variants_are_loaded_lazily_and_kept(settings: ModelSettings) -> None:
    holder = ModelHolder(NAME, settings=settings, reload_interval_s=60)
    challenger = holder.get("challenger")
    assert challenger.info() == {"name": NAME, "version": 2, "alias": "challenger"}
    assert holder.get("challenger") is challenger
    pinned = holder.get("v1")
    assert pinned.info() == {"name": NAME, "version": 1, "alias": None}
    assert holder.status()["variants"] == {"challenger": 2, "v1": 1}
    assert holder.get(None).version == 1
    with pytest.raises(ModelUnavailable, match="v99"):
        holder.get("v99")
    with pytest.raises(ModelUnavailable):
        holder.get("no-such-alias")
    with pytest.raises(ValueError, match="bad model reference"):
        holder.get("../etc")


def test_reconfigure_follows_another_alias_without_a_gap(settings: ModelSettings) -> None:
    holder = ModelHolder(NAME, settings=settings, reload_interval_s=60)
    assert holder.get(None).version == 1
    holder.reconfigure(alias="challenger", reload_interval_s=0.1)
    # Until the background check swaps, the old model keeps answering.
    assert holder.get(None).version in (1, 2)
    _wait_for(
        lambda: holder.get(None).info() == {"name": NAME, "version": 2, "alias": "challenger"}
    )
    assert holder.status()["alias"] == "challenger"
    with pytest.raises(ValueError, match="reload_interval_s"):
        holder.reconfigure(reload_interval_s=-1)


def test_racing_first_callers_wait_for_the_first_load(settings: ModelSettings) -> None:
    holder = ModelHolder(NAME, settings=settings, reload_interval_s=60)
    results: list[int | None] = []

    def call() -> None:
        model = holder.current()
        results.append(None if model is None else model.version)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1, 1, 1, 1]
    assert holder.status()["loads"] == 1


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [(None, (None, None)), ("champion", ("champion", None)), ("v12", (None, 12))],
)
def test_parse_ref(ref: str | None, parsed: tuple[str | None, int | None]) -> None:
    assert parse_ref(ref) == parsed


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    yield
    # Background checks are daemon threads that end with their check; give them a moment.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(t.name.startswith("model-check-") for t in threading.enumerate()):
            return
        time.sleep(0.05)
