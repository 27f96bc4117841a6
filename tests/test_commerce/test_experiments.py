"""A/B experiments: the staff API, sticky assignment, exposure logging and SQL attribution."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlmodel import Session, col, select

from cartwise.commerce.customers.models import User
from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.experiments import models as _experiment_tables  # registers the tables
from cartwise.commerce.experiments import service, stats
from cartwise.commerce.experiments.models import Experiment, ExperimentExposure, Surface, Variant
from cartwise.commerce.orders.models import Order
from tests.conftest import Account, assert_problem

URL = "/api/v1/experiments"
assert _experiment_tables.Experiment is Experiment


@pytest.fixture(autouse=True)
def _fresh_running_cache() -> Iterator[None]:
    service.clear_cache()
    yield
    service.clear_cache()


def spec(name: str | None = None, surface: str = "recommendations", **extra: Any) -> dict[str, Any]:
    """A valid 50/50 experiment body."""
    body: dict[str, Any] = {
        "name": name or f"exp-{uuid.uuid4().hex[:8]}",
        "surface": surface,
        "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "challenger", "share": 0.5},
        ],
    }
    body.update(extra)
    return body


def make_experiment(
    variants: Sequence[tuple[str, float]], *, exp_id: str | None = None
) -> Experiment:
    """An unsaved experiment with the given (name, share) variants, control first."""
    return Experiment(
        id=exp_id or uuid.uuid4().hex,
        name="x",
        surface=Surface.recommendations,
        variants=[
            Variant(name=n, model="champion", share=s).model_dump(mode="json") for n, s in variants
        ],
    )


# --- helpers shared with the simulation test -------------------------------------------------


def add_users(session: Session, n: int) -> list[int]:
    """Insert n customers straight into the table; their ids."""
    tag = uuid.uuid4().hex[:8]
    rows = [
        {
            "email": f"sim-{tag}-{i}@example.com",
            "full_name": "",
            "hashed_password": "x",
            "role": "customer",
            "is_active": True,
            "created_at": datetime.now(UTC),
        }
        for i in range(n)
    ]
    ids = list(session.scalars(insert(User).returning(col(User.id)), rows))
    session.commit()
    return [int(i) for i in ids if i is not None]


def add_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Insert shopper events with explicit receive times (``at``)."""
    rows = [
        {
            "event_id": str(uuid.uuid4()),
            "type": e["type"],
            "session_id": e.get("session_id") or f"s-{uuid.uuid4().hex[:8]}",
            "user_id": e.get("user_id"),
            "product_id": e.get("product_id"),
            "sku": None,
            "query": e.get("query"),
            "position": e.get("position"),
            "properties": e.get("properties", {}),
            "client_ts": e["at"],
            "received_at": e["at"],
        }
        for e in events
    ]
    if rows:
        session.execute(insert(ShopperEvent), rows)
        session.commit()


def add_orders(session: Session, orders: Sequence[dict[str, Any]]) -> None:
    """Insert orders (user_id, total, status, at) with nothing else attached."""
    rows = [
        {
            "id": uuid.uuid4().hex,
            "user_id": o["user_id"],
            "email": "o@example.com",
            "status": o.get("status", "paid"),
            "currency": "GBP",
            "subtotal": Decimal(str(o["total"])),
            "discount": Decimal("0"),
            "shipping": Decimal("0"),
            "tax": Decimal("0"),
            "total": Decimal(str(o["total"])),
            "refunded_amount": Decimal("0"),
            "shipping_address": {},
            "payment_provider": "manual",
            "created_at": o["at"],
            "updated_at": o["at"],
        }
        for o in orders
    ]
    if rows:
        session.execute(insert(Order), rows)
        session.commit()


