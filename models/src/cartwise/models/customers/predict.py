"""What serving loads: a picklable, torch-free :class:`CustomerModel` over numpy weights.

It bundles the segmenter (autoencoder encoder weights, the input scaler, k-means centroids in
the embedding space, the segment names and profiles), the churn MLP, the 90-day value MLP and,
optionally, co-purchase association rules. Serving calls:

- :meth:`CustomerModel.insights`: per customer, segment id and name, churn probability and
  expected spend over the horizon (``ltv_90d``);
- :meth:`CustomerModel.segments`: the profile table of the segments;
- :meth:`CustomerModel.predict`: the pyfunc entry (the same as ``insights`` without ids);
- :meth:`CustomerModel.rules_for`: products that go with a basket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.customers import data as cdata

Layers = list[tuple[np.ndarray, np.ndarray]]
OUTPUTS = ("segment", "segment_name", "churn_probability", "ltv_90d")


def forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """Linear layers with ReLU between them (the layout of :mod:`.model`), in numpy."""
    h = x.astype(np.float32)
    for i, (weight, bias) in enumerate(layers):
        h = h @ weight.T + bias
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return out


@dataclass
class CustomerModel:
    """Segments, churn and value for customers from their ``customer_v1`` features."""

    mean: np.ndarray  # input scaler (len(INPUTS),)
    scale: np.ndarray
    encoder: Layers  # autoencoder encoder: scaled inputs → embedding
    embed_mean: np.ndarray  # embedding standardisation before k-means
    embed_scale: np.ndarray
    centroids: np.ndarray  # (k, dim) in the standardised embedding space
    names: list[str]  # segment id → name
    profiles: list[dict[str, Any]]  # segment id → profile numbers
    churn: Layers  # churn MLP: one logit
    value: Layers  # value MLP: buy logit, log1p spend given a purchase, log1p spend
    value_scale: float = 1.0  # multiplier chosen on validation (MAE)
    value_mode: str = "hurdle"  # "hurdle": P(buy) x spend if buying; "direct": log1p(spend)
    horizon_days: int = cdata.HORIZON_DAYS
    rules: pd.DataFrame | None = None  # association rules (antecedent → consequent)
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ inputs

    def _inputs(self, frame: Any) -> np.ndarray:
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(
                f"expected a pandas DataFrame of customer_v1 features, got {type(frame).__name__}"
            )
        known = {*cdata.STATS, *cdata.AFFINITY, "customer_id", "event_timestamp", "top_category_id"}
        unknown = sorted(str(c) for c in frame.columns if c not in known)
        if unknown:
            raise ValueError(f"unknown columns {unknown}; expected the customer_v1 features")
        x = cdata.matrix(frame)
        scaled: np.ndarray = (x - self.mean) / self.scale
        return scaled.astype(np.float32)

    # ------------------------------------------------------------------ parts

    def embed(self, frame: pd.DataFrame) -> np.ndarray:
        """The autoencoder embedding (n, dim) of each customer."""
        return forward(self.encoder, self._inputs(frame))

    def _segment(self, x: np.ndarray) -> np.ndarray:
        z = (forward(self.encoder, x) - self.embed_mean) / self.embed_scale
        distances = ((z[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        out: np.ndarray = distances.argmin(axis=1)
        return out

    def _churn(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(forward(self.churn, x)[:, 0])

    def _value(self, x: np.ndarray) -> np.ndarray:
        out = forward(self.value, x)
        if self.value_mode == "direct":
            direct: np.ndarray = np.expm1(np.clip(out[:, 2], 0.0, 20.0)) * self.value_scale
            return direct
        buy = _sigmoid(out[:, 0])
        spend = np.expm1(np.clip(out[:, 1], 0.0, 20.0))
        result: np.ndarray = buy * spend * self.value_scale
        return result

    # ------------------------------------------------------------------ serving

    def insights(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per customer: segment, segment_name, churn_probability, ltv_90d (+ customer_id)."""
        x = self._inputs(frame)
        segment = self._segment(x)
        out = pd.DataFrame(
            {
                "segment": segment.astype(np.int64),
                "segment_name": [self.names[s] for s in segment.tolist()],
                "churn_probability": self._churn(x).astype(np.float64),
                "ltv_90d": self._value(x).astype(np.float64),
            }
        )
        if "customer_id" in frame.columns:
            out.insert(0, "customer_id", frame["customer_id"].to_numpy())
        return out

    def predict(self, data: Any) -> pd.DataFrame:
        """The pyfunc entry: customer_v1 feature rows → segment, name, churn, ltv_90d."""
        return self.insights(data)[list(OUTPUTS)]

    def segments(self) -> pd.DataFrame:
        """The segment profile table: id, name, share and the profile numbers."""
        return pd.DataFrame(self.profiles)

    def rules_for(self, product_ids: Iterable[Any], k: int = 10) -> pd.DataFrame:
        """Products bought with ``product_ids`` (association rules; empty without rules)."""
        from cartwise.models.customers.rules import COLUMNS, rules_for

        if self.rules is None:
            return pd.DataFrame(columns=COLUMNS)
        return rules_for(self.rules, product_ids, k=k)


