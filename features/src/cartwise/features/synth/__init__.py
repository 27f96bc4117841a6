"""``cartwise data synth``: a deterministic generator of a living shop, with its hidden truth.

The same config (seed included) always gives the same shop. :func:`synth` generates a run
and writes it either straight to the Parquet facts layout (:mod:`cartwise.features.facts`)
or into the commerce database, and writes the ground truth beside it
(:mod:`.truth`). The pieces:

- :mod:`.world`: catalog, suppliers, prices and promotions, customers with hidden tastes;
- :mod:`.fraud`: injected card testing, account takeover and reshipping, labelled;
- :mod:`.simulate`: demand, stock, restocks, orders, payments and returns, day by day;
- :mod:`.shop` and :mod:`.sessions`: the tables and the shopper events;
- :mod:`.write_parquet`, :mod:`.write_db`, :mod:`.truth`: the writers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cartwise.features.synth.fraud import FraudPlan, plan_fraud
from cartwise.features.synth.sessions import build_events
from cartwise.features.synth.shop import Pricing, Shop, build_shop
from cartwise.features.synth.simulate import Simulation, simulate
from cartwise.features.synth.truth import summary, write_ground_truth
from cartwise.features.synth.world import SynthConfig, World, build_world

if TYPE_CHECKING:
    from sqlmodel import Session

Progress = Callable[[str, int, int], None]


@dataclass
class Generated:
    """One run in memory: the hidden world, the fraud plan, the simulation and the tables."""

    world: World
    fraud: FraudPlan
    sim: Simulation
    shop: Shop
    info: dict[str, Any]


@dataclass
class SynthResult:
    """What a run produced and wrote."""

    config: SynthConfig
    to: str
    out: Path
    truth: Path
    counts: dict[str, Any]
    written: dict[str, int] = field(default_factory=dict)  # rows written (db: newly inserted)
    elapsed: float = 0.0


def generate(
    config: SynthConfig, pricing: Pricing | None = None, progress: Progress | None = None
) -> Generated:
    """Generate a run in memory (nothing is written)."""
    pricing = pricing or Pricing()
    if progress:
        progress("building the world", 0, 1)
    world = build_world(config)
    fraud = plan_fraud(world)
    if progress:
        progress("building the world", 1, 1)
    sim = simulate(world, fraud, progress)
    if progress:
        progress("orders and events", 0, 2)
    shop = build_shop(world, sim, fraud, pricing)
    if progress:
        progress("orders and events", 1, 2)
    shop.events, shop.sessions = build_events(world, shop, sim)
    if progress:
        progress("orders and events", 2, 2)
    return Generated(world, fraud, sim, shop, summary(world, shop, shop.sessions, pricing, fraud))


def synth(
    config: SynthConfig | None = None,
    *,
    to: Literal["db", "parquet"] = "parquet",
    out: Path | str = Path("var/synth"),
    session: Session | None = None,
    pricing: Pricing | None = None,
    progress: Progress | None = None,
) -> SynthResult:
    """Generate a run and write it to Parquet (``out``) or the database (``session``).

    The ground truth always goes to ``<out>/ground_truth/``. Writing to the database is
    idempotent: a second run with the same config inserts nothing.
    """
    started = time.perf_counter()
    config = (config or SynthConfig()).resolved()
    out = Path(out)
    run = generate(config, pricing, progress)
    written: dict[str, int]
    db_ids: dict[str, dict[int, int]] | None = None
    if to == "parquet":
        from cartwise.features.synth.write_parquet import write_parquet

        written = write_parquet(run.shop, out, progress)
    elif to == "db":
        if session is None:
            raise ValueError("writing to the database needs a session")
        from cartwise.features.synth.write_db import write_db

        written, db_ids = write_db(session, run.shop, config.seed, progress)
    else:
        raise ValueError(f"unknown target {to!r}: expected 'db' or 'parquet'")
    run.info["target"] = to
    truth = write_ground_truth(out, run.world, run.sim, run.fraud, run.shop, run.info, db_ids)
    return SynthResult(
        config=config,
        to=to,
        out=out,
        truth=truth,
        counts=run.info["counts"],
        written=written,
        elapsed=time.perf_counter() - started,
    )


__all__ = ["Generated", "Pricing", "SynthConfig", "SynthResult", "generate", "synth"]
