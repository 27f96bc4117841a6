"""What serving loads: the torch-free :class:`DemandForecaster` over numpy weights.

It keeps the last ``lookback`` days of every SKU it was trained on, so serving can forecast by
product id without the offline store:

- :meth:`DemandForecaster.predict` (the pyfunc entry): a frame of ``product_id`` (and an optional
  ``horizon``) → one row per product and day with the quantile columns (``q05`` … ``q95``);
- :meth:`DemandForecaster.forecast`: the same from a given history frame (any SKU, even one
  the model never saw: the model is global);
- :meth:`DemandForecaster.reorder`: the reorder table (safety stock, reorder point, order
  quantity) from the forecast, stock and lead times (see :mod:`.inventory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.demand import windows
from cartwise.models.demand.data import Closures, Panel, calendar, from_long


def quantile_columns(levels: Sequence[float]) -> list[str]:
    """Column names of quantile levels: 0.1 → ``q10``, 0.05 → ``q05``, 0.975 → ``q97.5``."""
    names = []
    for level in levels:
        pct = round(float(level) * 100, 4)
        names.append(f"q{int(pct):02d}" if pct == int(pct) else f"q{pct:g}")
    return names


@dataclass
class DemandForecaster:
    """A trained global quantile forecaster plus each known SKU's recent history."""

    weights: dict[str, np.ndarray]
    quantiles: tuple[float, ...]
    lookback: int
    horizon: int
    depth: int
    floor: float
    clip: float
    closures: Closures
    # Per quantile level: multiplier of its distance from the median (1 = as trained).
    spread: np.ndarray
    # The history as of training: (n, lookback) units (NaN = before the series started).
    product_ids: np.ndarray
    history: np.ndarray
    history_price: np.ndarray
    history_closed: np.ndarray  # (lookback,)
    history_end: pd.Timestamp  # the first day after the stored history
    info: dict[str, Any] = field(default_factory=dict)
    _index: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = {}
        return state

    @property
    def columns(self) -> list[str]:
        """The quantile column names, low to high."""
        return quantile_columns(self.quantiles)

    @property
    def median(self) -> int:
        """Index of the median level."""
        return int(np.argmin(np.abs(np.asarray(self.quantiles) - 0.5)))

    def knows(self, product_id: int) -> bool:
        """Whether the forecaster holds history for this product."""
        if not self._index:
            self._index = {int(p): i for i, p in enumerate(self.product_ids.tolist())}
        return int(product_id) in self._index

    def with_history(self, panel: Panel) -> DemandForecaster:
        """A copy whose stored history is the last ``lookback`` days of ``panel``."""
        hist, price, closed = _tail(panel, self.lookback)
        return DemandForecaster(
            self.weights,
            self.quantiles,
            self.lookback,
            self.horizon,
            self.depth,
            self.floor,
            self.clip,
            panel.closures,
            self.spread,
            panel.product_ids.copy(),
            hist,
            price,
            closed,
            panel.end,
            dict(self.info),
        )

    # ------------------------------------------------------------------ core

    def _check_horizon(self, horizon: Any) -> int:
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
            raise ValueError(f"horizon must be an integer, got {horizon!r}")
        if not 1 <= int(horizon) <= self.horizon:
            raise ValueError(f"horizon must be between 1 and {self.horizon}, got {horizon}")
        return int(horizon)

    def forecast_arrays(
        self,
        hist: np.ndarray,
        hist_price: np.ndarray,
        hist_closed: np.ndarray,
        origin: pd.Timestamp,
        horizon: int,
    ) -> np.ndarray:
        """(n, lookback) history ending the day before ``origin`` → (n, horizon, Q) units."""
        horizon = self._check_horizon(horizon)
        n = hist.shape[0]
        if hist.shape != (n, self.lookback) or hist_closed.shape[-1] != self.lookback:
            raise ValueError(f"history must hold {self.lookback} days per series")
        closed_rows = np.broadcast_to(np.asarray(hist_closed, dtype=bool), hist.shape)
        inputs, scale = windows.encode(
            hist, closed_rows, windows.price_ratio(hist_price), floor=self.floor, clip=self.clip
        )
        days = pd.date_range(origin, periods=horizon, freq="D")
        closed = self.closures.closed(days)
        cal = np.broadcast_to(
            calendar(days, closed)[None], (n, horizon, calendar(days, closed).shape[1])
        )
        scaled = windows.forward(self.weights, inputs, cal, depth=self.depth, median=self.median)
        med = scaled[..., self.median : self.median + 1]
        scaled = med + (scaled - med) * self.spread
        out: np.ndarray = np.maximum(scaled, 0.0) * scale[:, None, None]
        out[:, closed, :] = 0.0
        return out

    def _frame(self, ids: np.ndarray, values: np.ndarray, origin: pd.Timestamp) -> pd.DataFrame:
        n, horizon, _ = values.shape
        days = pd.date_range(origin, periods=horizon, freq="D")
        frame = pd.DataFrame(
            {"product_id": np.repeat(ids.astype(np.int64), horizon), "date": np.tile(days, n)}
        )
        for k, name in enumerate(self.columns):
            frame[name] = values[:, :, k].ravel()
        return frame

    # ------------------------------------------------------------------ public

    def forecast(
        self,
        history: pd.DataFrame | None = None,
        horizon: int = 28,
        *,
        products: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Quantiles per SKU and day after the history: ``product_id, date, q05 … q95``.

        ``history``: long frame ``product_id, date, units[, price]`` (daily; missing days after
        a product's first row count as zero sales); None uses the stored history. ``products``
        restricts the SKUs.
        """
        horizon = self._check_horizon(horizon)
        if history is None:
            ids, hist, price = self.product_ids, self.history, self.history_price
            closed, origin = self.history_closed, self.history_end
        else:
            if not isinstance(history, pd.DataFrame):
                raise ValueError("history must be a pandas DataFrame")
            # One SKU's zero-sale days are not shop closures: those follow the learned calendar.
            panel = from_long(history, closures=self.closures, closed=np.zeros(0, dtype=bool))
            ids = panel.product_ids
            hist, price, closed = _tail(panel, self.lookback)
            origin = panel.end
        if products is not None:
            wanted = np.asarray(list(products), dtype=np.int64)
            lookup = {int(p): i for i, p in enumerate(ids.tolist())}
            unknown = [int(p) for p in wanted if int(p) not in lookup]
            if unknown:
                raise ValueError(f"no history for product_id {unknown[:10]}")
            rows = np.array([lookup[int(p)] for p in wanted], dtype=np.int64)
            ids, hist, price = ids[rows], hist[rows], price[rows]
        values = self.forecast_arrays(hist, price, closed, origin, horizon)
        return self._frame(ids, values, origin)

    def predict(self, data: Any) -> pd.DataFrame:
        """Pyfunc entry: ``product_id`` (+ optional ``horizon``) rows → long quantile frame."""
        if not isinstance(data, pd.DataFrame):
            raise ValueError("input must be a DataFrame with a product_id column")
        unknown_cols = set(data.columns) - {"product_id", "horizon"}
        if unknown_cols:
            raise ValueError(
                f"unknown columns {sorted(unknown_cols)}; expected product_id, horizon"
            )
        if "product_id" not in data:
            raise ValueError("input lacks the product_id column")
        if data["product_id"].isna().any():
            raise ValueError("product_id has missing values")
        if not pd.api.types.is_integer_dtype(data["product_id"]):
            raise ValueError(f"product_id must be integers, got {data['product_id'].dtype}")
        horizons = (
            data["horizon"] if "horizon" in data else pd.Series(self.horizon, index=data.index)
        )
        if horizons.isna().any() or not pd.api.types.is_integer_dtype(horizons):
            raise ValueError("horizon must be integers without missing values")
        for h in horizons.unique().tolist():
            self._check_horizon(int(h))
        ids = data["product_id"].astype(np.int64).to_numpy()
        if len(ids) == 0:
            return self._frame(
                np.zeros(0, np.int64), np.zeros((0, 1, len(self.quantiles))), self.history_end
            )
        unknown = [int(p) for p in ids if not self.knows(int(p))]
        if unknown:
            raise ValueError(f"unknown product_id {sorted(set(unknown))[:10]} (no stored history)")
        rows = np.array([self._index[int(p)] for p in ids], dtype=np.int64)
        longest = int(horizons.max())
        values = self.forecast_arrays(
            self.history[rows],
            self.history_price[rows],
            self.history_closed,
            self.history_end,
            longest,
        )
        frame = self._frame(ids, values, self.history_end)
        keep = np.arange(longest)[None, :] < horizons.to_numpy(np.int64)[:, None]
        return frame[keep.ravel()].reset_index(drop=True)

    def reorder(
        self,
        stock: pd.DataFrame,
        lead_times: pd.DataFrame | float,
        *,
        service_level: float = 0.95,
        review_days: int = 7,
        forecast: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The reorder table per SKU in ``stock`` (see :func:`.inventory.reorder_table`)."""
        from cartwise.models.demand.inventory import reorder_table

        if not isinstance(stock, pd.DataFrame) or "product_id" not in stock:
            raise ValueError("stock must be a DataFrame with product_id and stock_on_hand")
        if forecast is None:
            forecast = self.forecast(products=stock["product_id"].astype(np.int64).tolist())
        return reorder_table(
            forecast, stock, lead_times, service_level=service_level, review_days=review_days
        )


def _tail(panel: Panel, lookback: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``lookback`` days of a panel, left-padded with unknown days if it is shorter."""
    n, t = panel.units.shape
    units = np.full((n, lookback), np.nan)
    price = np.full((n, lookback), np.nan)
    closed = np.zeros(lookback, dtype=bool)
    take = min(lookback, t)
    units[:, lookback - take :] = panel.units[:, t - take :]
    price[:, lookback - take :] = panel.price[:, t - take :]
    closed[lookback - take :] = panel.closed[t - take :]
    return units, price, closed


__all__ = ["DemandForecaster", "quantile_columns"]
