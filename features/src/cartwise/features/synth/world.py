"""The synthetic shop's world: catalog, suppliers, prices, promotions and customers.

Everything here is hidden truth drawn once from the seed; :mod:`.simulate` then lets the
world run. Each component draws from its own random stream (:func:`stream`), so changing
``--days`` or ``--customers`` leaves the catalog as it was for the same seed.

The demand process of product ``i`` on day ``t`` (purchase occasions, i.e. order lines, per
day; each occasion buys 1-3 units) is::

    lambda[i, t] = base_rate[i]
                   * (1 + weekly_amplitude[i] * cos(2 pi (dow[t] - weekly_peak_dow[i]) / 7))
                   * (1 + yearly_amplitude[i] * cos(2 pi (doy[t] - yearly_peak_doy[i]) / 365.25))
                   * (price[i, t] / reference_price[i]) ** price_elasticity[i]
                   * promo_lift[i] ** promo[i, t]

with ``dow`` 0 = Monday and ``doy`` 1..366. Occasions that find no stock are lost sales.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np

from cartwise.features.synth import vocab

DAY_US = 86_400_000_000
FACTORS = 8  # latent taste dimensions of customers and products
SEGMENTS = ("bargain_hunter", "loyal_regular", "gift_buyer", "churner")
SEGMENT_SHARES = (0.30, 0.20, 0.25, 0.25)
# Relative purchase activity per segment (gift buyers mostly wake up on their occasions).
SEGMENT_ACTIVITY = (2.0, 5.0, 0.12, 2.5)
# How strongly a segment avoids expensive items (log-price slope) and chases promotions.
SEGMENT_PRICE_SENSITIVITY = (1.5, -0.2, -0.5, 0.3)
SEGMENT_PROMO_AFFINITY = (5.0, 1.2, 1.0, 1.3)
SEGMENT_RETURN_FACTOR = (1.2, 0.8, 1.6, 1.0)
TASTE_CONCENTRATION = 0.3  # Dirichlet concentration per leaf: small = few favourite categories
GIFT_SPIKE = 30.0  # activity of a gift buyer on one of their gift occasions
CHURN_DECAY_DAYS = 5.0
OCCASIONS_PER_CUSTOMER_DAY = 0.022  # sets the overall demand level
QUANTITY_P = (0.84, 0.11, 0.05)  # units per purchase occasion: 1, 2 or 3
# Traffic (browsing sessions) over the week and the year, shared by all shoppers.
TRAFFIC_WEEKLY_AMPLITUDE, TRAFFIC_WEEKLY_PEAK = 0.25, vocab.SUNDAY
TRAFFIC_YEARLY_AMPLITUDE, TRAFFIC_YEARLY_PEAK = 0.30, 335


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent random stream per seed and component name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: shop size, period and seed."""

    customers: int = 2000
    days: int = 120
    seed: int = 42
    start: date | None = None  # first day; None = the period ends yesterday (UTC)
    products: int = 300
    fraud_rate: float = 0.02  # fraudulent orders as a share of normal orders
    # Observed outcomes (see :mod:`.outcomes`): paid fraud orders charged back as fraudulent,
    # paid honest orders disputed for another reason, and the days from order to dispute.
    chargeback_rate: float = 0.7
    dispute_rate: float = 0.005
    chargeback_days: tuple[int, int] = (3, 25)

    def __post_init__(self) -> None:
        for name in ("fraud_rate", "chargeback_rate", "dispute_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        low, high = self.chargeback_days
        if not 0 <= low <= high:
            raise ValueError("chargeback_days must be (low, high) with 0 <= low <= high")

    def first_day(self) -> date:
        """The first simulated day."""
        if self.start is not None:
            return self.start
        return datetime.now(UTC).date() - timedelta(days=self.days)

    def resolved(self) -> SynthConfig:
        """The same config with ``start`` fixed, so later calls agree."""
        return replace(self, start=self.first_day())


@dataclass
class Catalog:
    """Categories, products (one variant each) and their hidden demand parameters."""

    # categories: every node of the tree, ids 1..n in path order
    category_paths: list[tuple[str, ...]]
    category_parent: np.ndarray  # parent category id, 0 for roots
    leaf_category: np.ndarray  # category id of each leaf
    # products, ids 1..P
    leaf: np.ndarray
    noun: list[str]
    material: list[str]
    collection: list[str]
    name: list[str]
    description: list[str]
    sku: list[str]
    queries: np.ndarray  # (P, 6) search queries: 3 clean, then the same 3 with typos
    reference_cents: np.ndarray
    popularity: np.ndarray
    factors: np.ndarray
    base_rate: np.ndarray
    weekly_amplitude: np.ndarray
    weekly_peak: np.ndarray
    yearly_amplitude: np.ndarray
    yearly_peak: np.ndarray
    elasticity: np.ndarray
    promo_lift: np.ndarray
    return_rate: np.ndarray
    supplier: np.ndarray
    reorder_point: np.ndarray
    order_quantity: np.ndarray
    initial_stock: np.ndarray
    created_us: np.ndarray
    # suppliers, ids 1..S
    supplier_name: list[str]
    lead_time_mean: np.ndarray
    lead_time_shape: np.ndarray
    fill_rate: np.ndarray


@dataclass
class Prices:
    """Daily prices: list price changes and promotions, as (P, D) matrices in pence."""

    list_cents: np.ndarray
    discount: np.ndarray
    promo: np.ndarray
    cents: np.ndarray
    promotions: list[tuple[int, int, int, float]]  # (product index, first day, last day, cut)
    changes: list[tuple[int, int, int, int]]  # (product index, day, old cents, new cents)


@dataclass
class Customers:
    """Shoppers with hidden tastes and segments; fraud accounts are appended later."""

    segment: np.ndarray  # index into SEGMENTS; -1 for fraud accounts
    signup_us: np.ndarray
    activity: np.ndarray
    churn_day: np.ndarray  # day index when a churner stops (inf for others)
    gift_days: np.ndarray  # (C, 2) day indexes of gift occasions, -1 if none
    taste: np.ndarray  # (C, L) category preferences, rows sum to 1
    factors: np.ndarray  # (C, FACTORS)
    price_sensitivity: np.ndarray
    promo_affinity: np.ndarray
    return_factor: np.ndarray
    country: list[str]
    full_name: list[str]
    line1: list[str]
    city: list[str]
    postcode: list[str]
    fraud_pattern: list[str] = field(default_factory=list)  # per customer, "" when honest

    def __len__(self) -> int:
        return len(self.signup_us)


@dataclass
class World:
    """The whole hidden world of one run."""

    config: SynthConfig
    start_us: int
    dow: np.ndarray  # (D,)
    doy: np.ndarray  # (D,)
    traffic: np.ndarray  # (D,) relative browsing traffic
    catalog: Catalog
    prices: Prices
    expected: np.ndarray  # (P, D) lambda: expected purchase occasions
    customers: Customers

    @property
    def days(self) -> int:
        """Number of simulated days."""
        return self.config.days

    @property
    def end_us(self) -> int:
        """The end of the period (midnight after the last day): nothing happens later."""
        return self.start_us + self.config.days * DAY_US


def day_start_us(day: date) -> int:
    """Microseconds since the epoch of a UTC midnight."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def charm_cents(pounds: np.ndarray) -> np.ndarray:
    """Shop prices: x.99 from £10, x.49 / x.99 below."""
    pounds = np.asarray(pounds, dtype=float)
    high = np.floor(pounds) * 100 + 99
    low = np.floor(pounds * 2) * 50 + 49
    cents: np.ndarray = np.where(pounds >= 10, high, low).astype(np.int64)
    return cents


def seasonal(amplitude: np.ndarray, phase: np.ndarray, at: np.ndarray, period: float) -> np.ndarray:
    """``1 + amplitude * cos(2 pi (at - phase) / period)``, broadcast (items, days)."""
    angle = 2 * np.pi * (at[None, :] - phase[:, None]) / period
    factor: np.ndarray = 1 + amplitude[:, None] * np.cos(angle)
    return factor


def typo(text: str, rng: np.random.Generator) -> str:
    """One believable typing slip: a swapped, dropped, doubled or neighbouring letter."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 3:
        return text + text[-1:]
    i = int(letters[int(rng.integers(1, len(letters)))])
    kind = int(rng.integers(4))
    if kind == 0 and i + 1 < len(text) and text[i + 1].isalpha():
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    near = vocab.KEY_NEIGHBOURS.get(text[i].lower(), "e")
    return text[:i] + near[int(rng.integers(len(near)))] + text[i + 1 :]


def _categories() -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray]:
    nodes = sorted({leaf.path[:d] for leaf in vocab.LEAVES for d in range(1, len(leaf.path) + 1)})
    ids = {path: i + 1 for i, path in enumerate(nodes)}
    parent = np.array([ids[p[:-1]] if len(p) > 1 else 0 for p in nodes], dtype=np.int64)
    leaf_category = np.array([ids[leaf.path] for leaf in vocab.LEAVES], dtype=np.int64)
    return nodes, parent, leaf_category


