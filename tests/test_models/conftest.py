"""Model-infrastructure fixtures: a per-test MLflow store, one shared Ray, a tiny torch model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

N_FEATURES = 4


class MLP(nn.Module):
    """Two linear layers: small enough to train in well under a second."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPPredictor:
    """What an area's predict.py looks like: a state dict plus numpy preprocessing, picklable."""

    def __init__(self, state: dict[str, torch.Tensor], hidden: int, mean: np.ndarray) -> None:
        self.state = state
        self.hidden = hidden
        self.mean = mean
        self._net: MLP | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The rebuilt module is a cache; only the state dict and arrays are persisted.
        return {"state": self.state, "hidden": self.hidden, "mean": self.mean, "_net": None}

    def predict(self, data: Any) -> np.ndarray:
        x = np.asarray(data, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"expected an (n, {N_FEATURES}) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        if self._net is None:
            net = MLP(self.hidden)
            net.load_state_dict(self.state)
            net.eval()
            self._net = net
        with torch.no_grad():
            out = self._net(torch.from_numpy(x - self.mean))
        return out.numpy()


def regression_data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic y = x·w + small noise, float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    w = np.array([1.5, -2.0, 0.5, 1.0], dtype=np.float32)
    y = (x @ w + 0.05 * rng.normal(size=n)).astype(np.float32)[:, None]
    return x, y


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    hidden: int = 8,
    lr: float = 0.05,
    epochs: int = 30,
    seed: int = 0,
) -> MLPPredictor:
    """Full-batch Adam on (x, y); deterministic for a seed."""
    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    net = MLP(hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x - mean), torch.from_numpy(y)
    threads = torch.get_num_threads()
    # One thread: for a model this small, thread hand-offs cost more than the maths (10x here).
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(xt), yt)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return MLPPredictor({k: v.clone() for k, v in net.state_dict().items()}, hidden, mean)


TUNE_EPOCHS = 6


def train_regression(config: dict[str, Any]) -> None:
    """A Tune trial: full-batch Adam, validation MSE reported every epoch with a checkpoint.

    It lives here because Ray workers import the trainable's module: this one pulls in torch and
    Ray only, not MLflow, which keeps each trial's start-up short.
    """
    from cartwise.models import tuning

    tuning.seed_everything(config["seed"])
    torch.set_num_threads(1)  # this trial's own worker process: one CPU, one thread
    x, y = regression_data(n=256, seed=0)
    xv, yv = regression_data(n=128, seed=1)
    mean = x.mean(axis=0)
    net = MLP(config["hidden"])
    opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
    xt, yt = torch.from_numpy(x - mean), torch.from_numpy(y)
    xvt, yvt = torch.from_numpy(xv - mean), torch.from_numpy(yv)
    for _ in range(TUNE_EPOCHS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
        with torch.no_grad():
            val = nn.functional.mse_loss(net(xvt), yvt).item()
        tuning.report(
            {"val_mse": val, "train_mse": loss.item()},
            state={"net": net.state_dict(), "mean": mean, "hidden": config["hidden"]},
        )


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once (creating one takes ~5 s; copying, ~0)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return path


@pytest.fixture
def model_settings(tmp_path: Path, mlflow_template: Path) -> Iterator[Any]:
    """Model settings on a fresh MLflow store and artifact folder under this test's tmp_path."""
    import mlflow

    from cartwise.models.settings import ModelSettings

    var_dir = tmp_path / "var"
    var_dir.mkdir()
    shutil.copyfile(mlflow_template, var_dir / "mlflow.db")
    settings = ModelSettings(env="test", var_dir=var_dir, log_level="WARNING", code_version="test")
    yield settings
    # Leave no run open and no global URI pointing into a deleted tmp folder.
    mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


# A small generated shop shared by the area tests: ~1.3k orders, 60k events, 120 products.
SYNTH_CUSTOMERS, SYNTH_DAYS, SYNTH_PRODUCTS, SYNTH_SEED = 400, 150, 120, 7


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A generated shop as a models Source: facts, feature tables and an applied Feast store.

    Built once per session (about 3 s): Parquet facts with their ground truth, the feature
    tables, and an embedded Feast repo (file registry, SQLite online store). Read-only: tests
    that write (materialise, retrain on shifted data) build their own.
    """
    from datetime import date

    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings
    from cartwise.features.synth import SynthConfig, synth
    from cartwise.features.tables import build_feature_tables
    from cartwise.models.source import Source

    root = tmp_path_factory.mktemp("synth-source")
    settings = FeatureSettings(
        env="test",
        var_dir=root / "var",
        database_url=f"sqlite:///{root / 'unused.db'}",
        feast_project="models_synth",
        log_level="WARNING",
    )
    config = SynthConfig(
        customers=SYNTH_CUSTOMERS,
        days=SYNTH_DAYS,
        seed=SYNTH_SEED,
        start=date(2026, 1, 1),
        products=SYNTH_PRODUCTS,
    )
    synth(config, to="parquet", out=settings.exports_dir)
    build_feature_tables(settings.exports_dir, settings.tables_dir)
    store.apply(settings)
    return Source(facts_dir=settings.exports_dir, store=store.get_store(settings))
