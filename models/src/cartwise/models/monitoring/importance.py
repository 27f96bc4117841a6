"""Permutation importance: how much a model's score (or output) moves when one column is shuffled.

With a ``score`` (a label-based metric, higher is better) the importance of a column is the mean
drop of that score over ``repeats`` shuffles; without one it is the mean absolute change of the
predictions, which needs no labels and still says which inputs the model actually uses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    *,
    score: Callable[[np.ndarray], float] | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Per column of ``frame``: score drop (with ``score``) or mean |Δ prediction| when shuffled."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if frame.empty:
        return {str(column): 0.0 for column in frame.columns}
    rng = np.random.default_rng(seed)
    base = np.asarray(predict(frame), dtype=np.float64)
    base_score = float(score(base)) if score is not None else 0.0
    out: dict[str, float] = {}
    for column in frame.columns:
        values = frame[column].to_numpy()
        changes = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = values[rng.permutation(len(values))]
            moved = np.asarray(predict(shuffled), dtype=np.float64)
            if score is not None:
                changes.append(base_score - float(score(moved)))
            else:
                changes.append(float(np.nanmean(np.abs(moved - base))))
        finite = [c for c in changes if np.isfinite(c)]
        out[str(column)] = float(np.mean(finite)) if finite else 0.0
    return out


__all__ = ["permutation_importance"]
