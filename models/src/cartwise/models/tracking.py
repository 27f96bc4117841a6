"""MLflow tracking and registry for every model area: register, load by alias, move aliases.

A model is registered as an MLflow **pyfunc** whose python model is :class:`PredictorModel`, a thin
wrapper around the area's picklable predictor object (``<area>/predict.py``: torch state dicts,
numpy arrays, id maps). The predictor is stored as a cloudpickle artifact and the wrapper is logged
"from code", so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` alone serves it, and old
versions keep loading when this module changes. A predictor needs one method,
``predict(data) -> output`` (plus keyword params if the signature declares them), and should raise
``ValueError`` with a clear message for inputs the signature cannot catch (unknown ids, NaNs).

Example::

    from cartwise.models import tracking

    version = tracking.register(
        "recommend-hybrid",
        predictor,                      # any picklable object with .predict(data)
        area="recommend",
        input_example=example_frame,    # the signature is inferred from it and predict()
        run_id=tune_result.best_run_id,  # or metrics={...}, params={...} for a fresh run
        metrics={"ndcg_at_10": 0.31},
        data_window="2011-01-01/2011-09-30",
        feature_service="recommend_v1",
    )                                   # alias "challenger" now points at version.version
    loaded = tracking.load("recommend-hybrid", "challenger")
    loaded.predict(example_frame)       # signature mismatches raise ValueError

Nothing touches MLflow at import time; every function configures it from
:func:`cartwise.models.settings.get_model_settings` unless given ``settings``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cloudpickle  # type: ignore[import-untyped]
import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient

from cartwise.models.settings import ModelSettings, get_model_settings

CHALLENGER = "challenger"
CHAMPION = "champion"

# The artifact key of the pickled predictor inside the pyfunc model.
_PREDICTOR_ARTIFACT = "predictor"

# Logged "from code": MLflow copies this file into the model and runs it at load time, so the
# wrapper class is imported rather than unpickled.
_ENTRY_CODE = """\
import mlflow

from cartwise.models.tracking import PredictorModel

mlflow.models.set_model(PredictorModel())
"""

# Ray Tune's bookkeeping that lands in a trial run's metrics; not model quality.
_BOOKKEEPING_METRICS = frozenset(
    {
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "training_iteration",
        "iterations_since_restore",
        "timesteps_since_restore",
        "pid",
        "done",
        "checkpoint_dir_name",
    }
)


class Predictor(Protocol):
    """What an area's ``predict.py`` object offers; it must also be picklable."""

    def predict(self, data: Any, /) -> Any:
        """Score a batch; raise ``ValueError`` for malformed input."""
        ...


class PredictorModel(PythonModel):
    """The pyfunc wrapper: loads the pickled predictor and delegates ``predict`` to it."""

    # The input type is whatever the predictor takes, and the logged signature validates it; so
    # MLflow's type-hint validation is off and ``model_input`` stays unannotated on purpose (an
    # annotation would make MLflow try, and warn, to infer a schema from it).
    _skip_type_hint_validation = True

    def __init__(self) -> None:
        self.predictor: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        """Unpickle the predictor artifact."""
        with open(context.artifacts[_PREDICTOR_ARTIFACT], "rb") as f:
            # Our own artifact, written by register(); the registry is trusted storage.
            self.predictor = cloudpickle.load(f)

    def predict(  # type: ignore[no-untyped-def]
        self, context: PythonModelContext, model_input, params: dict[str, Any] | None = None
    ) -> Any:
        """Delegate to the predictor (params only when the signature declares some)."""
        if params:
            return self.predictor.predict(model_input, **params)
        return self.predictor.predict(model_input)


