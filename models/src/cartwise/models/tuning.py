"""Ray Tune for every model area, with each trial logged to MLflow under one parent run.

A trainable is a function of its config that calls :func:`report` once per epoch (metrics, and
optionally a state dict that becomes the trial's checkpoint). :func:`tune` runs it as Ray Tune
trials; ``MLflowLoggerCallback`` logs each trial's params and per-epoch metrics from the driver
into the area's experiment, nested under a parent run that gets the best config and metrics.

Example::

    from ray import tune as rt
    from cartwise.models import tracking, tuning

    def train(config: dict, data: Dataset) -> None:
        tuning.seed_everything(config["seed"])
        model = Net(config["hidden"])
        for epoch in range(config["epochs"]):
            ...
            tuning.report({"val_rmse": rmse, "train_loss": loss}, state=model.state_dict())

    result = tuning.tune(
        rt.with_parameters(train, data=data),   # big objects go through the object store
        area="demand",
        search_space={"hidden": rt.choice([16, 32]), "lr": rt.loguniform(1e-3, 1e-1), "epochs": 20},
        metric="val_rmse",
        mode="min",
        max_epochs=20,                          # turns on ASHA early stopping
    )
    state = tuning.load_state(result.best_checkpoint)   # -> build the predictor, then:
    tracking.register("demand", predictor, area="demand", input_example=x,
                      run_id=result.best_run_id, metrics={"val_rmse": ...})

Trials are ranked by their best report of ``metric``; each keeps only its best checkpoint, so
``best_checkpoint`` and ``best_metrics`` come from the best epoch of the best trial (early
stopping for free). Pass ``state`` on every epoch, or only on those worth keeping. Every trial
gets ``config["seed"]`` (``seed`` unless the search space sets it), and the searcher samples
configs from the same seed, so a rerun repeats itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import ray
import torch
from ray import tune as ray_tune

if TYPE_CHECKING:
    from cartwise.models.settings import ModelSettings

_STATE_FILE = "state.pt"


@dataclass(frozen=True)
class TuneResult:
    """The outcome of :func:`tune`: the best trial, where it lives, and every trial's last row."""

    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    best_checkpoint: ray_tune.Checkpoint | None
    best_path: str
    # The best trial's MLflow run (pass it to tracking.register) and the run grouping the trials.
    best_run_id: str | None
    parent_run_id: str
    experiment_id: str
    results_df: pd.DataFrame


def ensure_ray(settings: ModelSettings | None = None) -> None:
    """Start a local Ray (or join ``ray_address``) unless this process is already connected."""
    if ray.is_initialized():
        return
    from cartwise.models.settings import get_model_settings

    settings = settings or get_model_settings()
    if settings.ray_address:
        ray.init(address=settings.ray_address, include_dashboard=False)
        return
    if "RAY_ENABLE_UV_RUN_RUNTIME_ENV" not in os.environ:
        # Under `uv run`, Ray would zip the working directory and build a new virtualenv for the
        # workers (minutes per session); a local Ray can share this interpreter. Ray reads the
        # flag when it is imported, so the already-imported constant is switched off too.
        from ray._private import ray_constants

        os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    # ray.init() picks free ports; `ray start --head` would want 6379, where Redis runs here.
    ray.init(num_cpus=settings.ray_num_cpus, include_dashboard=False)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch inside a trial so the same config gives the same metrics."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def report(metrics: Mapping[str, float], *, state: Any = None) -> None:
    """Report one epoch from inside a trainable; a ``state`` becomes the trial's checkpoint."""
    values = {k: float(v) for k, v in metrics.items()}
    if state is None:
        ray_tune.report(values)
        return
    with tempfile.TemporaryDirectory(prefix="cartwise-ckpt-") as tmp:
        torch.save(state, Path(tmp) / _STATE_FILE)
        # Tune copies the folder into the trial's storage before report() returns.
        ray_tune.report(values, checkpoint=ray_tune.Checkpoint.from_directory(tmp))


def load_state(checkpoint: ray_tune.Checkpoint) -> Any:
    """The ``state`` a trial passed to :func:`report` in this checkpoint."""
    with checkpoint.as_directory() as folder:
        # Our own checkpoint (state dicts plus numpy arrays), so full unpickling is intended.
        return torch.load(Path(folder) / _STATE_FILE, weights_only=False)


