"""Recommendation routes with a double of the ML client, on SQLite and PostgreSQL.

What may be shown (active, in stock, allowed by the context) is the ingress's job whatever the
model answers; any model failure is served by popularity with ``fallback: true``, never a 5xx.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.catalog import service as catalog
from cartwise.commerce.experiments import models as _experiment_tables
from cartwise.commerce.experiments import service as experiments
from cartwise.commerce.experiments.models import ExperimentCreate, ExperimentExposure
from cartwise.commerce.inventory import service as inventory
from cartwise.serving.runtime.errors import Deadline, ModelUnavailable
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import add_item, guest_cart, user_cart
from tests.test_serving.routes_support import (
    MODEL,
    FakeML,
    category,
    fake_ml_fixture,  # noqa: F401  (fixture)
    items_answer,
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
    sell,
)

assert _experiment_tables.Experiment is not None  # registers the experiment tables
URL = "/api/v1/recommendations"


@pytest.fixture
def shop(session: Session) -> dict[str, Any]:
    """Two categories, five products, sales that rank them, one out of stock, one archived."""
    kitchen = category(session, "Kitchen")
    garden = category(session, "Garden")
    v = {
        "mug": product(session, "Red Mug", cat=kitchen, price="8.00"),
        "pan": product(session, "Iron Pan", cat=kitchen, price="30.00"),
        "bowl": product(session, "Bowl", cat=kitchen, price="12.00"),
        "rake": product(session, "Rake", cat=garden, price="20.00"),
        "hose": product(session, "Hose", cat=garden, price="25.00"),
    }
    for name, units in (("pan", 9), ("rake", 7), ("mug", 5), ("bowl", 3), ("hose", 1)):
        sell(session, v[name], units)
    ids = {name: variant.product_id for name, variant in v.items()}
    # Out of stock, and archived: both must never be shown.
    inventory.set_stock(session=session, sku=v["bowl"].sku, on_hand=0)
    catalog.archive_product(session=session, product_id=ids["hose"])
    return {"ids": ids, "variants": v, "kitchen": kitchen, "garden": garden}


def _ids(response: Any) -> list[int]:
    return [item["product_id"] for item in response.json()["items"]]


def test_model_items_are_filtered_and_enriched(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]
) -> None:
    ids = shop["ids"]
    fake_ml.set(
        "recommend",
        "recommend",
        items_answer(ids["bowl"], ids["hose"], 999_999, ids["mug"], ids["rake"], ids["mug"]),
    )
    r = ml.get(URL, params={"session_id": "s-1", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert _ids(r) == [ids["mug"], ids["rake"]]
    assert body["fallback"] is False
    assert body["fallback_reason"] is None
    assert body["model"] == MODEL
    assert body["strategy"] == "personal"
    assert body["experiment"] is None
    mug = body["items"][0]
    assert mug["name"] == "Red Mug"
    assert mug["price"] == "8.00"
    assert mug["category"] == "Kitchen"
    assert mug["in_stock"] is True
    (call,) = fake_ml.calls_to("recommend", "recommend")
    assert call.timeout_s == 0.15
    assert call.kwargs["session_id"] == "s-1"
    assert call.kwargs["k"] == 5
    assert call.kwargs["user_id"] is None
    assert sorted(call.kwargs["allowed"]) == sorted([ids["mug"], ids["pan"], ids["rake"]])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "model_unavailable"),
        (ModelUnavailable("replica died"), "model_unavailable"),
        (Deadline("too slow"), "deadline"),
        ("hang", "deadline"),
        (RuntimeError("boom"), "error"),
        (ValueError("bad k"), "invalid_request"),
        ({"items": "nonsense"}, "empty"),
    ],
)
def test_any_model_failure_falls_back_to_popularity(
    ml: TestClient,
    fake_ml: FakeML,
    shop: dict[str, Any],
    staff: Account,
    answer: Any,
    reason: str,
) -> None:
    ids = shop["ids"]
    if answer is not None:
        fake_ml.set("recommend", "recommend", answer)
    r = ml.get(URL, params={"k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is True
    assert body["fallback_reason"] == reason
    assert body["strategy"] == "popular"
    assert body["model"] is None
    # Best sellers first; out-of-stock and archived never appear.
    assert _ids(r) == [ids["pan"], ids["rake"], ids["mug"]]
    status = ml.get("/api/v1/ml/status", headers=staff.headers)
    assert status.status_code == 200, status.text
    assert status.json()["fallbacks"]["recommend"] == {reason: 1}


def test_stock_and_archive_changes_show_at_once(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session
) -> None:
    ids, v = shop["ids"], shop["variants"]
    fake_ml.set("recommend", "recommend", items_answer(ids["pan"], ids["rake"], ids["mug"]))
    assert _ids(ml.get(URL)) == [ids["pan"], ids["rake"], ids["mug"]]
    inventory.set_stock(session=session, sku=v["pan"].sku, on_hand=0)
    catalog.archive_product(session=session, product_id=ids["rake"])
    assert _ids(ml.get(URL)) == [ids["mug"]]
    assert ids["pan"] not in fake_ml.calls_to("recommend", "recommend")[-1].kwargs["allowed"]


def test_category_filter_and_unknown_category(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]
) -> None:
    ids = shop["ids"]
    r = ml.get(URL, params={"category": shop["garden"].slug})
    assert r.status_code == 200, r.text
    assert _ids(r) == [ids["rake"]]
    call = fake_ml.calls_to("recommend", "recommend")[-1]
    assert call.kwargs["allowed"] == [ids["rake"]]
    assert call.kwargs["category"] == "Garden"
    assert_problem(ml.get(URL, params={"category": "no-such-thing"}), 422)


def test_product_context(ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]) -> None:
    ids = shop["ids"]
    fake_ml.set("recommend", "recommend", items_answer(ids["mug"], ids["pan"], ids["rake"]))
    r = ml.get(URL, params={"context": "product", "product_id": ids["mug"]})
    assert r.status_code == 200, r.text
    assert ids["mug"] not in _ids(r)
    call = fake_ml.calls_to("recommend", "recommend")[-1]
    assert call.kwargs["context"] == "product"
    assert call.kwargs["product_id"] == ids["mug"]
    assert ids["mug"] not in call.kwargs["allowed"]
    assert_problem(ml.get(URL, params={"context": "product"}), 422)
    assert_problem(ml.get(URL, params={"context": "product", "product_id": ids["hose"]}), 404)
    assert_problem(ml.get(URL, params={"context": "product", "product_id": 123_456}), 404)


def test_cart_context_is_for_the_carts_owner_only(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], customer: Account, make_user: Any
) -> None:
    ids, v = shop["ids"], shop["variants"]
    cart_id, token = guest_cart(ml)
    add_item(ml, cart_id, token, v["mug"].sku)
    r = ml.get(URL, params={"context": "cart", "cart_id": cart_id}, headers=token)
    assert r.status_code == 200, r.text
    call = fake_ml.calls_to("recommend", "recommend")[-1]
    assert call.kwargs["cart"] == [ids["mug"]]
    assert ids["mug"] not in call.kwargs["allowed"]
    # Without the token, with a wrong one, or as someone else: the cart does not exist.
    assert_problem(ml.get(URL, params={"context": "cart", "cart_id": cart_id}), 404)
    wrong = {"X-Cart-Token": "nope"}
    assert_problem(ml.get(URL, params={"context": "cart", "cart_id": cart_id}, headers=wrong), 404)
    mine = user_cart(ml, customer.headers)
    other = make_user()
    assert_problem(
        ml.get(URL, params={"context": "cart", "cart_id": mine}, headers=other.headers), 404
    )
    assert (
        ml.get(
            URL, params={"context": "cart", "cart_id": mine}, headers=customer.headers
        ).status_code
        == 200
    )
    assert_problem(ml.get(URL, params={"context": "cart"}), 422)


def test_exclude_purchased_for_the_signed_in_shopper(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session, customer: Account
) -> None:
    ids, v = shop["ids"], shop["variants"]
    sell(session, v["pan"], 1, user_id=customer.id)
    r = ml.get(URL, params={"exclude_purchased": "true"}, headers=customer.headers)
    assert r.status_code == 200, r.text
    assert ids["pan"] not in _ids(r)
    call = fake_ml.calls_to("recommend", "recommend")[-1]
    assert call.kwargs["user_id"] == customer.id
    assert call.kwargs["exclude_purchased"] is True
    assert ids["pan"] not in call.kwargs["allowed"]
    # Without the flag the purchase is allowed again.
    ml.get(URL, headers=customer.headers)
    assert ids["pan"] in fake_ml.calls_to("recommend", "recommend")[-1].kwargs["allowed"]


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 51},
        {"context": "checkout"},
        {"product_id": 0},
        {"session_id": ""},
        {"exclude_purchased": "maybe"},
    ],
)
def test_bad_parameters_are_422(ml: TestClient, params: dict[str, Any]) -> None:
    assert_problem(ml.get(URL, params=params), 422)


def test_similar_products(ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]) -> None:
    ids = shop["ids"]
    fake_ml.set(
        "recommend",
        "similar",
        items_answer(ids["pan"], ids["mug"], ids["bowl"], strategy="similar"),
    )
    r = ml.get(f"/api/v1/products/{ids['mug']}/similar", params={"k": 3})
    assert r.status_code == 200, r.text
    assert _ids(r) == [ids["pan"]]
    assert r.json()["strategy"] == "similar"
    call = fake_ml.calls_to("recommend", "similar")[-1]
    assert call.kwargs["product_id"] == ids["mug"]
    assert call.kwargs["k"] == 3
    assert_problem(ml.get(f"/api/v1/products/{ids['hose']}/similar"), 404)
    assert_problem(ml.get("/api/v1/products/987654/similar"), 404)
    # Down: same-category best sellers first.
    fake_ml.set("recommend", "similar", ModelUnavailable("down"))
    r = ml.get(f"/api/v1/products/{ids['mug']}/similar")
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True
    assert _ids(r) == [ids["pan"], ids["rake"]]


def test_cart_complements(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], customer: Account
) -> None:
    ids, v = shop["ids"], shop["variants"]
    cart_id, token = guest_cart(ml)
    url = f"/api/v1/carts/{cart_id}/complements"
    empty = ml.get(url, headers=token)
    assert empty.status_code == 200, empty.text
    assert empty.json()["strategy"] == "popular"
    assert empty.json()["fallback"] is False
    add_item(ml, cart_id, token, v["rake"].sku)
    fake_ml.set(
        "recommend", "complements", items_answer(ids["rake"], ids["mug"], strategy="complements")
    )
    r = ml.get(url, headers=token)
    assert r.status_code == 200, r.text
    assert _ids(r) == [ids["mug"]]
    assert fake_ml.calls_to("recommend", "complements")[-1].kwargs["product_ids"] == [ids["rake"]]
    assert_problem(ml.get(url), 404)
    assert_problem(ml.get(url, headers=customer.headers), 404)
    fake_ml.set("recommend", "complements", Deadline("slow"))
    r = ml.get(url, headers=token)
    assert r.status_code == 200
    assert r.json()["fallback_reason"] == "deadline"
    assert ids["rake"] not in _ids(r)


def _start_experiment(session: Session, surface: str, variants: list[dict[str, Any]]) -> str:
    experiment = experiments.create(
        session=session,
        data=ExperimentCreate.model_validate(
            {"name": f"exp-{surface}", "surface": surface, "variants": variants}
        ),
        actor_id=None,
    )
    experiments.clear_cache()
    return experiment.id


def test_experiment_assignment_is_sticky_and_exposures_are_logged(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session, customer: Account
) -> None:
    ids = shop["ids"]
    fake_ml.set("recommend", "recommend", items_answer(ids["pan"], ids["mug"]))
    exp_id = _start_experiment(
        session,
        "recommendations",
        [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "challenger", "share": 0.5},
        ],
    )
    seen: dict[str, set[str]] = {}
    for i in range(12):
        for _ in range(2):
            r = ml.get(URL, params={"session_id": f"sess-{i}"})
            assert r.status_code == 200, r.text
            exp = r.json()["experiment"]
            assert exp["id"] == exp_id
            assert exp["name"] == "exp-recommendations"
            seen.setdefault(f"sess-{i}", set()).add(exp["variant"])
            model = fake_ml.calls[-1].kwargs["variant"]
            assert model == {"control": "champion", "treatment": "challenger"}[exp["variant"]]
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {v for vs in seen.values() for v in vs} == {"control", "treatment"}
    signed = ml.get(URL, headers=customer.headers)
    assert signed.json()["experiment"] is not None
    # No user and no session: no unit, so no experiment and no exposure.
    assert ml.get(URL).json()["experiment"] is None

    session.expire_all()
    rows = session.exec(select(ExperimentExposure)).all()
    assert len(rows) == 25
    by_unit: dict[str, set[str]] = {}
    for row in rows:
        by_unit.setdefault(row.unit, set()).add(row.variant)
        assert row.experiment_id == exp_id
        assert row.items == [ids["pan"], ids["mug"]]
    assert f"u:{customer.id}" in by_unit
    assert by_unit["s:sess-3"] == seen["sess-3"]


def test_popularity_baseline_variant_is_served_when_the_model_is_down(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session
) -> None:
    ids = shop["ids"]
    _start_experiment(
        session,
        "recommendations",
        [
            {"name": "control", "model": "baseline:popularity", "share": 0.5},
            {"name": "other", "model": "baseline:popularity", "share": 0.5},
        ],
    )
    r = ml.get(URL, params={"session_id": "abc"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert fake_ml.calls_to("recommend", "recommend")[-1].kwargs["variant"] == "baseline:popularity"
    assert body["fallback"] is True
    assert body["experiment"]["variant"] in {"control", "other"}
    assert _ids(r) == [ids["pan"], ids["rake"], ids["mug"]]


def test_no_exposure_is_logged_when_the_variant_could_not_be_served(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session
) -> None:
    _start_experiment(
        session,
        "recommendations",
        [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "challenger", "share": 0.5},
        ],
    )
    fake_ml.set("recommend", "recommend", ModelUnavailable("no challenger"))
    r = ml.get(URL, params={"session_id": "s-down"})
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True
    assert r.json()["experiment"]["variant"] in {"control", "treatment"}
    session.expire_all()
    assert session.exec(select(ExperimentExposure)).all() == []
