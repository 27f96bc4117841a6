"""Evidently data drift of monitored features and of the prediction column, as plain numbers.

Which test decides "drifted" depends on the smaller of the two samples: below
:data:`LARGE` rows, sampling noise alone moves a distance past its fixed threshold (a two-week
window of a small shop holds a few hundred orders), so the tests are K-S (numerical columns) and
chi-square (columns with at most :data:`FEW_VALUES` distinct values), whose p-values account for
the sample size; from :data:`LARGE` rows on, Evidently's defaults (normed Wasserstein,
Jensen-Shannon), where any p-value would be tiny. ``prediction_drift`` is always the normed
Wasserstein distance of the predictions (how far they moved, in reference standard deviations:
higher = more drift), and ``prediction_drifted`` the verdict of the same test as the features.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PREDICTION_METHOD = "wasserstein"
LARGE = 1_000
FEW_VALUES = 5
# Fewer current rows than this and a test says little; the report is skipped with a note.
MIN_ROWS = 5


@dataclass
class DriftResult:
    """What one Evidently run found."""

    drift_share: float
    drifted_features: int
    n_features: int
    columns: dict[str, dict[str, Any]]  # feature -> drift_score, drifted, method, threshold
    prediction_drift: float | None
    prediction_drifted: bool | None
    html: bytes
    results: dict[str, Any] = field(default_factory=dict)  # Evidently's snapshot as a dict


def evidently() -> Any:
    """Import Evidently with its usage telemetry off (nothing may phone home)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import evidently as ev  # type: ignore[import-untyped]

    return ev


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return out


def run(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    features: list[str],
    prediction: str | None = None,
    drift_share: float = 0.5,
) -> DriftResult:
    """Run the data-drift preset on ``features`` (+ value drift of ``prediction``)."""
    ev = evidently()
    from evidently import DataDefinition, Dataset, Report  # type: ignore[import-untyped]
    from evidently.metrics import ValueDrift  # type: ignore[import-untyped]
    from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]

    del ev
    columns = [*features, *([prediction] if prediction else [])]
    ref = _numeric(reference[columns]).reset_index(drop=True)
    cur = _numeric(current[columns]).reset_index(drop=True)
    small = min(len(ref), len(cur)) < LARGE
    categorical, numerical, constant = [], [], []
    for name in columns:
        values = pd.concat([ref[name], cur[name]]).dropna().unique()
        if len(values) <= 1 and name != prediction:
            constant.append(name)  # nothing can drift; some tests divide by its spread
        elif len(values) <= FEW_VALUES and name != prediction:
            categorical.append(name)
        else:
            numerical.append(name)
    tested = [name for name in features if name not in constant]
    methods: dict[str, str] = {}
    if small:
        methods = {name: ("chisquare" if name in categorical else "ks") for name in tested}
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    metrics: list[Any] = []
    if tested:
        metrics.append(
            DataDriftPreset(
                columns=tested, drift_share=drift_share, per_column_method=methods or None
            )
        )
    if prediction:
        metrics.append(ValueDrift(column=prediction, method=PREDICTION_METHOD))
        if small:
            metrics.append(ValueDrift(column=prediction, method="ks"))
    report = Report(metrics, include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    results: dict[str, Any] = json.loads(snapshot.json())
    # The test whose verdict counts per column (None: Evidently's own choice).
    verdict_method: dict[str, str | None] = {name: methods.get(name) for name in tested}
    if prediction:
        verdict_method[prediction] = "ks" if small else PREDICTION_METHOD
    scores: dict[str, dict[str, Any]] = {}
    magnitude: float | None = None
    share, count = 0.0, 0
    by_id: dict[str, tuple[str, str]] = {}
    for metric in results.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            column, method = str(config["column"]), str(config.get("method"))
            by_id[str(metric.get("id"))] = (column, method)
            if column == prediction and _is(method, PREDICTION_METHOD):
                magnitude = _float(metric.get("value"))
            wanted = verdict_method.get(column)
            if wanted is None or _is(method, wanted):
                scores[column] = {
                    "drift_score": _float(metric.get("value")),
                    "method": method,
                    "threshold": _float(config.get("threshold")),
                }
        elif kind.endswith(":DriftedColumnsCount"):
            value = metric.get("value") or {}
            share, count = _float(value.get("share")), int(_float(value.get("count")) or 0)
    for test in results.get("tests", []):
        metric_id = str((test.get("metric_config") or {}).get("metric_id"))
        if metric_id not in by_id:
            continue
        column, method = by_id[metric_id]
        if column in scores and scores[column]["method"] == method:
            scores[column]["drifted"] = test.get("status") == "FAIL"
    for name in constant:
        scores[name] = {"drift_score": None, "drifted": False, "method": "constant"}
    if tested:
        share = count / len(features)  # constant features count as not drifted
    pred = scores.pop(prediction, None) if prediction else None
    columns_out = {
        name: scores.get(name, {"drift_score": None, "drifted": None}) for name in features
    }
    html = snapshot.get_html_str(as_iframe=False).encode()
    return DriftResult(
        drift_share=share,
        drifted_features=count,
        n_features=len(features),
        columns=columns_out,
        prediction_drift=magnitude,
        prediction_drifted=None if pred is None else pred.get("drifted"),
        html=html,
        results=results,
    )


_ALIASES = {
    "ks": "K-S",
    "chisquare": "chi-square",
    "wasserstein": "Wasserstein",
    "jensenshannon": "Jensen-Shannon",
}


def _is(method_name: str, method: str) -> bool:
    """Whether Evidently's display name of a test is the test ``method`` (its short id)."""
    name = method_name.lower()
    return name == method or name.startswith(_ALIASES.get(method, method).lower())


def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


__all__ = ["MIN_ROWS", "PREDICTION_METHOD", "DriftResult", "evidently", "run"]