def tune(
    trainable: Callable[..., Any],
    *,
    area: str,
    search_space: Mapping[str, Any],
    metric: str,
    mode: Literal["min", "max"],
    num_samples: int | None = None,
    max_concurrent: int | None = None,
    resources_per_trial: Mapping[str, float] | None = None,
    max_epochs: int | None = None,
    stop: Mapping[str, Any] | None = None,
    seed: int = 0,
    tags: Mapping[str, str] | None = None,
    verbose: int = 1,
    settings: ModelSettings | None = None,
) -> TuneResult:
    """Run ``num_samples`` Ray Tune trials of ``trainable`` over ``search_space``, logged to MLflow.

    ``num_samples`` and ``max_concurrent`` default to the settings; each trial asks for
    ``resources_per_trial`` (one CPU). ``max_epochs`` enables ASHA, which stops poor trials early
    on ``training_iteration`` (one :func:`report` per epoch). ``stop`` is Ray's stop criteria.
    Raises ``RuntimeError`` when every trial failed.
    """
    # Imported here, not at the top: trial workers import this module for report() and
    # seed_everything(), and need not pay for importing MLflow.
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from cartwise.models import tracking

    settings = tracking.configure(settings)
    ensure_ray(settings)
    experiment_id = tracking.experiment(area, settings)
    mlflow_client = tracking.client(settings)
    common_tags = {"area": area, **(tags or {})}
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    parent = mlflow_client.create_run(
        experiment_id, run_name=f"tune-{area}-{stamp}", tags={**common_tags, "kind": "tune"}
    )
    parent_id = parent.info.run_id
    num_samples = num_samples or settings.tune_num_samples
    max_concurrent = max_concurrent or settings.tune_max_concurrent
    param_space = {"seed": seed, **search_space}
    for key, value in {
        "metric": metric,
        "mode": mode,
        "num_samples": num_samples,
        "max_concurrent": max_concurrent,
        "max_epochs": max_epochs,
        "seed": seed,
        **{f"space.{k}": _describe(v) for k, v in param_space.items()},
    }.items():
        mlflow_client.log_param(parent_id, key, str(value)[:6000])

    # Logging from the driver (not the workers) keeps one writer on the tracking store, which
    # SQLite needs, and lets cluster workers run without reaching it.
    callback = MLflowLoggerCallback(
        tracking_uri=settings.tracking_uri,
        registry_uri=settings.registry_uri,
        experiment_name=area,
        # MLflow nests a run under the one named by this tag; Ray has no nesting of its own.
        tags={**common_tags, "kind": "trial", "mlflow.parentRunId": parent_id},
    )
    scheduler = (
        ASHAScheduler(max_t=max_epochs, grace_period=min(2, max_epochs), reduction_factor=2)
        if max_epochs
        else None
    )

    def trial_name(trial: Any) -> str:
        return f"{area}_{trial.trial_id}"

    tuner = ray_tune.Tuner(
        ray_tune.with_resources(trainable, dict(resources_per_trial or {"cpu": 1})),
        param_space=param_space,
        tune_config=ray_tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            search_alg=BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed),
            scheduler=scheduler,
            # A fresh worker pays for importing torch and Ray Tune (seconds each); reuse it.
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=ray_tune.RunConfig(
            name=f"{area}-{stamp}-{parent_id[:8]}",
            storage_path=settings.tune_storage_path,
            callbacks=[callback],
            stop=dict(stop) if stop else None,
            verbose=verbose,
            # Each trial keeps only its best checkpoint by the metric: early stopping for free.
            checkpoint_config=ray_tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
        ),
    )
    try:
        with _signal_handlers_restored():
            grid = tuner.fit()
        if grid.num_errors == len(grid):
            raise RuntimeError(f"every {area} trial failed; first error: {grid.errors[0]!r}")
        # "all": a trial is ranked by its best epoch, the one its kept checkpoint holds.
        best = grid.get_best_result(metric=metric, mode=mode, scope="all")
    except BaseException:
        mlflow_client.set_terminated(parent_id, "FAILED")
        raise

    best_name = trial_name(_TrialId(str((best.metrics or {}).get("trial_id", ""))))
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_id}' AND tags.trial_name = '{best_name}'"
        ),
    )
    best_run_id = runs[0].info.run_id if runs else None
    best_config = dict(best.config or {})
    best_checkpoint, best_metrics = _best_checkpoint(best, metric, mode)
    for key, value in best_config.items():
        mlflow_client.log_param(parent_id, f"best.{key}", str(value)[:6000])
    if isinstance(best_metrics.get(metric), int | float):
        mlflow_client.log_metric(parent_id, f"best.{metric}", float(best_metrics[metric]))
    mlflow_client.set_tag(parent_id, "best_run_id", best_run_id or "unknown")
    mlflow_client.set_tag(parent_id, "best_trial", best_name)
    mlflow_client.set_terminated(parent_id, "FINISHED")
    return TuneResult(
        best_config=best_config,
        best_metrics=best_metrics,
        best_checkpoint=best_checkpoint,
        best_path=str(best.path),
        best_run_id=best_run_id,
        parent_run_id=parent_id,
        experiment_id=experiment_id,
        results_df=grid.get_dataframe(),
    )


@contextlib.contextmanager
def _signal_handlers_restored() -> Iterator[None]:
    """Put back the SIGINT/SIGUSR1 handlers that ``Tuner.fit`` replaces and never restores.

    Ray Tune installs its own "stop the experiment" handler on every run and leaves it behind,
    so after training a later Ctrl-C (``make demo`` serving) would be swallowed by a stale
    handler of a finished run instead of stopping the process.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in ("SIGINT", "SIGUSR1") if hasattr(signal, n)]
    saved = {n: signal.getsignal(getattr(signal, n)) for n in names}
    try:
        yield
    finally:
        for n, handler in saved.items():
            if handler is not None:
                signal.signal(getattr(signal, n), handler)


def _best_checkpoint(
    result: ray_tune.Result, metric: str, mode: str
) -> tuple[ray_tune.Checkpoint | None, dict[str, Any]]:
    """The trial's best checkpoint and the metrics reported with it (else its last metrics)."""
    scored = [
        (checkpoint, values)
        for checkpoint, values in result.best_checkpoints or []
        if isinstance(values.get(metric), int | float)
    ]
    if not scored:
        return result.checkpoint, dict(result.metrics or {})
    pick = min if mode == "min" else max
    checkpoint, values = pick(scored, key=lambda pair: float(pair[1][metric]))
    return checkpoint, dict(values)


@dataclass(frozen=True)
class _TrialId:
    """Stands in for a Trial when naming one from its id after the run."""

    trial_id: str


def _describe(value: Any) -> str:
    """A readable form of a search-space entry (Ray's domains print their class and bounds)."""
    domain = getattr(value, "domain_str", None)
    if domain is not None:
        return f"{type(value).__name__}{domain}"
    return repr(value)
