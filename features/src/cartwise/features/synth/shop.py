"""Turn a simulation into the shop's tables, in the synthetic id space of the run.

Ids: users, products, variants (one per product) and categories are numbered from 1 in the
order the world drew them; orders ``sy-<seed>-<n>`` in order of creation. Missing integers
are ``-1`` and missing times ``-1`` here; the writers turn them into nulls. Money is integer
pence, times integer microseconds since the epoch (UTC).

Order totals follow checkout (:mod:`cartwise.commerce.orders.checkout`): subtotal = sum of
line totals, no discount (promotions are price cuts, not vouchers), flat shipping unless the
subtotal reaches the free-shipping threshold, tax on (subtotal + shipping) rounded half-up,
total = subtotal + shipping + tax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from cartwise.features.synth.fraud import PATTERNS, FraudPlan
from cartwise.features.synth.outcomes import build_chargebacks
from cartwise.features.synth.simulate import Simulation, cumsum_by_group
from cartwise.features.synth.world import DAY_US, World

CURRENCY = "GBP"
EMAIL_DOMAIN = "synth.example"
COST_PERCENT = 45  # what the shop pays its supplier, as a share of the reference price


@dataclass(frozen=True)
class Pricing:
    """Shipping and tax rules, as checkout applies them (defaults: the platform's)."""

    shipping_flat: Decimal = Decimal("4.95")
    free_shipping_over: Decimal | None = Decimal("50.00")
    tax_rate: Decimal = Decimal("0.20")
    currency: str = CURRENCY

    @classmethod
    def from_settings(cls, settings: Any) -> Pricing:
        """The rules of a ``Settings`` object."""
        return cls(
            settings.shipping_flat,
            settings.free_shipping_over,
            settings.tax_rate,
            settings.currency,
        )


@dataclass
class Shop:
    """Every table of a run, ready for the Parquet or database writer."""

    categories: pd.DataFrame
    products: pd.DataFrame
    customers: pd.DataFrame
    orders: pd.DataFrame
    order_lines: pd.DataFrame
    transitions: pd.DataFrame
    payments: pd.DataFrame
    refunds: pd.DataFrame
    stock_movements: pd.DataFrame
    events: pd.DataFrame
    sessions: int = 0
    suppliers: pd.DataFrame = field(default_factory=pd.DataFrame)
    purchase_orders: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Disputes of paid orders (see :mod:`.outcomes`): what the shop observes about fraud.
    chargebacks: pd.DataFrame = field(default_factory=pd.DataFrame)


def email_of(seed: int, user_id: np.ndarray) -> np.ndarray:
    """The placeholder emails of synthetic users (``.example`` is reserved, RFC 2606)."""
    return np.char.add(np.char.add(f"synth-{seed}-", user_id.astype(str)), f"@{EMAIL_DOMAIN}")


def take_or_none(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` as objects, ``None`` where the index is negative."""
    out = np.full(len(index), None, dtype=object)
    known = index >= 0
    out[known] = values[index[known]]
    return out


def order_totals(
    subtotal: np.ndarray, pricing: Pricing
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shipping, tax and total in pence for subtotals in pence (see the module docstring)."""
    flat = int(pricing.shipping_flat * 100)
    if pricing.free_shipping_over is None:
        shipping = np.full(len(subtotal), flat, dtype=np.int64)
    else:
        free = subtotal >= int(pricing.free_shipping_over * 100)
        shipping = np.where(free, 0, flat).astype(np.int64)
    num, den = pricing.tax_rate.as_integer_ratio()
    base = subtotal + shipping
    tax = (2 * base * num + den) // (2 * den)  # half-up, like money.quantize
    return shipping, tax, base + tax


def unique_names(names: list[str]) -> list[str]:
    """The names, a repeated one numbered ``"Name (2)"``, ``"Name (3)"``, … (names are keys)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _suppliers_and_purchase_orders(
    world: World, sim: Simulation
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The supplier rows, one purchase-order row per simulated supplier order, and the order
    ids by simulation index.

    A supplier promises its mean lead time rounded to whole days; the delivery comes after
    the drawn lead time with the drawn share of the units. Status at the end of the period:
    ``received`` when everything arrived, ``partially_received`` when the delivery was short
    (even of every unit), ``placed`` while it is still on its way.
    """
    seed, catalog = world.config.seed, world.catalog
    names = unique_names(list(catalog.supplier_name))
    # Rounded half to even, as numpy and pandas round.
    promised = np.round(np.asarray(catalog.lead_time_mean, dtype=float)).astype(np.int64)
    suppliers = pd.DataFrame(
        {
            "supplier_id": np.arange(1, len(names) + 1),
            "name": names,
            "email": [
                f"orders@{re.sub(r'[^a-z0-9]+', '-', n.lower()).strip('-')}.{EMAIL_DOMAIN}"
                for n in names
            ],
            "lead_time_days": promised,
            "is_active": True,
        }
    )
    po = sim.purchase_orders
    index = po["po"].astype(np.int64)
    product = po["product"].astype(np.int64)
    supplier = po["supplier"].astype(np.int64)
    arrived = po["arrived"].astype(bool)
    ordered = po["ordered"].astype(np.int64)
    received = np.where(arrived, po["received"].astype(np.int64), 0)
    placed = po["placed_us"].astype(np.int64)
    received_us = np.where(arrived, po["arrives_us"].astype(np.int64), -1)
    ids = np.char.add(f"sypo-{seed}-", (index + 1).astype(str)).astype(object)
    by_index = np.empty(int(index.max(initial=-1)) + 1, dtype=object)
    by_index[index] = ids
    reference = np.asarray(catalog.reference_cents, dtype=np.int64)
    purchase_orders = pd.DataFrame(
        {
            "po_id": ids,
            "supplier_id": supplier + 1,
            "product_id": product + 1,
            "variant_id": product + 1,
            "sku": np.array(catalog.sku, dtype=object)[product],
            "status": np.where(
                ~arrived,
                "placed",
                np.where(received >= ordered, "received", "partially_received"),
            ).astype(object),
            "currency": CURRENCY,
            "quantity_ordered": ordered,
            "quantity_received": received,
            "unit_cost": (reference[product] * COST_PERCENT + 50) // 100,  # pence
            "placed_us": placed,
            "expected_us": placed + promised[supplier] * DAY_US,
            "received_us": received_us,
            "updated_us": np.where(arrived, received_us, placed),
        }
    )
    return suppliers, purchase_orders, by_index


def _stages(orders: dict[str, np.ndarray], end_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(orders x 7) stage times (-1 = not reached by the end) and the status reached."""
    names = ("created_us", "paid_us", "fulfilled_us", "shipped_us", "delivered_us")
    times = np.stack(
        [orders[n] for n in names] + [orders["refunded_us"], orders["cancelled_us"]], axis=1
    )
    times = np.where((times >= 0) & (times < end_us), times, -1)
    return times, (times >= 0)


STAGE_STATUS = (
    "pending_payment",
    "paid",
    "fulfilled",
    "shipped",
    "delivered",
    "refunded",
    "cancelled",
)
STAGE_ACTOR = ("customer", "system", "staff", "staff", "system", "staff", "system")
STAGE_REASON = (
    "checkout",
    "payment succeeded",
    "picked and packed",
    "handed to the carrier",
    "delivered by the carrier",
    "returned by the customer",
    "reservation expired",
)


def build_shop(world: World, sim: Simulation, fraud: FraudPlan, pricing: Pricing) -> Shop:
    """All tables of the run except the events (see :func:`.sessions.build_events`)."""
    config, catalog, customers = world.config, world.catalog, world.customers
    seed, end = config.seed, world.end_us
    n_products = len(catalog.sku)

    paths = catalog.category_paths
    categories = pd.DataFrame(
        {
            "category_id": np.arange(1, len(paths) + 1),
            "name": [p[-1] for p in paths],
            "parent_id": catalog.category_parent,  # 0 = none
            "path": [" > ".join(p) for p in paths],
        }
    )
    leaf_cat = catalog.leaf_category[catalog.leaf]

    # Orders in order of creation, numbered from 1.
    o = sim.orders
    chrono = np.lexsort((o["user"], o["created_us"]))
    o = {k: v[chrono] for k, v in o.items()}
    number = np.empty(len(chrono), dtype=np.int64)
    number[chrono] = np.arange(1, len(chrono) + 1)
    order_ids = np.char.add(f"sy-{seed}-", np.arange(1, len(chrono) + 1).astype(str)).astype(object)
    user_id = o["user"] + 1
    emails = email_of(seed, np.arange(1, len(customers) + 1)).astype(object)

    # Lines, grouped by order.
    ln = sim.lines
    line_order = number[ln["order"]] - 1
    by_order = np.lexsort((ln["product"], line_order))
    line_order = line_order[by_order]
    l_product, l_qty = ln["product"][by_order], ln["quantity"][by_order]
    l_unit = ln["unit_cents"][by_order]
    l_total = l_unit * l_qty
    subtotal = np.bincount(line_order, weights=l_total, minlength=len(chrono)).astype(np.int64)
    shipping, tax, total = order_totals(subtotal, pricing)

    times, reached = _stages(o, end)
    last = 6 - np.argmax(reached[:, ::-1], axis=1)
    status = np.array(STAGE_STATUS, dtype=object)[last]
    updated = times[np.arange(len(last)), last]
    refunded = reached[:, 5]
    fraud_index = o["fraud_index"]
    is_fraud = fraud_index >= 0
    addresses = [
        fraud.address[int(f)]
        if f >= 0
        else (
            customers.full_name[u],
            customers.line1[u],
            customers.city[u],
            customers.postcode[u],
            customers.country[u],
        )
        for u, f in zip(o["user"].tolist(), fraud_index.tolist(), strict=True)
    ]
    pattern_names = np.array(("", *PATTERNS), dtype=object)
    orders = pd.DataFrame(
        {
            "order_id": order_ids,
            "user_id": user_id,
            "email": emails[o["user"]],
            "status": status,
            "currency": pricing.currency,
            "subtotal": subtotal,
            "discount": 0,
            "shipping": shipping,
            "tax": tax,
            "total": total,
            "refunded_amount": np.where(refunded, total, 0),
            "country": [a[4] for a in addresses],
            "full_name": [a[0] for a in addresses],
            "line1": [a[1] for a in addresses],
            "city": [a[2] for a in addresses],
            "postcode": [a[3] for a in addresses],
            "created_us": o["created_us"],
            "updated_us": updated,
            "paid": o["paid"].astype(bool),
            "paid_us": times[:, 1],
            "is_fraud": is_fraud,
            "pattern": pattern_names[o["pattern"]],
            "incident": o["incident"],
            "pattern_code": o["pattern"],
        }
    )

    order_lines = pd.DataFrame(
        {
            "order_id": order_ids[line_order],
            "user_id": user_id[line_order],
            "product_id": l_product + 1,
            "variant_id": l_product + 1,
            "sku": np.array(catalog.sku, dtype=object)[l_product],
            "product_name": np.array(catalog.name, dtype=object)[l_product],
            "quantity": l_qty,
            "unit_price": l_unit,
            "line_total": l_total,
            "status": status[line_order],
            "created_us": o["created_us"][line_order],
            "order_index": line_order,
        }
    )

    # Transitions: one row per stage reached, from the previous stage reached.
    t_order, t_stage = np.nonzero(reached)
    previous = np.r_[-1, t_stage[:-1]][: len(t_stage)]
    previous[np.r_[True, t_order[1:] != t_order[:-1]][: len(t_stage)]] = -1
    status_names = np.array(STAGE_STATUS, dtype=object)
    transitions = pd.DataFrame(
        {
            "order_id": order_ids[t_order],
            "from_status": np.where(previous >= 0, status_names[previous], None),
            "to_status": status_names[t_stage],
            "actor": np.array(STAGE_ACTOR, dtype=object)[t_stage],
            "actor_user": np.where(t_stage == 0, user_id[t_order], -1),
            "reason": np.array(STAGE_REASON, dtype=object)[t_stage],
            "created_us": times[t_order, t_stage],
        }
    )

    # Payments: the declined attempts, then the one that succeeded (if any).
    attempts = o["n_failed"] + o["paid"].astype(np.int64)
    p_order = np.repeat(np.arange(len(chrono)), attempts)
    p_k = np.arange(len(p_order)) - np.repeat(np.cumsum(attempts) - attempts, attempts)
    p_ok = o["paid"].astype(bool)[p_order] & (p_k == o["n_failed"][p_order])
    attempt_us = np.minimum(o["created_us"][p_order] + (p_k + 1) * o["gap_us"][p_order], end - 1)
    p_created = np.where(p_ok, times[p_order, 1], attempt_us)
    p_refunded = p_ok & refunded[p_order]
    payments = pd.DataFrame(
        {
            "payment_id": np.arange(1, len(p_order) + 1),
            "order_id": order_ids[p_order],
            "status": np.where(p_refunded, "refunded", np.where(p_ok, "succeeded", "failed")),
            "amount": total[p_order],
            "refunded_amount": np.where(p_refunded, total[p_order], 0),
            "created_us": p_created,
            "updated_us": np.where(p_refunded, times[p_order, 5], p_created),
        }
    )
    r_rows = np.flatnonzero(p_refunded)
    refunds = pd.DataFrame(
        {
            "payment_id": r_rows + 1,
            "order_id": order_ids[p_order[r_rows]],
            "amount": total[p_order[r_rows]],
            "created_us": times[p_order[r_rows], 5],
        }
    )

    # The stock ledger: initial stock, deliveries (each of its purchase order), sales when
    # paid, returns when refunded.
    suppliers, purchase_orders, po_ids = _suppliers_and_purchase_orders(world, sim)
    paid_line = reached[line_order, 1]
    back_line = reached[line_order, 5]
    parts = [
        (np.arange(n_products), np.full(n_products, world.start_us), catalog.initial_stock, 0, -1),
        (sim.restocks["product"], sim.restocks["time_us"], sim.restocks["quantity"], 1, -1),
        (
            l_product[back_line],
            times[line_order[back_line], 5],
            l_qty[back_line],
            2,
            line_order[back_line],
        ),
        (
            l_product[paid_line],
            times[line_order[paid_line], 1],
            -l_qty[paid_line],
            3,
            line_order[paid_line],
        ),
    ]
    m_po = np.concatenate(
        [
            np.full(n_products, -1),
            sim.restocks["po"],
            np.full(int(back_line.sum()), -1),
            np.full(int(paid_line.sum()), -1),
        ]
    ).astype(np.int64)
    m_product = np.concatenate([p[0] for p in parts]).astype(np.int64)
    m_time = np.concatenate([p[1] for p in parts]).astype(np.int64)
    m_delta = np.concatenate([p[2] for p in parts]).astype(np.int64)
    m_kind = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
    m_order = np.concatenate([np.broadcast_to(p[4], len(p[0])) for p in parts]).astype(np.int64)
    # Additions sort before sales at the same instant, so the ledger never dips below zero.
    ledger = np.lexsort((m_kind, m_time, m_product))
    after = cumsum_by_group(m_delta[ledger], m_product[ledger])
    if len(after) and after.min() < 0:  # pragma: no cover - a broken simulation
        raise AssertionError("the simulated stock ledger went negative")
    on_hand_after = np.empty_like(after)
    on_hand_after[ledger] = after
    final = catalog.initial_stock.astype(np.int64).copy()
    last_row = ledger[np.r_[m_product[ledger][1:] != m_product[ledger][:-1], True]]
    final[m_product[last_row]] = on_hand_after[last_row]
    chronological = np.lexsort((m_kind, m_product, m_time))
    reasons = np.array(("set", "restock", "refund", "sale"), dtype=object)
    notes = np.array(("initial stock", "supplier delivery", "customer return", ""), dtype=object)
    m_order_id = take_or_none(order_ids, m_order)
    stock_movements = pd.DataFrame(
        {
            "id": np.arange(1, len(chronological) + 1),
            "sku": np.array(catalog.sku, dtype=object)[m_product[chronological]],
            "product_index": m_product[chronological],
            "reason": reasons[m_kind[chronological]],
            "delta_on_hand": m_delta[chronological],
            "on_hand_after": on_hand_after[chronological],
            "order_id": m_order_id[chronological],
            "purchase_order_id": take_or_none(po_ids, m_po)[chronological],
            "note": notes[m_kind[chronological]],
            "created_us": m_time[chronological],
        }
    )

    products = pd.DataFrame(
        {
            "product_id": np.arange(1, n_products + 1),
            "variant_id": np.arange(1, n_products + 1),
            "sku": catalog.sku,
            "name": catalog.name,
            "description": catalog.description,
            "category_id": leaf_cat,
            "category": categories["name"].to_numpy()[leaf_cat - 1],
            "category_path": categories["path"].to_numpy()[leaf_cat - 1],
            "status": "active",
            "created_us": catalog.created_us,
            "price": world.prices.cents[:, -1],
            "currency": pricing.currency,
            "is_active": True,
            "on_hand": final,
            "reserved": 0,
            "supplier_id": catalog.supplier + 1,
            "supplier": np.array(catalog.supplier_name, dtype=object)[catalog.supplier],
            "material": catalog.material,
            "collection": catalog.collection,
        }
    )
    customers_frame = pd.DataFrame(
        {
            "user_id": np.arange(1, len(customers) + 1),
            "email": emails,
            "full_name": customers.full_name,
            "role": "customer",
            "is_active": True,
            "created_us": customers.signup_us,
            "country": customers.country,
        }
    )
    return Shop(
        categories=categories,
        products=products,
        customers=customers_frame,
        orders=orders,
        order_lines=order_lines,
        transitions=transitions,
        payments=payments,
        refunds=refunds,
        stock_movements=stock_movements,
        events=pd.DataFrame(),
        suppliers=suppliers,
        purchase_orders=purchase_orders,
        chargebacks=build_chargebacks(world, orders, payments),
    )
