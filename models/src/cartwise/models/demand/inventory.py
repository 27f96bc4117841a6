"""From forecast quantiles to stock decisions: safety stock, reorder points, order quantities.

Each day's forecast distribution is summarised by its mean and standard deviation from the
quantiles (Pearson-Tukey: ``mean = 0.185 q05 + 0.63 q50 + 0.185 q95``, ``sd = (q95 - q05) /
3.29``; with only q10/q90, ``sd = (q90 - q10) / 2.563``). Over a lead time of ``L`` days
(fractional days count in part) the demand has mean ``mu_L = sum of the daily means`` and, days
independent, variance ``sum of the daily variances``; a random lead time with standard deviation
``sigma_L`` adds ``(d * sigma_L)^2`` where ``d`` is the mean daily demand over the lead time::

    sigma_LTD     = sqrt(sum_{t<L} sd_t^2 + (d * sigma_L)^2)
    safety_stock  = z(service_level) * sigma_LTD
    reorder_point = mu_L + safety_stock

An order is due when the inventory position (on hand + on order) is at or below the reorder
point; it brings the position up to the *order-up-to* level, which covers the lead time plus
one review period (``review_days``) at the same service level.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm  # type: ignore[import-untyped]

# Two-sided z of a 90% (q05..q95) and an 80% (q10..q90) normal interval.
_Z90_WIDTH = 2 * 1.6448536269514722
_Z80_WIDTH = 2 * 1.2815515655446004


def daily_moments(forecast: pd.DataFrame) -> pd.DataFrame:
    """Per row of a quantile forecast: ``mean`` and ``sd`` of that day's demand."""
    cols = set(forecast.columns)
    if {"q05", "q50", "q95"} <= cols:
        mean = 0.185 * forecast["q05"] + 0.63 * forecast["q50"] + 0.185 * forecast["q95"]
        sd = (forecast["q95"] - forecast["q05"]) / _Z90_WIDTH
    elif {"q10", "q50", "q90"} <= cols:
        mean = (forecast["q10"] + forecast["q50"] + forecast["q90"]) / 3.0
        sd = (forecast["q90"] - forecast["q10"]) / _Z80_WIDTH
    else:
        raise ValueError("the forecast needs q05/q50/q95 or q10/q50/q90 columns")
    return pd.DataFrame({"mean": mean.clip(lower=0.0), "sd": sd.clip(lower=0.0)})


def over_days(values: np.ndarray, days: float) -> float:
    """Sum of the first ``days`` values (a fractional last day counts in part).

    Past the end the mean of the last seven values continues (a lead time beyond the horizon).
    """
    if days < 0:
        raise ValueError("days must be non-negative")
    whole = math.floor(days)
    frac = days - whole
    tail = float(np.mean(values[-7:])) if len(values) else 0.0
    padded = np.concatenate([values, np.full(max(whole + 1 - len(values), 0), tail)])
    return float(padded[:whole].sum() + frac * padded[whole])


def lead_time_demand(
    means: np.ndarray, sds: np.ndarray, lead_days: float, lead_sd: float = 0.0
) -> tuple[float, float]:
    """Mean and standard deviation of the demand over a (random) lead time."""
    if lead_days <= 0:
        return 0.0, 0.0
    mu = over_days(np.asarray(means, dtype=np.float64), lead_days)
    var_days = over_days(np.asarray(sds, dtype=np.float64) ** 2, lead_days)
    daily = mu / lead_days
    return mu, math.sqrt(var_days + (daily * lead_sd) ** 2)


def z_value(service_level: float) -> float:
    """The standard normal quantile of a cycle service level in (0, 1)."""
    if not 0 < service_level < 1:
        raise ValueError(f"service_level must be in (0, 1), got {service_level}")
    return float(norm.ppf(service_level))


def economic_order_quantity(
    annual_demand: float, order_cost: float, holding_cost_per_unit_year: float
) -> float:
    """The EOQ ``sqrt(2 D S / H)``."""
    if annual_demand < 0 or order_cost < 0 or holding_cost_per_unit_year <= 0:
        raise ValueError("demand and order cost must be >= 0 and the holding cost > 0")
    return math.sqrt(2 * annual_demand * order_cost / holding_cost_per_unit_year)