def build_catalog(config: SynthConfig, customers: Customers) -> Catalog:
    """Products with names, texts, prices and demand parameters; suppliers with their truths."""
    rng = stream(config.seed, "catalog")
    leaves = vocab.LEAVES
    n_leaves, n = len(leaves), config.products
    shares = np.array([leaf.share for leaf in leaves])
    # Every leaf gets a product first (when there are enough), the rest by leaf size.
    leaf = np.concatenate(
        [
            rng.permutation(n_leaves)[: min(n, n_leaves)],
            rng.choice(n_leaves, size=max(0, n - n_leaves), p=shares / shares.sum()),
        ]
    ).astype(np.int64)
    nouns, materials, collections, names, descriptions, skus = [], [], [], [], [], []
    queries = np.empty((n, 6), dtype=object)
    low = np.empty(n)
    high = np.empty(n)
    taken: set[str] = set()
    for i in range(n):
        spec = leaves[int(leaf[i])]
        for attempt in range(30):
            noun, lo, hi = spec.nouns[int(rng.integers(len(spec.nouns)))]
            material = spec.materials[int(rng.integers(len(spec.materials)))]
            collection = vocab.COLLECTIONS[int(rng.integers(len(vocab.COLLECTIONS)))]
            name = f"{collection} {material} {noun}"
            if name not in taken:
                break
            if attempt == 29:
                name = f"{name} No. {i + 1}"
        taken.add(name)
        features = rng.choice(len(spec.features), size=2, replace=False)
        use = spec.uses[int(rng.integers(len(spec.uses)))]
        article = "an" if material[0].lower() in "aeiou" else "a"
        made = spec.made.format(m=material.lower(), a=article)
        descriptions.append(
            f"{name} — {made}, {spec.features[features[0]]}, {spec.features[features[1]]}. "
            f"{use} Part of the {collection} collection."
        )
        nouns.append(noun)
        materials.append(material)
        collections.append(collection)
        names.append(name)
        skus.append(f"SY{config.seed}-{i + 1:05d}")
        low[i], high[i] = lo, hi
        clean = [noun.lower(), f"{material} {noun}".lower(), f"{collection} {noun}".lower()]
        queries[i, :3] = clean
        queries[i, 3:] = [typo(q, rng) for q in clean]
    pounds = np.exp(rng.uniform(np.log(low), np.log(high)))
    reference = charm_cents(pounds)
    popularity = rng.lognormal(0.0, 1.0, size=n)
    factors = rng.normal(0.0, 1.0 / math.sqrt(FACTORS), size=(n, FACTORS))

    # Demand follows the shoppers: a leaf's demand is its share of their summed tastes.
    leaf_demand = (customers.activity[:, None] * customers.taste).sum(axis=0)
    leaf_demand = leaf_demand / max(leaf_demand.sum(), 1e-12)
    pop_in_leaf = popularity / np.bincount(leaf, weights=popularity, minlength=n_leaves)[leaf]
    total = OCCASIONS_PER_CUSTOMER_DAY * max(config.customers, 1)
    base_rate = total * leaf_demand[leaf] * pop_in_leaf

    def leaf_attr(name: str) -> np.ndarray:
        return np.array([getattr(leaves[k], name) for k in leaf], dtype=float)

    weekly_amplitude = np.clip(leaf_attr("weekly_amplitude") + rng.normal(0, 0.05, n), 0, 0.6)
    weekly_peak = leaf_attr("weekly_peak").astype(np.int64)
    yearly_amplitude = np.clip(leaf_attr("yearly_amplitude") + rng.normal(0, 0.05, n), 0, 0.9)
    yearly_peak = (leaf_attr("yearly_peak") + rng.normal(0, 8, n)).round().astype(np.int64)
    yearly_peak = (yearly_peak - 1) % 365 + 1
    elasticity = np.clip(leaf_attr("elasticity") + rng.normal(0, 0.3, n), -4.0, -0.3)
    promo_lift = rng.uniform(1.1, 1.8, n)
    return_rate = np.clip(leaf_attr("return_rate") * rng.lognormal(0, 0.3, n), 0.005, 0.4)

    # Suppliers: each specialises in one leaf; lead times and fill rates are their secrets.
    n_sup = max(3, math.ceil(n / 30))
    primary = np.arange(n_sup) % n_leaves
    supplier = np.empty(n, dtype=np.int64)
    for k in range(n_leaves):
        mine = np.flatnonzero(primary == k)
        pool = mine if len(mine) else np.array([k % n_sup])
        members = np.flatnonzero(leaf == k)
        supplier[members] = pool[rng.integers(len(pool), size=len(members))]
    sup_rng = stream(config.seed, "suppliers")
    supplier_name = [
        f"{vocab.SUPPLIER_PREFIXES[s % len(vocab.SUPPLIER_PREFIXES)]} "
        f"{leaves[int(primary[s])].path[-1]} "
        f"{vocab.SUPPLIER_SUFFIXES[int(sup_rng.integers(len(vocab.SUPPLIER_SUFFIXES)))]}"
        for s in range(n_sup)
    ]
    lead_time_mean = np.round(sup_rng.uniform(3, 21, n_sup) * 2) / 2
    lead_time_shape = sup_rng.uniform(3, 12, n_sup)
    fill_rate = np.round(sup_rng.uniform(0.72, 0.99, n_sup), 3)

    # A simple (s, Q) stock policy, deliberately too lean for some products: stock-outs happen.
    mean_units = base_rate * float(np.dot(QUANTITY_P, [1, 2, 3]))
    lead = lead_time_mean[supplier]
    reorder_point = np.ceil(mean_units * lead * rng.uniform(0.4, 1.6, n)).astype(np.int64)
    order_quantity = np.maximum(3, np.ceil(mean_units * rng.uniform(20, 50, n))).astype(np.int64)
    initial_stock = reorder_point + np.ceil(order_quantity * rng.uniform(0.4, 1.0, n)).astype(
        np.int64
    )
    start_us = day_start_us(config.first_day())
    created_us = start_us - (rng.uniform(30, 700, n) * DAY_US).astype(np.int64)

    paths, parent, leaf_category = _categories()
    return Catalog(
        category_paths=paths,
        category_parent=parent,
        leaf_category=leaf_category,
        leaf=leaf,
        noun=nouns,
        material=materials,
        collection=collections,
        name=names,
        description=descriptions,
        sku=skus,
        queries=queries,
        reference_cents=reference,
        popularity=popularity,
        factors=factors,
        base_rate=base_rate,
        weekly_amplitude=weekly_amplitude,
        weekly_peak=weekly_peak,
        yearly_amplitude=yearly_amplitude,
        yearly_peak=yearly_peak,
        elasticity=elasticity,
        promo_lift=promo_lift,
        return_rate=return_rate,
        supplier=supplier,
        reorder_point=reorder_point,
        order_quantity=order_quantity,
        initial_stock=initial_stock,
        created_us=created_us,
        supplier_name=supplier_name,
        lead_time_mean=lead_time_mean,
        lead_time_shape=lead_time_shape,
        fill_rate=fill_rate,
    )


