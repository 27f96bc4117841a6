"""Daily units per SKU → a dense :class:`Panel` (series x days) the forecaster trains on.

Sources:

- :func:`read_panel`: a models :class:`~cartwise.models.source.Source`; units, price and the
  calendar come through the ``demand_v1`` feature service (``product_demand_daily`` plus
  ``product_stats``), point-in-time correct, one entity row per product and day. Cancellations
  that the facts keep as a separate refunded order (the Online Retail import does: a ``C``
  invoice does not name the sale it cancels) are netted out of the units via
  :func:`cancelled_units` on the raw order lines;
- :func:`from_online_retail`: the Online Retail importer's cleaned frame (same netting);
- :func:`from_long`: any long frame ``product_id, date, units[, price]`` (tests, serving).

Days the whole shop sold nothing are *closed* (Online Retail never sells on Saturdays and
shuts over Christmas); :class:`Closures` learns which weekdays and calendar days those are, so
forecasts put zero on them and the calendar features carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SERVICE = "demand_v1"
# Calendar features per day: weekday one-hot (7), closed, day of month, month (sin, cos).
N_CALENDAR = 11
# A refunded line of the same customer, product and quantity this soon after a sale cancels it.
CANCEL_WINDOW = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Closures:
    """Which days the shop is closed: whole weekdays, and fixed calendar days (holidays)."""

    weekdays: frozenset[int] = frozenset()  # 0 = Monday
    month_days: frozenset[tuple[int, int]] = frozenset()

    @classmethod
    def learn(cls, days: pd.DatetimeIndex, closed: np.ndarray, share: float = 0.9) -> Closures:
        """Weekdays closed at least ``share`` of the time; other closed days as holidays.

        A closed day in the first or last week of the data is ignored: a shop that has not yet
        started (or a partial last day) says nothing about holidays.
        """
        closed = np.asarray(closed, dtype=bool)
        if len(days) != len(closed):
            raise ValueError("days and closed differ in length")
        weekdays = set()
        for dow in range(7):
            on = days.dayofweek == dow
            if on.sum() >= 2 and closed[on].mean() >= share:
                weekdays.add(dow)
        inner = np.zeros(len(days), dtype=bool)
        inner[7 : max(len(days) - 7, 7)] = True
        holidays = {
            (int(d.month), int(d.day))
            for d, c, i in zip(days, closed, inner, strict=True)
            if c and i and d.dayofweek not in weekdays
        }
        return cls(frozenset(weekdays), frozenset(holidays))

    def closed(self, days: pd.DatetimeIndex) -> np.ndarray:
        """Boolean mask: the shop is expected closed on each day."""
        out = np.isin(days.dayofweek, list(self.weekdays))
        if self.month_days:
            pairs = zip(days.month, days.day, strict=True)
            out |= np.array([(m, d) in self.month_days for m, d in pairs], dtype=bool)
        return np.asarray(out, dtype=bool)


def calendar(days: pd.DatetimeIndex, closed: np.ndarray) -> np.ndarray:
    """(len(days), N_CALENDAR) float32 calendar features."""
    out = np.zeros((len(days), N_CALENDAR), dtype=np.float32)
    out[np.arange(len(days)), days.dayofweek] = 1.0
    out[:, 7] = np.asarray(closed, dtype=np.float32)
    out[:, 8] = (days.day.to_numpy() - 1) / 30.0
    angle = 2 * np.pi * (days.month.to_numpy() - 1) / 12.0
    out[:, 9] = np.sin(angle)
    out[:, 10] = np.cos(angle)
    return out


@dataclass
class Panel:
    """Daily units of many SKUs on one calendar: NaN where a series has not started."""

    product_ids: np.ndarray  # (n,) int64
    start: pd.Timestamp  # the first day (naive, midnight)
    units: np.ndarray  # (n, T) float64; NaN before a product's first sale
    price: np.ndarray  # (n, T) float64; last seen price, NaN when unknown
    closed: np.ndarray  # (T,) bool: the whole shop sold nothing
    closures: Closures = field(default_factory=Closures)

    def __post_init__(self) -> None:
        n, t = self.units.shape
        if self.price.shape != (n, t) or self.closed.shape != (t,) or len(self.product_ids) != n:
            raise ValueError("panel arrays do not agree in shape")

    @property
    def n_series(self) -> int:
        """Number of series."""
        return int(self.units.shape[0])

    @property
    def n_days(self) -> int:
        """Number of days."""
        return int(self.units.shape[1])

    @property
    def days(self) -> pd.DatetimeIndex:
        """The calendar."""
        return pd.date_range(self.start, periods=self.n_days, freq="D")

    @property
    def end(self) -> pd.Timestamp:
        """The day after the last one (exclusive end)."""
        return self.start + pd.Timedelta(days=self.n_days)

    def window(self, start: int = 0, stop: int | None = None) -> Panel:
        """The days ``start:stop`` (indices) of every series."""
        stop = self.n_days if stop is None else stop
        if not 0 <= start < stop <= self.n_days:
            raise ValueError(f"bad window {start}:{stop} of {self.n_days} days")
        return Panel(
            self.product_ids,
            self.start + pd.Timedelta(days=start),
            self.units[:, start:stop],
            self.price[:, start:stop],
            self.closed[start:stop],
            self.closures,
        )

    def select(self, rows: np.ndarray | Sequence[int]) -> Panel:
        """A panel of the given series indices."""
        rows = np.asarray(rows, dtype=np.int64)
        return Panel(
            self.product_ids[rows],
            self.start,
            self.units[rows],
            self.price[rows],
            self.closed,
            self.closures,
        )

    def to_long(self) -> pd.DataFrame:
        """Long frame ``product_id, date, units, price`` (observed days only)."""
        n, t = self.units.shape
        frame = pd.DataFrame(
            {
                "product_id": np.repeat(self.product_ids, t),
                "date": np.tile(self.days.to_numpy(), n),
                "units": self.units.ravel(),
                "price": self.price.ravel(),
            }
        )
        return frame[frame["units"].notna()].reset_index(drop=True)


def _clean_long(frame: pd.DataFrame) -> pd.DataFrame:
    missing = {"product_id", "date", "units"} - set(frame.columns)
    if missing:
        raise ValueError(f"demand history lacks the columns {sorted(missing)}")
    out = pd.DataFrame(
        {
            "product_id": frame["product_id"],
            "date": pd.to_datetime(frame["date"]),
            "units": pd.to_numeric(frame["units"], errors="coerce"),
            "price": (
                pd.to_numeric(frame["price"], errors="coerce") if "price" in frame else np.nan
            ),
        }
    )
    if out["product_id"].isna().any():
        raise ValueError("demand history has missing product_id values")
    if out["date"].isna().any():
        raise ValueError("demand history has missing dates")
    if out["units"].isna().any() or np.isinf(out["units"].to_numpy(dtype=np.float64)).any():
        raise ValueError("demand history has missing or non-numeric units")
    if (out["units"] < 0).any():
        raise ValueError("demand history has negative units")
    if getattr(out["date"].dt, "tz", None) is not None:
        out["date"] = out["date"].dt.tz_convert("UTC").dt.tz_localize(None)
    out["date"] = out["date"].dt.normalize()
    out["product_id"] = out["product_id"].astype(np.int64)
    return out


def from_long(
    frame: pd.DataFrame,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    closed: np.ndarray | None = None,
    closures: Closures | None = None,
    dense: bool = False,
) -> Panel:
    """A panel from ``product_id, date, units[, price]`` rows (duplicates are summed).

    A series starts at its first row; missing later days are zero sales unless ``dense`` (then
    missing days stay unknown). ``closed`` (per day) defaults to the days no series sold; an
    empty ``closed`` with ``closures`` takes the closures' calendar instead.
    """
    rows = _clean_long(frame)
    if rows.empty:
        raise ValueError("no demand history")
    first = pd.Timestamp(start) if start is not None else rows["date"].min()
    stop = pd.Timestamp(end) if end is not None else rows["date"].max() + pd.Timedelta(days=1)
    rows = rows[(rows["date"] >= first) & (rows["date"] < stop)]
    if rows.empty:
        raise ValueError("no demand history inside the window")
    n_days = int((stop - first) / pd.Timedelta(days=1))
    ids = np.sort(rows["product_id"].unique())
    grouped = rows.groupby(["product_id", "date"], sort=False).agg(
        units=("units", "sum"), price=("price", "last")
    )
    pid = np.searchsorted(ids, grouped.index.get_level_values(0).to_numpy())
    day = ((grouped.index.get_level_values(1) - first) / pd.Timedelta(days=1)).to_numpy(np.int64)
    units = np.full((len(ids), n_days), np.nan)
    price = np.full((len(ids), n_days), np.nan)
    units[pid, day] = grouped["units"].to_numpy(np.float64)
    price[pid, day] = grouped["price"].to_numpy(np.float64)
    if not dense:
        started = np.cumsum(~np.isnan(units), axis=1) > 0
        units = np.where(started & np.isnan(units), 0.0, units)
    price = _ffill(price)
    days = pd.date_range(first, periods=n_days, freq="D")
    if closed is None:
        closed = np.nansum(units, axis=0) <= 0
    elif len(closed) == 0 and closures is not None:
        closed = closures.closed(days)
    closed = np.asarray(closed, dtype=bool)
    return Panel(ids, first, units, price, closed, closures or Closures.learn(days, closed))


def _ffill(values: np.ndarray) -> np.ndarray:
    """Carry the last known value forward along each row."""
    if values.size == 0:
        return values
    idx = np.where(~np.isnan(values), np.arange(values.shape[1]), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = values[np.arange(values.shape[0])[:, None], idx]
    return np.asarray(out, dtype=np.float64)


def cancelled_units(lines: pd.DataFrame) -> pd.DataFrame:
    """Units of sales cancelled by a later refunded line: ``product_id, date, units``.

    A refunded line of the same customer, product and quantity within :data:`CANCEL_WINDOW`
    after a delivered (or other kept) line cancels that sale; each sale is cancelled at most once.
    ``lines`` needs ``user_id, product_id, quantity, status, created_at``.
    """
    needed = {"user_id", "product_id", "quantity", "status", "created_at"}
    missing = needed - set(lines.columns)
    if missing:
        raise ValueError(f"order lines lack {sorted(missing)}")
    frame = lines[lines["user_id"].notna() & lines["product_id"].notna()].copy()
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    refunds = frame[frame["status"] == "refunded"]
    sales = frame[~frame["status"].isin(["refunded", "cancelled"])]
    if refunds.empty or sales.empty:
        return pd.DataFrame({"product_id": [], "date": [], "units": []})
    keys = ["user_id", "product_id", "quantity"]
    sales = sales.assign(_sid=np.arange(len(sales)))
    refunds = refunds.assign(_rid=np.arange(len(refunds)))
    # Candidate pairs on the keys; each refund takes the latest sale before it inside the
    # window, and each sale is cancelled at most once.
    pairs = refunds.merge(sales, on=keys, suffixes=("_r", "_s"))
    gap = pairs["created_at_r"] - pairs["created_at_s"]
    pairs = pairs[(gap >= pd.Timedelta(0)) & (gap <= CANCEL_WINDOW)]
    pairs = pairs.sort_values("created_at_s").drop_duplicates("_rid", keep="last")
    pairs = pairs.drop_duplicates("_sid")
    return pd.DataFrame(
        {
            "product_id": pairs["product_id"].astype(np.int64).to_numpy(),
            "date": pairs["created_at_s"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize(),
            "units": pairs["quantity"].astype(np.float64).to_numpy(),
        }
    ).reset_index(drop=True)


def _net(frame: pd.DataFrame, cancelled: pd.DataFrame) -> pd.DataFrame:
    """Subtract cancelled units from ``frame``'s units (per product and day), floored at 0."""
    if cancelled.empty:
        return frame
    sub = cancelled.groupby(["product_id", "date"])["units"].sum().rename("_cancel")
    out = frame.join(sub, on=["product_id", "date"])
    out["units"] = (out["units"] - out["_cancel"].fillna(0.0)).clip(lower=0.0)
    return out.drop(columns="_cancel")


