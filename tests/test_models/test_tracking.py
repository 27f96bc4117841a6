"""Registering, loading by alias and tagging model versions in a local MLflow store."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pytest

from cartwise.models import tracking
from tests.test_models.conftest import MLPPredictor, regression_data, train_mlp


@pytest.fixture
def predictor() -> MLPPredictor:
    """A trained two-layer MLP behind a predictor object."""
    x, y = regression_data()
    return train_mlp(x, y, epochs=20)


def test_register_then_load_by_alias_gives_identical_predictions(
    model_settings: Any, predictor: MLPPredictor
) -> None:
    x, _ = regression_data(n=16, seed=1)
    mv = tracking.register(
        "tiny-mlp",
        predictor,
        area="demo",
        input_example=x[:3],
        metrics={"rmse": 0.12},
        params={"hidden": 8, "lr": 0.05},
        data_window="2011-01-01/2011-09-30",
        feature_service="demo_v1",
        tags={"seed": "0"},
        settings=model_settings,
    )
    assert int(mv.version) == 1
    assert mv.aliases == ["challenger"]

    loaded = tracking.load("tiny-mlp", "challenger", settings=model_settings)
    assert (loaded.version, loaded.alias, loaded.run_id) == (1, "challenger", mv.run_id)
    np.testing.assert_array_equal(loaded.predict(x), predictor.predict(x))
    assert isinstance(loaded.predictor, MLPPredictor)
    # The plain MLflow path serving uses gives the same numbers.
    plain = mlflow.pyfunc.load_model("models:/tiny-mlp@challenger")
    np.testing.assert_array_equal(plain.predict(x), predictor.predict(x))

    run = tracking.client(model_settings).get_run(mv.run_id)
    assert run.data.params == {"hidden": "8", "lr": "0.05"}
    assert run.data.metrics["rmse"] == pytest.approx(0.12)
    assert run.info.experiment_id == tracking.experiment("demo", model_settings)


def test_version_carries_its_provenance_tags(model_settings: Any, predictor: MLPPredictor) -> None:
    x, _ = regression_data(n=4)
    tracking.register(
        "tiny-mlp",
        predictor,
        area="demo",
        input_example=x,
        metrics={"rmse": 0.5, "mae": 0.25},
        data_window="2011-01-01/2011-09-30",
        feature_service="demo_v1",
        settings=model_settings,
    )
    tags = tracking.load("tiny-mlp", "challenger", settings=model_settings).tags
    assert tags["area"] == "demo"
    assert tags["metric.rmse"] == "0.5"
    assert tags["metric.mae"] == "0.25"
    assert tags["data_window"] == "2011-01-01/2011-09-30"
    assert tags["feature_service"] == "demo_v1"
    assert tags["code_version"] == "test"


def test_versions_increment_and_aliases_move(model_settings: Any, predictor: MLPPredictor) -> None:
    x, _ = regression_data(n=4)
    versions = [
        tracking.register(
            "tiny-mlp", predictor, area="demo", input_example=x, settings=model_settings
        ).version
        for _ in range(2)
    ]
    assert [int(v) for v in versions] == [1, 2]
    assert tracking.current("tiny-mlp", "challenger", settings=model_settings).version == 2
    assert tracking.current("tiny-mlp", "champion", settings=model_settings) is None
    assert tracking.current("no-such-model", "champion", settings=model_settings) is None

    tracking.set_alias("tiny-mlp", "champion", 1, settings=model_settings)
    assert tracking.load("tiny-mlp", settings=model_settings).version == 1
    with pytest.raises(LookupError, match="no version 9"):
        tracking.set_alias("tiny-mlp", "champion", 9, settings=model_settings)
    with pytest.raises(LookupError, match="no version with alias 'staging'"):
        tracking.load("tiny-mlp", "staging", settings=model_settings)


def test_register_inside_a_callers_run_leaves_that_run_open(
    model_settings: Any, predictor: MLPPredictor
) -> None:
    x, _ = regression_data(n=4)
    tracking.configure(model_settings)
    with mlflow.start_run(experiment_id=tracking.experiment("demo", model_settings)) as outer:
        mv = tracking.register(
            "tiny-mlp", predictor, area="demo", input_example=x, settings=model_settings
        )
        assert mlflow.active_run().info.run_id == outer.info.run_id  # type: ignore[union-attr]
    assert mv.run_id != outer.info.run_id


def test_malformed_input_is_refused_with_a_clear_error(
    model_settings: Any, predictor: MLPPredictor
) -> None:
    x, _ = regression_data(n=4)
    tracking.register("tiny-mlp", predictor, area="demo", input_example=x, settings=model_settings)
    loaded = tracking.load("tiny-mlp", "challenger", settings=model_settings)

    with pytest.raises(ValueError, match=r"(?s)does not match the model signature.*\(-1, 4\)"):
        loaded.predict(np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="does not match the model signature"):
        loaded.predict(np.array(["a", "b", "c", "d"]).reshape(1, 4))
    # What the schema cannot see, the predictor itself refuses.
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        loaded.predict(bad)


def test_settings_default_to_embedded_sqlite_and_refuse_it_in_production(tmp_path: Any) -> None:
    from cartwise.models.settings import ModelSettings

    embedded = ModelSettings(env="test", var_dir=tmp_path / "var")
    assert embedded.tracking_uri == f"sqlite:///{tmp_path.resolve()}/var/mlflow.db"
    assert embedded.registry_uri == embedded.tracking_uri
    assert embedded.artifact_root == (tmp_path.resolve() / "var" / "mlartifacts").as_uri()

    production = {
        "env": "production",
        "jwt_secret": "x" * 40,
        "database_url": "postgresql://db/cartwise",
        "redis_url": "redis://cache:6379/0",
    }
    for uri in (None, "sqlite:///var/mlflow.db", "file:///mlruns", "mlruns"):
        with pytest.raises(ValueError, match="CARTWISE_MLFLOW_TRACKING_URI"):
            ModelSettings(**production, mlflow_tracking_uri=uri)
    with pytest.raises(ValueError, match="CARTWISE_MLFLOW_ARTIFACT_ROOT"):
        ModelSettings(**production, mlflow_tracking_uri="postgresql://db/mlflow")
    direct = ModelSettings(
        **production,
        mlflow_tracking_uri="postgresql://db/mlflow",
        mlflow_artifact_root="s3://bucket/mlflow",
    )
    assert direct.tracking_uri == "postgresql+psycopg://db/mlflow"
    served = ModelSettings(
        **production,
        mlflow_tracking_uri="http://mlflow:5000",
        mlflow_artifact_root="s3://bucket/mlflow",
    )
    assert served.artifact_root == "s3://bucket/mlflow"
    # A tracking server proxies artifacts itself unless a root is set.
    assert (
        ModelSettings(**production, mlflow_tracking_uri="http://mlflow:5000").artifact_root is None
    )