@dataclass(frozen=True)
class Loaded:
    """A registered model version loaded as a pyfunc, with where it came from."""

    model: PyFuncModel
    name: str
    version: int
    run_id: str
    alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def predictor(self) -> Any:
        """The area's predictor object inside the pyfunc (for batch or custom calls)."""
        return self.model.unwrap_python_model().predictor  # type: ignore[no-untyped-call]

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Predict through the pyfunc; inputs that break the signature raise ``ValueError``."""
        try:
            return self.model.predict(data, params=params)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(INVALID_PARAMETER_VALUE):
                raise
            raise ValueError(
                f"{self.name} v{self.version}: input does not match the model signature: "
                f"{exc.message}"
            ) from exc


def configure(settings: ModelSettings | None = None) -> ModelSettings:
    """Point MLflow's tracking and registry URIs at the settings; cheap and idempotent."""
    settings = settings or get_model_settings()
    if settings.tracking_uri.startswith("sqlite:"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    root = settings.artifact_root or ""
    if root.startswith("s3://"):
        # MLflow's S3 store reads only the environment; fill it from the platform's S3 knobs.
        if settings.s3_endpoint_url:
            os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            os.environ.setdefault("AWS_ACCESS_KEY_ID", settings.s3_access_key_id)
            os.environ.setdefault(
                "AWS_SECRET_ACCESS_KEY", settings.s3_secret_access_key.get_secret_value()
            )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    return settings


def client(settings: ModelSettings | None = None) -> MlflowClient:
    """An MLflow client on the configured tracking store and registry."""
    settings = configure(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def experiment(area: str, settings: ModelSettings | None = None) -> str:
    """The id of the experiment named ``area``, created with its artifact folder if missing."""
    settings = configure(settings)
    mlflow_client = client(settings)
    found = mlflow_client.get_experiment_by_name(area)
    if found is not None:
        return str(found.experiment_id)
    location = f"{settings.artifact_root}/{area}" if settings.artifact_root else None
    try:
        return str(mlflow_client.create_experiment(area, artifact_location=location))
    except MlflowException as exc:
        # Another process (a parallel flow) created it between the two calls.
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        again = mlflow_client.get_experiment_by_name(area)
        assert again is not None
        return str(again.experiment_id)


def register(
    name: str,
    predictor: Predictor,
    *,
    area: str,
    input_example: Any,
    run_id: str | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    signature: ModelSignature | None = None,
    data_window: str | None = None,
    feature_service: str | None = None,
    tags: Mapping[str, str] | None = None,
    alias: str | None = CHALLENGER,
    settings: ModelSettings | None = None,
) -> ModelVersion:
    """Log ``predictor`` as a pyfunc, register a new version of ``name`` and point ``alias`` at it.

    With ``run_id`` (the best Tune trial) the model goes into that run, whose per-epoch history is
    left alone: ``metrics`` (default: the run's latest values) only become version tags, and
    ``params`` must be new keys. Otherwise a new run in the ``area`` experiment logs both. The
    signature is inferred from ``input_example`` and ``predictor.predict(input_example)`` unless
    given (pass one built with ``infer_signature(..., params=...)`` to declare predict params).
    The version is tagged with ``area``, ``metric.<name>``, ``data_window``,
    ``feature_service``, ``code_version`` and ``tags``.
    """
    settings = configure(settings)
    mlflow_client = client(settings)
    if signature is None:
        signature = infer_signature(input_example, predictor.predict(input_example))
    version_tags = _version_tags(area, settings, data_window, feature_service, tags)

    if run_id is None:
        run = mlflow_client.create_run(experiment(area, settings), run_name=f"{name}-register")
        run_id = run.info.run_id
        for key, score in (metrics or {}).items():
            mlflow_client.log_metric(run_id, key, float(score))
    elif metrics is None:
        # A Tune trial run already holds its metrics; stamp the last values on the version.
        metrics = {
            k: v
            for k, v in mlflow_client.get_run(run_id).data.metrics.items()
            if k not in _BOOKKEEPING_METRICS and "/" not in k
        }
    for key, param in (params or {}).items():
        mlflow_client.log_param(run_id, key, param)
    version_tags.update({f"metric.{k}": repr(float(v)) for k, v in (metrics or {}).items()})
    for key, tag in version_tags.items():
        mlflow_client.set_tag(run_id, key, tag)

    with tempfile.TemporaryDirectory(prefix="cartwise-register-") as tmp:
        entry = Path(tmp) / "pyfunc_entry.py"
        entry.write_text(_ENTRY_CODE)
        pickled = Path(tmp) / "predictor.pkl"
        with pickled.open("wb") as f:
            cloudpickle.dump(predictor, f)
        with _inside_run(run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(entry),
                artifacts={_PREDICTOR_ARTIFACT: str(pickled)},
                input_example=input_example,
                signature=signature,
                pip_requirements=_requirements(),
                registered_model_name=name,
            )
    number = info.registered_model_version
    if number is None:  # pragma: no cover - log_model always registers when given a name
        raise RuntimeError(f"MLflow did not register a version of {name}")
    for key, tag in version_tags.items():
        mlflow_client.set_model_version_tag(name, str(number), key, tag)
    if alias:
        mlflow_client.set_registered_model_alias(name, alias, str(number))
    return mlflow_client.get_model_version(name, str(number))


def load(
    name: str,
    alias: str = CHAMPION,
    *,
    version: int | None = None,
    settings: ModelSettings | None = None,
) -> Loaded:
    """Load the version behind ``alias`` (or an explicit ``version``); ``LookupError`` if none."""
    mlflow_client = client(settings)
    if version is not None:
        mv = _get_version(mlflow_client, name, version)
        alias_used: str | None = None
    else:
        found = current(name, alias, settings=settings)
        if found is None:
            raise LookupError(f"model {name!r} has no version with alias {alias!r}")
        mv, alias_used = found, alias
    # Load by number, not alias, so an alias moving meanwhile cannot mix two versions.
    model = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
    return Loaded(
        model=model,
        name=name,
        version=int(mv.version),
        run_id=str(mv.run_id),
        alias=alias_used,
        tags=dict(mv.tags or {}),
    )


def current(name: str, alias: str, *, settings: ModelSettings | None = None) -> ModelVersion | None:
    """The model version behind ``alias``, or None if the model or the alias does not exist."""
    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {
            ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
            ErrorCode.Name(INVALID_PARAMETER_VALUE),
        }:
            return None
        raise


def set_alias(
    name: str, alias: str, version: int | str, *, settings: ModelSettings | None = None
) -> None:
    """Point ``alias`` of ``name`` at ``version`` (serving picks the move up by itself)."""
    mlflow_client = client(settings)
    _get_version(mlflow_client, name, version)
    mlflow_client.set_registered_model_alias(name, alias, str(version))


def _inside_run(run_id: str) -> AbstractContextManager[Any]:
    """Make ``run_id`` the active run for ``log_model`` without ending a caller's own run."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return contextlib.nullcontext()
    # Reopens a finished run (a Tune trial) and finishes it again on exit; nested=True lets a
    # notebook call this inside a run of its own.
    return mlflow.start_run(run_id=run_id, nested=active is not None)


def _get_version(mlflow_client: MlflowClient, name: str, version: int | str) -> ModelVersion:
    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise LookupError(f"model {name!r} has no version {version}") from exc
        raise


def _version_tags(
    area: str,
    settings: ModelSettings,
    data_window: str | None,
    feature_service: str | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    tags = {"area": area, "code_version": settings.code_version or _git_sha()}
    if data_window:
        tags["data_window"] = data_window
    if feature_service:
        tags["feature_service"] = feature_service
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


@functools.cache
def _git_sha() -> str:
    """The checkout's commit (``+dirty`` with local changes), or ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH is the point
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


@functools.cache
def _requirements() -> list[str]:
    """Pinned runtime requirements; explicit, so MLflow skips its slow environment inference."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    pins = []
    for dist in ("mlflow", "cloudpickle", "numpy", "pandas", "torch", "scikit-learn", "scipy"):
        try:
            pins.append(f"{dist}=={dist_version(dist)}")
        except PackageNotFoundError:
            continue
    return pins
