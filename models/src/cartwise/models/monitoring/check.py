"""The drift check of one area: the champion's reference sample against the latest window.

:func:`check` never raises for the ordinary gaps of a young shop (no champion yet, a champion
registered before reference samples existed, an empty window): it returns a :class:`DriftCheck`
with ``drift_share=None`` and a note saying why, so a scheduled flow can record the decision.
:func:`capture` is what registration calls to give every new version its reference.

The current features and predictions are the live ones serving logged (:mod:`feature_log`)
when the log holds at least ``monitor_min_rows`` rows of the champion version in the window
(``current_source="feature_log"``); otherwise the area adapter rebuilds them from the exported
facts with point-in-time Feast reads (``current_source="offline"``). Quality always comes from
the adapter: labels arrive with the facts, not with the requests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.monitoring import drift as drift_mod
from cartwise.models.monitoring.areas import Monitored, adapter, utc
from cartwise.models.monitoring.reference import (
    MAX_ROWS,
    PREDICTION,
    Reference,
    load_reference,
    log_reference,
    tag_version,
)
from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

# The reference sample is the end of the training window: this many days, or at least this
# many rows (areas whose rows are not events in time keep their whole reference).
REFERENCE_DAYS = 28
MIN_REFERENCE_ROWS = 300


@dataclass
class DriftCheck:
    """One drift check of an area's champion: drift, prediction drift, quality, the report."""

    area: str
    model_name: str
    model_version: int | None
    window_start: datetime | None
    window_end: datetime | None
    reference_rows: int
    current_rows: int
    drift_share: float | None  # share of drifted features (Evidently DataDriftPreset)
    drifted_features: int
    n_features: int
    prediction_drift: float | None  # normed Wasserstein distance of the predictions
    quality: dict[str, float]  # label-based metrics where labels have arrived
    features: dict[str, dict[str, Any]]  # feature -> drift_score, drifted, importance, ...
    html: bytes  # the Evidently report
    json: bytes  # summary + Evidently's results
    notes: list[str] = field(default_factory=list)
    prediction_drifted: bool | None = None
    # The share of the (positive) permutation importance that sits on drifted features.
    importance_weighted_drift: float | None = None
    reference_quality: dict[str, float] = field(default_factory=dict)
    # Where the current features and predictions came from: "feature_log" (the rows serving
    # scored, see ``feature_log``) or "offline" (rebuilt by the area adapter from the facts).
    current_source: str = "offline"

    def summary(self) -> dict[str, Any]:
        """Everything but the report bodies, JSON-ready."""
        out = {k: v for k, v in asdict(self).items() if k not in {"html", "json"}}
        for key in ("window_start", "window_end"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out

    @property
    def drifting_features(self) -> list[str]:
        """Features Evidently flagged, most important first."""
        flagged = [(name, info) for name, info in self.features.items() if info.get("drifted")]
        flagged.sort(key=lambda item: -(item[1].get("importance") or 0.0))
        return [name for name, _ in flagged]


def _report_html(title: str, notes: list[str]) -> bytes:
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"</head><body><h1>{escape(title)}</h1><p>No drift report was computed.</p>"
        f"<ul>{items}</ul></body></html>"
    ).encode()


def _json_bytes(
    check: DriftCheck, results: dict[str, Any] | None, extra: dict[str, Any] | None = None
) -> bytes:
    body = {**check.summary(), **(extra or {}), "evidently": results}
    return json.dumps(body, default=_jsonable, allow_nan=False).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    return str(value)


