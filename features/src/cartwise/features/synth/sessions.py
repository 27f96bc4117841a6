"""Shopper sessions and their events: search, view, click, add to cart, purchase.

Sessions come from three sources:

- **shopping**: a shopper's purchase occasions of a day (bought, declined at payment, or
  lost to a stock-out) make one session ending in their order's checkout;
- **fraud**: one session per fraud order (card testers' bots go straight to the cart);
- **browsing**: sessions that buy nothing, Poisson per shopper and day in proportion to
  their activity and the shop's weekly and yearly traffic.

In each session the shopper sees a list of products (``view``; from a search, a category
listing or a deals banner), clicks some (``click``; always what they came for), adds what
they buy to the cart (``add_to_cart``; some browsers abandon a cart, some remove the item)
and checks out (``purchase``, one per order line, when the payment succeeds). Views and
clicks that follow a search carry its query and the result position (1 = top). Search
queries come from the product names, one in seven with a typo.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cartwise.features.synth.shop import Shop, take_or_none
from cartwise.features.synth.simulate import Simulation, group_starts, time_of_day
from cartwise.features.synth.world import DAY_US, World, stream

EVENT_TYPES = np.array(
    ["search", "view", "click", "add_to_cart", "remove_from_cart", "purchase"], dtype=object
)
SOURCES = np.array(["search", "listing", "deals"], dtype=object)
SHOP, BROWSE = 0, 4  # session kinds; 1..3 are the fraud pattern codes
BROWSE_PER_ORDER = 9.0  # browsing sessions per expected purchase occasion
SEARCH_P = np.array([0.4, 0.0, 0.3, 0.3, 0.3])  # per session kind
FILLERS = np.array([3.0, 0.0, 2.0, 2.0, 4.0])  # mean extra products shown, per kind
CLICK_P, DEAL_CLICK_P, BARGAIN_DEAL_CLICK_P = 0.15, 0.12, 0.45
DEAL_P, BARGAIN_DEAL_P = 0.12, 0.5
ABANDON_P, REMOVE_P, ANONYMOUS_P, TYPO_P = 0.10, 0.35, 0.15, 1 / 7
# Mean seconds before an event of each stage (search, view, click, cart, remove).
STAGE_GAP_S = np.array([0.0, 6.0, 18.0, 25.0, 40.0, 0.0])
BARGAIN = 0  # index of bargain hunters in world.SEGMENTS


def uuid_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` UUID (version 4 format) strings drawn from ``rng``, without a Python loop."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.frombuffer(raw.tobytes().hex().encode(), dtype="S1").reshape(n, 32)
    out = np.full((n, 36), b"-", dtype="S1")
    cols = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]
    out[:, cols] = hexed
    return out.view("S36").ravel().astype(str).astype(object)


def _sample_leaf_products(
    rng: np.random.Generator, world: World, leaf: np.ndarray, user: np.ndarray
) -> np.ndarray:
    """Products shown for a category: by popularity, then the best of three by latent taste."""
    catalog = world.catalog
    order = np.argsort(catalog.leaf, kind="stable")
    sorted_leaf = catalog.leaf[order]
    weights = catalog.popularity[order]
    cumulative = np.cumsum(weights)
    starts = group_starts(sorted_leaf)
    before = np.repeat(cumulative[starts] - weights[starts], np.diff(np.r_[starts, len(order)]))
    within = cumulative - before
    totals = np.repeat(
        within[np.r_[starts[1:] - 1, len(order) - 1]], np.diff(np.r_[starts, len(order)])
    )
    flat = sorted_leaf + within / totals  # leaf k's CDF scaled into (k, k+1]
    present = np.zeros(len(world.customers.taste[0]), dtype=bool)
    present[sorted_leaf] = True
    # A leaf without products falls back to a random product.
    fallback = ~present[leaf]
    leaf = np.where(fallback, sorted_leaf[0], leaf)
    u = rng.random((len(leaf), 3))
    found = np.minimum(np.searchsorted(flat, leaf[:, None] + u, side="right"), len(order) - 1)
    candidates = order[found]
    score = np.einsum(
        "nmd,nd->nm", catalog.factors[candidates], world.customers.factors[user]
    ) * 2.0 + rng.gumbel(size=candidates.shape)
    chosen = candidates[np.arange(len(leaf)), np.argmax(score, axis=1)]
    return np.where(fallback, rng.integers(0, len(catalog.sku), len(leaf)), chosen)


def build_events(world: World, shop: Shop, sim: Simulation) -> tuple[pd.DataFrame, int]:
    """Every shopper event of the run (sorted by time, ids from 1) and the session count."""
    config, catalog, customers = world.config, world.catalog, world.customers
    rng = stream(config.seed, "sessions")
    days, start, end = config.days, world.start_us, world.end_us
    orders, lines = shop.orders, shop.order_lines
    o_user = orders["user_id"].to_numpy() - 1
    o_created = orders["created_us"].to_numpy()
    o_day = (o_created - start) // DAY_US
    o_kind = orders["pattern_code"].to_numpy()
    o_paid = orders["paid"].to_numpy()
    o_paid_us = orders["paid_us"].to_numpy()
    honest = o_kind == 0

    # Shopping sessions: one per shopper and day with an honest order or a lost sale.
    lost_user, lost_product = sim.lost["user"].astype(np.int64), sim.lost["product"]
    lost_time = sim.lost["time_us"].astype(np.int64)
    lost_key = lost_user * days + (lost_time - start) // DAY_US
    honest_key = o_user[honest] * days + o_day[honest]
    keys = np.unique(np.r_[honest_key, lost_key]).astype(np.int64)
    n_shop = len(keys)
    fraud_orders = np.flatnonzero(~honest)
    order_session = np.full(len(orders), -1, dtype=np.int64)
    order_session[honest] = np.searchsorted(keys, honest_key)
    order_session[fraud_orders] = n_shop + np.arange(len(fraud_orders))
    n_targeted = n_shop + len(fraud_orders)
    s_order = np.full(n_targeted, -1, dtype=np.int64)
    s_order[order_session[order_session >= 0]] = np.flatnonzero(order_session >= 0)
    s_anchor = np.full(n_targeted, np.iinfo(np.int64).max, dtype=np.int64)
    has_order = s_order >= 0
    s_anchor[has_order] = o_created[s_order[has_order]]
    lost_session = np.searchsorted(keys, lost_key)
    np.minimum.at(s_anchor, lost_session, lost_time)

    # What each of those sessions came for.
    line_order = lines["order_index"].to_numpy()
    t_session = np.r_[order_session[line_order], lost_session]
    t_product = np.r_[lines["product_id"].to_numpy() - 1, lost_product].astype(np.int64)
    t_qty = np.r_[lines["quantity"].to_numpy(), np.ones(len(lost_product), np.int64)]
    t_role = np.r_[np.where(o_paid[line_order], 0, 1), np.full(len(lost_product), 2)]
    t_order = np.r_[line_order, np.full(len(lost_product), -1)]
    first_target = np.full(n_targeted, -1, dtype=np.int64)
    by_session = np.argsort(t_session, kind="stable")
    heads = by_session[group_starts(t_session[by_session])]
    first_target[t_session[heads]] = t_product[heads]

    # Browsing sessions, in proportion to activity and traffic.
    traffic = world.traffic[None, :]
    # Scaled on the expected demand, so a quiet run still has its browsers.
    weight = float((sim.activity * traffic).sum())
    kappa = BROWSE_PER_ORDER * float(world.expected.sum()) / weight if weight > 0 else 0.0
    counts = rng.poisson(sim.activity * traffic * kappa)
    flat_index = np.repeat(np.arange(counts.size), counts.ravel())
    b_user, b_day = np.divmod(flat_index, days)
    n_browse = len(b_user)
    b_anchor = start + b_day * DAY_US + time_of_day(rng, n_browse)
    n_leaves = customers.taste.shape[1]
    taste_cdf = np.cumsum(customers.taste, axis=1)
    taste_cdf = taste_cdf / taste_cdf[:, -1:] + np.arange(len(customers))[:, None]
    b_leaf = np.searchsorted(taste_cdf.ravel(), b_user + rng.random(n_browse), side="right")
    b_leaf = np.minimum(b_leaf - b_user * n_leaves, n_leaves - 1)

    # All sessions.
    kind = np.r_[np.full(n_shop, SHOP), o_kind[fraud_orders], np.full(n_browse, BROWSE)]
    user = np.r_[keys // days, o_user[fraud_orders], b_user].astype(np.int64)
    anchor = np.r_[s_anchor, b_anchor]
    order = np.r_[s_order, np.full(n_browse, -1)]
    leaf = np.r_[catalog.leaf[np.maximum(first_target, 0)], b_leaf]
    n_sessions = len(kind)
    day = np.clip((anchor - start) // DAY_US, 0, days - 1)
    bargain = customers.segment[user] == BARGAIN
    search = rng.random(n_sessions) < SEARCH_P[kind]
    n_fill = rng.poisson(FILLERS[kind]) + (kind == BROWSE)
    promo_count = world.prices.promo.sum(axis=0)
    deal = (
        (rng.random(n_sessions) < np.where(bargain, BARGAIN_DEAL_P, DEAL_P))
        & (kind != 1)
        & (promo_count[day] > 0)
    )
    anonymous = (kind == BROWSE) & (rng.random(n_sessions) < ANONYMOUS_P)

    # Impressions: the targets (bots see none), fillers from the category, a deal.
    shown = kind[t_session] != 1
    f_session = np.repeat(np.arange(n_sessions), n_fill)
    f_product = _sample_leaf_products(rng, world, leaf[f_session], user[f_session])
    d_session = np.flatnonzero(deal)
    promo_products = [np.flatnonzero(world.prices.promo[:, t]) for t in range(days)]
    offsets = np.r_[0, np.cumsum(promo_count)]
    flat_promos = np.concatenate(promo_products) if promo_products else np.zeros(0, np.int64)
    d_day = day[d_session]
    d_product = flat_promos[
        offsets[d_day] + (rng.random(len(d_session)) * promo_count[d_day]).astype(np.int64)
    ]
    i_session = np.r_[t_session[shown], f_session, d_session]
    i_product = np.r_[t_product[shown], f_product, d_product].astype(np.int64)
    i_kind = np.r_[
        np.zeros(int(shown.sum()), np.int64),
        np.ones(len(f_session), np.int64),
        np.full(len(d_session), 2),
    ]
    i_key = rng.random(len(i_session)) * np.where(i_kind == 0, 0.35, 1.0)
    # A product is listed once per session; a target wins over a filler or deal of itself.
    by_pair = np.lexsort((i_kind, i_product, i_session))
    pair = i_session[by_pair] * len(catalog.sku) + i_product[by_pair]
    unique = by_pair[group_starts(pair)]
    i_session, i_product, i_kind, i_key = (a[unique] for a in (i_session, i_product, i_kind, i_key))
    ranked = np.lexsort((i_key, i_session))
    i_session, i_product, i_kind, i_key = (a[ranked] for a in (i_session, i_product, i_kind, i_key))
    i_rank = np.arange(len(i_session)) - np.repeat(
        group_starts(i_session), np.diff(np.r_[group_starts(i_session), len(i_session)])
    )
    i_search = search[i_session]
    i_position = np.where(i_search, i_rank + 1, -1)
    i_source = np.where(i_search, 0, np.where(i_kind == 2, 2, 1))
    deal_click = np.where(bargain[i_session], BARGAIN_DEAL_CLICK_P, DEAL_CLICK_P)
    roll = rng.random(len(i_session))
    clicked = (
        (i_kind == 0) | ((i_kind == 1) & (roll < CLICK_P)) | ((i_kind == 2) & (roll < deal_click))
    )

    # A search needs something to show; its query names the first product listed.
    lead = np.full(n_sessions, -1, dtype=np.int64)
    lead[i_session[group_starts(i_session)]] = i_product[group_starts(i_session)]
    search &= lead >= 0
    s_search = np.flatnonzero(search)
    variant = rng.choice(3, size=len(s_search), p=[0.5, 0.35, 0.15])
    variant += 3 * (rng.random(len(s_search)) < TYPO_P)
    queries = catalog.queries[lead[s_search], variant]

    # Carts: what is bought (or declined at payment); browsers abandon one clicked filler.
    carted = t_role <= 1
    abandon_session = (kind == BROWSE) & (rng.random(n_sessions) < ABANDON_P)
    filler_clicks = np.flatnonzero(clicked & (i_kind == 1) & abandon_session[i_session])
    first_click = filler_clicks[group_starts(i_session[filler_clicks])]
    removed = first_click[rng.random(len(first_click)) < REMOVE_P]
    bought = t_role == 0

    def block(
        session: np.ndarray,
        stage: int,
        rank: np.ndarray,
        product: np.ndarray | None = None,
        position: np.ndarray | None = None,
        source: np.ndarray | None = None,
        qty: np.ndarray | None = None,
        order_index: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        n = len(session)
        missing = np.full(n, -1, dtype=np.int64)
        return {
            "session": session.astype(np.int64),
            "stage": np.full(n, stage, dtype=np.int64),
            "rank": rank.astype(float),
            "product": missing if product is None else product.astype(np.int64),
            "position": missing if position is None else position.astype(np.int64),
            "source": missing if source is None else source.astype(np.int64),
            "qty": missing if qty is None else qty.astype(np.int64),
            "order": missing if order_index is None else order_index.astype(np.int64),
        }

    c_rank = rng.random(int(carted.sum()))
    blocks = [
        block(s_search, 0, np.zeros(len(s_search))),
        block(i_session, 1, i_key, i_product, i_position, i_source),
        block(
            i_session[clicked],
            2,
            i_key[clicked],
            i_product[clicked],
            i_position[clicked],
            i_source[clicked],
        ),
        block(t_session[carted], 3, c_rank, t_product[carted], qty=t_qty[carted]),
        block(
            i_session[first_click],
            3,
            np.ones(len(first_click)),
            i_product[first_click],
            qty=np.ones(len(first_click)),
        ),
        block(
            i_session[removed],
            4,
            np.ones(len(removed)),
            i_product[removed],
            qty=np.ones(len(removed)),
        ),
        block(
            t_session[bought],
            5,
            np.arange(int(bought.sum())),
            t_product[bought],
            qty=t_qty[bought],
            order_index=t_order[bought],
        ),
    ]
    ev = {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    # The search itself, and the views and clicks of its results, carry the query.
    session_query = np.full(n_sessions, None, dtype=object)
    session_query[s_search] = queries
    with_query = (ev["stage"] == 0) | (ev["source"] == 0)
    ev_query = np.where(with_query, session_query[ev["session"]], None)

    # Timing: gaps within the session; checkout sessions end where the order was placed.
    walk = np.lexsort((ev["rank"], ev["stage"], ev["session"]))
    browsing = ev["stage"][walk] < 5
    steps = walk[browsing]
    gaps = (rng.exponential(1.0, len(steps)) * STAGE_GAP_S[ev["stage"][steps]] * 1e6).astype(
        np.int64
    )
    starts = group_starts(ev["session"][steps])
    gaps[starts] = 0
    running = np.cumsum(gaps)
    offset = running - np.repeat(running[starts], np.diff(np.r_[starts, len(steps)]))
    last_offset = np.zeros(n_sessions, dtype=np.int64)
    ends = np.r_[starts[1:] - 1, len(steps) - 1] if len(steps) else np.zeros(0, np.int64)
    last_offset[ev["session"][steps][ends]] = offset[ends]
    checkout = order >= 0
    base = anchor.copy()
    base[checkout] = (
        anchor[checkout]
        - last_offset[checkout]
        - (rng.uniform(20, 90, int(checkout.sum())) * 1e6).astype(np.int64)
    )
    time_us = np.zeros(len(ev["session"]), dtype=np.int64)
    time_us[steps] = base[ev["session"][steps]] + offset
    purchases = walk[~browsing]
    time_us[purchases] = (
        o_paid_us[ev["order"][purchases]] + ev["rank"][purchases].astype(np.int64) % 1000
    )
    time_us = np.clip(time_us, start, end - 1)

    # Ids in time order; sessions numbered by when they start.
    final = np.lexsort((ev["rank"], ev["stage"], ev["session"], time_us))
    session_first = np.full(n_sessions, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(session_first, ev["session"], time_us)
    session_number = np.empty(n_sessions, dtype=np.int64)
    session_number[np.lexsort((np.arange(n_sessions), session_first))] = np.arange(
        1, n_sessions + 1
    )
    session_ids = np.char.add(f"sy{config.seed}-s", session_number.astype(str)).astype(object)
    id_rng = stream(
        config.seed,
        f"event-ids:{config.customers}:{config.products}:{days}:{config.first_day()}:"
        f"{config.fraud_rate}",
    )
    session = ev["session"][final]
    product = ev["product"][final]
    known = product >= 0
    user_id = np.where(anonymous[session], -1, user[session] + 1)
    sku = np.full(len(final), None, dtype=object)
    sku[known] = np.array(catalog.sku, dtype=object)[product[known]]
    order_ids = orders["order_id"].to_numpy()
    ev_order = ev["order"][final]
    events = pd.DataFrame(
        {
            "id": np.arange(1, len(final) + 1),
            "event_id": uuid_strings(id_rng, len(final)),
            "type": EVENT_TYPES[ev["stage"][final]],
            "session_id": session_ids[session],
            "user_id": user_id,
            "product_id": np.where(known, product + 1, -1),
            "sku": sku,
            "query": ev_query[final],
            "position": ev["position"][final],
            "time_us": time_us[final],
            "source": np.where(ev["source"][final] >= 0, SOURCES[ev["source"][final]], None),
            "quantity": ev["qty"][final],
            "order_id": take_or_none(order_ids, ev_order),
        }
    )
    return events, n_sessions