def read_panel(
    source: Any,
    *,
    products: Sequence[int] | None = None,
    top: int | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    net_cancellations: bool = True,
) -> Panel:
    """Daily units per product through ``demand_v1`` (``top``: the best sellers only).

    Entity rows are every product from its first sale to the data's last day, stamped at the
    day's end (the feature tables' convention). Cancelled sales are netted out.
    """
    lines = source.facts(
        "order_lines", columns=["user_id", "product_id", "quantity", "status", "created_at"]
    )
    if lines.empty:
        raise ValueError("no order lines in the source")
    lines = lines[lines["product_id"].notna()]
    lines = lines.assign(
        day=pd.to_datetime(lines["created_at"], utc=True)
        .dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .dt.normalize()
    )
    kept = lines[~lines["status"].isin(["cancelled", "refunded"])]
    cancelled = cancelled_units(lines) if net_cancellations else pd.DataFrame()
    first_day = pd.Timestamp(start) if start is not None else lines["day"].min()
    stop = pd.Timestamp(end) if end is not None else lines["day"].max() + pd.Timedelta(days=1)
    totals = kept.groupby("product_id")["quantity"].sum()
    if not cancelled.empty:
        totals = totals.sub(cancelled.groupby("product_id")["units"].sum(), fill_value=0)
    if products is not None:
        totals = totals[totals.index.isin(list(products))]
    if top is not None:
        totals = totals.nlargest(top)
    if totals.empty:
        raise ValueError("none of the requested products has sales")
    firsts = kept[kept["product_id"].isin(totals.index)].groupby("product_id")["day"].min()
    days = pd.date_range(first_day, stop - pd.Timedelta(days=1), freq="D")
    entity = pd.MultiIndex.from_product(
        [firsts.index.astype(np.int64), days], names=["product_id", "day"]
    ).to_frame(index=False)
    entity = entity[entity["day"] >= entity["product_id"].map(firsts)]
    entity["event_timestamp"] = (entity["day"] + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    rows = source.historical(entity[["product_id", "event_timestamp"]], SERVICE)
    rows["date"] = (
        pd.to_datetime(rows["event_timestamp"], utc=True).dt.tz_localize(None)
        - pd.Timedelta(days=1)
    ).dt.normalize()
    rows = rows[rows["sales_date"].notna()]
    rows = rows.assign(
        units=rows["units"].fillna(0.0), price=rows["price"].where(rows["price"] > 0)
    )
    frame = _net(rows[["product_id", "date", "units", "price"]], cancelled)
    # The shop is closed on days without a single kept sale of any product (not only these).
    shop_days = kept.groupby("day")["quantity"].sum()
    open_days = set(shop_days[shop_days > 0].index)
    closed = np.array([d not in open_days for d in days], dtype=bool)
    return from_long(frame, start=first_day, end=stop, closed=closed)


def from_online_retail(
    cleaned: pd.DataFrame,
    *,
    top: int | None = 200,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Panel:
    """The panel of the importer's cleaned frame (sales minus matched cancellations)."""
    needed = {"customer", "code", "date", "cancel", "qty"}
    missing = needed - set(cleaned.columns)
    if missing:
        raise ValueError(f"not a cleaned Online Retail frame: lacks {sorted(missing)}")
    codes = {c: i for i, c in enumerate(sorted(cleaned["code"].astype(str).unique()))}
    lines = pd.DataFrame(
        {
            "user_id": cleaned["customer"],
            "product_id": cleaned["code"].astype(str).map(codes).astype(np.int64),
            "quantity": cleaned["qty"].astype(np.int64),
            "status": np.where(cleaned["cancel"], "refunded", "delivered"),
            "created_at": pd.to_datetime(cleaned["date"]),
            "price": cleaned["milli"] / 1000.0 if "milli" in cleaned else np.nan,
        }
    )
    cancelled = cancelled_units(lines)
    sales = lines[lines["status"] == "delivered"].assign(
        date=lambda f: pd.to_datetime(f["created_at"]).dt.normalize(),
        units=lambda f: f["quantity"].astype(np.float64),
    )
    frame = _net(sales[["product_id", "date", "units", "price"]], cancelled)
    totals = frame.groupby("product_id")["units"].sum()
    if top is not None:
        frame = frame[frame["product_id"].isin(totals.nlargest(top).index)]
    first = pd.Timestamp(start) if start is not None else sales["date"].min()
    stop = pd.Timestamp(end) if end is not None else sales["date"].max() + pd.Timedelta(days=1)
    shop = sales.groupby("date")["units"].sum()
    days = pd.date_range(first, stop - pd.Timedelta(days=1), freq="D")
    closed = ~days.isin(shop[shop > 0].index)
    return from_long(frame, start=first, end=stop, closed=np.asarray(closed))


__all__ = [
    "CANCEL_WINDOW",
    "N_CALENDAR",
    "SERVICE",
    "Closures",
    "Panel",
    "calendar",
    "cancelled_units",
    "from_long",
    "from_online_retail",
    "read_panel",
]