def _lead_times(lead_times: pd.DataFrame | float, ids: np.ndarray) -> pd.DataFrame:
    if isinstance(lead_times, int | float) and not isinstance(lead_times, bool):
        if lead_times < 0:
            raise ValueError("lead time must be non-negative")
        return pd.DataFrame(
            {"lead_time_days": float(lead_times), "lead_time_sd": 0.0},
            index=pd.Index(ids, name="product_id"),
        )
    if not isinstance(lead_times, pd.DataFrame) or not {"product_id", "lead_time_days"} <= set(
        lead_times.columns
    ):
        raise ValueError("lead_times must be a number or a frame with product_id, lead_time_days")
    frame = lead_times.set_index("product_id")
    out = pd.DataFrame(index=pd.Index(ids, name="product_id"))
    out["lead_time_days"] = frame["lead_time_days"].reindex(ids).astype(float)
    sd = frame["lead_time_sd"] if "lead_time_sd" in frame else pd.Series(0.0, index=frame.index)
    out["lead_time_sd"] = sd.reindex(ids).fillna(0.0).astype(float)
    missing = out.index[out["lead_time_days"].isna()].tolist()
    if missing:
        raise ValueError(f"no lead time for product_id {missing[:10]}")
    if (out["lead_time_days"] < 0).any() or (out["lead_time_sd"] < 0).any():
        raise ValueError("lead times and their spread must be non-negative")
    return out


def reorder_table(
    forecast: pd.DataFrame,
    stock: pd.DataFrame,
    lead_times: pd.DataFrame | float,
    *,
    service_level: float = 0.95,
    review_days: int = 7,
) -> pd.DataFrame:
    """One row per SKU of ``stock`` (``product_id, stock_on_hand[, on_order]``).

    ``forecast``: ``product_id, date`` and quantile columns (from the forecaster);
    ``lead_times``: days for every SKU, or a frame ``product_id, lead_time_days[,
    lead_time_sd]`` (e.g. from :func:`.suppliers.product_lead_times`). Columns: the lead time,
    the lead-time demand's mean and sd, ``safety_stock``, ``reorder_point``, ``order_up_to``,
    ``inventory_position``, ``reorder`` (due now) and ``order_quantity`` (rounded up).
    """
    z = z_value(service_level)
    if review_days < 0:
        raise ValueError("review_days must be non-negative")
    if not {"product_id", "stock_on_hand"} <= set(stock.columns):
        raise ValueError("stock needs product_id and stock_on_hand columns")
    if stock["stock_on_hand"].isna().any() or stock["product_id"].isna().any():
        raise ValueError("stock has missing values")
    if not {"product_id", "date"} <= set(forecast.columns):
        raise ValueError("the forecast needs product_id and date columns")
    moments = pd.concat(
        [
            forecast[["product_id", "date"]].reset_index(drop=True),
            daily_moments(forecast.reset_index(drop=True)),
        ],
        axis=1,
    ).sort_values(["product_id", "date"])
    ids = stock["product_id"].astype(np.int64).to_numpy()
    leads = _lead_times(lead_times, ids)
    groups = {int(k): g for k, g in moments.groupby("product_id")}
    rows = []
    for pid, on_hand, on_order in zip(
        ids,
        stock["stock_on_hand"].astype(float),
        (stock["on_order"] if "on_order" in stock else pd.Series(0.0, index=stock.index)).astype(
            float
        ),
        strict=True,
    ):
        g = groups.get(int(pid))
        if g is None:
            raise ValueError(f"no forecast for product_id {int(pid)}")
        means, sds = g["mean"].to_numpy(), g["sd"].to_numpy()
        lead, lead_sd = leads.loc[pid, "lead_time_days"], leads.loc[pid, "lead_time_sd"]
        mu_l, sd_l = lead_time_demand(means, sds, lead, lead_sd)
        mu_r, sd_r = lead_time_demand(means, sds, lead + review_days, lead_sd)
        safety = z * sd_l
        reorder_point = mu_l + safety
        order_up_to = mu_r + z * sd_r
        position = on_hand + on_order
        due = position <= reorder_point
        qty = math.ceil(max(order_up_to - position, 0.0) - 1e-9) if due else 0
        rows.append(
            {
                "product_id": int(pid),
                "lead_time_days": lead,
                "lead_time_sd": lead_sd,
                "demand_lead_time": mu_l,
                "demand_lead_time_sd": sd_l,
                "safety_stock": safety,
                "reorder_point": reorder_point,
                "order_up_to": order_up_to,
                "stock_on_hand": on_hand,
                "on_order": on_order,
                "inventory_position": position,
                "reorder": bool(due),
                "order_quantity": int(qty),
                "days_of_cover": _days_of_cover(means, on_hand),
            }
        )
    return pd.DataFrame(rows)


def _days_of_cover(means: np.ndarray, on_hand: float) -> float:
    """Days until the expected demand uses up ``on_hand`` (inf beyond the horizon)."""
    cumulative = np.cumsum(means)
    if on_hand <= 0:
        return 0.0
    beyond = np.flatnonzero(cumulative >= on_hand)
    return float(beyond[0] + 1) if len(beyond) else math.inf


__all__ = [
    "daily_moments",
    "economic_order_quantity",
    "lead_time_demand",
    "over_days",
    "reorder_table",
    "z_value",
]
