"""Per-area adapters: which feature rows are monitored, how predictions and quality are computed.

Every adapter turns a time window of the exported facts (through the area's Feast feature
service, point in time correct) into a :class:`Monitored`: the feature rows, the model's
prediction per row, and labels where they have arrived. The same code builds a version's
reference sample at registration (over its training window) and the current window when the
drift check runs, so both sides are measured the same way.

- ``fraud``: one row per customer order, the nine inputs of the fraud model (``fraud_v1`` +
  the order amount) → calibrated risk; labels from the ``order_outcomes`` facts (chargebacks
  and staff review verdicts, plus orders old enough to have matured without one), quality =
  precision / recall at the review and block thresholds, and PR-AUC, on the latest window
  whose outcomes have matured (``fraud_label_maturity_days`` before the drift window's end);
  a generated shop's ground truth only when the export has no outcomes.
- ``customers``: one row per customer at a cut-off, the ``customer_v1`` statistics → churn
  probability; quality = churn PR-AUC, precision and recall on the snapshot one churn horizon
  back, once that horizon has passed.
- ``demand``: one row per SKU at a forecast origin, summaries of its ``demand_v1`` history
  (recent units, zero-sale share, price) → the median forecast per day over the window; quality
  = WAPE (and bias) against the units actually sold.
- ``recommend``: customers who bought in the window, their ``recommend_v1`` features at its
  start → the mean score of their top 10; quality = hit rate and NDCG at 10 of what they bought.
- ``search``: logged searches, the ranker features of the result ranked first → its score;
  quality = MRR at 10 of the first click.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source


@dataclass
class Monitored:
    """Feature rows of a window with the model's prediction per row and labels where known."""

    features: pd.DataFrame  # the monitored feature columns only
    predictions: np.ndarray  # (n,) float
    labels: np.ndarray | None = None  # (n,) float, NaN where not known yet
    quality: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # Label-free or label-based importance of the monitored features (adapter specific).
    importance: Callable[[], dict[str, float]] | None = None
    # When each row happened (UTC), for areas whose rows are events in time.
    timestamps: pd.Series | None = None

    def __len__(self) -> int:
        return len(self.features)

    def recent(self, days: int, *, min_rows: int = 0) -> Monitored:
        """The rows of the last ``days`` days (at least the last ``min_rows`` rows).

        A reference from the end of the training window: cumulative features (lifetime
        orders, account age) grow as a shop ages, so the start of a long window would look
        like drift against any later week.
        """
        if self.timestamps is None or len(self) == 0:
            return self
        ts = pd.to_datetime(self.timestamps, utc=True).reset_index(drop=True)
        keep = (ts >= ts.max() - pd.Timedelta(days=days)).to_numpy()
        if keep.sum() < min(min_rows, len(ts)):
            order = np.argsort(ts.to_numpy(), kind="stable")
            keep = np.zeros(len(ts), dtype=bool)
            keep[order[-min_rows:]] = True
        return Monitored(
            self.features[keep].reset_index(drop=True),
            self.predictions[keep],
            None if self.labels is None else self.labels[keep],
            dict(self.quality),
            list(self.notes),
            {**self.meta, "reference_days": days},
            self.importance,
            ts[keep].reset_index(drop=True),
        )


class Adapter(Protocol):
    """What the drift check needs from an area."""

    area: str

    def data_end(self, source: Source) -> pd.Timestamp:
        """The latest fact the area's monitoring can see (UTC)."""
        ...

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """The monitored rows of a version's training window (for its reference sample)."""
        ...

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """The monitored rows of ``[start, end]`` with the champion's predictions and quality."""
        ...


# ---------------------------------------------------------------------- helpers


def utc(value: Any) -> pd.Timestamp:
    """A UTC timestamp from anything pandas parses."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_window(window: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``YYYY-MM-DD/YYYY-MM-DD`` (inclusive days) → [start, end) UTC timestamps."""
    try:
        first, last = window.split("/")
        return utc(first), utc(last) + pd.Timedelta(days=1)
    except (ValueError, AttributeError):
        raise ValueError(f"data window must be 'YYYY-MM-DD/YYYY-MM-DD', got {window!r}") from None


def _latest(source: Source, table: str) -> pd.Timestamp:
    stamps = source.facts(table, columns=["created_at"])["created_at"]
    if stamps.empty:
        raise ValueError(f"no {table} in the exported facts")
    return utc(pd.to_datetime(stamps, utc=True).max())


def _clean(frame: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(frame)))
    for name in columns:
        out[name] = pd.to_numeric(frame[name].reset_index(drop=True), errors="coerce").astype(
            "float64"
        )
    return out


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


