"""Churn and value metrics: PR-AUC, ROC-AUC, Spearman correlation and MAE."""

from __future__ import annotations

import math

import numpy as np


def churn_metrics(churned: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """``churn_pr_auc`` (average precision) and ``churn_roc_auc``; NaN with one class only."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(churned).astype(int)
    p = np.asarray(probability, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return {"churn_pr_auc": math.nan, "churn_roc_auc": math.nan}
    return {
        "churn_pr_auc": float(average_precision_score(y, p)),
        "churn_roc_auc": float(roc_auc_score(y, p)),
    }


def value_metrics(spend: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """``ltv_spearman`` (rank correlation) and ``ltv_mae`` of predicted against actual spend."""
    from scipy.stats import spearmanr  # type: ignore[import-untyped]

    actual = np.asarray(spend, dtype=np.float64)
    guess = np.asarray(predicted, dtype=np.float64)
    rho = spearmanr(actual, guess).statistic if np.std(guess) > 0 and np.std(actual) > 0 else 0.0
    return {"ltv_spearman": float(rho), "ltv_mae": float(np.mean(np.abs(actual - guess)))}


__all__ = ["churn_metrics", "value_metrics"]
