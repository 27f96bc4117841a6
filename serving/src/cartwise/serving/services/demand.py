"""The demand-planning service: 28-day quantile forecasts and reorder suggestions per product.

The :class:`DemandForecaster` keeps each trained product's recent daily sales, so a forecast
needs nothing but the product id (no Feast, no offline store). Reorder suggestions combine the
forecast with the live stock and the suppliers' lead times the ingress passes in
(:meth:`DemandForecaster.reorder`: safety stock, reorder point, order-up-to level).

Both answers log what they forecast to the feature log, one row per product, as the drift
check's reference sample holds it (:class:`cartwise.models.monitoring.areas.DemandAdapter`):
the summaries of the stored history the forecast starts from (``DEMAND_FEATURES``) and the mean
daily median forecast over the reference's horizon (28 days, or the model's if shorter), keyed
by the product id. The stored history only changes with a new model version, so those rows are
computed once per version (:meth:`DemandService.prepare`); logging a row is a lookup and a list
append. A forecast is logged when it is computed, not when the cache answers it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cartwise.serving.services.base import ServiceBase, answer, check_int, jsonable

if TYPE_CHECKING:
    from cartwise.models.demand.predict import DemandForecaster
    from cartwise.serving.runtime.holder import LoadedModel

log = logging.getLogger(__name__)

MAX_LIMIT = 1_000
MAX_PRODUCTS = 100_000
# The drift reference's prediction: the mean daily median over this many days (at most the
# model's horizon), see ``DemandAdapter.reference``.
REFERENCE_HORIZON = 28


@dataclass(frozen=True)
class MonitoredRows:
    """Per stored product: the monitored features and prediction the feature log records."""

    index: dict[int, int]  # product_id -> row
    features: list[dict[str, float]]  # DEMAND_FEATURES per row
    predictions: list[float]  # mean daily median over the reference horizon

    def rows(
        self, product_ids: Sequence[int]
    ) -> tuple[list[dict[str, float]], list[float], list[int]]:
        """The rows of the known ``product_ids``: features, predictions, keys."""
        at = [(p, self.index[p]) for p in product_ids if p in self.index]
        return (
            [self.features[i] for _, i in at],
            [self.predictions[i] for _, i in at],
            [p for p, _ in at],
        )


def monitored_rows(forecaster: DemandForecaster) -> MonitoredRows:
    """Summaries of every stored series and its forecast, as the drift reference measures them.

    One forward pass over all products from the stored history (the origin every answer of
    this version forecasts from).
    """
    from cartwise.models.monitoring.areas import DEMAND_FEATURES, demand_features

    features = demand_features(forecaster.history, forecaster.history_price)
    horizon = min(REFERENCE_HORIZON, int(forecaster.horizon))
    n = len(forecaster.product_ids)
    if n:
        q = forecaster.forecast_arrays(
            forecaster.history,
            forecaster.history_price,
            forecaster.history_closed,
            forecaster.history_end,
            horizon,
        )
        predictions = q[..., forecaster.median].mean(axis=1)
    else:
        predictions = np.zeros(0)
    records = features[list(DEMAND_FEATURES)].to_dict("records")
    return MonitoredRows(
        {int(p): i for i, p in enumerate(forecaster.product_ids.tolist())},
        [{str(k): float(v) for k, v in r.items()} for r in records],
        [float(v) for v in predictions],
    )


def _level_key(level: float) -> str:
    """``0.1`` → ``q0.1``: the quantile keys of a forecast day."""
    return f"q{float(level):g}"


def _id_map(values: Any, name: str, *, number: bool, skip_nan: bool = False) -> dict[int, float]:
    """``{product_id: value}`` from a mapping whose keys may be JSON strings."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{name} must be an object of product_id → value")
    if len(values) > MAX_PRODUCTS:
        raise ValueError(f"{name} holds more than {MAX_PRODUCTS} products")
    out: dict[int, float] = {}
    for key, value in values.items():
        try:
            pid = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {key!r} is not a product id") from None
        if isinstance(key, bool) or pid < 1:
            raise ValueError(f"{name}: {key!r} is not a product id")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}[{pid}] must be a number")
        if skip_nan and math.isnan(float(value)):
            continue  # unknown: the caller's default applies
        if not math.isfinite(float(value)) or value < 0:
            raise ValueError(f"{name}[{pid}] must be a finite, non-negative number")
        if not number and not float(value).is_integer():
            raise ValueError(f"{name}[{pid}] must be a whole number")
        out[pid] = float(value)
    return out


