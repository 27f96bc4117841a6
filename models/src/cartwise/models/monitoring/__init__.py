"""Drift monitoring of the model areas: reference samples, permutation importance, Evidently.

Example::

    from cartwise.models import monitoring

    result = monitoring.check("fraud", source)        # champion's reference vs the last 14 days
    result.drift_share, result.prediction_drift, result.quality
    result.features["order_amount"]                  # drift_score, drifted, importance
    url = storage.put("reports/fraud.html", result.html)   # the flow's own storage call
    monitoring.tag_report("fraud", result.model_version, url, drift_share=result.drift_share)

Evidently (and MLflow) are imported inside the functions, never at import time.
"""

from __future__ import annotations

from cartwise.models.monitoring.check import DriftCheck, capture, check, load_predictor
from cartwise.models.monitoring.importance import permutation_importance
from cartwise.models.monitoring.reference import (
    Reference,
    load_reference,
    log_reference,
    tag_report,
)

__all__ = [
    "DriftCheck",
    "Reference",
    "capture",
    "check",
    "load_predictor",
    "load_reference",
    "log_reference",
    "permutation_importance",
    "tag_report",
]
