"""Drift monitoring building blocks: Evidently drift, permutation importance, reference samples."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models import monitoring
from cartwise.models.monitoring import drift


def _frame(n: int, seed: int, *, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 0.5, n),
            "velocity": rng.poisson(1.0, n).astype(float),
            "age_days": rng.normal(200.0, 50.0, n),
        }
    )
    if shift:
        # Two features move (bigger orders, far more of them per hour); age stays as it was.
        frame["amount"] = frame["amount"] * 2.5
        frame["velocity"] = frame["velocity"] + 3.0
    return frame


def test_a_known_shift_in_two_features_is_detected_and_the_third_is_not() -> None:
    reference = _frame(1500, seed=1)
    reference["prediction"] = reference["amount"] / 100
    current = _frame(400, seed=2, shift=True)
    current["prediction"] = current["amount"] / 100
    found = drift.run(
        reference, current, features=["amount", "velocity", "age_days"], prediction="prediction"
    )
    assert found.columns["amount"]["drifted"] is True
    assert found.columns["velocity"]["drifted"] is True
    assert found.columns["age_days"]["drifted"] is False
    assert found.drifted_features == 2
    assert found.drift_share == pytest.approx(2 / 3)
    assert found.prediction_drifted is True
    assert found.prediction_drift is not None
    assert found.prediction_drift > 0.1
    assert b"<html" in found.html[:2000].lower()

    same = drift.run(
        reference,
        _frame(400, seed=3).assign(prediction=lambda f: f["amount"] / 100),
        features=["amount", "velocity", "age_days"],
        prediction="prediction",
    )
    assert same.drifted_features == 0
    assert same.prediction_drifted is False


def test_importance_ranks_a_used_feature_above_noise() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"signal": rng.normal(size=600), "noise": rng.normal(size=600)})
    y = (frame["signal"] > 0).to_numpy(float)

    def predict(data: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-3.0 * data["signal"].to_numpy()))

    label_free = monitoring.permutation_importance(predict, frame)
    assert label_free["signal"] > 0.1
    assert label_free["noise"] == 0.0

    def accuracy(pred: np.ndarray) -> float:
        return float(((pred > 0.5) == y).mean())

    scored = monitoring.permutation_importance(predict, frame, score=accuracy, repeats=2)
    # Shuffling the signal drops accuracy from 1.0 to about a coin flip.
    assert scored["signal"] == pytest.approx(0.5, abs=0.1)
    assert scored["noise"] == 0.0


def _version(name: str, settings: Any) -> tuple[str, int]:
    """A bare registered version (no model files: the reference is all these tests need)."""
    from cartwise.models import tracking

    client = tracking.client(settings)
    run_id = client.create_run(tracking.experiment("demo", settings)).info.run_id
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    return run_id, int(mv.version)


def test_a_reference_round_trips_through_mlflow(model_settings: Any) -> None:
    from cartwise.models import tracking

    run_id, version = _version("tiny", model_settings)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(64, 4)), columns=["a", "b", "c", "d"])
    preds = np.arange(len(frame), dtype=float)
    labels = np.where(np.arange(len(frame)) % 2 == 0, 1.0, np.nan)
    monitoring.log_reference(
        "demo",
        run_id=run_id,
        frame=frame,
        predictions=preds,
        importance={"a": 0.5, "b": 0.1},
        labels=labels,
        meta={"data_window": "2026-01-01/2026-01-31"},
        settings=model_settings,
    )
    ref = monitoring.load_reference("tiny", version, settings=model_settings)
    pd.testing.assert_frame_equal(ref.features, frame)
    np.testing.assert_array_equal(ref.predictions.to_numpy(), preds)
    assert ref.labels is not None
    np.testing.assert_array_equal(ref.labels.to_numpy(), labels)
    assert ref.importance == {"a": 0.5, "b": 0.1}
    assert ref.meta["data_window"] == "2026-01-01/2026-01-31"
    assert ref.meta["features"] == ["a", "b", "c", "d"]

    monitoring.tag_report(
        "tiny", version, "s3://reports/tiny.html", drift_share=0.25, settings=model_settings
    )
    tags = tracking.client(model_settings).get_model_version("tiny", str(version)).tags
    assert tags["monitoring.last_report"] == "s3://reports/tiny.html"
    assert tags["monitoring.last_report.drift_share"] == "0.2500"

    # A version registered without one says so instead of returning something stale.
    _, other = _version("tiny", model_settings)
    with pytest.raises(LookupError, match="no reference sample"):
        monitoring.load_reference("tiny", other, settings=model_settings)
    with pytest.raises(LookupError, match="no version"):
        monitoring.load_reference("tiny", 99, settings=model_settings)


def test_check_without_a_champion_reports_instead_of_failing(
    model_settings: Any, tmp_path: Any
) -> None:
    from datetime import UTC, datetime

    from cartwise.models.source import Source

    result = monitoring.check(
        "fraud",
        Source(facts_dir=tmp_path),
        now=datetime(2026, 3, 1, tzinfo=UTC),
        settings=model_settings,
    )
    assert result.model_version is None
    assert result.drift_share is None
    assert result.window_start == datetime(2026, 2, 15, tzinfo=UTC)
    assert any("no champion" in note for note in result.notes)
    body = json.loads(result.json)
    assert body["area"] == "fraud"
    assert body["drift_share"] is None
    assert b"no champion" in result.html
    with pytest.raises(ValueError, match="unknown area"):
        monitoring.check("nope", Source(facts_dir=tmp_path), settings=model_settings)


def test_a_large_reference_is_sampled_down(model_settings: Any) -> None:
    frame = pd.DataFrame({"a": np.arange(12_000, dtype=float)})
    run_id = monitoring.log_reference(
        "demo",
        run_id=None,
        frame=frame,
        predictions=frame["a"] * 2,
        importance={},
        settings=model_settings,
    )
    from cartwise.models import tracking

    client = tracking.client(model_settings)
    local = client.download_artifacts(
        run_id, "monitoring/reference.parquet", str(model_settings.var_dir)
    )
    table = pd.read_parquet(local)
    assert len(table) == 5_000
    assert table["a"].is_monotonic_increasing
    np.testing.assert_array_equal(table["prediction"], table["a"] * 2)