def _clean_json(value: Any) -> Any:
    """NaN/inf → None recursively (Evidently results may hold them; JSON must not)."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def check(
    area: str,
    source: Source,
    *,
    window_days: int = 14,
    now: datetime | None = None,
    settings: ModelSettings | None = None,
) -> DriftCheck:
    """Drift, prediction drift and quality of ``area``'s champion over the last ``window_days``.

    ``now`` defaults to the latest fact the area sees; the current window is
    ``[now - window_days, now]``.
    """
    from cartwise.models import areas, tracking

    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    spec = areas.spec(area)
    area_adapter = adapter(area, settings)
    notes: list[str] = []
    end = utc(now) if now is not None else area_adapter.data_end(source)
    start = end - pd.Timedelta(days=window_days)
    base: dict[str, Any] = {
        "area": area,
        "model_name": spec.model_name,
        "model_version": None,
        "window_start": start.to_pydatetime(),
        "window_end": end.to_pydatetime(),
        "reference_rows": 0,
        "current_rows": 0,
        "drift_share": None,
        "drifted_features": 0,
        "n_features": 0,
        "prediction_drift": None,
        "quality": {},
        "features": {},
        "html": b"",
        "json": b"",
        "notes": notes,
    }

    extra: dict[str, Any] = {}

    def finish(result: DriftCheck, results: dict[str, Any] | None = None) -> DriftCheck:
        if not result.html:
            result.html = _report_html(f"{area} drift check", result.notes)
        result.json = _json_bytes(result, _clean_json(results) if results else None, extra)
        return result

    champion = tracking.current(spec.model_name, tracking.CHAMPION, settings=settings)
    if champion is None:
        notes.append(f"{spec.model_name} has no champion yet: nothing to monitor")
        return finish(DriftCheck(**base))
    version = int(champion.version)
    base["model_version"] = version
    reference: Reference | None
    try:
        reference = load_reference(spec.model_name, version, settings=settings)
    except LookupError as exc:
        reference = None
        notes.append(str(exc))
    predictor = load_predictor(spec.model_name, version, settings=settings)
    current: Monitored = area_adapter.current(
        source, predictor, start=start, end=end + pd.Timedelta(microseconds=1)
    )
    notes.extend(current.notes)
    base["current_rows"] = len(current)
    base["quality"] = dict(current.quality)
    if reference is None:
        base["features"] = {
            name: {"drift_score": None, "drifted": None, "importance": None}
            for name in current.features.columns
        }
        base["n_features"] = len(current.features.columns)
        return finish(DriftCheck(**base))
    base["reference_rows"] = len(reference)
    # Live rows from the feature log when there are enough of them, else the adapter's.
    cur_features, cur_predictions = current.features, np.asarray(current.predictions)
    live, log_info = _live_rows(
        area,
        spec.model_name,
        version,
        list(reference.features.columns),
        log_end=utc(now) if now is not None else max(end, utc(datetime.now(UTC))),
        window_days=window_days,
        settings=settings,
    )
    extra["feature_log"] = log_info
    if live is not None:
        cur_features = live.drop(columns=[PREDICTION])
        cur_predictions = live[PREDICTION].to_numpy(np.float64)
        base["current_source"] = "feature_log"
        base["current_rows"] = len(live)
        extra["offline_rows"] = len(current)
        notes.append(
            f"live features from the feature log ({len(live)} rows) between "
            f"{log_info['start']} and {log_info['end']}; quality from the offline store"
        )
    else:
        notes.append(
            f"features rebuilt from the offline store ({len(current)} rows): {log_info['reason']}"
        )
    features = [c for c in reference.features.columns if c in cur_features.columns]
    missing = [c for c in reference.features.columns if c not in cur_features.columns]
    if missing:
        notes.append(f"features in the reference but not monitored now: {missing}")
    base["n_features"] = len(features)
    base["reference_quality"] = {
        k[len("quality.") :]: float(v)
        for k, v in reference.meta.items()
        if k.startswith("quality.") and isinstance(v, int | float)
    }
    if len(cur_features) < drift_mod.MIN_ROWS:
        notes.append(
            f"only {len(cur_features)} rows between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M}: too few for a drift test (need {drift_mod.MIN_ROWS})"
        )
        base["features"] = {
            name: {
                "drift_score": None,
                "drifted": None,
                "importance": reference.importance.get(name),
            }
            for name in features
        }
        return finish(DriftCheck(**base))
    ref_frame = reference.features[features].assign(**{PREDICTION: reference.predictions.values})
    cur_frame = cur_features[features].assign(**{PREDICTION: cur_predictions})
    found = drift_mod.run(ref_frame, cur_frame, features=features, prediction=PREDICTION)
    base.update(
        drift_share=found.drift_share if np.isfinite(found.drift_share) else None,
        drifted_features=found.drifted_features,
        prediction_drift=found.prediction_drift
        if found.prediction_drift is not None and np.isfinite(found.prediction_drift)
        else None,
        prediction_drifted=found.prediction_drifted,
        features={
            name: {
                "drift_score": _maybe(found.columns[name].get("drift_score")),
                "drifted": found.columns[name].get("drifted"),
                "importance": reference.importance.get(name),
                "method": found.columns[name].get("method"),
                "threshold": _maybe(found.columns[name].get("threshold")),
            }
            for name in features
        },
        html=found.html,
    )
    base["importance_weighted_drift"] = weighted_drift(base["features"])
    return finish(DriftCheck(**base), found.results)


def _live_rows(
    area: str,
    model_name: str,
    version: int,
    features: list[str],
    *,
    log_end: pd.Timestamp,
    window_days: int,
    settings: ModelSettings | None,
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The champion's logged rows of the window (features + prediction), if there are enough.

    Returns ``(None, info)`` with ``info["reason"]`` when the offline rows must do: fewer than
    ``monitor_min_rows`` logged rows of this model version, none of the reference features in
    the log, or a log that could not be read.
    """
    from cartwise.models.monitoring import feature_log
    from cartwise.models.settings import get_model_settings

    resolved = settings or get_model_settings()
    start = log_end - pd.Timedelta(days=window_days)
    info: dict[str, Any] = {
        "rows": 0,
        "start": start.isoformat(),
        "end": log_end.isoformat(),
        "min_rows": int(resolved.monitor_min_rows),
        "reason": None,
    }
    try:
        logged = feature_log.read(
            area, start, log_end + pd.Timedelta(microseconds=1), settings=resolved
        )
    except Exception as exc:  # storage down or unreadable files: fall back, say why
        info["reason"] = f"the feature log could not be read ({type(exc).__name__}: {exc})"
        return None, info
    if not logged.empty:
        mine = (logged["model_name"] == model_name) & (
            pd.to_numeric(logged["model_version"], errors="coerce") == version
        )
        logged = logged[mine.fillna(False).astype(bool)].reset_index(drop=True)
    info["rows"] = len(logged)
    if len(logged) < info["min_rows"]:
        info["reason"] = (
            f"{len(logged)} rows in the feature log for {model_name} v{version} in the window, "
            f"fewer than {info['min_rows']}"
        )
        return None, info
    present = [name for name in features if name in logged.columns]
    if not present:
        info["reason"] = "the feature log holds none of the reference features"
        return None, info
    out = pd.DataFrame(
        {name: pd.to_numeric(logged[name], errors="coerce").astype("float64") for name in present}
    )
    out[PREDICTION] = pd.to_numeric(logged["prediction"], errors="coerce").astype("float64")
    return out, info