class DemandService(ServiceBase):
    """Forecasts and reorder suggestions from ``models:/demand@champion``."""

    area = "demand"
    # Used for a product whose supplier lead time the ingress does not know.
    defaults = {"default_lead_time_days": 7.0, "review_days": 7}

    def __init__(
        self, settings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__(settings, config)
        # Per (name, version): the rows the feature log records for each product.
        self._monitored: dict[tuple[str, int], MonitoredRows] = {}

    def prepare(self, loaded: LoadedModel) -> None:
        """Compute the version's monitored rows (features and forecast per stored product)."""
        if self.feature_logger is not None:
            self.monitored(loaded)

    def monitored(self, loaded: LoadedModel) -> MonitoredRows:
        """The version's monitored rows (computed on first use if the warm-up did not)."""
        key = (loaded.name, loaded.version)
        found = self._monitored.get(key)
        if found is None:
            found = monitored_rows(loaded.predictor)
            with self._lock:
                self._monitored[key] = found
                # Older versions will not be asked for again once the holder moved on.
                for old in [k for k in self._monitored if k[0] == key[0] and k[1] < key[1] - 1]:
                    del self._monitored[old]
        return found

    def _log(self, loaded: LoadedModel, product_ids: Sequence[int]) -> None:
        """Log the monitored rows of the forecast products (never raises)."""
        if not product_ids or self.feature_logger is None:
            return
        try:
            rows, predictions, keys = self.monitored(loaded).rows(product_ids)
        except Exception:
            log.warning("demand: no monitored rows to log", exc_info=True)
            return
        self.log_features(loaded, rows, predictions, list(keys))

    async def forecast(self, *, product_id: int, horizon: int = 28) -> dict[str, Any]:
        """Daily quantiles of units sold over the next ``horizon`` days (max 28)."""
        product_id = check_int(product_id, "product_id", minimum=1)
        horizon = check_int(horizon, "horizon", minimum=1)
        loaded = await self.model(None)
        forecaster: DemandForecaster = loaded.predictor
        if horizon > forecaster.horizon:
            raise ValueError(f"horizon must be at most {forecaster.horizon}, got {horizon}")
        if not forecaster.knows(product_id):
            raise ValueError(f"unknown product {product_id}: no sales history in the forecaster")
        key = {"product_id": product_id, "horizon": horizon}

        def compute() -> dict[str, Any]:
            frame = forecaster.forecast(products=[product_id], horizon=horizon)
            keys = [_level_key(q) for q in forecaster.quantiles]
            days = []
            for row in frame.itertuples(index=False):
                values = [float(getattr(row, c)) for c in forecaster.columns]
                days.append(
                    {"date": row.date.date().isoformat(), **dict(zip(keys, values, strict=True))}
                )
            median = _level_key(forecaster.quantiles[forecaster.median])
            body: dict[str, Any] = jsonable(
                {
                    "product_id": product_id,
                    "horizon": horizon,
                    "quantiles": list(forecaster.quantiles),
                    "origin": forecaster.history_end.date().isoformat(),
                    "days": days,
                    "median_total": sum(d[median] for d in days),
                }
            )
            self._log(loaded, [product_id])
            return body

        body, hit = await self.cached(loaded, "forecast", key, compute)
        return answer(loaded, body, hit)

    async def reorder_suggestions(
        self,
        *,
        stock: dict[int, int],
        lead_times: dict[int, float] | None = None,
        service_level: float = 0.95,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Products due for reordering now (most urgent first), with the quantity to order."""
        on_hand = _id_map(stock, "stock", number=False)
        leads = _id_map(lead_times or {}, "lead_times", number=True, skip_nan=True)
        if isinstance(service_level, bool) or not isinstance(service_level, int | float):
            raise ValueError("service_level must be a number")
        if not 0.5 <= float(service_level) < 1.0:
            raise ValueError("service_level must be in [0.5, 1)")
        limit = check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        loaded = await self.model(None)
        forecaster: DemandForecaster = loaded.predictor
        known = sorted(p for p in on_hand if forecaster.knows(p))
        skipped = sorted(p for p in on_hand if not forecaster.knows(p))
        default_lead = float(self.config["default_lead_time_days"])
        review = int(self.config["review_days"])

        def compute() -> list[dict[str, Any]]:
            import pandas as pd

            if not known:
                return []
            stock_frame = pd.DataFrame(
                {"product_id": known, "stock_on_hand": [on_hand[p] for p in known]}
            )
            lead_frame = pd.DataFrame(
                {"product_id": known, "lead_time_days": [leads.get(p, default_lead) for p in known]}
            )
            table = forecaster.reorder(
                stock_frame, lead_frame, service_level=float(service_level), review_days=review
            )
            self._log(loaded, known)
            due = table[table["reorder"]].sort_values(
                ["days_of_cover", "order_quantity", "product_id"], ascending=[True, False, True]
            )
            rows: list[dict[str, Any]] = jsonable(due.head(limit).to_dict("records"))
            return rows

        suggestions = await asyncio.to_thread(compute)
        return answer(
            loaded,
            {
                "suggestions": suggestions,
                "evaluated": len(known),
                "skipped": skipped,
                "service_level": float(service_level),
                "default_lead_time_days": default_lead,
            },
        )