def build_prices(config: SynthConfig, catalog: Catalog) -> Prices:
    """List price changes and promotions (temporary cuts) per product and day."""
    rng = stream(config.seed, "prices")
    n, days = len(catalog.sku), config.days
    list_cents = np.repeat(catalog.reference_cents[:, None], days, axis=1)
    changes: list[tuple[int, int, int, int]] = []
    # A few permanent re-pricings, so price effects can be told apart from promotion effects.
    n_changes = rng.poisson(days / 100, size=n)
    for i in np.flatnonzero(n_changes):
        for day in np.sort(rng.integers(1, max(days, 2), size=int(n_changes[i]))):
            old = int(list_cents[i, day])
            new = int(charm_cents(np.array([old / 100 * rng.uniform(0.85, 1.15)]))[0])
            list_cents[i, day:] = new
            changes.append((int(i), int(day), old, new))
    discount = np.zeros((n, days))
    promotions: list[tuple[int, int, int, float]] = []
    n_promos = rng.poisson(0.08 * days / 6.5, size=n)
    cuts = np.array([0.10, 0.15, 0.20, 0.25, 0.30, 0.40])
    for i in np.flatnonzero(n_promos):
        for _ in range(int(n_promos[i])):
            first = int(rng.integers(0, days))
            last = min(days - 1, first + int(rng.integers(3, 11)) - 1)
            cut = float(cuts[int(rng.integers(len(cuts)))])
            discount[i, first : last + 1] = np.maximum(discount[i, first : last + 1], cut)
            promotions.append((int(i), first, last, cut))
    promo = discount > 0
    cents = np.where(promo, np.round(list_cents * (1 - discount)), list_cents).astype(np.int64)
    return Prices(list_cents, discount, promo, cents, promotions, changes)


