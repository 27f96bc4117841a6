"""The stacker that turns classifier logit + anomaly score into a calibrated risk, and thresholds.

A two-input logistic regression fitted on validation data (rows the networks never trained on)
both combines the two scores and calibrates them: the classifier's logits are inflated by the
positive class weight used in training, and the reconstruction error has no probability scale.
Thresholds for review and block are then the lowest risks whose flagged set reaches the target
precision on the same validation rows (the most fraud caught at that precision).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-6


def stack_inputs(logit: np.ndarray, error: np.ndarray) -> np.ndarray:
    """The stacker's inputs: the classifier logit and the log reconstruction error."""
    return np.column_stack([np.asarray(logit, np.float64), np.log(np.asarray(error) + EPS)])


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (sklearn's lbfgs): (coefficients, intercept).

    Inputs are standardised inside, so ``l2`` (the penalty per row) means the same for any
    scale; the returned coefficients apply to the raw inputs.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    model = LogisticRegression(C=1.0 / max(l2 * len(y), 1e-9), max_iter=1000)
    model.fit((x - mean) / std, y)
    coef = model.coef_[0] / std
    intercept = float(model.intercept_[0] - (coef * mean).sum())
    return coef, intercept


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, overflow-safe."""
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))
    return out


def threshold_for_precision(
    y: np.ndarray, risk: np.ndarray, precision: float, *, min_flagged: int = 3
) -> float:
    """The lowest risk whose flagged set (``risk >= t``) has at least ``precision``.

    At least ``min_flagged`` rows must be flagged, so one lucky case cannot set the bar;
    ``inf`` (never flag) when no threshold reaches the target.
    """
    y = np.asarray(y, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    order = np.argsort(-risk, kind="mergesort")
    ys, rs = y[order], risk[order]
    tp = np.cumsum(ys)
    flagged = np.arange(1, len(ys) + 1)
    # Only cut between distinct risks: tied rows are flagged together.
    last = np.r_[rs[1:] != rs[:-1], True] if len(rs) else np.zeros(0, bool)
    ok = last & (tp / flagged >= precision) & (flagged >= min_flagged)
    if not ok.any():
        return math.inf
    return float(rs[np.flatnonzero(ok).max()])


def review_threshold(
    y: np.ndarray, risk: np.ndarray, precision: float, *, min_flagged: int = 3, rate: float = 0.0
) -> tuple[float, str]:
    """The review threshold and the rule that set it: ``"precision"`` or ``"capacity"``.

    The lowest risk whose flagged set reaches ``precision`` (see
    :func:`threshold_for_precision`). When none does (a young shop, few labelled frauds), a
    review desk still looks at the riskiest ``rate`` share of orders: the risk at that
    quantile. ``rate`` 0 keeps ``inf`` (never review) then.
    """
    threshold = threshold_for_precision(y, risk, precision, min_flagged=min_flagged)
    risk = np.asarray(risk, dtype=np.float64)
    if math.isfinite(threshold) or rate <= 0 or len(risk) == 0:
        return threshold, "precision"
    return float(np.quantile(risk, 1.0 - rate, method="higher")), "capacity"


__all__ = [
    "fit_logistic",
    "review_threshold",
    "sigmoid",
    "stack_inputs",
    "threshold_for_precision",
]