# ---------------------------------------------------------------------- fraud


class FraudAdapter:
    """Orders → ``fraud_v1`` inputs → risk; precision/recall from labelled outcomes.

    Labels are what the shop learned (:func:`cartwise.models.fraud.data.outcomes`: chargebacks
    and review verdicts, plus orders old enough to have matured without a fraud outcome). The
    orders of the drift window are too young for most outcomes, so quality is measured on the
    latest window whose outcomes have matured: the orders of ``[end - maturity - window,
    end - maturity)``, with the labels known at ``end``. An export without any outcomes (older
    than the ``order_outcomes`` fact) falls back to a generated shop's ground truth on the
    drift window itself, and says so in the notes.
    """

    area = "fraud"

    def __init__(self, maturity_days: int | None = None) -> None:
        # None: ModelSettings.fraud_label_maturity_days, read when a check runs.
        self.maturity_days = maturity_days

    def _maturity(self) -> int:
        if self.maturity_days is not None:
            return int(self.maturity_days)
        from cartwise.models.settings import get_model_settings

        return int(get_model_settings().fraud_label_maturity_days)

    def data_end(self, source: Source) -> pd.Timestamp:
        """The last order in the facts."""
        return _latest(source, "orders")

    def _rows(self, source: Source, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
        """The feature rows of the customer orders of ``[start, end)``."""
        from cartwise.models.fraud import data as fraud_data

        # ``end`` of the facts is a day partition bound (exclusive); the exact end is applied below.
        requests = fraud_data.order_requests(
            source,
            # order_requests reads naive bounds as UTC.
            start=None if start is None else start.tz_convert("UTC").tz_localize(None),
            end=(end + pd.Timedelta(days=1)).normalize().tz_localize(None),
        )
        requests = requests[requests["event_timestamp"] < end].reset_index(drop=True)
        return fraud_data.features(source, requests).reset_index(drop=True)

    def _label(
        self, source: Source, frame: pd.DataFrame, *, as_of: pd.Timestamp, outcomes: bool
    ) -> tuple[pd.DataFrame, list[str]]:
        """``frame`` with ``label``: outcomes known at ``as_of``, else the ground truth."""
        from cartwise.models.fraud import data as fraud_data

        notes: list[str] = []
        if outcomes:
            got = fraud_data.outcomes(source, as_of=as_of, maturity_days=self._maturity())
            known = got.set_index("order_id")["is_fraud"].astype("float64")
            return frame.assign(label=frame["order_id"].map(known)), notes
        try:
            truth = fraud_data.labels(source)
        except LookupError:
            notes.append(
                "fraud: no outcomes (chargebacks / review verdicts) and no ground truth in "
                "this source; quality not measured"
            )
            return frame.assign(label=np.nan), notes
        notes.append(
            "fraud: no order outcomes (chargebacks / review verdicts) in this export; quality "
            "from the generated shop's ground truth instead"
        )
        known = truth.set_index("order_id")["is_fraud"].astype("float64")
        return frame.assign(label=frame["order_id"].map(known)), notes

    def _predict(self, predictor: Any) -> Callable[[pd.DataFrame], np.ndarray]:
        def predict(frame: pd.DataFrame) -> np.ndarray:
            return np.asarray(predictor.risk(predictor.check(frame)), dtype=np.float64)

        return predict

    def _quality(
        self, labels: np.ndarray, risk: np.ndarray, predictor: Any, notes: list[str]
    ) -> dict[str, float]:
        """Precision/recall at the review and block thresholds, PR-AUC, counts, fraud rate."""
        from cartwise.models.fraud import metrics as fm

        known = ~np.isnan(labels)
        quality: dict[str, float] = {"labelled_rows": float(known.sum())}
        y, p = labels[known], risk[known]
        if not known.any():
            return quality
        review = float(predictor.thresholds.get("review", 0.5))
        block = float(predictor.thresholds.get("block", review))
        precision, recall = fm.precision_recall_at(y.astype(bool), p, review)
        block_precision, block_recall = fm.precision_recall_at(y.astype(bool), p, block)
        quality.update(
            {
                "fraud_rate": float(y.mean()),
                "labelled_frauds": float(y.sum()),
                "precision": precision,
                "recall": recall,
                "block_precision": block_precision,
                "block_recall": block_recall,
                "pr_auc": fm.pr_auc(y, p),
            }
        )
        if not y.any():
            notes.append("fraud: no fraud among the labelled orders; recall and PR-AUC undefined")
        return quality

    def _monitored(
        self, frame: pd.DataFrame, predictor: Any, notes: list[str], *, measure: bool = True
    ) -> Monitored:
        from cartwise.models.fraud import data as fraud_data
        from cartwise.models.fraud import metrics as fm
        from cartwise.models.monitoring.importance import permutation_importance

        features = _clean(frame, list(fraud_data.FEATURES))
        predict = self._predict(predictor)
        risk = predict(features) if len(features) else np.zeros(0)
        labels = frame["label"].to_numpy(np.float64)
        known = ~np.isnan(labels)
        quality: dict[str, float] = {}
        if measure:
            if len(features) and not known.any():
                notes.append("fraud: no labels yet for the orders of this window")
            quality = self._quality(labels, risk, predictor, notes)
        y = labels[known]

        def importance() -> dict[str, float]:
            score = None
            if known.any() and y.any() and not y.all():

                def score(pred: np.ndarray) -> float:
                    return fm.pr_auc(y, pred[known])

            return permutation_importance(predict, features, score=score)

        return Monitored(
            features,
            risk,
            labels,
            _finite(quality),
            notes,
            meta={"importance_metric": "pr_auc" if known.any() and y.any() else "mean_abs_delta"},
            importance=importance,
            timestamps=frame["event_timestamp"],
        )

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """The orders of the training window, labelled with what the export knows now."""
        from cartwise.models.fraud import data as fraud_data

        start, end = parse_window(data_window)
        outcomes = fraud_data.has_outcomes(source)
        as_of = fraud_data.data_end(source) if outcomes else end
        frame, notes = self._label(
            source, self._rows(source, start, end), as_of=as_of, outcomes=outcomes
        )
        return self._monitored(frame, predictor, notes)

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """The orders of ``[start, end)``; quality on the matured window before them."""
        from cartwise.models.fraud import data as fraud_data

        outcomes = fraud_data.has_outcomes(source)
        frame, notes = self._label(
            source, self._rows(source, start, end), as_of=end, outcomes=outcomes
        )
        if not outcomes:
            return self._monitored(frame, predictor, notes)
        monitored = self._monitored(frame, predictor, notes, measure=False)
        maturity = self._maturity()
        q_end = end - pd.Timedelta(days=maturity)
        q_start = q_end - (end - start)
        past, _ = self._label(source, self._rows(source, q_start, q_end), as_of=end, outcomes=True)
        features = _clean(past, list(fraud_data.FEATURES))
        risk = self._predict(predictor)(features) if len(features) else np.zeros(0)
        quality = self._quality(past["label"].to_numpy(np.float64), risk, predictor, notes)
        labelled = past.loc[past["label"].notna(), "order_id"]
        quality.update(
            {
                "quality_window_start_days_ago": (end - q_start) / pd.Timedelta(days=1),
                "quality_window_end_days_ago": (end - q_end) / pd.Timedelta(days=1),
                "label_maturity_days": float(maturity),
                "quality_orders": float(len(past)),
            }
        )
        window = f"{q_start:%Y-%m-%d %H:%M}/{q_end:%Y-%m-%d %H:%M}"
        if past.empty:
            notes.append(
                f"fraud: no orders in the matured window {window} (orders {maturity}+ days "
                "old); quality not measured yet"
            )
        else:
            notes.append(
                f"fraud: quality on the {len(past)} orders of {window} UTC (at least "
                f"{maturity} days old, outcomes known at {end:%Y-%m-%d %H:%M}), "
                f"{len(labelled)} labelled from chargebacks, review verdicts and maturity"
            )
        monitored.quality = _finite(quality)
        monitored.meta.update(
            {"quality_window": window, "label_maturity_days": maturity, "labels": "outcomes"}
        )
        return monitored


# ---------------------------------------------------------------------- demand

DEMAND_FEATURES: tuple[str, ...] = (
    "units_7d",
    "units_28d",
    "zero_share_28d",
    "price",
    "price_change_28d",
)
# History days behind each summary feature, for permutation importance (None: no own block).
_DEMAND_BLOCKS: dict[str, tuple[str, int, int] | None] = {
    "units_7d": ("units", -7, 0),
    "units_28d": ("units", -28, -7),
    "zero_share_28d": None,
    "price": ("price", -7, 0),
    "price_change_28d": ("price", -28, -7),
}
# Reference forecasts start at this many origins, a week apart, at the end of training.
_DEMAND_ORIGINS = 4


@dataclass
class _Forecasts:
    """Forecasts of every series from one origin, with the history and actuals around it."""

    product_ids: np.ndarray
    origin: pd.Timestamp
    hist: np.ndarray  # (n, lookback) units before the origin
    price: np.ndarray  # (n, lookback)
    closed: np.ndarray  # (lookback,)
    actual: np.ndarray  # (n, h) units after the origin (NaN: unknown / not started)
    open_days: np.ndarray  # (n, h) days that count for WAPE


def demand_features(hist: np.ndarray, price: np.ndarray) -> pd.DataFrame:
    """Summaries of each series' history before a forecast origin (the monitored demand
    features; serving logs the same summaries of the history it forecasts from)."""
    import warnings

    with warnings.catch_warnings():
        # A series younger than a week has an all-NaN block: its summary is NaN on purpose.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        last7 = np.nanmean(hist[:, -7:], axis=1)
        last28 = np.nanmean(hist[:, -28:], axis=1)
        known28 = ~np.isnan(hist[:, -28:])
        zeros = np.where(known28, hist[:, -28:] == 0, False).sum(axis=1)
        zero_share = zeros / np.maximum(known28.sum(axis=1), 1)
        filled = pd.DataFrame(price.T).ffill().to_numpy().T
        now = filled[:, -1]
        before = filled[:, -28] if filled.shape[1] >= 28 else filled[:, 0]
        change = np.where((before > 0) & np.isfinite(now), now / before, np.nan)
    return pd.DataFrame(
        {
            "units_7d": last7,
            "units_28d": last28,
            "zero_share_28d": zero_share,
            "price": now,
            "price_change_28d": change,
        }
    )


class DemandAdapter:
    """SKUs at a forecast origin: history summaries → median forecast; WAPE once sold."""

    area = "demand"

    def data_end(self, source: Source) -> pd.Timestamp:
        """The last order line in the facts."""
        return _latest(source, "order_lines")

    def _panel(self, source: Source, end: pd.Timestamp) -> Any:
        from cartwise.models.demand.data import read_panel

        return read_panel(source, end=end.tz_convert("UTC").tz_localize(None).normalize())

    def _forecasts(self, panel: Any, origin: pd.Timestamp, horizon: int, lookback: int) -> Any:
        day = origin.tz_localize(None) if origin.tzinfo else origin
        cut = int((day - panel.start).days)
        if cut <= 0:
            return None
        take = min(lookback, cut)
        n = panel.n_series
        hist = np.full((n, lookback), np.nan)
        price = np.full((n, lookback), np.nan)
        closed = np.zeros(lookback, dtype=bool)
        hist[:, lookback - take :] = panel.units[:, cut - take : cut]
        price[:, lookback - take :] = panel.price[:, cut - take : cut]
        closed[lookback - take :] = panel.closed[cut - take : cut]
        actual = np.full((n, horizon), np.nan)
        stop = min(cut + horizon, panel.n_days)
        actual[:, : stop - cut] = panel.units[:, cut:stop]
        shop_closed = np.zeros(horizon, dtype=bool)
        shop_closed[: stop - cut] = panel.closed[cut:stop]
        started = ~np.isnan(hist).all(axis=1)
        return _Forecasts(
            panel.product_ids[started],
            pd.Timestamp(day),
            hist[started],
            price[started],
            closed,
            actual[started],
            ~np.isnan(actual[started]) & ~shop_closed[None, :],
        )

    def _monitored(self, predictor: Any, parts: list[Any], notes: list[str]) -> Monitored:
        from cartwise.models.demand import metrics as dm

        horizon = parts[0].actual.shape[1]
        median = predictor.median

        def forecast(part: Any, hist: np.ndarray, price: np.ndarray) -> np.ndarray:
            q = predictor.forecast_arrays(hist, price, part.closed, part.origin, horizon)
            out: np.ndarray = q[..., median]
            return out

        medians = [forecast(p, p.hist, p.price) for p in parts]
        features = pd.concat([demand_features(p.hist, p.price) for p in parts], ignore_index=True)
        predictions = np.concatenate([m.mean(axis=1) for m in medians])
        actual = np.vstack([p.actual for p in parts])
        open_days = np.vstack([p.open_days for p in parts])
        known = open_days.any(axis=1)
        labels = np.where(
            known,
            np.nansum(np.where(open_days, actual, 0.0), axis=1) / np.maximum(horizon, 1),
            np.nan,
        )
        med = np.vstack(medians)
        quality: dict[str, float] = {"forecast_days": float(horizon)}
        if open_days.any():
            quality["wape"] = dm.wape(actual, med, open_days)
            sold = float(np.nansum(np.where(open_days, actual, 0.0)))
            if sold > 0:
                quality["bias"] = float(np.sum(np.where(open_days, med - actual, 0.0)) / sold)
        else:
            notes.append("demand: no actual sales known yet after the forecast origin")

        def importance() -> dict[str, float]:
            rng = np.random.default_rng(0)
            has_actuals = bool(open_days.any())
            base = med

            def measure(moved: np.ndarray) -> float:
                if has_actuals:
                    return dm.wape(actual, moved, open_days) - dm.wape(actual, base, open_days)
                return float(np.mean(np.abs(moved - base)))

            out: dict[str, float] = {}
            for name, block in _DEMAND_BLOCKS.items():
                if block is None:
                    continue
                kind, lo, hi = block
                changes = []
                for _ in range(3):
                    moved_parts = []
                    for p in parts:
                        hist, price = p.hist.copy(), p.price.copy()
                        target = hist if kind == "units" else price
                        cols = slice(target.shape[1] + lo, target.shape[1] + hi or None)
                        target[:, cols] = target[rng.permutation(len(target)), cols]
                        moved_parts.append(forecast(p, hist, price))
                    changes.append(measure(np.vstack(moved_parts)))
                out[name] = float(np.mean(changes))
            return out

        timestamps = pd.Series(
            np.concatenate(
                [np.full(len(p.product_ids), p.origin.tz_localize("UTC")) for p in parts]
            )
        )
        features.insert(0, "product_id", np.concatenate([p.product_ids for p in parts]))
        return Monitored(
            features[list(DEMAND_FEATURES)],
            predictions,
            labels,
            _finite(quality),
            notes,
            meta={"importance_metric": "wape" if open_days.any() else "mean_abs_delta"},
            importance=importance,
            timestamps=timestamps,
        )

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """Forecasts from origins in the last weeks of the training window."""
        start, end = parse_window(data_window)
        panel = self._panel(source, end)
        horizon = min(28, int(predictor.horizon))
        parts = []
        for k in range(_DEMAND_ORIGINS):
            origin = end - pd.Timedelta(days=horizon + 7 * k)
            if origin <= start:
                break
            part = self._forecasts(panel, origin, horizon, int(predictor.lookback))
            if part is not None and len(part.product_ids):
                parts.append(part)
        if not parts:
            raise ValueError(f"demand: the training window {data_window} is too short")
        return self._monitored(predictor, parts, [])

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """Forecasts from the window's first day over the window (at most the model horizon)."""
        notes: list[str] = []
        last_day = (end - pd.Timedelta(microseconds=1)).normalize()
        days = max(1, int((last_day - start.normalize()).days) + 1)
        horizon = min(days, int(predictor.horizon))
        if horizon < days:
            notes.append(
                f"demand: the window is cut to the model's {predictor.horizon}-day horizon"
            )
        origin = last_day - pd.Timedelta(days=horizon - 1)
        panel = self._panel(source, last_day + pd.Timedelta(days=1))
        part = self._forecasts(panel, origin, horizon, int(predictor.lookback))
        if part is None or not len(part.product_ids):
            empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in DEMAND_FEATURES})
            return Monitored(empty, np.zeros(0), None, {}, [*notes, "demand: no history"])
        return self._monitored(predictor, [part], notes)