def _fake_postcode(country: str, rng: np.random.Generator) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    if country == "GB":
        a, b, c, d = (letters[int(x)] for x in rng.integers(len(letters), size=4))
        return f"{a}{b}{int(rng.integers(1, 20))} {int(rng.integers(1, 10))}{c}{d}"
    if country == "IE":
        tail = "".join(letters[int(x)] for x in rng.integers(len(letters), size=4))
        return f"D{int(rng.integers(1, 25)):02d} {tail}"
    return f"{int(rng.integers(10000, 99999))}"


def fake_address(country: str, rng: np.random.Generator) -> tuple[str, str, str, str]:
    """A made-up (full name, line1, city, postcode) in a country."""
    first = vocab.FIRST_NAMES[int(rng.integers(len(vocab.FIRST_NAMES)))]
    last = vocab.LAST_NAMES[int(rng.integers(len(vocab.LAST_NAMES)))]
    street = vocab.STREETS[int(rng.integers(len(vocab.STREETS)))]
    cities = vocab.CITIES.get(country, ("Capital City",))
    city = cities[int(rng.integers(len(cities)))]
    return (
        f"{first} {last}",
        f"{int(rng.integers(1, 200))} {street}",
        city,
        _fake_postcode(country, rng),
    )


def build_customers(config: SynthConfig) -> Customers:
    """Shoppers: segments, sign-up dates, tastes, latent factors, churn and gift occasions."""
    rng = stream(config.seed, "customers")
    n, days = config.customers, config.days
    counts = np.floor(np.array(SEGMENT_SHARES) * n).astype(int)
    counts[: n - counts.sum()] += 1  # the remainder, one each to the first segments
    segment = rng.permutation(np.repeat(np.arange(len(SEGMENTS)), counts)).astype(np.int64)
    start_us = day_start_us(config.first_day())
    # Most accounts predate the period (some by years: takeover targets); 15% join during it.
    joins = rng.random(n) < 0.15
    signup_day = np.where(joins, rng.uniform(0, days, n), -rng.uniform(1, 1000, n))
    signup_us = start_us + (signup_day * DAY_US).astype(np.int64)
    activity = np.array(SEGMENT_ACTIVITY)[segment] * rng.lognormal(0, 0.4, n)
    churn_day = np.where(segment == 3, rng.uniform(0.15, 0.75, n) * days, np.inf)
    gift_days = np.full((n, 2), -1, dtype=np.int64)
    gifts = np.flatnonzero(segment == 2)
    gift_days[gifts, 0] = rng.integers(0, days, len(gifts))
    second = gifts[rng.random(len(gifts)) < 0.3]
    gift_days[second, 1] = rng.integers(0, days, len(second))
    shares = np.array([leaf.share for leaf in vocab.LEAVES])
    alpha = TASTE_CONCENTRATION * len(shares) * shares / shares.sum()
    taste = rng.dirichlet(alpha, size=n) if n else np.zeros((0, len(shares)))
    # Gift buyers shop for others: their tastes are broad.
    if len(gifts):
        taste[gifts] = rng.dirichlet(alpha * 8, size=len(gifts))
    taste = np.maximum(taste, 1e-9)
    taste /= taste.sum(axis=1, keepdims=True)
    factors = rng.normal(0.0, 1.0 / math.sqrt(FACTORS), size=(n, FACTORS))
    codes = [c for c, _ in vocab.COUNTRIES]
    weights = np.array([w for _, w in vocab.COUNTRIES])
    country = [codes[int(k)] for k in rng.choice(len(codes), size=n, p=weights / weights.sum())]
    addresses = [fake_address(c, rng) for c in country]
    return Customers(
        segment=segment,
        signup_us=signup_us,
        activity=activity,
        churn_day=churn_day,
        gift_days=gift_days,
        taste=taste,
        factors=factors,
        price_sensitivity=np.array(SEGMENT_PRICE_SENSITIVITY)[segment],
        promo_affinity=np.array(SEGMENT_PROMO_AFFINITY)[segment],
        return_factor=np.array(SEGMENT_RETURN_FACTOR)[segment],
        country=country,
        full_name=[a[0] for a in addresses],
        line1=[a[1] for a in addresses],
        city=[a[2] for a in addresses],
        postcode=[a[3] for a in addresses],
        fraud_pattern=[""] * n,
    )


