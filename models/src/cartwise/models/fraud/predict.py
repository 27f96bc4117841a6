"""What serving loads: the torch-free :class:`FraudScorer` (numpy weights, thresholds, features).

For each order it gives a calibrated risk in [0, 1], a decision (``allow`` / ``review`` /
``block`` by the thresholds chosen on validation data), the autoencoder's anomaly score (the
share of legitimate training orders that reconstruct better) and the top reasons: each feature's
contribution to the risk's log-odds when it is set back to a typical legitimate value
(leave-one-feature-out, over the whole stack, so the autoencoder's view is explained too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.fraud.calibrate import sigmoid, stack_inputs
from cartwise.models.fraud.model import Layer, dense_forward

DECISIONS = ("allow", "review", "block")


@dataclass
class Preprocessor:
    """log1p of the heavy-tailed columns, standardisation, and a piecewise-linear encoding.

    The classifier sees both the standardised values and each feature's piecewise-linear
    encoding over training quantile bins (one column per bin, 0 below it, 1 above it, linear
    inside), which lets an MLP cut features at thresholds the way trees do. The autoencoder
    sees the standardised values only.
    """

    features: tuple[str, ...]
    log_mask: np.ndarray  # (d,) bool
    mean: np.ndarray
    std: np.ndarray
    edges: list[np.ndarray] = field(default_factory=list)  # per feature, on the logged scale
    # The classifier's standardised inputs are clipped to ±clip: a ReLU network extrapolates
    # linearly, so one extreme value would otherwise decide the score on its own.
    clip: float = math.inf

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        features: Sequence[str],
        log_features: Sequence[str],
        bins: int = 8,
        clip: float = math.inf,
    ) -> Preprocessor:
        """Statistics of the training rows ``x``."""
        mask = np.array([f in set(log_features) for f in features], dtype=bool)
        logged = cls._log(np.asarray(x, np.float64), mask)
        std = logged.std(axis=0)
        edges = []
        for j in range(logged.shape[1]):
            cuts = np.unique(np.quantile(logged[:, j], np.linspace(0, 1, bins + 1)))
            edges.append(cuts if len(cuts) > 1 else np.zeros(0))
        return cls(
            tuple(features),
            mask,
            logged.mean(axis=0),
            np.where(std > 1e-9, std, 1.0),
            edges,
            float(clip),
        )

    @staticmethod
    def _log(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[:, mask] = np.log1p(np.clip(out[:, mask], 0.0, None))
        return out

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw feature rows → the standardised values (the autoencoder's input)."""
        out: np.ndarray = (
            self._log(np.asarray(x, np.float64), self.log_mask) - self.mean
        ) / self.std
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Raw feature rows → the classifier's input: standardised values + bin encodings."""
        logged = self._log(np.asarray(x, np.float64), self.log_mask)
        parts = [np.clip((logged - self.mean) / self.std, -self.clip, self.clip)]
        for j, cuts in enumerate(self.edges):
            if len(cuts) < 2:
                continue
            lo, width = cuts[:-1], np.diff(cuts)
            parts.append(np.clip((logged[:, j : j + 1] - lo) / width, 0.0, 1.0))
        return np.hstack(parts)


