"""Ray Tune trials of a tiny torch regression, logged to MLflow, then registered and reloaded."""

from __future__ import annotations

import signal
from typing import Any

import numpy as np
import pytest
from ray import tune as ray_tune

from cartwise.models import tracking, tuning
from tests.test_models.conftest import TUNE_EPOCHS, MLPPredictor, regression_data, train_regression

pytestmark = pytest.mark.slow


def test_tune_logs_every_trial_to_mlflow_and_finds_the_better_one(
    ray_session: None, model_settings: Any
) -> None:
    before = signal.getsignal(signal.SIGINT)
    result = tuning.tune(
        train_regression,
        area="demo",
        # A learning rate that barely moves the weights against one that learns.
        search_space={"lr": ray_tune.grid_search([1e-4, 0.1]), "hidden": 8},
        metric="val_mse",
        mode="min",
        num_samples=1,
        max_concurrent=2,
        max_epochs=TUNE_EPOCHS,  # ASHA on: the poor trial may be stopped early
        verbose=0,
        seed=7,
        settings=model_settings,
    )

    # Ray Tune's own Ctrl-C handler is gone again: a later Ctrl-C (serving) still reaches us.
    assert signal.getsignal(signal.SIGINT) is before
    assert result.best_config["lr"] == 0.1
    assert result.best_config["seed"] == 7
    assert len(result.results_df) == 2

    client = tracking.client(model_settings)
    trials = client.search_runs(
        [result.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    assert len(trials) == 2
    assert {r.data.params["lr"] for r in trials} == {"0.0001", "0.1"}
    assert all(r.info.status == "FINISHED" for r in trials)
    assert result.best_run_id in {r.info.run_id for r in trials}

    # Per-epoch metrics reached MLflow, and the best trial's loss falls.
    history = [m.value for m in client.get_metric_history(result.best_run_id, "val_mse")]
    assert len(history) == TUNE_EPOCHS
    assert history[-1] < history[0] / 2
    by_lr = {r.data.params["lr"]: r.data.metrics["val_mse"] for r in trials}
    assert by_lr["0.1"] < by_lr["0.0001"]

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["best_run_id"] == result.best_run_id
    assert parent.data.params["best.lr"] == "0.1"

    # The best checkpoint becomes a registered model in the best trial's run.
    assert result.best_checkpoint is not None
    state = tuning.load_state(result.best_checkpoint)
    predictor = MLPPredictor(state["net"], state["hidden"], state["mean"])
    xv, yv = regression_data(n=128, seed=1)
    mse = float(np.mean((predictor.predict(xv) - yv) ** 2))
    assert mse == pytest.approx(result.best_metrics["val_mse"], rel=1e-5)

    mv = tracking.register(
        "demo-mlp",
        predictor,
        area="demo",
        input_example=xv[:3],
        run_id=result.best_run_id,
        settings=model_settings,
    )
    assert mv.run_id == result.best_run_id
    # Without metrics=..., the version is tagged with the trial run's latest values.
    assert float(mv.tags["metric.val_mse"]) == pytest.approx(history[-1])
    assert "metric.time_total_s" not in mv.tags
    loaded = tracking.load("demo-mlp", "challenger", settings=model_settings)
    np.testing.assert_array_equal(loaded.predict(xv), predictor.predict(xv))