def weighted_drift(features: dict[str, dict[str, Any]]) -> float | None:
    """Share of the positive importance on drifted features (None without importance)."""
    weights = {
        name: max(float(info.get("importance") or 0.0), 0.0) for name, info in features.items()
    }
    total = sum(weights.values())
    if total <= 0:
        return None
    return sum(w for name, w in weights.items() if features[name].get("drifted")) / total


# Registered versions never change, so an hourly monitor in a long-lived worker loads each
# once. Keyed by registry, so tests on separate stores do not share entries.
_PREDICTORS: dict[tuple[str, str, int], Any] = {}
_PREDICTORS_MAX = 8


def load_predictor(name: str, version: int, *, settings: ModelSettings | None = None) -> Any:
    """The area predictor inside a registered version (cached per registry and version)."""
    from cartwise.models import tracking

    settings = tracking.configure(settings)
    key = (settings.registry_uri, name, int(version))
    if key not in _PREDICTORS:
        if len(_PREDICTORS) >= _PREDICTORS_MAX:
            _PREDICTORS.pop(next(iter(_PREDICTORS)))
        _PREDICTORS[key] = tracking.load(name, version=version, settings=settings).predictor
    return _PREDICTORS[key]


def _maybe(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if np.isfinite(out) else None


def capture(
    area: str,
    predictor: Any,
    source: Source,
    *,
    model_name: str,
    version: int,
    run_id: str,
    data_window: str,
    settings: ModelSettings | None = None,
) -> dict[str, Any]:
    """Build and log a new version's reference sample and permutation importance."""
    everything = adapter(area).reference(source, predictor, data_window=data_window)
    if len(everything) == 0:
        raise ValueError(f"{area}: no rows in the training window {data_window} to keep")
    # Importance over the whole window (more labelled rows, steadier); the sample from its end.
    importance = everything.importance() if everything.importance is not None else {}
    monitored = everything.recent(REFERENCE_DAYS, min_rows=MIN_REFERENCE_ROWS)
    meta = {
        "model_name": model_name,
        "version": version,
        "data_window": data_window,
        "importance_metric": monitored.meta.get("importance_metric", "mean_abs_delta"),
        **{f"quality.{k}": v for k, v in monitored.quality.items()},
        **{k: v for k, v in monitored.meta.items() if k != "importance_metric"},
    }
    log_reference(
        area,
        run_id=run_id,
        frame=monitored.features,
        predictions=monitored.predictions,
        importance=importance,
        labels=monitored.labels,
        meta=meta,
        settings=settings,
    )
    tag_version(model_name, version, settings=settings)
    return {
        "reference_rows": min(len(monitored), MAX_ROWS),
        "window_rows": len(everything),
        "importance": importance,
    }


__all__ = ["DriftCheck", "capture", "check", "load_predictor", "weighted_drift"]