# ---------------------------------------------------------------------- customers


class CustomersAdapter:
    """Customers at a cut-off: ``customer_v1`` statistics → churn probability.

    The current side is every customer who has bought before the window's end, as of that
    moment; churn quality is measured on the snapshot one churn horizon earlier, whose outcome
    (a purchase in the horizon or not) is known by now.
    """

    area = "customers"

    def data_end(self, source: Source) -> pd.Timestamp:
        """The last order in the facts."""
        return _latest(source, "orders")

    def _snapshot(self, source: Source, cutoff: pd.Timestamp, horizon: int, labels: bool) -> Any:
        from cartwise.models.customers import data as cdata

        orders = cdata.read_orders(source)
        return cdata.snapshot(
            source, cutoff, orders=orders, horizon=horizon, with_labels=labels
        ), orders

    def _monitored(self, predictor: Any, snap: Any, notes: list[str]) -> Monitored:
        from cartwise.models.customers import data as cdata
        from cartwise.models.monitoring.importance import permutation_importance

        frame = snap.features
        stats = _clean(frame, list(cdata.STATS))
        affinity = {c: frame[c].reset_index(drop=True) for c in cdata.AFFINITY if c in frame}

        def predict(rows: pd.DataFrame) -> np.ndarray:
            # The category lists stay with their customers: only the statistics are shuffled.
            full = rows.assign(**{c: v.to_numpy() for c, v in affinity.items()})
            out = predictor.insights(full)["churn_probability"].to_numpy(np.float64)
            return np.asarray(out)

        churn = predict(stats) if len(stats) else np.zeros(0)
        labels = None
        quality: dict[str, float] = {}
        if snap.labels is not None:
            labels = snap.labels["churned"].to_numpy(np.float64)
            quality = _churn_quality(labels, churn)

        def importance() -> dict[str, float]:
            score = None
            if labels is not None and 0 < labels.sum() < len(labels):
                from cartwise.models.customers.metrics import churn_metrics

                def score(pred: np.ndarray) -> float:
                    return churn_metrics(labels, pred)["churn_pr_auc"]

            return permutation_importance(predict, stats, score=score)

        return Monitored(
            stats,
            churn,
            labels,
            _finite(quality),
            notes,
            meta={
                "cutoff": str(snap.cutoff),
                "importance_metric": "churn_pr_auc" if labels is not None else "mean_abs_delta",
            },
            importance=importance,
        )

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """Customers at the last labelled cut-off of training (one horizon before its end)."""
        _, end = parse_window(data_window)
        horizon = int(getattr(predictor, "horizon_days", 90))
        cutoff = (end - pd.Timedelta(days=1 + horizon)).normalize()
        snap, _ = self._snapshot(source, cutoff, horizon, labels=True)
        return self._monitored(predictor, snap, [])

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """Customers as of the window's end; churn quality from one horizon before it."""
        notes: list[str] = []
        horizon = int(getattr(predictor, "horizon_days", 90))
        snap, orders = self._snapshot(source, end, horizon, labels=False)
        monitored = self._monitored(predictor, snap, notes)
        first = pd.to_datetime(orders["created_at"], utc=True).min()
        back = end - pd.Timedelta(days=horizon)
        if pd.isna(first) or back <= first:
            notes.append(
                f"customers: the {horizon}-day churn window before {end:%Y-%m-%d} starts before "
                "the first order; churn quality not measured yet"
            )
            return monitored
        try:
            past, _ = self._snapshot(source, back, horizon, labels=True)
        except ValueError as exc:
            notes.append(f"customers: no labelled snapshot at {back:%Y-%m-%d} ({exc})")
            return monitored
        stats = _clean(past.features, list(monitored.features.columns))
        affinity = {c: past.features[c].to_numpy() for c in ("category_ids", "category_scores")}
        churn = predictor.insights(stats.assign(**{k: v for k, v in affinity.items()}))[
            "churn_probability"
        ].to_numpy(np.float64)
        monitored.quality.update(
            _finite(_churn_quality(past.labels["churned"].to_numpy(np.float64), churn))
        )
        monitored.meta["quality_cutoff"] = str(back)
        return monitored