# ---------------------------------------------------------------------- segment names

# Candidate names, in the order they are handed out, and how a profile scores for each
# (z-scores of the segment means of the scaled inputs across segments): each name goes to the
# free segment that scores highest for it, and only if that score is positive, so the names
# follow the numbers whatever the data. Segments left over are "occasional buyers", then
# "segment <i>".
NAME_RULES: dict[str, dict[str, float]] = {
    "lapsing": {"days_since_last_order": 1.0, "never_ordered": -1.0, "orders_30d": -0.5},
    "loyal regulars": {"orders_90d": 1.0, "orders_lifetime": 1.0, "days_since_last_order": -1.0},
    "gift buyers": {"orders_lifetime": -1.0, "top_category_share": -1.0, "sessions_90d": 0.5},
    "bargain hunters": {"avg_order_value": -1.0, "orders_90d": 0.5},
    "new customers": {"orders_lifetime": -1.0, "days_since_last_order": -1.0},
}
# A small segment spending this many times the average is named "big spenders" first.
BIG_SPENDER_RATIO, BIG_SPENDER_SHARE = 3.0, 0.1


def name_segments(
    centroid_inputs: np.ndarray,
    shares: np.ndarray | None = None,
    spend: np.ndarray | None = None,
) -> list[str]:
    """Unique names for segments from their mean scaled inputs (and shares and mean spend)."""
    k = len(centroid_inputs)
    std = centroid_inputs.std(axis=0)
    z = (centroid_inputs - centroid_inputs.mean(axis=0)) / np.where(std > 1e-9, std, 1.0)
    index = {name: i for i, name in enumerate(cdata.INPUTS)}
    names: list[str | None] = [None] * k
    if shares is not None and spend is not None and k > 2:
        average = float(np.sum(shares * spend))
        for i in np.argsort(-spend).tolist():
            if shares[i] < BIG_SPENDER_SHARE and spend[i] > BIG_SPENDER_RATIO * average > 0:
                names[i] = "big spenders"
            break
    for name, weights in NAME_RULES.items():
        free = [i for i in range(k) if names[i] is None]
        if not free:
            break
        score = {
            i: sum(w * z[i, index[f]] for f, w in weights.items()) / sum(map(abs, weights.values()))
            for i in free
        }
        best = max(free, key=lambda i: score[i])
        if score[best] > 0:
            names[best] = name
    out: list[str] = []
    for i, given in enumerate(names):
        if given is None:
            given = "occasional buyers" if "occasional buyers" not in names else f"segment {i}"
            names[i] = given
        out.append(given)
    return out


PROFILE_COLUMNS = (
    "orders_90d",
    "spend_90d",
    "orders_lifetime",
    "spend_lifetime",
    "avg_order_value",
    "days_since_last_order",
    "sessions_90d",
    "categories_90d",
    "top_category_share",
    "returns_90d",
)


def profiles(
    frame: pd.DataFrame,
    segment: np.ndarray,
    names: Sequence[str],
    churn: np.ndarray | None = None,
    value: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per segment: size, share and the median/mean of the profile columns (original units)."""
    out: list[dict[str, Any]] = []
    n = max(len(frame), 1)
    recency = pd.to_numeric(frame["days_since_last_order"]).to_numpy(np.float64)
    for s, name in enumerate(names):
        mask = segment == s
        row: dict[str, Any] = {
            "segment": s,
            "name": name,
            "customers": int(mask.sum()),
            "share": float(mask.sum() / n),
        }
        for column in PROFILE_COLUMNS:
            values = pd.to_numeric(frame.loc[mask, column]).to_numpy(np.float64)
            if column == "days_since_last_order":
                # Medians of known recencies: the 9999 sentinel (never ordered) is counted apart.
                known = recency[mask] < cdata.NEVER
                row["never_ordered_share"] = float(1 - known.mean()) if mask.any() else 0.0
                values = recency[mask][known]
                row["median_days_since_last_order"] = (
                    float(np.median(values)) if len(values) else float("nan")
                )
                continue
            row[f"mean_{column}"] = float(values.mean()) if len(values) else float("nan")
        if churn is not None:
            row["mean_churn_probability"] = float(churn[mask].mean()) if mask.any() else 0.0
        if value is not None:
            row["mean_ltv_90d"] = float(value[mask].mean()) if mask.any() else 0.0
        out.append(row)
    return out


__all__ = ["OUTPUTS", "CustomerModel", "forward", "name_segments", "profiles"]
