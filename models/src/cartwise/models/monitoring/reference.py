"""The reference sample kept with every registered model version, as MLflow artifacts of its run.

Layout inside the version's run::

    monitoring/reference.parquet   # the monitored features, ``prediction`` (+ ``label``)
    monitoring/importance.json     # feature -> permutation importance
    monitoring/meta.json           # area, feature list, row counts, how importance was measured

The model version is tagged ``monitoring.reference=monitoring/reference.parquet`` so a person in
the MLflow UI sees that it has one.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.settings import ModelSettings

ARTIFACT_DIR = "monitoring"
REFERENCE_FILE = "reference.parquet"
IMPORTANCE_FILE = "importance.json"
META_FILE = "meta.json"
PREDICTION = "prediction"
LABEL = "label"
# Evidently's tests are stable well below this, and the artifact stays small.
MAX_ROWS = 5_000
VERSION_TAG = "monitoring.reference"
REPORT_TAG = "monitoring.last_report"


@dataclass
class Reference:
    """A version's reference: its monitored feature rows, its predictions on them, importance."""

    features: pd.DataFrame
    predictions: pd.Series
    importance: dict[str, float]
    labels: pd.Series | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)


def sample(frame: pd.DataFrame, *, rows: int = MAX_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most ``rows`` rows of ``frame`` (a seeded random sample, original order kept)."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    picked = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[picked].reset_index(drop=True)


def log_reference(
    area: str,
    *,
    run_id: str | None,
    frame: pd.DataFrame,
    predictions: Any,
    importance: dict[str, float],
    labels: Any = None,
    meta: dict[str, Any] | None = None,
    settings: ModelSettings | None = None,
) -> str:
    """Log the reference sample (≤ 5,000 rows) and importance as artifacts of ``run_id``.

    Without ``run_id`` a new run in the area's experiment holds them. Returns the run id.
    """
    from cartwise.models import tracking

    settings = tracking.configure(settings)
    client = tracking.client(settings)
    if run_id is None:
        run_id = client.create_run(
            tracking.experiment(area, settings), run_name=f"{area}-reference"
        ).info.run_id
    preds = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if len(preds) != len(frame):
        raise ValueError(f"{len(preds)} predictions for {len(frame)} reference rows")
    table = frame.reset_index(drop=True).copy()
    if PREDICTION in table.columns or LABEL in table.columns:
        raise ValueError(f"feature columns must not be named {PREDICTION!r} or {LABEL!r}")
    table[PREDICTION] = preds
    if labels is not None:
        table[LABEL] = np.asarray(labels, dtype=np.float64).reshape(-1)
    full_rows = len(table)
    table = sample(table)
    info = {
        "area": area,
        "features": [str(c) for c in frame.columns],
        "rows": len(table),
        "source_rows": full_rows,
        "has_labels": labels is not None,
        **(meta or {}),
    }
    with tempfile.TemporaryDirectory(prefix="cartwise-reference-") as tmp:
        folder = Path(tmp)
        table.to_parquet(folder / REFERENCE_FILE, index=False)
        (folder / IMPORTANCE_FILE).write_text(
            json.dumps({k: float(v) for k, v in importance.items()}, indent=2, sort_keys=True)
        )
        (folder / META_FILE).write_text(json.dumps(info, indent=2, default=str))
        for name in (REFERENCE_FILE, IMPORTANCE_FILE, META_FILE):
            client.log_artifact(run_id, str(folder / name), artifact_path=ARTIFACT_DIR)
    return run_id


def tag_version(
    model_name: str, version: int | str, *, settings: ModelSettings | None = None
) -> None:
    """Mark a model version as carrying a reference sample (seen in the MLflow UI)."""
    from cartwise.models import tracking

    tracking.client(settings).set_model_version_tag(
        model_name, str(version), VERSION_TAG, f"{ARTIFACT_DIR}/{REFERENCE_FILE}"
    )


def tag_report(
    model_name: str,
    version: int | str,
    url: str,
    *,
    drift_share: float | None = None,
    settings: ModelSettings | None = None,
) -> None:
    """Link a stored drift report from the model version (tags ``monitoring.last_report``...)."""
    from cartwise.models import tracking

    client = tracking.client(settings)
    client.set_model_version_tag(model_name, str(version), REPORT_TAG, url)
    if drift_share is not None:
        client.set_model_version_tag(
            model_name, str(version), f"{REPORT_TAG}.drift_share", f"{drift_share:.4f}"
        )


def load_reference(
    model_name: str, version: int, settings: ModelSettings | None = None
) -> Reference:
    """The reference logged with ``model_name`` v``version``; ``LookupError`` if it has none."""
    from mlflow.exceptions import MlflowException

    from cartwise.models import tracking

    client = tracking.client(settings)
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise LookupError(f"model {model_name!r} has no version {version}") from exc
    run_id = str(mv.run_id)
    try:
        listed = {f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)}
    except (MlflowException, OSError) as exc:
        raise LookupError(f"{model_name} v{version}: cannot list its artifacts ({exc})") from exc
    wanted = f"{ARTIFACT_DIR}/{REFERENCE_FILE}"
    if wanted not in listed:
        raise LookupError(
            f"{model_name} v{version} has no reference sample (registered before monitoring "
            "existed?); retrain it to get one"
        )
    with tempfile.TemporaryDirectory(prefix="cartwise-reference-") as tmp:
        local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, tmp))
        table = pd.read_parquet(local / REFERENCE_FILE)
        importance_path = local / IMPORTANCE_FILE
        importance = (
            {str(k): float(v) for k, v in json.loads(importance_path.read_text()).items()}
            if importance_path.is_file()
            else {}
        )
        meta_path = local / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    labels = table.pop(LABEL) if LABEL in table.columns else None
    predictions = table.pop(PREDICTION)
    meta.setdefault("run_id", run_id)
    return Reference(table, predictions, importance, labels, meta)


__all__ = [
    "ARTIFACT_DIR",
    "MAX_ROWS",
    "Reference",
    "load_reference",
    "log_reference",
    "sample",
    "tag_report",
    "tag_version",
]
