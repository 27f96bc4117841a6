"""Injected fraud, planned before the shop runs, with its labels.

Three patterns, each a number of incidents:

- **card testing**: one or two brand-new accounts place a burst of small orders minutes
  apart, most of whose payments fail (several declined attempts each);
- **account takeover**: an old, honest account suddenly orders expensive resellable items to
  a country it never shipped to, under another name;
- **reshipping**: a ring of new accounts ships high-value resellable items to one forwarding
  address abroad over a few weeks.

Fraud orders take stock like any other (they are dropped when nothing is left) but are not
part of the products' demand process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cartwise.features.synth import vocab
from cartwise.features.synth.world import DAY_US, Customers, World, fake_address, stream

PATTERNS = ("card_testing", "account_takeover", "reshipping")
CARD_TESTING, ACCOUNT_TAKEOVER, RESHIPPING = 1, 2, 3  # pattern codes; 0 = honest
# Average fraud orders per incident, to turn a fraud rate into a number of incidents.
ORDERS_PER_INCIDENT = {CARD_TESTING: 15.0, ACCOUNT_TAKEOVER: 2.0, RESHIPPING: 8.0}
SHARE_OF_FRAUD = {CARD_TESTING: 0.5, ACCOUNT_TAKEOVER: 0.2, RESHIPPING: 0.3}


@dataclass
class FraudPlan:
    """Fraud orders (one row each) and their lines, plus one row per incident."""

    day: list[int] = field(default_factory=list)
    time_us: list[int] = field(default_factory=list)
    user: list[int] = field(default_factory=list)
    pattern: list[int] = field(default_factory=list)
    incident: list[int] = field(default_factory=list)
    n_failed: list[int] = field(default_factory=list)
    paid: list[bool] = field(default_factory=list)
    gap_us: list[int] = field(default_factory=list)
    address: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    line_order: list[int] = field(default_factory=list)
    line_product: list[int] = field(default_factory=list)
    line_qty: list[int] = field(default_factory=list)
    incidents: list[dict[str, object]] = field(default_factory=list)

    def add_order(
        self,
        *,
        time_us: int,
        start_us: int,
        user: int,
        pattern: int,
        incident: int,
        n_failed: int,
        paid: bool,
        gap_us: int,
        address: tuple[str, str, str, str, str],
        products: list[int],
        quantities: list[int],
    ) -> None:
        """Plan one fraud order and its lines."""
        index = len(self.day)
        self.day.append((time_us - start_us) // DAY_US)
        self.time_us.append(time_us)
        self.user.append(user)
        self.pattern.append(pattern)
        self.incident.append(incident)
        self.n_failed.append(n_failed)
        self.paid.append(paid)
        self.gap_us.append(gap_us)
        self.address.append(address)
        for product, qty in zip(products, quantities, strict=True):
            self.line_order.append(index)
            self.line_product.append(product)
            self.line_qty.append(qty)


def _append_accounts(
    customers: Customers,
    signup_us: list[int],
    pattern: str,
    addresses: list[tuple[str, str, str, str, str]],
) -> list[int]:
    """Add fraud accounts to the customers (no activity, no taste); returns their indexes."""
    n = len(signup_us)
    first = len(customers)
    leaves = customers.taste.shape[1]
    customers.segment = np.concatenate([customers.segment, np.full(n, -1, dtype=np.int64)])
    customers.signup_us = np.concatenate([customers.signup_us, np.array(signup_us, np.int64)])
    customers.activity = np.concatenate([customers.activity, np.zeros(n)])
    customers.churn_day = np.concatenate([customers.churn_day, np.full(n, np.inf)])
    customers.gift_days = np.concatenate([customers.gift_days, np.full((n, 2), -1, np.int64)])
    customers.taste = np.concatenate([customers.taste, np.full((n, leaves), 1.0 / leaves)])
    customers.factors = np.concatenate(
        [customers.factors, np.zeros((n, customers.factors.shape[1]))]
    )
    for name in ("price_sensitivity", "promo_affinity", "return_factor"):
        setattr(customers, name, np.concatenate([getattr(customers, name), np.ones(n)]))
    for full_name, line1, city, postcode, country in addresses:
        customers.full_name.append(full_name)
        customers.line1.append(line1)
        customers.city.append(city)
        customers.postcode.append(postcode)
        customers.country.append(country)
        customers.fraud_pattern.append(pattern)
    return list(range(first, first + n))


def _address(country: str, rng: np.random.Generator) -> tuple[str, str, str, str, str]:
    name, line1, city, postcode = fake_address(country, rng)
    return name, line1, city, postcode, country


def plan_fraud(world: World) -> FraudPlan:
    """Plan the fraud incidents of a run; appends the fraudsters' accounts to the customers."""
    config, catalog, customers = world.config, world.catalog, world.customers
    plan = FraudPlan()
    if config.fraud_rate <= 0 or config.days < 1 or len(customers) == 0:
        return plan
    rng = stream(config.seed, "fraud")
    days, start = config.days, world.start_us
    expected_orders = float(world.expected.sum()) * 0.95
    target = config.fraud_rate * expected_orders
    price = catalog.reference_cents
    cheap = np.flatnonzero(price <= np.quantile(price, 0.15))
    resellable = np.array([vocab.LEAVES[int(k)].resellable for k in catalog.leaf])
    pool = np.flatnonzero(resellable) if resellable.any() else np.arange(len(price))
    pricey = pool[price[pool] >= np.quantile(price[pool], 0.75)]
    valuable = pool[price[pool] >= np.quantile(price[pool], 0.6)]
    home_codes = [c for c, _ in vocab.COUNTRIES]
    incident = 0

    def count(pattern: int) -> int:
        share = SHARE_OF_FRAUD[pattern] * target / ORDERS_PER_INCIDENT[pattern]
        return max(1, round(share))

    for _ in range(count(CARD_TESTING)):
        incident += 1
        begin = start + int(rng.integers(0, days)) * DAY_US + int(rng.uniform(0, 20) * 3600e6)
        n_accounts = int(rng.integers(1, 3))
        addresses = [
            _address(home_codes[int(rng.integers(len(home_codes)))], rng) for _ in range(n_accounts)
        ]
        signup = [begin - int(rng.uniform(5, 120) * 60e6) for _ in range(n_accounts)]
        accounts = _append_accounts(customers, signup, PATTERNS[0], addresses)
        n_orders = int(rng.integers(6, 26))
        times = begin + np.cumsum(rng.uniform(1, 8, n_orders) * 60e6).astype(np.int64)
        for k in range(n_orders):
            who = int(rng.integers(n_accounts))
            plan.add_order(
                time_us=int(min(times[k], world.end_us - 3_600_000_000)),
                start_us=start,
                user=accounts[who],
                pattern=CARD_TESTING,
                incident=incident,
                n_failed=int(rng.integers(1, 5)),
                paid=bool(rng.random() < 0.2),
                gap_us=int(rng.uniform(5, 25) * 1e6),
                address=addresses[who],
                products=[int(cheap[int(rng.integers(len(cheap)))])],
                quantities=[1],
            )
        plan.incidents.append(
            {"incident": incident, "pattern": PATTERNS[0], "users": accounts, "begin_us": begin}
        )

    honest = np.flatnonzero(customers.segment >= 0)
    for _ in range(count(ACCOUNT_TAKEOVER)):
        incident += 1
        day = int(rng.integers(0, days))
        begin = start + day * DAY_US + int(rng.uniform(0, 22) * 3600e6)
        old = honest[customers.signup_us[honest] < begin - 180 * DAY_US]
        candidates = old if len(old) else honest[customers.signup_us[honest] < begin]
        if not len(candidates):
            continue
        victim = int(candidates[int(rng.integers(len(candidates)))])
        home = customers.country[victim]
        abroad = [c for c in vocab.FRAUD_COUNTRIES if c != home]
        address = _address(abroad[int(rng.integers(len(abroad)))], rng)
        n_orders = int(rng.integers(1, 4))
        for k in range(n_orders):
            n_lines = int(rng.integers(1, 3))
            plan.add_order(
                time_us=int(min(begin + k * int(rng.uniform(10, 90) * 60e6), world.end_us - 1)),
                start_us=start,
                user=victim,
                pattern=ACCOUNT_TAKEOVER,
                incident=incident,
                n_failed=int(rng.random() < 0.3),
                paid=bool(rng.random() < 0.9),
                gap_us=int(rng.uniform(20, 90) * 1e6),
                address=address,
                products=[int(p) for p in rng.choice(pricey, size=n_lines, replace=False)]
                if len(pricey) >= n_lines
                else [int(pricey[0])],
                quantities=[int(rng.integers(1, 3))] * min(n_lines, len(pricey)),
            )
        plan.incidents.append(
            {"incident": incident, "pattern": PATTERNS[1], "users": [victim], "begin_us": begin}
        )

    for _ in range(count(RESHIPPING)):
        incident += 1
        line1, city, postcode, country = vocab.RESHIP_ADDRESSES[
            int(rng.integers(len(vocab.RESHIP_ADDRESSES)))
        ]
        first_day = int(rng.integers(0, days))
        begin = start + first_day * DAY_US
        n_accounts = int(rng.integers(3, 6))
        addresses = [
            (fake_address(country, rng)[0], line1, city, postcode, country)
            for _ in range(n_accounts)
        ]
        signup = [begin - int(rng.uniform(0.1, 40) * DAY_US) for _ in range(n_accounts)]
        accounts = _append_accounts(customers, signup, PATTERNS[2], addresses)
        for who, account in enumerate(accounts):
            for _ in range(int(rng.integers(1, 4))):
                day = min(days - 1, first_day + int(rng.integers(0, 22)))
                when = start + day * DAY_US + int(rng.uniform(7, 23) * 3600e6)
                n_lines = int(rng.integers(1, 3))
                plan.add_order(
                    time_us=int(min(when, world.end_us - 1)),
                    start_us=start,
                    user=account,
                    pattern=RESHIPPING,
                    incident=incident,
                    n_failed=int(rng.random() < 0.1),
                    paid=True,
                    gap_us=int(rng.uniform(20, 90) * 1e6),
                    address=addresses[who],
                    products=[int(p) for p in rng.choice(valuable, size=n_lines)],
                    quantities=[int(q) for q in rng.integers(1, 4, size=n_lines)],
                )
        plan.incidents.append(
            {"incident": incident, "pattern": PATTERNS[2], "users": accounts, "begin_us": begin}
        )
    return plan
