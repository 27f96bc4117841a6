"""The gate promotes a better challenger, keeps a worse one, and records every decision."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cartwise.models import gate, tracking
from tests.test_models.conftest import MLPPredictor, regression_data, train_mlp


@pytest.fixture(scope="module")
def models() -> dict[str, MLPPredictor]:
    """A well-trained and a barely trained MLP on the same synthetic data."""
    x, y = regression_data()
    return {"good": train_mlp(x, y, epochs=60), "poor": train_mlp(x, y, epochs=1, lr=0.001)}


def _evaluate(loaded: tracking.Loaded) -> dict[str, float]:
    """Held-out RMSE and MAE through the loaded pyfunc, as a real gate would do."""
    x, y = regression_data(n=128, seed=42)
    err = loaded.predict(x) - y
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _register(predictor: MLPPredictor, settings: Any) -> int:
    x, _ = regression_data(n=4)
    mv = tracking.register("gated", predictor, area="demo", input_example=x, settings=settings)
    return int(mv.version)


def test_first_challenger_becomes_champion(model_settings: Any, models: Any) -> None:
    v1 = _register(models["poor"], model_settings)

    decision = gate.evaluate_and_promote(
        "gated", evaluate=_evaluate, metric="rmse", higher_is_better=False, settings=model_settings
    )

    assert decision.outcome == "first_champion"
    assert decision.promoted
    assert (decision.challenger_version, decision.champion_version) == (v1, None)
    assert decision.challenger_score is not None
    assert decision.champion_score is None
    assert int(tracking.current("gated", "champion", settings=model_settings).version) == v1


def test_worse_challenger_is_kept_out_and_better_one_promoted(
    model_settings: Any, models: Any
) -> None:
    good = _register(models["good"], model_settings)
    tracking.set_alias("gated", "champion", good, settings=model_settings)
    poor = _register(models["poor"], model_settings)

    kept = gate.evaluate_and_promote(
        "gated",
        evaluate=_evaluate,
        metric="rmse",
        higher_is_better=False,
        window="2011-10-01/2011-12-09",
        settings=model_settings,
    )

    assert kept.outcome == "kept"
    assert not kept.promoted
    assert (kept.challenger_version, kept.champion_version) == (poor, good)
    assert kept.challenger_score > kept.champion_score  # type: ignore[operator]
    assert "not better by more than the margin" in kept.reason
    assert int(tracking.current("gated", "champion", settings=model_settings).version) == good
    tags = tracking.client(model_settings).get_model_version("gated", str(poor)).tags
    assert tags["gate.decision"] == "kept"
    assert float(tags["gate.challenger_score"]) == pytest.approx(kept.challenger_score)
    assert float(tags["gate.champion_score"]) == pytest.approx(kept.champion_score)
    assert tags["gate.window"] == "2011-10-01/2011-12-09"

    # Now the poor model is champion and the good one challenges it.
    tracking.set_alias("gated", "champion", poor, settings=model_settings)
    tracking.set_alias("gated", "challenger", good, settings=model_settings)
    promoted = gate.evaluate_and_promote(
        "gated", evaluate=_evaluate, metric="rmse", higher_is_better=False, settings=model_settings
    )

    assert promoted.outcome == "promoted"
    assert promoted.challenger_score < promoted.champion_score  # type: ignore[operator]
    assert int(tracking.current("gated", "champion", settings=model_settings).version) == good

    runs = tracking.client(model_settings).search_runs(
        [tracking.experiment(gate.GATE_EXPERIMENT, model_settings)],
        order_by=["attributes.start_time ASC"],
    )
    assert [r.data.tags["decision"] for r in runs] == ["kept", "promoted"]
    assert [r.info.run_id for r in runs] == [kept.run_id, promoted.run_id]
    last = runs[-1].data
    assert last.metrics["challenger.rmse"] == pytest.approx(promoted.challenger_score)
    assert last.metrics["champion.rmse"] == pytest.approx(promoted.champion_score)
    assert "champion.mae" in last.metrics
    assert last.params["champion_version"] == str(poor)


def test_improvement_within_the_margin_is_not_enough(model_settings: Any, models: Any) -> None:
    champion = _register(models["good"], model_settings)
    tracking.set_alias("gated", "champion", champion, settings=model_settings)
    _register(models["good"], model_settings)  # the same weights: a 0% gain
    scores = iter([{"auc": 0.804}, {"auc": 0.80}])  # challenger first, then champion

    decision = gate.evaluate_and_promote(
        "gated", evaluate=lambda _: next(scores), metric="auc", margin=0.01, settings=model_settings
    )

    assert decision.outcome == "kept"
    assert "+0.50% vs margin 1.00%" in decision.reason
    assert int(tracking.current("gated", "champion", settings=model_settings).version) == champion


def test_missing_challenger_or_metric_is_an_error(model_settings: Any, models: Any) -> None:
    with pytest.raises(LookupError, match="no version with alias 'challenger'"):
        gate.evaluate_and_promote(
            "gated", evaluate=_evaluate, metric="rmse", settings=model_settings
        )
    _register(models["good"], model_settings)
    with pytest.raises(KeyError, match="returned no 'ndcg'"):
        gate.evaluate_and_promote(
            "gated", evaluate=_evaluate, metric="ndcg", settings=model_settings
        )