def calendar(start: date, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Day of week (0 = Monday) and day of year of each simulated day."""
    dates = [start + timedelta(days=t) for t in range(days)]
    return (
        np.array([d.weekday() for d in dates], dtype=np.int64),
        np.array([d.timetuple().tm_yday for d in dates], dtype=np.int64),
    )


def build_world(config: SynthConfig) -> World:
    """Draw the hidden world of a run from its config."""
    config = config.resolved()
    start = config.first_day()
    dow, doy = calendar(start, config.days)
    customers = build_customers(config)
    catalog = build_catalog(config, customers)
    prices = build_prices(config, catalog)
    expected = (
        catalog.base_rate[:, None]
        * seasonal(catalog.weekly_amplitude, catalog.weekly_peak.astype(float), dow, 7.0)
        * seasonal(catalog.yearly_amplitude, catalog.yearly_peak.astype(float), doy, 365.25)
        * (prices.cents / catalog.reference_cents[:, None]) ** catalog.elasticity[:, None]
        * np.where(prices.promo, catalog.promo_lift[:, None], 1.0)
    )
    traffic = (
        seasonal(
            np.array([TRAFFIC_WEEKLY_AMPLITUDE]), np.array([float(TRAFFIC_WEEKLY_PEAK)]), dow, 7.0
        )[0]
        * seasonal(
            np.array([TRAFFIC_YEARLY_AMPLITUDE]),
            np.array([float(TRAFFIC_YEARLY_PEAK)]),
            doy,
            365.25,
        )[0]
    )
    return World(
        config=config,
        start_us=day_start_us(start),
        dow=dow,
        doy=doy,
        traffic=traffic,
        catalog=catalog,
        prices=prices,
        expected=expected,
        customers=customers,
    )


def activity_on(customers: Customers, day: int, start_us: int) -> np.ndarray:
    """Each shopper's purchase activity on a day: signed up, not yet churned, gift spikes."""
    day_end = start_us + (day + 1) * DAY_US
    act = np.where(customers.signup_us < day_end, customers.activity, 0.0)
    gone = np.maximum(0.0, day - customers.churn_day)
    act = act * np.exp(-gone / CHURN_DECAY_DAYS)
    spike = ((customers.gift_days == day) | (customers.gift_days == day + 1)).any(axis=1)
    return np.where(spike & (act > 0), GIFT_SPIKE, act)
