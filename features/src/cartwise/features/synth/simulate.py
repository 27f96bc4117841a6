"""Run the shop day by day: demand, who buys, stock, restocks, orders, payments and returns.

One Python iteration per simulated day; everything within a day is vectorised over products
and purchase occasions. Each day:

1. supplier deliveries due that day arrive (in the morning);
2. every product draws its purchase occasions from its demand process (see :mod:`.world`);
3. each occasion is given to a shopper: candidates are drawn in proportion to activity x
   taste for the product's category, then one is picked by latent affinity, price
   sensitivity and promotion appetite (a Gumbel-max over the candidates);
4. a shopper's occasions of the day become one order; planned fraud orders join them;
5. stock is allocated first come, first served; lines that find none are lost sales;
6. orders get their payment attempts and life (paid, fulfilled, shipped, delivered) and
   some are returned; returned units go back on the shelf when the refund is booked;
7. low stock triggers a supplier order, which arrives after the supplier's (random) lead
   time with a share of the units (its fill rate).

Times are integer microseconds since the epoch (UTC); money is integer pence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cartwise.features.synth.fraud import FraudPlan
from cartwise.features.synth.world import DAY_US, QUANTITY_P, World, activity_on, stream

HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
# Orders and sessions over the hours of the day (UTC): quiet nights, lunch and evening peaks.
HOURLY = np.array(
    [
        *(1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0),
        *(3.4, 3.2, 3.0, 3.0, 3.1, 3.4, 3.8, 4.4, 4.8, 4.4, 3.2, 1.9),
    ]
)
HOURLY_P = HOURLY / HOURLY.sum()
CANDIDATES = 8  # shoppers considered per purchase occasion
AFFINITY_WEIGHT = 2.0  # how much latent taste matters when picking among candidates
FAIL_ALL_P = 0.012  # honest orders whose every payment attempt fails
RETRY_P = 0.05  # honest orders with one declined attempt before success
RESERVATION_US = 15 * MINUTE_US

Progress = Callable[[str, int, int], None]


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Offsets into a day (microseconds) following the hourly profile."""
    hours = rng.choice(24, size=n, p=HOURLY_P)
    return hours * HOUR_US + (rng.random(n) * HOUR_US).astype(np.int64)


def group_starts(keys: np.ndarray) -> np.ndarray:
    """Indexes where a run of equal keys begins (keys sorted)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def cumsum_by_group(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Running sums restarting at each run of equal keys (keys sorted)."""
    total = np.cumsum(values)
    starts = group_starts(keys)
    before = np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, len(keys)]))
    running: np.ndarray = total - before
    return running


@dataclass
class Simulation:
    """What happened: orders, lines, lost sales, deliveries and the demand record."""

    orders: dict[str, np.ndarray]
    lines: dict[str, np.ndarray]
    lost: dict[str, np.ndarray]
    restocks: dict[str, np.ndarray]
    purchase_orders: dict[str, np.ndarray]
    demand: dict[str, np.ndarray]
    activity: np.ndarray  # (C, D) float32, shoppers' activity per day