def add_exposure(
    session: Session,
    experiment: Experiment,
    variant: str,
    unit: str,
    items: Sequence[int],
    at: datetime,
    *,
    user_id: int | None = None,
    session_id: str | None = None,
) -> None:
    """Log one exposure at a given time."""
    row = service.exposure_row(
        experiment=experiment,
        variant=variant,
        unit=unit,
        user_id=user_id,
        session_id=session_id,
        request_id=None,
        items=items,
        created_at=at,
    )
    service.log_exposures(session=session, rows=[row])


# --- the staff API ----------------------------------------------------------------------------


def test_staff_create_list_read_stop(client: TestClient, staff: Account) -> None:
    r = client.post(URL, json=spec("reco-1", description="new ranker"), headers=staff.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "running"
    assert created["created_by"] == staff.id
    assert created["guard"] == {"min_exposures": 200, "alpha": 0.01}
    assert [v["name"] for v in created["variants"]] == ["control", "treatment"]
    assert all(v["status"] == "active" for v in created["variants"])

    listed = client.get(URL, headers=staff.headers).json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert client.get(URL, params={"status": "stopped"}, headers=staff.headers).json() == []
    read = client.get(f"{URL}/{created['id']}", headers=staff.headers)
    assert read.status_code == 200
    assert read.json()["name"] == "reco-1"

    stopped = client.post(
        f"{URL}/{created['id']}/stop", json={"reason": "enough data"}, headers=staff.headers
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopped"
    assert stopped.json()["stopped_reason"] == "enough data"
    assert stopped.json()["stopped_at"] is not None
    again = client.post(f"{URL}/{created['id']}/stop", headers=staff.headers)
    assert_problem(again, 409)


def test_one_running_experiment_per_surface(client: TestClient, staff: Account) -> None:
    first = client.post(URL, json=spec(), headers=staff.headers)
    assert first.status_code == 201
    body = assert_problem(client.post(URL, json=spec(), headers=staff.headers), 409)
    assert body["running_experiment_id"] == first.json()["id"]
    # Another surface is independent.
    search = spec(
        surface="search",
        variants=[
            {"name": "control", "model": "champion", "share": 0.8},
            {"name": "lexical", "model": "baseline:bm25", "share": 0.2},
        ],
    )
    assert client.post(URL, json=search, headers=staff.headers).status_code == 201
    # Once stopped, the surface is free again; names stay unique forever.
    client.post(f"{URL}/{first.json()['id']}/stop", headers=staff.headers)
    assert client.post(URL, json=spec(), headers=staff.headers).status_code == 201
    assert_problem(client.post(URL, json=spec(first.json()["name"]), headers=staff.headers), 409)


@pytest.mark.parametrize(
    "variants",
    [
        [{"name": "a", "model": "champion", "share": 1.0}],
        [
            {"name": "a", "model": "champion", "share": 0.5},
            {"name": "b", "model": "v2", "share": 0.4},
        ],
        [
            {"name": "a", "model": "champion", "share": 0.5},
            {"name": "a", "model": "v2", "share": 0.5},
        ],
        [
            {"name": "a", "model": "champion", "share": 1.0},
            {"name": "b", "model": "v2", "share": 0},
        ],
        [
            {"name": "a", "model": "champion", "share": 0.5},
            {"name": "b", "model": "gpt", "share": 0.5},
        ],
        [
            {"name": "a", "model": "champion", "share": 0.5},
            {"name": "b", "model": "baseline:bm25", "share": 0.5},
        ],
        [{"name": f"v{i}", "model": "champion", "share": 1 / 6} for i in range(6)],
        [
            {"name": "a b", "model": "champion", "share": 0.5},
            {"name": "b", "model": "v1", "share": 0.5},
        ],
    ],
    ids=["one", "sum", "dup", "zero", "model", "baseline-surface", "six", "name"],
)
def test_bad_variants_are_422(
    client: TestClient, staff: Account, variants: list[dict[str, Any]]
) -> None:
    assert_problem(client.post(URL, json=spec(variants=variants), headers=staff.headers), 422)


def test_shares_within_tolerance_and_five_variants_accepted(
    client: TestClient, staff: Account
) -> None:
    variants = [{"name": f"arm{i}", "model": f"v{i + 1}", "share": 0.2} for i in range(5)]
    variants[0]["share"] = 0.2 + 5e-7
    r = client.post(URL, json=spec(variants=variants), headers=staff.headers)
    assert r.status_code == 201, r.text


def test_bad_guard_and_unknown_fields_are_422(client: TestClient, staff: Account) -> None:
    assert_problem(client.post(URL, json=spec(guard={"alpha": 0.9}), headers=staff.headers), 422)
    assert_problem(client.post(URL, json=spec(owner="me"), headers=staff.headers), 422)
    assert_problem(client.post(URL, json=spec(surface="emails"), headers=staff.headers), 422)


def test_access_control(client: TestClient, customer: Account, staff: Account) -> None:
    assert_problem(client.post(URL, json=spec()), 401)
    assert_problem(client.get(URL), 401)
    assert_problem(client.post(URL, json=spec(), headers=customer.headers), 403)
    assert_problem(client.get(URL, headers=customer.headers), 403)
    created = client.post(URL, json=spec(), headers=staff.headers).json()
    for path in ("", "/results"):
        assert_problem(client.get(f"{URL}/{created['id']}{path}", headers=customer.headers), 403)
    assert_problem(client.post(f"{URL}/{created['id']}/stop", headers=customer.headers), 403)


def test_unknown_experiment_is_404(client: TestClient, staff: Account) -> None:
    missing = uuid.uuid4().hex
    assert_problem(client.get(f"{URL}/{missing}", headers=staff.headers), 404)
    assert_problem(client.get(f"{URL}/{missing}/results", headers=staff.headers), 404)
    assert_problem(client.post(f"{URL}/{missing}/stop", headers=staff.headers), 404)
    assert_problem(client.get(f"{URL}/not-hex!", headers=staff.headers), 422)


def test_results_of_an_experiment_without_exposures(client: TestClient, staff: Account) -> None:
    created = client.post(URL, json=spec(), headers=staff.headers).json()
    r = client.get(f"{URL}/{created['id']}/results", headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["exposures"] for v in body["variants"]] == [0, 0]
    assert body["variants"][0]["ctr"] == {"value": None, "ci_low": None, "ci_high": None}
    assert body["guard"]["stopped"] == []
    assert body["guard"]["decisions"][0]["checked"] is False


# --- statistics ---------------------------------------------------------------------------------


def test_statistics_match_textbook_values() -> None:
    assert stats.wilson(0, 10) == stats.Interval(0.0, 0.0, pytest.approx(0.27753, abs=1e-5))
    half = stats.wilson(5, 10)
    assert (half.low, half.high) == (
        pytest.approx(0.23659, abs=1e-5),
        pytest.approx(0.76341, abs=1e-5),
    )
    assert stats.wilson(0, 0) == stats.NONE

    # 10% vs 13% on 1,000 each: z = 0.03 / 0.014267 = 2.103, two-sided p = 0.0355.
    cmp = stats.compare_proportions(100, 1000, 130, 1000)
    assert cmp.p_value == pytest.approx(0.03549, abs=1e-4)
    assert cmp.absolute.value == pytest.approx(0.03)
    assert cmp.absolute.low == pytest.approx(0.00207, abs=1e-4)
    assert cmp.absolute.high == pytest.approx(0.05793, abs=1e-4)
    assert cmp.relative.value == pytest.approx(0.30)
    assert cmp.relative.low is not None
    assert 0 < cmp.relative.low < 0.30 < (cmp.relative.high or 0)
    assert stats.one_sided_worse(100, 1000, 130, 1000) == pytest.approx(0.98226, abs=1e-4)
    assert stats.one_sided_worse(130, 1000, 100, 1000) == pytest.approx(0.01774, abs=1e-4)
    assert stats.compare_proportions(0, 100, 0, 100).p_value is None

    # Welch on [1, 2, 3, 4] vs [2, 4, 6, 8]: se = sqrt(1.667/4 + 6.667/4) = 1.443, z = 1.732.
    means = stats.compare_means(10, 30, 4, 20, 120, 4)
    assert means.absolute.value == pytest.approx(2.5)
    assert means.p_value == pytest.approx(0.08326, abs=1e-4)
    assert means.absolute.low == pytest.approx(2.5 - 1.95996 * 1.44338, abs=1e-3)
    assert stats.compare_means(5, 25, 1, 5, 25, 1).p_value is None


# --- assignment ---------------------------------------------------------------------------------


def test_assignment_is_sticky_and_respects_shares() -> None:
    experiment = make_experiment([("control", 0.5), ("b", 0.3), ("c", 0.2)])
    units = [f"s:{i}" for i in range(10_000)]
    first = {u: service.assign(experiment, u).name for u in units}
    assert all(service.assign(experiment, u).name == first[u] for u in units[:500])
    counts = Counter(first.values())
    assert abs(counts["control"] / 10_000 - 0.5) < 0.02
    assert abs(counts["b"] / 10_000 - 0.3) < 0.02
    assert abs(counts["c"] / 10_000 - 0.2) < 0.02
    # Another experiment id reshuffles units (independent randomisation per experiment).
    other = make_experiment([("control", 0.5), ("b", 0.3), ("c", 0.2)])
    moved = sum(service.assign(other, u).name != first[u] for u in units)
    assert moved > 3_000


def test_assignment_is_the_same_in_another_process() -> None:
    experiment = make_experiment([("control", 0.5), ("treatment", 0.5)], exp_id="ab" * 16)
    units = [f"u:{i}" for i in range(50)] + [f"s:sess-{i}" for i in range(50)]
    here = [service.assign(experiment, u).name for u in units]
    code = (
        "import sys, json\n"
        "from cartwise.commerce.experiments import service\n"
        "from cartwise.commerce.experiments.models import Experiment\n"
        "exp = Experiment(id='ab' * 16, name='x', surface='recommendations', variants=[\n"
        " {'name': 'control', 'model': 'champion', 'share': 0.5},\n"
        " {'name': 'treatment', 'model': 'challenger', 'share': 0.5}])\n"
        "units = json.loads(sys.stdin.read())\n"
        "print(json.dumps([service.assign(exp, u).name for u in units]))\n"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(units),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout) == here
    assert set(here) == {"control", "treatment"}


def test_stopping_a_variant_moves_only_its_units_to_control() -> None:
    experiment = make_experiment([("control", 0.4), ("b", 0.3), ("c", 0.3)])
    units = [f"s:{i}" for i in range(5_000)]
    before = {u: service.assign(experiment, u).name for u in units}
    variants = [dict(v) for v in experiment.variants]
    variants[1]["status"] = "stopped"
    experiment.variants = variants
    after = {u: service.assign(experiment, u).name for u in units}
    for u in units:
        if before[u] == "b":
            assert after[u] == "control"
        else:
            assert after[u] == before[u]
    assert "b" not in after.values()


def test_running_for_is_cached_and_refreshed_on_change(
    client: TestClient, session: Session, staff: Account
) -> None:
    assert service.running_for(session, "recommendations") is None
    created = client.post(URL, json=spec(), headers=staff.headers).json()
    # The API runs in this process, so its create already dropped the cached "none".
    running = service.running_for(session, "recommendations")
    assert running is not None
    assert running.id == created["id"]
    assert service.running_for(session, "search") is None
    assert service.assign(running, "u:1").name in {"control", "treatment"}
    # A change made elsewhere (another replica) is seen once the few-second cache expires.
    session.execute(
        Experiment.__table__.update().values(status="stopped")  # type: ignore[attr-defined]
    )
    session.commit()
    assert service.running_for(session, "recommendations") is not None
    service.clear_cache()
    assert service.running_for(session, "recommendations") is None


def test_known_idle_only_when_the_cache_knows_no_experiment_runs(
    client: TestClient, session: Session, staff: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = session.get_bind().engine
    service.clear_cache()
    assert not service.known_idle(engine, "recommendations")  # cold: ask
    assert service.running_for(session, "recommendations") is None
    assert service.known_idle(engine, "recommendations")
    assert not service.known_idle(engine, "search")  # each surface on its own
    client.post(URL, json=spec(), headers=staff.headers)
    assert not service.known_idle(engine, "recommendations")  # the create dropped it
    assert service.running_for(session, "recommendations") is not None
    assert not service.known_idle(engine, "recommendations")  # one runs
    service.clear_cache()
    assert service.running_for(session, "search") is None
    monkeypatch.setattr(service, "RUNNING_TTL_S", 0.0)
    assert not service.known_idle(engine, "search")  # stale: ask again


def test_log_exposure_trims_items(client: TestClient, session: Session, staff: Account) -> None:
    created = client.post(URL, json=spec(), headers=staff.headers).json()
    experiment = service.running_for(session, "recommendations")
    assert experiment is not None
    assert experiment.id == created["id"]
    variant = service.assign(experiment, "s:abc")
    service.log_exposure(
        session=session,
        experiment=experiment,
        variant=variant,
        unit="s:abc",
        user_id=None,
        session_id="abc",
        request_id="req-1",
        items=list(range(1, 151)),
    )
    row = session.exec(select(ExperimentExposure)).one()
    assert row.variant == variant.name
    assert row.items == list(range(1, 101))
    assert (row.unit, row.session_id, row.request_id) == ("s:abc", "abc", "req-1")


# --- attribution -------------------------------------------------------------------------------


def test_attribution_by_window_items_and_next_exposure(
    client: TestClient, session: Session, staff: Account
) -> None:
    created = client.post(URL, json=spec(), headers=staff.headers).json()
    experiment = service.get(session=session, experiment_id=created["id"])
    alice, bob = add_users(session, 2)
    t0 = datetime.now(UTC) - timedelta(days=3)
    m = timedelta(minutes=1)
    h = timedelta(hours=1)

    # Alice (user unit, control): two exposures three hours apart.
    add_exposure(
        session, experiment, "control", f"u:{alice}", [11, 12], t0, user_id=alice, session_id="sa"
    )
    add_exposure(
        session,
        experiment,
        "control",
        f"u:{alice}",
        [13],
        t0 + 3 * h,
        user_id=alice,
        session_id="sa2",
    )
    # Bob (user unit, treatment): one exposure, nothing relevant happens.
    add_exposure(
        session, experiment, "treatment", f"u:{bob}", [11], t0, user_id=bob, session_id="sb"
    )
    # An anonymous session (treatment).
    add_exposure(session, experiment, "treatment", "s:anon", [21, 22], t0, session_id="anon")
    add_events(
        session,
        [
            # Alice's first exposure: a click on a shown item from another session of hers.
            {
                "type": "click",
                "user_id": alice,
                "session_id": "other",
                "product_id": 11,
                "at": t0 + m,
            },
            # An add-to-cart of an item that was not shown does not count.
            {
                "type": "add_to_cart",
                "user_id": alice,
                "session_id": "sa",
                "product_id": 99,
                "at": t0 + 2 * m,
            },
            # A click before the exposure does not count.
            {"type": "click", "user_id": bob, "session_id": "sb", "product_id": 11, "at": t0 - m},
            # After Alice's second exposure: the cart belongs to it (item 13), not the first.
            {
                "type": "add_to_cart",
                "user_id": alice,
                "session_id": "sa2",
                "product_id": 13,
                "at": t0 + 4 * h,
            },
            {
                "type": "click",
                "user_id": alice,
                "session_id": "sa2",
                "product_id": 12,
                "at": t0 + 4 * h,
            },
            # The anonymous session: add-to-cart of a shown item and a purchase with revenue.
            {"type": "add_to_cart", "session_id": "anon", "product_id": 22, "at": t0 + 5 * m},
            {
                "type": "purchase",
                "session_id": "anon",
                "properties": {"revenue": 12.5},
                "at": t0 + h,
            },
            {
                "type": "purchase",
                "session_id": "anon",
                "properties": {"revenue": "lots"},
                "at": t0 + 2 * h,
            },
            # A click 25 hours later is outside the window.
            {"type": "click", "session_id": "anon", "product_id": 21, "at": t0 + 25 * h},
        ],
    )
    add_orders(
        session,
        [
            {"user_id": alice, "total": "30.00", "at": t0 + 2 * h},  # first exposure
            {"user_id": alice, "total": "8.00", "status": "pending_payment", "at": t0 + 5 * h},
            {"user_id": alice, "total": "20.00", "status": "delivered", "at": t0 + 6 * h},
            {"user_id": bob, "total": "99.00", "at": t0 - h},  # before his exposure
        ],
    )

    totals = service.attribute(session, experiment.id, now=datetime.now(UTC))
    control, treatment = totals["control"], totals["treatment"]
    assert (control.exposures, control.units) == (2, 1)
    assert (control.clicks, control.carts, control.conversions) == (1, 1, 2)
    assert control.revenue == pytest.approx(50.0)
    assert control.revenue_sq == pytest.approx(30.0**2 + 20.0**2)
    assert (treatment.exposures, treatment.units) == (2, 2)
    assert (treatment.clicks, treatment.carts, treatment.conversions) == (0, 1, 1)
    assert treatment.revenue == pytest.approx(12.5)

    # Results as of just after t0 only see what had happened by then.
    early = service.attribute(session, experiment.id, now=t0 + 30 * m)
    assert early["control"].exposures == 1
    assert (early["control"].clicks, early["control"].conversions) == (1, 0)

    r = client.get(f"{URL}/{experiment.id}/results", headers=staff.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    by_name = {v["name"]: v for v in body["variants"]}
    assert by_name["control"]["is_control"]
    assert by_name["control"]["lift"] is None
    assert by_name["control"]["conversion_rate"]["value"] == pytest.approx(1.0)
    assert by_name["treatment"]["ctr"]["value"] == 0.0
    assert by_name["treatment"]["revenue_per_exposure"]["value"] == pytest.approx(6.25)
    lift = by_name["treatment"]["lift"]["conversion_rate"]
    assert lift["absolute"] == pytest.approx(-0.5)
    assert lift["relative"] == pytest.approx(-0.5)
    assert 0 < lift["p_value"] <= 1
    # Below min_exposures the guard only waits.
    assert body["guard"]["stopped"] == []
    assert "waiting" in body["guard"]["decisions"][0]["reason"]


def test_exposures_of_other_experiments_do_not_interfere(
    client: TestClient, session: Session, staff: Account
) -> None:
    a = service.get(
        session=session,
        experiment_id=client.post(URL, json=spec(), headers=staff.headers).json()["id"],
    )
    search = spec(surface="search")
    b = service.get(
        session=session,
        experiment_id=client.post(URL, json=search, headers=staff.headers).json()["id"],
    )
    t0 = datetime.now(UTC) - timedelta(hours=5)
    add_exposure(session, a, "control", "s:x", [1], t0, session_id="x")
    # The same unit in another experiment does not end a's exposure window.
    add_exposure(session, b, "control", "s:x", [2], t0 + timedelta(minutes=1), session_id="x")
    add_events(
        session,
        [{"type": "click", "session_id": "x", "product_id": 1, "at": t0 + timedelta(hours=1)}],
    )
    assert service.attribute(session, a.id, now=datetime.now(UTC))["control"].clicks == 1
    assert service.attribute(session, b.id, now=datetime.now(UTC))["control"].clicks == 0
