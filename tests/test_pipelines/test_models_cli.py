"""``cartwise models train|evaluate|list|promote`` end to end on a small generated shop.

The area tests train every area through ``areas.train``; this one proves the CLI path a person
(or ``make demo``) takes: settings from the environment, the Source built from the exported
facts and the applied Feast store, the registry's aliases moving, decisions printed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The cheapest area to train; every area goes through the same CLI code.
AREA = "customers"


def _clear_caches() -> None:
    from cartwise.features.settings import get_feature_settings
    from cartwise.models.settings import get_model_settings
    from cartwise.platform.settings import get_settings

    for cached in (get_settings, get_feature_settings, get_model_settings):
        cached.cache_clear()


@pytest.fixture
def shop_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A generated shop exported under a fresh VAR_DIR, features built and applied."""
    import mlflow

    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings
    from cartwise.features.synth import SynthConfig, synth
    from cartwise.features.tables import build_feature_tables

    var_dir = tmp_path / "var"
    env = {
        "CARTWISE_ENV": "development",
        "CARTWISE_VAR_DIR": str(var_dir),
        "CARTWISE_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CARTWISE_REDIS_URL": "",
        "CARTWISE_FEAST_PROJECT": f"cli{uuid.uuid4().hex[:8]}",
        "CARTWISE_LOG_LEVEL": "WARNING",
        # One trial at a time: with concurrent trials ASHA's early stopping depends on which
        # trial reaches a rung first, so only sequential tuning repeats itself exactly.
        "CARTWISE_TUNE_MAX_CONCURRENT": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _clear_caches()
    settings = FeatureSettings()
    config = SynthConfig(customers=300, days=120, seed=3, start=date(2026, 1, 1), products=80)
    synth(config, to="parquet", out=settings.exports_dir)
    build_feature_tables(settings.exports_dir, settings.tables_dir)
    store.apply(settings)
    yield var_dir
    _clear_caches()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _run(args: list[str]) -> Any:
    from cartwise.pipelines.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def test_train_evaluate_list_promote(shop_env: Path, ray_session: None) -> None:
    from cartwise.models import tracking
    from cartwise.models.areas import spec

    name = spec(AREA).model_name
    first = _run(["models", "train", AREA, "--tune-samples", "2", "--seed", "1"])
    assert "v1 (challenger)" in first.output
    assert (shop_env / "mlflow.db").is_file()
    gated = _run(["models", "evaluate", AREA])
    assert "first_champion" in gated.output
    assert int(tracking.current(name, tracking.CHAMPION).version) == 1  # type: ignore[union-attr]

    # A second, identical run (same seed, same data) registers v2 with the same score; the
    # gate keeps v1 because a tie does not beat the margin.
    _run(["models", "train", AREA, "--tune-samples", "2", "--seed", "1"])
    v1 = tracking.client().get_model_version(name, "1").tags[f"metric.{spec(AREA).metric}"]
    v2 = tracking.client().get_model_version(name, "2").tags[f"metric.{spec(AREA).metric}"]
    assert v1 == v2
    kept = _run(["models", "evaluate", AREA])
    assert "kept" in kept.output
    assert int(tracking.current(name, tracking.CHAMPION).version) == 1  # type: ignore[union-attr]

    listed = _run(["models", "list"])
    assert "v1" in listed.output
    assert "v2" in listed.output

    _run(["models", "promote", AREA, "--version", "2", "--reason", "rollout by hand"])
    assert int(tracking.current(name, tracking.CHAMPION).version) == 2  # type: ignore[union-attr]


def test_bad_arguments_are_refused_clearly(shop_env: Path) -> None:
    from cartwise.pipelines.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["models", "train", "weather"])
    assert unknown.exit_code == 2
    assert "unknown area" in unknown.output
    budget = runner.invoke(app, ["models", "train", AREA, "--budget", "huge"])
    assert budget.exit_code == 2
    missing = runner.invoke(app, ["models", "promote", AREA, "--version", "7", "--reason", "x"])
    assert missing.exit_code == 1
    assert "cannot promote" in missing.output


def test_training_without_exported_facts_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cartwise.pipelines.cli import app

    monkeypatch.setenv("CARTWISE_VAR_DIR", str(tmp_path / "empty"))
    _clear_caches()
    try:
        result = CliRunner().invoke(app, ["models", "train", AREA])
    finally:
        _clear_caches()
    assert result.exit_code == 1
    assert "refresh-features" in result.output
