"""Fraud metrics in numpy: PR-AUC (average precision), recall at a false-positive rate, Brier.

``weights`` re-weight rows, e.g. the legitimate rows of a fraud-enriched sample by the ratio of
the real odds to the sample's, so precision reflects the real base rate.
"""

from __future__ import annotations

import math

import numpy as np


def _sorted(
    y: np.ndarray, score: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    return y[order], score[order], w[order]


def pr_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Average precision (step-wise area under the PR curve); NaN without positives."""
    ys, ss, ws = _sorted(y, score, weights)
    positives = float((ys * ws).sum())
    if len(ys) == 0 or positives <= 0:
        return math.nan
    tp = np.cumsum(ys * ws)
    fp = np.cumsum((1.0 - ys) * ws)
    # One point per distinct score: tied rows enter together.
    last = np.r_[ss[1:] != ss[:-1], True]
    tp, fp = tp[last], fp[last]
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float = 0.01) -> float:
    """The share of frauds caught when at most ``fpr`` of legitimate rows are flagged."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if not y.any() or y.all():
        return math.nan
    legit = np.sort(score[~y])[::-1]
    allowed = math.floor(fpr * len(legit))
    # Flag strictly above the (allowed+1)-th highest legitimate score.
    cut = legit[allowed] if allowed < len(legit) else -math.inf
    return float((score[y] > cut).mean())


def precision_recall_at(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision and recall of flagging ``score >= threshold`` (NaN when nothing is flagged)."""
    y = np.asarray(y, dtype=bool)
    flagged = np.asarray(score, dtype=np.float64) >= threshold
    precision = float(y[flagged].mean()) if flagged.any() else math.nan
    recall = float(flagged[y].mean()) if y.any() else math.nan
    return precision, recall


def brier(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared error of probabilities."""
    return float(np.mean((np.asarray(prob, np.float64) - np.asarray(y, np.float64)) ** 2))


__all__ = ["brier", "pr_auc", "precision_recall_at", "recall_at_fpr"]
