"""The baselines every fraud number is compared with, fitted on the same rows.

- logistic regression on log1p + standardised features (class-balanced weights off: the
  ranking is what PR-AUC measures);
- gradient boosting: sklearn's ``HistGradientBoostingClassifier`` with its defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _log_mask(features: Sequence[str], log_features: Sequence[str]) -> np.ndarray:
    return np.array([f in set(log_features) for f in features], dtype=bool)


class LogisticBaseline:
    """Logistic regression on log1p'd heavy-tailed columns, standardised."""

    def __init__(self, features: Sequence[str], log_features: Sequence[str] = ()) -> None:
        self.mask = _log_mask(features, log_features)
        self.model: Any = None

    def _x(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float64)
        out[:, self.mask] = np.log1p(np.clip(out[:, self.mask], 0, None))
        return out

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogisticBaseline:
        """Fit on rows ``x`` with labels ``y``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        self.model.fit(self._x(x), y)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row."""
        return np.asarray(self.model.predict_proba(self._x(x))[:, 1])


class BoostingBaseline:
    """sklearn's histogram gradient boosting, default settings, seeded."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model: Any = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> BoostingBaseline:
        """Fit on rows ``x`` with labels ``y``."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.model = HistGradientBoostingClassifier(random_state=self.seed).fit(x, y)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row."""
        return np.asarray(self.model.predict_proba(x)[:, 1])


__all__ = ["BoostingBaseline", "LogisticBaseline"]
