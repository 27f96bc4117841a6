"""The ``refresh_features`` Prefect flow and the ``cartwise features`` / ``flows`` commands."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from cartwise.features.settings import FeatureSettings
from tests.test_features.shop import build_shop

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _overrides(settings: FeatureSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def test_flow_refreshes_then_does_no_work_twice(
    prefect_harness: None, feature_env: tuple[FeatureSettings, Session]
) -> None:
    from cartwise.features.store import get_store
    from cartwise.pipelines.flows.features import refresh_features

    settings, s = feature_env
    shop = build_shop(s)
    first = refresh_features(overrides=_overrides(settings))
    assert first["exported"]["orders"] == 4
    assert first["exported"]["events"] == 5
    assert first["tables"]["customer_stats"] > 0
    assert first["applied"] is True
    # One online row per customer (Ann and Bob), however many daily rows the table holds.
    assert first["materialized"]["customer_stats"] == 2
    assert first["tables"]["customer_stats"] > 2

    fs = get_store(settings)
    online = fs.get_online_features(
        features=fs.get_feature_service("recommend_v1"),
        entity_rows=[{"customer_id": shop.customer}],
    ).to_dict()
    assert online["orders_lifetime"] == [2]

    second = refresh_features(overrides=_overrides(settings))
    assert second["exported"]["orders"] == 0
    assert second["applied"] is False
    assert second["materialized"] == {}


def test_flow_retries_a_failing_step(
    prefect_harness: None,
    feature_env: tuple[FeatureSettings, Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cartwise.features import store
    from cartwise.pipelines.flows import features as flows

    settings, s = feature_env
    build_shop(s)
    real_apply = store.apply
    calls: list[int] = []

    def flaky_apply(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("registry went away")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(store, "apply", flaky_apply)
    monkeypatch.setattr(flows.apply_definitions, "retry_delay_seconds", [0, 0])
    result = flows.refresh_features(overrides=_overrides(settings))
    assert len(calls) == 2
    assert result["applied"] is True


def test_cli_runs_each_step_and_the_flow(
    prefect_harness: None,
    feature_env: tuple[FeatureSettings, Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cartwise.features.settings import get_feature_settings
    from cartwise.pipelines.cli import app

    settings, s = feature_env
    build_shop(s)
    for key, value in _overrides(settings).items():
        if value is not None and not isinstance(value, (list, dict)):
            monkeypatch.setenv(f"CARTWISE_{key.upper()}", str(value))
    get_feature_settings.cache_clear()
    runner = CliRunner()
    try:
        for args, expected in [
            (["features", "export"], "orders"),
            (["features", "build"], "customer_stats"),
            (["features", "apply"], "applied"),
            (["features", "apply"], "unchanged"),
            (["features", "materialize"], "customer_stats"),
            (["flows", "run", "refresh-features"], "exported"),
        ]:
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output)
            assert expected in result.output, (args, result.output)
        bad = runner.invoke(app, ["flows", "run", "no-such-flow"])
        assert bad.exit_code != 0
        assert "unknown flow" in bad.output
    finally:
        get_feature_settings.cache_clear()