def _churn_quality(labels: np.ndarray, churn: np.ndarray) -> dict[str, float]:
    from cartwise.models.customers.metrics import churn_metrics

    flagged = churn >= 0.5
    positives = labels >= 0.5
    out = {
        "labelled_customers": float(len(labels)),
        "churn_rate": float(positives.mean()) if len(labels) else math.nan,
        "churn_precision": float(positives[flagged].mean()) if flagged.any() else math.nan,
        "churn_recall": float(flagged[positives].mean()) if positives.any() else math.nan,
    }
    out.update(churn_metrics(labels, churn))
    return out


# ---------------------------------------------------------------------- recommend

TOP_K = 10
_AFFINITY = ("category_ids", "category_scores")


def _purchases(source: Source, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Kept order lines of registered customers in ``[start, end)``: user_id, product_id."""
    lines = source.facts(
        "order_lines",
        columns=["user_id", "product_id", "status", "created_at"],
        start=start.tz_convert("UTC").tz_localize(None).normalize(),
        end=(end + pd.Timedelta(days=1)).tz_convert("UTC").tz_localize(None).normalize(),
    )
    if lines.empty:
        return pd.DataFrame(columns=["user_id", "product_id"])
    ts = pd.to_datetime(lines["created_at"], utc=True)
    keep = (ts >= start) & (ts < end) & ~lines["status"].isin(["cancelled", "refunded"])
    lines = lines[keep & lines["user_id"].notna() & lines["product_id"].notna()]
    return lines[["user_id", "product_id"]].astype("int64").reset_index(drop=True)


class RecommendAdapter:
    """Customers who bought in the window: ``recommend_v1`` at its start → top-10 score.

    Quality: hit rate and NDCG at 10 of the recommendations (as of the window's start)
    against what each customer then bought. Importance goes through the customer tower, the
    part of the model that reads features (customers seen in training are scored by their
    learned vectors, which the features only shaped at training time).
    """

    area = "recommend"

    def data_end(self, source: Source) -> pd.Timestamp:
        """The last order line in the facts."""
        return _latest(source, "order_lines")

    def _monitored(
        self, source: Source, predictor: Any, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        from cartwise.models.monitoring.importance import permutation_importance
        from cartwise.models.recommend import features as rfeat

        notes: list[str] = []
        bought = _purchases(source, start, end)
        users = np.sort(bought["user_id"].unique()) if len(bought) else np.zeros(0, np.int64)
        columns = list(rfeat.USER_COLUMNS)
        if len(users) == 0:
            notes.append("recommend: no purchases by customers in this window")
            empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
            return Monitored(empty, np.zeros(0), None, {}, notes)
        rows = rfeat.historical_users(source, users.tolist(), start)
        stats = _clean(rows, columns).fillna(0.0)
        wanted = bought.groupby("user_id")["product_id"].apply(set).to_dict()
        predictions = np.full(len(users), np.nan)
        hits = np.zeros(len(users))
        ndcg = np.zeros(len(users))
        fallbacks = 0
        discounts = 1.0 / np.log2(np.arange(2, TOP_K + 2))
        for i, user in enumerate(users.tolist()):
            # Missing values (a customer without a profile yet) stay out of the mapping.
            mapping = {
                c: value
                for c in rows.columns
                if c in {*columns, *_AFFINITY}
                and (value := rows.iloc[i][c]) is not None
                and not (isinstance(value, float) and math.isnan(value))
            }
            recs = predictor.recommend(int(user), k=TOP_K, features=mapping)
            if recs.fallback:
                fallbacks += 1
            else:
                predictions[i] = float(np.mean(recs.scores)) if recs.scores else np.nan
            got = [1.0 if item in wanted[user] else 0.0 for item in recs.items]
            hits[i] = float(any(got))
            ideal = discounts[: min(len(wanted[user]), TOP_K)].sum()
            ndcg[i] = float(np.dot(got, discounts[: len(got)]) / ideal) if ideal > 0 else 0.0
        if fallbacks:
            notes.append(f"recommend: {fallbacks} of {len(users)} customers got the popular items")
        quality = {
            "customers": float(len(users)),
            "hit_rate_at_10": float(hits.mean()),
            "ndcg_at_10": float(ndcg.mean()),
            "fallback_share": fallbacks / len(users),
        }
        towers = getattr(predictor, "towers", None)
        spec = getattr(towers, "spec", None)
        affinity = {c: rows[c].to_numpy() for c in ("category_ids", "category_scores") if c in rows}
        # The tower's id table is 1-based: 0 is the row of customers unseen in training.
        positions = [predictor.user_index(int(u)) for u in users.tolist()]
        index = np.array([0 if i is None else i + 1 for i in positions], dtype=np.int64)

        def tower_scores(frame: pd.DataFrame) -> np.ndarray:
            assert towers is not None
            assert spec is not None
            inputs = spec.users(frame.assign(**affinity))
            vectors = towers.users(index, inputs)
            scores = vectors @ predictor.item_vectors.T + predictor.item_bias
            top = -np.sort(-scores, axis=1)[:, :TOP_K]
            out: np.ndarray = top.mean(axis=1).astype(np.float64)
            return out

        def importance() -> dict[str, float]:
            if towers is None or spec is None:
                return {}
            return permutation_importance(tower_scores, stats)

        return Monitored(
            stats,
            predictions,
            hits,
            _finite(quality),
            notes,
            meta={"importance_metric": "mean_abs_delta (customer tower)"},
            importance=importance,
        )

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """Customers who bought in the last four weeks before the training window's end."""
        _, end = parse_window(data_window)
        end = end - pd.Timedelta(days=1)  # the window names the holdout's first day
        return self._monitored(source, predictor, end - pd.Timedelta(days=28), end)

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """Customers who bought in ``[start, end)``, as recommended at ``start``."""
        return self._monitored(source, predictor, start, end)


# ---------------------------------------------------------------------- search


class SearchAdapter:
    """Logged searches: the ranker's features of the result it put first → its score.

    Product statistics are read as of the window's start (``search_rank_v1``); the query
    features come from re-running the search. Quality: MRR at 10 of the first product each
    search's shopper clicked.
    """

    area = "search"

    def data_end(self, source: Source) -> pd.Timestamp:
        """The last shopper event in the facts."""
        stamps = source.facts("events", columns=["received_at"])["received_at"]
        if stamps.empty:
            raise ValueError("no events in the exported facts")
        return utc(pd.to_datetime(stamps, utc=True).max())

    def _monitored(
        self, source: Source, predictor: Any, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        from cartwise.models.monitoring.importance import permutation_importance
        from cartwise.models.search import data as sdata
        from cartwise.models.search.predict import FEATURES

        notes: list[str] = []
        naive = start.tz_convert("UTC").tz_localize(None).normalize()
        stop = (end + pd.Timedelta(days=1)).tz_convert("UTC").tz_localize(None).normalize()
        searches = sdata.search_sessions(source, start=naive, end=stop)
        if len(searches):
            ts = pd.to_datetime(searches["ts"], utc=True)
            searches = searches[(ts >= start) & (ts < end)].reset_index(drop=True)
        columns = list(FEATURES)
        if searches.empty:
            notes.append("search: no logged searches in this window")
            empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
            return Monitored(empty, np.zeros(0), None, {}, notes)
        ids = predictor.product_ids
        stats = sdata.stats_matrix(sdata.product_stats(source, ids, [start]), ids)
        queries = [str(q) for q in searches["query"]]
        corrected = [predictor.speller.correct(q) for q in queries]
        vectors = predictor.embed(corrected)
        ranked = predictor.ranker is not None
        rows, scores, reciprocal = [], [], []
        for i, fixed in enumerate(corrected):
            index, base = predictor.candidates(fixed, vectors[i])
            if len(index) == 0:
                continue
            x = predictor.features(index, base, fixed, stats=stats)
            s = predictor.rank_scores(x) if ranked else base[:, 4]
            order = np.lexsort((index, -s))
            rows.append(x[order[0]])
            scores.append(float(s[order[0]]))
            clicked = list(searches["clicked"].iloc[i])
            top = [int(ids[index[j]]) for j in order[:TOP_K]]
            if clicked:
                hit = [r for r, item in enumerate(top, start=1) if item == int(clicked[0])]
                reciprocal.append(1.0 / hit[0] if hit else 0.0)
            else:
                reciprocal.append(np.nan)
        features = pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=columns)
        labels = np.asarray(reciprocal, dtype=np.float64)
        known = ~np.isnan(labels)
        quality = {"searches": float(len(features)), "clicked_searches": float(known.sum())}
        if known.any():
            quality["mrr_at_10"] = float(labels[known].mean())
        else:
            notes.append("search: no clicks after the searches of this window yet")
        if not ranked:
            notes.append("search: no learned ranker; the hybrid score is monitored")

        def predict(frame: pd.DataFrame) -> np.ndarray:
            matrix = frame.to_numpy(np.float64)
            out = predictor.rank_scores(matrix) if ranked else matrix[:, FEATURES.index("rrf")]
            return np.asarray(out, dtype=np.float64)

        def importance() -> dict[str, float]:
            return permutation_importance(predict, features)

        return Monitored(
            features,
            np.asarray(scores, dtype=np.float64),
            labels,
            _finite(quality),
            notes,
            meta={"importance_metric": "mean_abs_delta (ranker score)"},
            importance=importance,
        )

    def reference(self, source: Source, predictor: Any, *, data_window: str) -> Monitored:
        """The searches of the last four weeks of the training window."""
        _, end = parse_window(data_window)
        return self._monitored(source, predictor, end - pd.Timedelta(days=28), end)

    def current(
        self, source: Source, predictor: Any, *, start: pd.Timestamp, end: pd.Timestamp
    ) -> Monitored:
        """The searches of ``[start, end)``."""
        return self._monitored(source, predictor, start, end)


ADAPTERS: dict[str, Adapter] = {
    "fraud": FraudAdapter(),
    "demand": DemandAdapter(),
    "customers": CustomersAdapter(),
    "recommend": RecommendAdapter(),
    "search": SearchAdapter(),
}


def adapter(area: str, settings: ModelSettings | None = None) -> Adapter:
    """The area's adapter (configured from ``settings`` when given); ``ValueError`` for an
    area without monitoring."""
    try:
        found = ADAPTERS[area]
    except KeyError:
        raise ValueError(
            f"no drift monitoring for area {area!r}; known: {', '.join(ADAPTERS)}"
        ) from None
    if settings is not None and isinstance(found, FraudAdapter):
        return FraudAdapter(maturity_days=settings.fraud_label_maturity_days)
    return found


__all__ = [
    "ADAPTERS",
    "DEMAND_FEATURES",
    "TOP_K",
    "Adapter",
    "FraudAdapter",
    "Monitored",
    "adapter",
    "demand_features",
    "parse_window",
    "utc",
]