class _Collector:
    """Per-day arrays, concatenated once at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: Any) -> None:
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(np.asarray(values))

    def build(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {
            name: np.concatenate(self.parts[name]) if name in self.parts else np.zeros(0)
            for name in names
        }


def _assign(
    rng: np.random.Generator,
    world: World,
    act: np.ndarray,
    product: np.ndarray,
    price: np.ndarray,
    promo: np.ndarray,
    leaf_median: np.ndarray,
) -> np.ndarray:
    """The shopper of each purchase occasion (-1 when nobody could have bought)."""
    catalog, customers = world.catalog, world.customers
    n_customers = len(act)
    leaf = catalog.leaf[product]
    weights = act[:, None] * customers.taste  # (C, L)
    cumulative = np.cumsum(weights, axis=0)
    totals = cumulative[-1]
    n_leaves = weights.shape[1]
    # One sorted array holding every leaf's CDF, leaf k scaled into [k, k+1]: a single
    # searchsorted then samples each occasion's candidates from its own leaf.
    flat = (cumulative / np.where(totals > 0, totals, 1.0)).T + np.arange(n_leaves)[:, None]
    u = rng.random((len(product), CANDIDATES))
    found = np.searchsorted(flat.ravel(), leaf[:, None] + u, side="right")
    candidates = np.minimum(found - leaf[:, None] * n_customers, n_customers - 1)
    affinity = np.einsum("nmd,nd->nm", customers.factors[candidates], catalog.factors[product])
    log_price = np.log(price[product] / leaf_median[leaf])
    score = (
        AFFINITY_WEIGHT * affinity
        - customers.price_sensitivity[candidates] * log_price[:, None]
        + np.log(customers.promo_affinity[candidates]) * promo[product][:, None]
        + rng.gumbel(size=candidates.shape)
    )
    chosen = candidates[np.arange(len(product)), np.argmax(score, axis=1)]
    return np.where(totals[leaf] > 0, chosen, -1)


def simulate(world: World, fraud: FraudPlan, progress: Progress | None = None) -> Simulation:
    """Run the shop over every day of the period."""
    config, catalog, customers, prices = world.config, world.catalog, world.customers, world.prices
    rng = stream(config.seed, "demand")
    n_products, days, start, end = len(catalog.sku), config.days, world.start_us, world.end_us
    n_leaves = customers.taste.shape[1]
    leaf_median = np.array(
        [
            np.median(catalog.reference_cents[catalog.leaf == k])
            if (catalog.leaf == k).any()
            else 1.0
            for k in range(n_leaves)
        ]
    )
    on_hand = catalog.initial_stock.astype(np.int64).copy()
    open_po = np.zeros(n_products, dtype=bool)
    incoming_qty = np.zeros((days, n_products), dtype=np.int64)
    incoming_time = np.zeros((days, n_products), dtype=np.int64)
    incoming_po = np.full((days, n_products), -1, dtype=np.int64)
    returned = np.zeros((days, n_products), dtype=np.int64)
    activity = np.zeros((len(customers), days), dtype=np.float32)
    f_day = np.array(fraud.day, dtype=np.int64)
    f_line_order = np.array(fraud.line_order, dtype=np.int64)
    orders, lines, lost, restocks, pos, demand = (_Collector() for _ in range(6))
    n_orders = 0
    n_po = 0
    quantity_values = np.array([1, 2, 3])
    for t in range(days):
        day0 = start + t * DAY_US
        price_t, promo_t = prices.cents[:, t], prices.promo[:, t]
        # 1. deliveries due today
        arriving = incoming_po[t] >= 0
        arrival_qty, arrival_time = incoming_qty[t], incoming_time[t]
        open_po[arriving] = False
        got = np.flatnonzero(arriving & (arrival_qty > 0))
        restocks.add(
            product=got,
            time_us=arrival_time[got],
            quantity=arrival_qty[got],
            po=incoming_po[t][got],
        )

        # 2-3. demand and shoppers
        occasions = rng.poisson(world.expected[:, t])
        product = np.repeat(np.arange(n_products), occasions)
        times = day0 + time_of_day(rng, len(product))
        qty = rng.choice(quantity_values, size=len(product), p=QUANTITY_P)
        act = activity_on(customers, t, start)
        activity[:, t] = act
        user = _assign(rng, world, act, product, price_t, promo_t, leaf_median)
        keep = user >= 0
        product, times, qty, user = product[keep], times[keep], qty[keep], user[keep]

        # 4. one order per shopper and day (the same product twice becomes one line)
        line_key = user * n_products + product
        order_of_key = np.lexsort((times, line_key))
        line_key, product, times, qty, user = (
            a[order_of_key] for a in (line_key, product, times, qty, user)
        )
        first = group_starts(line_key)
        l_user, l_product, l_time = user[first], product[first], times[first]
        l_qty = np.add.reduceat(qty, first) if len(first) else np.zeros(0, np.int64)
        o_user, o_index = np.unique(l_user, return_inverse=True)
        o_time = np.full(len(o_user), np.iinfo(np.int64).max)
        np.minimum.at(o_time, o_index, l_time)
        n_honest = len(o_user)
        o_failed_all = rng.random(n_honest) < FAIL_ALL_P
        o_failed = np.where(
            o_failed_all, rng.integers(1, 3, n_honest), (rng.random(n_honest) < RETRY_P) * 1
        )
        o_gap = (rng.uniform(20, 90, n_honest) * 1e6).astype(np.int64)
        o_pattern = np.zeros(n_honest, dtype=np.int64)
        o_incident = np.zeros(n_honest, dtype=np.int64)
        o_fraud = np.full(n_honest, -1, dtype=np.int64)
        o_paid = ~o_failed_all
        # planned fraud orders of the day
        f_today = np.flatnonzero(f_day == t)
        if len(f_today):
            f_lines = np.flatnonzero(np.isin(f_line_order, f_today))
            local = np.searchsorted(f_today, f_line_order[f_lines]) + n_honest
            o_user = np.r_[o_user, np.array(fraud.user)[f_today]]
            o_time = np.r_[o_time, np.array(fraud.time_us)[f_today]]
            o_failed = np.r_[o_failed, np.array(fraud.n_failed)[f_today]]
            o_gap = np.r_[o_gap, np.array(fraud.gap_us)[f_today]]
            o_pattern = np.r_[o_pattern, np.array(fraud.pattern)[f_today]]
            o_incident = np.r_[o_incident, np.array(fraud.incident)[f_today]]
            o_fraud = np.r_[o_fraud, f_today]
            o_paid = np.r_[o_paid, np.array(fraud.paid, dtype=bool)[f_today]]
            o_index = np.r_[o_index, local]
            l_product = np.r_[l_product, np.array(fraud.line_product)[f_lines]]
            l_qty = np.r_[l_qty, np.array(fraud.line_qty)[f_lines]]
        l_order = o_index
        l_time = o_time[l_order]  # a line is bought when its order is placed

        # 5. stock, first come first served; unpaid orders only need the units to exist
        consuming = o_paid[l_order]
        stock_order = np.lexsort((l_time, l_product))
        c_sorted = stock_order[consuming[stock_order]]
        running = cumsum_by_group(l_qty[c_sorted], l_product[c_sorted])
        arrived = (l_time[c_sorted] >= arrival_time[l_product[c_sorted]]) & arriving[
            l_product[c_sorted]
        ]
        limit = on_hand[l_product[c_sorted]] + np.where(
            arrived, arrival_qty[l_product[c_sorted]], 0
        )
        served = np.zeros(len(l_order), dtype=bool)
        served[c_sorted] = running <= limit
        unpaid = ~consuming
        served[unpaid] = on_hand[l_product[unpaid]] >= l_qty[unpaid]
        sold_units = np.bincount(
            l_product[served & consuming], weights=l_qty[served & consuming], minlength=n_products
        ).astype(np.int64)
        start_on_hand = on_hand.copy()
        on_hand += np.where(arriving, arrival_qty, 0) - sold_units

        honest_line = o_pattern[l_order] == 0
        demand.add(
            product=np.arange(n_products),
            day=np.full(n_products, t),
            occasions=occasions,
            units_sold=np.bincount(
                l_product[served & consuming & honest_line],
                weights=l_qty[served & consuming & honest_line],
                minlength=n_products,
            ).astype(np.int64),
            units_lost=np.bincount(
                l_product[~served & honest_line],
                weights=l_qty[~served & honest_line],
                minlength=n_products,
            ).astype(np.int64),
            on_hand_start=start_on_hand,
        )
        miss = np.flatnonzero(~served & honest_line)
        lost.add(user=o_user[l_order[miss]], product=l_product[miss], time_us=l_time[miss])

        # orders that kept at least one line
        has_line = np.bincount(l_order[served], minlength=len(o_user)) > 0
        kept = np.flatnonzero(has_line)
        renumber = np.full(len(o_user), -1, dtype=np.int64)
        renumber[kept] = np.arange(len(kept)) + n_orders
        k_paid, k_time, k_gap, k_failed = o_paid[kept], o_time[kept], o_gap[kept], o_failed[kept]
        n_kept = len(kept)

        # 6. life of the kept orders
        attempts_end = k_time + (k_failed + 1) * k_gap
        paid_us = np.where(k_paid, np.minimum(attempts_end, end - 1), -1)
        cancelled_us = np.where(
            k_paid, -1, np.minimum(k_time + k_failed * k_gap + RESERVATION_US, end - 1)
        )
        fulfilled_us = paid_us + (rng.uniform(2, 30, n_kept) * HOUR_US).astype(np.int64)
        shipped_us = fulfilled_us + (rng.uniform(1, 24, n_kept) * HOUR_US).astype(np.int64)
        delivered_us = shipped_us + (rng.uniform(1, 4, n_kept) * DAY_US).astype(np.int64)
        s_order = l_order[served]
        s_product, s_qty = l_product[served], l_qty[served]
        k_of_line = renumber[s_order] - n_orders
        keep_rate = np.ones(n_kept)
        rate = catalog.return_rate[s_product] * customers.return_factor[o_user[s_order]]
        np.multiply.at(keep_rate, k_of_line, 1 - np.minimum(rate, 0.9))
        honest_order = o_pattern[kept] == 0
        returns = k_paid & honest_order & (rng.random(n_kept) < 1 - keep_rate)
        refunded_us = np.where(
            returns, delivered_us + (rng.uniform(2, 14, n_kept) * DAY_US).astype(np.int64), -1
        )
        back_day = (refunded_us - start) // DAY_US
        line_back = returns[k_of_line] & (back_day[k_of_line] < days)
        np.add.at(
            returned, (back_day[k_of_line][line_back], s_product[line_back]), s_qty[line_back]
        )
        orders.add(
            user=o_user[kept],
            day=np.full(n_kept, t),
            created_us=k_time,
            pattern=o_pattern[kept],
            incident=o_incident[kept],
            fraud_index=o_fraud[kept],
            paid=k_paid,
            n_failed=k_failed,
            gap_us=k_gap,
            paid_us=paid_us,
            cancelled_us=cancelled_us,
            fulfilled_us=np.where(k_paid, fulfilled_us, -1),
            shipped_us=np.where(k_paid, shipped_us, -1),
            delivered_us=np.where(k_paid, delivered_us, -1),
            refunded_us=refunded_us,
        )
        lines.add(
            order=renumber[s_order],
            product=s_product,
            quantity=s_qty,
            unit_cents=price_t[s_product],
        )
        n_orders += n_kept

        # returns booked today go back on the shelf for tomorrow
        on_hand += returned[t]

        # 7. supplier orders for what runs low
        need = np.flatnonzero(~open_po & (on_hand <= catalog.reorder_point))
        if len(need):
            sup = catalog.supplier[need]
            shape = catalog.lead_time_shape[sup]
            lead = np.maximum(
                1, np.round(rng.gamma(shape, catalog.lead_time_mean[sup] / shape))
            ).astype(np.int64)
            ordered = catalog.order_quantity[need]
            received = rng.binomial(ordered, catalog.fill_rate[sup])
            placed = day0 + (rng.uniform(17, 21, len(need)) * HOUR_US).astype(np.int64)
            arrive_day = t + lead
            arrive_us = (
                start + arrive_day * DAY_US + (rng.uniform(6, 10, len(need)) * HOUR_US)
            ).astype(np.int64)
            ids = np.arange(len(need)) + n_po
            n_po += len(need)
            open_po[need] = True
            due = arrive_day < days
            incoming_po[arrive_day[due], need[due]] = ids[due]
            incoming_qty[arrive_day[due], need[due]] = received[due]
            incoming_time[arrive_day[due], need[due]] = arrive_us[due]
            pos.add(
                po=ids,
                product=need,
                supplier=sup,
                placed_us=placed,
                lead_days=lead,
                arrives_us=arrive_us,
                ordered=ordered,
                received=received,
                arrived=due,
            )
        if progress and (t % 7 == 6 or t == days - 1):
            progress("simulating days", t + 1, days)

    return Simulation(
        orders=orders.build(
            (
                "user",
                "day",
                "created_us",
                "pattern",
                "incident",
                "fraud_index",
                "paid",
                "n_failed",
                "gap_us",
                "paid_us",
                "cancelled_us",
                "fulfilled_us",
                "shipped_us",
                "delivered_us",
                "refunded_us",
            )
        ),
        lines=lines.build(("order", "product", "quantity", "unit_cents")),
        lost=lost.build(("user", "product", "time_us")),
        restocks=restocks.build(("product", "time_us", "quantity", "po")),
        purchase_orders=pos.build(
            (
                "po",
                "product",
                "supplier",
                "placed_us",
                "lead_days",
                "arrives_us",
                "ordered",
                "received",
                "arrived",
            )
        ),
        demand=demand.build(
            ("product", "day", "occasions", "units_sold", "units_lost", "on_hand_start")
        ),
        activity=activity,
    )