@dataclass
class FraudScorer:
    """Classifier + autoencoder + logistic stacker as numpy arrays, with decision thresholds."""

    prep: Preprocessor
    classifier: list[Layer]
    autoencoder: list[Layer]
    stack_coef: np.ndarray  # (2,): classifier logit, log reconstruction error
    stack_intercept: float
    thresholds: dict[str, float]  # "review", "block": risk at or above → that decision
    error_quantiles: np.ndarray  # reconstruction errors of legitimate training rows, 0..100%
    baseline: np.ndarray  # (d,) a typical legitimate order (training medians), raw units
    # Columns that count things: a negative value is malformed input.
    non_negative: tuple[str, ...] = ()
    # The stacker's anomaly input: the log reconstruction error, or log(1 + its rank).
    stack_on: str = "rank"
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ input

    @property
    def features(self) -> tuple[str, ...]:
        """The input columns, in order."""
        return self.prep.features

    def check(self, data: Any) -> np.ndarray:
        """The feature matrix of ``data``; ``ValueError`` naming what is wrong otherwise."""
        if isinstance(data, Mapping):
            data = pd.DataFrame([data]) if not _has_sequences(data) else pd.DataFrame(data)
        if not isinstance(data, pd.DataFrame):
            raise ValueError(
                f"expected a pandas DataFrame with columns {list(self.features)}, "
                f"got {type(data).__name__}"
            )
        missing = [f for f in self.features if f not in data.columns]
        if missing:
            raise ValueError(f"missing feature columns: {missing}; expected {list(self.features)}")
        columns = []
        for name in self.features:
            column = data[name]
            if column.dtype == object or not (
                pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
            ):
                try:
                    column = pd.to_numeric(column, errors="raise")
                except (TypeError, ValueError):
                    raise ValueError(
                        f"column {name!r} must be numeric, got dtype {data[name].dtype}"
                    ) from None
            columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
        x = np.column_stack(columns) if columns else np.zeros((len(data), 0))
        bad = ~np.isfinite(x)
        if bad.any():
            names = sorted({self.features[j] for j in np.flatnonzero(bad.any(axis=0))})
            raise ValueError(f"NaN or infinite values in {names} ({int(bad.sum())} cells)")
        for name in self.non_negative:
            j = self.features.index(name)
            if (x[:, j] < 0).any():
                raise ValueError(f"column {name!r} must not be negative")
        return x

    # ------------------------------------------------------------------ scores

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Classifier logit, reconstruction error and stacked log-odds of raw feature rows."""
        z = self.prep.transform(x)
        logit = dense_forward(self.classifier, self.prep.encode(x))[:, 0]
        error = ((dense_forward(self.autoencoder, z) - z) ** 2).mean(axis=1)
        log_odds = stack_inputs(logit, self._stack_anomaly(error)) @ self.stack_coef
        log_odds = log_odds + self.stack_intercept
        return logit, error, log_odds

    def _stack_anomaly(self, error: np.ndarray) -> np.ndarray:
        if self.stack_on == "rank":
            # Bounded: beyond the worst legitimate training order everything ranks 1.
            return self.anomaly(error) + 1.0
        return error

    def risk(self, x: np.ndarray) -> np.ndarray:
        """Calibrated risk in [0, 1] of raw feature rows (already checked)."""
        return sigmoid(self._parts(x)[2])

    def anomaly(self, error: np.ndarray) -> np.ndarray:
        """Reconstruction error → share of legitimate training orders reconstructed better."""
        levels = np.linspace(0.0, 1.0, len(self.error_quantiles))
        return np.asarray(np.interp(error, self.error_quantiles, levels))

    def decide(self, risk: np.ndarray) -> np.ndarray:
        """allow / review / block for each risk."""
        out = np.full(len(risk), "allow", dtype=object)
        out[risk >= self.thresholds["review"]] = "review"
        out[risk >= self.thresholds["block"]] = "block"
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, d) change in the risk's log-odds from each feature vs a typical legit order."""
        full = self._parts(x)[2]
        out = np.empty_like(x, dtype=np.float64)
        for j in range(x.shape[1]):
            swapped = np.array(x, dtype=np.float64)
            swapped[:, j] = self.baseline[j]
            out[:, j] = full - self._parts(swapped)[2]
        return out

    def explain(self, data: Any, k: int = 3) -> list[list[dict[str, Any]]]:
        """Top ``k`` features per row, the ones raising the risk most first.

        Each reason: feature name, its value, its contribution to the log-odds and its
        direction ("raises" or "lowers"; a low-risk order's top reasons may all lower it).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        x = self.check(data)
        contrib = self.contributions(x)
        result = []
        for i in range(len(x)):
            top = np.argsort(-contrib[i], kind="mergesort")[:k]
            result.append(
                [
                    {
                        "feature": self.features[j],
                        "value": float(x[i, j]),
                        "contribution": float(contrib[i, j]),
                        "direction": "raises" if contrib[i, j] > 0 else "lowers",
                    }
                    for j in top
                ]
            )
        return result

    def score(self, data: Any, *, reasons: int = 3) -> pd.DataFrame:
        """risk, decision, anomaly, classifier probability and the top reasons per row."""
        x = self.check(data)
        logit, error, log_odds = self._parts(x)
        risk = sigmoid(log_odds)
        out = pd.DataFrame(
            {
                "risk": risk,
                "decision": self.decide(risk),
                "anomaly": self.anomaly(error),
                "classifier": sigmoid(logit),
            },
            index=data.index if isinstance(data, pd.DataFrame) else None,
        )
        if reasons:
            out["reasons"] = [_reason_text(r) for r in self.explain(data, k=reasons)]
        return out

    def predict(self, data: Any) -> pd.DataFrame:
        """The pyfunc entry: feature rows → risk, decision, anomaly and reasons (text)."""
        return self.score(data)[["risk", "decision", "anomaly", "reasons"]]


def _has_sequences(data: Mapping[str, Any]) -> bool:
    return any(isinstance(v, list | tuple | np.ndarray | pd.Series) for v in data.values())


def _reason_text(reasons: list[dict[str, Any]]) -> str:
    parts = []
    for r in reasons:
        sign = "+" if r["contribution"] > 0 else "-"
        value = r["value"]
        shown = f"{value:g}" if math.isfinite(value) else str(value)
        parts.append(f"{r['feature']}={shown} ({sign}{abs(r['contribution']):.2f})")
    return "; ".join(parts)


__all__ = ["DECISIONS", "FraudScorer", "Preprocessor"]
