"""Search and autocomplete routes with a double of the ML client, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from cartwise.commerce.catalog import service as catalog
from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.events.service import add_sink
from cartwise.commerce.experiments import service as experiments
from cartwise.commerce.experiments.models import ExperimentCreate, ExperimentExposure
from cartwise.commerce.inventory import service as inventory
from cartwise.serving.routes.search import highlight
from cartwise.serving.runtime.errors import Deadline
from tests.conftest import Account, assert_problem
from tests.test_serving.routes_support import (
    FakeML,
    category,
    fake_ml_fixture,  # noqa: F401  (fixture)
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
)

URL = "/api/v1/search"
SEARCH_MODEL = {"name": "cartwise-search", "version": 2, "alias": "champion"}


@pytest.fixture
def shop(session: Session) -> dict[str, Any]:
    """Mugs and chairs at known prices; one mug out of stock, one archived."""
    kitchen = category(session, "Kitchen")
    garden = category(session, "Garden")
    v = {
        "red": product(session, "Red Mug", cat=kitchen, price="8.00", description="ceramic"),
        "tall": product(session, "Tall <Mug> & Saucer", cat=kitchen, price="30.00"),
        "empty": product(session, "Blue Mug", cat=kitchen, price="9.00"),
        "gone": product(session, "Old Mug", cat=kitchen, price="5.00"),
        "chair": product(session, "Garden Chair", cat=garden, price="60.00", description="oak"),
    }
    ids = {name: variant.product_id for name, variant in v.items()}
    inventory.set_stock(session=session, sku=v["empty"].sku, on_hand=0)
    catalog.archive_product(session=session, product_id=ids["gone"])
    return {"ids": ids, "kitchen": kitchen, "garden": garden}


def _answer(*hits: tuple[int, list[str]], did_you_mean: str | None = None) -> Any:
    def answer(**kwargs: Any) -> dict[str, Any]:
        return {
            "query": kwargs["q"],
            "corrected": did_you_mean or kwargs["q"],
            "did_you_mean": did_you_mean,
            "total": len(hits),
            "items": [
                {"product_id": pid, "score": 1.0 - i / 10, "matched": matched}
                for i, (pid, matched) in enumerate(hits)
            ],
            "model": SEARCH_MODEL,
            "cached": False,
        }

    return answer


def _ids(response: Any) -> list[int]:
    return [item["product_id"] for item in response.json()["items"]]


def test_highlight_escapes_html_and_marks_word_starts() -> None:
    assert highlight("Tall <Mug> & Saucer", ["mug"]) == "Tall &lt;<mark>Mug</mark>&gt; &amp; Saucer"
    assert highlight("Mugs and smug", ["mug"]) == "<mark>Mug</mark>s and smug"
    assert highlight("<script>", []) == "&lt;script&gt;"
    assert highlight("Chair & chairs", ["CHAIR"]) == "<mark>Chair</mark> &amp; <mark>chair</mark>s"


def test_search_filters_enriches_pages_and_logs(
    ml: TestClient, ml_app: FastAPI, fake_ml: FakeML, shop: dict[str, Any], session: Session
) -> None:
    ids = shop["ids"]
    sunk: list[dict[str, Any]] = []
    add_sink(ml_app, sunk.extend)
    fake_ml.set(
        "search",
        "search",
        _answer(
            (ids["tall"], ["mug"]),
            (ids["gone"], ["mug"]),
            (ids["empty"], ["mug"]),
            (ids["red"], ["mug"]),
            did_you_mean="mug",
        ),
    )
    r = ml.get(URL, params={"q": "mugg", "per_page": 2, "session_id": "sess-9"})
    assert r.status_code == 200, r.text
    body = r.json()
    # Archived never; out of stock only when not filtering on stock.
    assert _ids(r) == [ids["tall"], ids["empty"]]
    assert body["total"] == 3
    assert body["did_you_mean"] == "mug"
    assert body["model"] == SEARCH_MODEL
    assert body["fallback"] is False
    assert body["items"][0]["highlight"] == "Tall &lt;<mark>Mug</mark>&gt; &amp; Saucer"
    assert body["items"][0]["price"] == "30.00"
    assert body["items"][1]["in_stock"] is False
    assert body["facets"]["stock"] == {"in_stock": 2, "out_of_stock": 1}
    assert body["facets"]["category"] == [
        {"value": "Kitchen", "slug": shop["kitchen"].slug, "count": 3}
    ]
    assert {b["label"]: b["count"] for b in body["facets"]["price"]} == {"under 10": 2, "25-50": 1}
    page2 = ml.get(URL, params={"q": "mugg", "per_page": 2, "page": 2})
    assert _ids(page2) == [ids["red"]]
    assert [i["position"] for i in body["items"]] == [0, 1]
    assert page2.json()["items"][0]["position"] == 2

    (call, _) = fake_ml.calls_to("search", "search")
    assert call.timeout_s == 0.3
    assert call.kwargs["q"] == "mugg"
    assert call.kwargs["offset"] == 0
    assert "allowed" not in call.kwargs["filters"]

    session.expire_all()
    events = session.exec(
        select(ShopperEvent).where(ShopperEvent.type == "search").order_by(col(ShopperEvent.id))
    ).all()
    assert [e.query for e in events] == ["mugg", "mugg"]
    assert events[0].session_id == "sess-9"
    assert events[0].properties == {
        "search_id": body["search_id"],
        "results": 3,
        "corrected": "mug",
    }
    assert events[1].properties["search_id"] == page2.json()["search_id"]
    assert events[1].session_id.startswith("search-")
    # The event sinks (the Feast session push) saw the search of the storefront session, as
    # for the events API; the one without a session has no session features to update.
    assert [row["properties"]["search_id"] for row in sunk] == [body["search_id"]]


def test_search_filters_by_stock_category_and_price(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]
) -> None:
    ids = shop["ids"]
    everything = [(pid, ["x"]) for pid in ids.values()]
    fake_ml.set("search", "search", _answer(*everything))
    r = ml.get(URL, params={"q": "x", "in_stock": "true"})
    assert r.status_code == 200, r.text
    assert sorted(_ids(r)) == sorted([ids["red"], ids["tall"], ids["chair"]])
    filters = fake_ml.calls[-1].kwargs["filters"]
    assert sorted(filters["allowed"]) == sorted([ids["red"], ids["tall"], ids["chair"]])
    r = ml.get(URL, params={"q": "x", "in_stock": "false"})
    assert _ids(r) == [ids["empty"]]
    r = ml.get(URL, params={"q": "x", "category": "garden"})
    assert _ids(r) == [ids["chair"]]
    assert fake_ml.calls[-1].kwargs["filters"]["category"] == "Garden"
    r = ml.get(URL, params={"q": "x", "min_price": "8.5", "max_price": "30"})
    assert sorted(_ids(r)) == sorted([ids["tall"], ids["empty"]])
    assert fake_ml.calls[-1].kwargs["filters"]["min_price"] == 8.5


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "a\x00b"},
        {"q": "mug", "page": 0},
        {"q": "mug", "per_page": 51},
        {"q": "mug", "min_price": "-1"},
        {"q": "mug", "min_price": "9", "max_price": "2"},
        {"q": "mug", "category": "nope"},
    ],
)
def test_bad_search_parameters_are_422(ml: TestClient, params: dict[str, Any]) -> None:
    assert_problem(ml.get(URL, params=params), 422)


@pytest.mark.parametrize("answer", [None, Deadline("slow"), "hang", RuntimeError("boom")])
def test_search_falls_back_to_bm25(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], answer: Any
) -> None:
    ids = shop["ids"]
    if answer is not None:
        fake_ml.set("search", "search", answer)
    r = ml.get(URL, params={"q": "oak chair"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is True
    assert body["fallback_reason"] in {"model_unavailable", "deadline", "error"}
    assert body["model"] is None
    assert _ids(r)[0] == ids["chair"]
    assert body["items"][0]["highlight"] == "Garden <mark>Chair</mark>"
    mugs = ml.get(URL, params={"q": "mug"})
    assert sorted(_ids(mugs)) == sorted([ids["red"], ids["tall"], ids["empty"]])
    assert ml.get(URL, params={"q": "zebra"}).json()["items"] == []


def test_bm25_baseline_variant_serves_lexical_results(
    ml: TestClient, fake_ml: FakeML, shop: dict[str, Any], session: Session, customer: Account
) -> None:
    ids = shop["ids"]
    experiment = experiments.create(
        session=session,
        data=ExperimentCreate.model_validate(
            {
                "name": "lexical",
                "surface": "search",
                "variants": [
                    {"name": "control", "model": "baseline:bm25", "share": 0.5},
                    {"name": "also", "model": "baseline:bm25", "share": 0.5},
                ],
            }
        ),
        actor_id=None,
    )
    experiments.clear_cache()
    r = ml.get(URL, params={"q": "chair"}, headers=customer.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert fake_ml.calls_to("search", "search") == []
    assert body["fallback"] is False
    assert body["model"]["name"] == "baseline:bm25"
    assert body["experiment"]["id"] == experiment.id
    assert _ids(r) == [ids["chair"]]
    session.expire_all()
    (exposure,) = session.exec(select(ExperimentExposure)).all()
    assert exposure.unit == f"u:{customer.id}"
    assert exposure.items == [ids["chair"]]


def test_suggest(ml: TestClient, fake_ml: FakeML, shop: dict[str, Any]) -> None:
    ids = shop["ids"]
    fake_ml.set(
        "search",
        "suggest",
        {
            "suggestions": [
                {"text": "red mug", "score": 3.0, "kind": "query", "product_id": None},
                {"text": "Old Mug", "score": 2.0, "kind": "product", "product_id": ids["gone"]},
                {"text": "Red Mug", "score": 1.0, "kind": "product", "product_id": ids["red"]},
            ],
            "model": SEARCH_MODEL,
            "cached": True,
        },
    )
    r = ml.get(f"{URL}/suggest", params={"q": "re", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["text"] for s in body["suggestions"]] == ["red mug", "Red Mug"]
    assert body["fallback"] is False
    call = fake_ml.calls_to("search", "suggest")[-1]
    assert call.timeout_s == 0.05
    assert call.kwargs == {"prefix": "re", "k": 5}
    # Down: prefix matches over the catalogue names, whole-name prefixes first.
    fake_ml.set("search", "suggest", "hang")
    r = ml.get(f"{URL}/suggest", params={"q": "mu"})
    body = r.json()
    assert body["fallback"] is True
    assert body["fallback_reason"] == "deadline"
    assert [s["text"] for s in body["suggestions"]] == [
        "Red Mug",
        "Blue Mug",
        "Tall <Mug> & Saucer",
    ]
    assert_problem(ml.get(f"{URL}/suggest", params={"q": ""}), 422)
    assert_problem(ml.get(f"{URL}/suggest", params={"q": "m", "k": 0}), 422)
