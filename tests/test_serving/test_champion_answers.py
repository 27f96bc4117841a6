"""Answers reused at the ingress (``ChampionAnswers``): only while the area serves their version.

The unit tests drive ``call_ml`` with the MLClient double; the route tests check which routes
reuse what over HTTP: a signed-in home page, a product page and a search are reused, a home page
with a live session never is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.catalog.models import Variant
from cartwise.commerce.inventory import service as inventory
from cartwise.serving.routes.common import ChampionAnswers, MLOutcome, call_ml
from cartwise.serving.runtime.errors import ModelUnavailable
from tests.conftest import Account
from tests.test_serving.routes_support import (
    MODEL,
    FakeML,
    category,
    fake_ml_fixture,  # noqa: F401  (fixture)
    items_answer,
    ml_app_fixture,  # noqa: F401  (fixture)
    ml_fixture,  # noqa: F401  (fixture)
    product,
)

URL = "/api/v1/recommendations"


class _State:
    """What ``call_ml`` reads of the ingress state."""

    def __init__(self, ml: FakeML, answers: ChampionAnswers) -> None:
        self.ml = ml
        self.answers = answers


def _versioned(version: int) -> dict[str, Any]:
    return {"model": {**MODEL, "version": version}}


def _replica(version: Any) -> tuple[FakeML, list[int], dict[str, int]]:
    """A double whose recommend answers its own item each call (so a reused answer is
    recognisable) from the replica's current version; ``version`` is what a version check
    answers (a callable of the current version, or an exception)."""
    fake = FakeML()
    served: list[int] = []
    current = {"version": 3}

    def answer(**_: Any) -> dict[str, Any]:
        served.append(len(served) + 1)
        return {
            "items": [{"product_id": served[-1], "score": 1.0}],
            **_versioned(current["version"]),
            "cached": False,
        }

    fake.set("recommend", "recommend", answer)
    fake.set(
        "recommend",
        "version",
        (lambda: version(current["version"])) if callable(version) else version,
    )
    return fake, served, current


def _call(state: _State, reuse: bool = True, **kwargs: Any) -> MLOutcome:
    return asyncio.get_event_loop().run_until_complete(
        call_ml(
            state,  # type: ignore[arg-type]
            "recommend",
            "recommend",
            timeout_s=1.0,
            reuse=reuse,
            **{"user_id": 7, "k": 5, **kwargs},
        )
    )


def _answer(state: _State, reuse: bool = True, **kwargs: Any) -> dict[str, Any]:
    outcome = _call(state, reuse, **kwargs)
    assert outcome.result is not None, outcome
    return outcome.result


@pytest.fixture
def loop() -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


def _settle(loop: Any) -> None:
    """Let the background version check finish."""
    loop.run_until_complete(asyncio.sleep(0.01))


def test_an_answer_is_reused_for_the_same_arguments_of_the_same_version(loop: Any) -> None:
    fake, served, _ = _replica(_versioned)
    state = _State(fake, ChampionAnswers(check_s=60.0))

    first = _call(state)
    assert first.result is not None
    assert first.result["cached"] is False
    again = _call(state)
    assert again.result is not None
    assert again.result["cached"] is True
    assert again.result["items"] == first.result["items"]
    assert served == [1]
    # Other arguments are another question; a call that may not be reused always goes out.
    assert _answer(state, k=6)["items"] == [{"product_id": 2, "score": 1.0}]
    assert _answer(state, reuse=False)["items"][0]["product_id"] == 3
    assert served == [1, 2, 3]
    assert (state.answers.hits, state.answers.misses) == (1, 2)


def test_a_new_version_stops_the_reuse_of_the_old_ones_answers(loop: Any) -> None:
    fake, served, current = _replica(_versioned)
    state = _State(fake, ChampionAnswers(check_s=0.0))

    _call(state)
    _settle(loop)
    assert _answer(state)["cached"] is True
    current["version"] = 4  # the replica swapped (a promotion)
    _call(state)  # starts a version check; this call may still be answered from v3
    _settle(loop)
    assert state.answers.version("recommend") == 4
    fresh = _call(state)
    assert fresh.result is not None
    assert fresh.result["cached"] is False
    assert fresh.result["model"]["version"] == 4
    assert _answer(state)["model"]["version"] == 4
    assert len(served) == 2


def test_nothing_is_reused_while_the_version_is_unknown(loop: Any) -> None:
    fake, served, _ = _replica(ModelUnavailable("replica gone"))
    state = _State(fake, ChampionAnswers(check_s=0.0))

    for _ in range(3):
        _call(state)
        _settle(loop)
    # Each answer said v3, but no version check succeeded: no answer was reused.
    assert state.answers.version("recommend") is None
    assert len(served) == 3
    assert state.answers.hits == 0


def test_entries_expire_and_failures_are_not_kept(loop: Any) -> None:
    fake, served, _ = _replica(_versioned)
    state = _State(fake, ChampionAnswers(ttl_s=0.0, check_s=60.0))
    _call(state)
    _call(state)
    assert len(served) == 2  # expired at once

    state = _State(fake, ChampionAnswers(check_s=60.0))
    fake.set("recommend", "recommend", RuntimeError("boom"))
    assert _call(state).reason == "error"
    fake.set("recommend", "recommend", items_answer(5))
    assert _answer(state)["items"] == [{"product_id": 5, "score": 1.0}]


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture
def variants(session: Session) -> list[Variant]:
    kitchen = category(session, "Kitchen")
    return [product(session, f"Mug {i}", cat=kitchen, stock=5) for i in range(3)]


def test_routes_reuse_champion_answers_but_never_a_live_sessions(
    ml: TestClient, fake_ml: FakeML, variants: list[Variant], session: Session, customer: Account
) -> None:
    products = [v.product_id for v in variants]
    fake_ml.set("recommend", "version", {"model": MODEL})
    fake_ml.set("search", "version", {"model": MODEL})
    fake_ml.set("recommend", "recommend", items_answer(*products))
    fake_ml.set(
        "search",
        "search",
        {
            "items": [{"product_id": products[0], "score": 1.0, "matched": ["mug"]}],
            "total": 1,
            "model": MODEL,
            "cached": False,
        },
    )

    def count(area: str, method: str) -> int:
        return len(fake_ml.calls_to(area, method))

    for _ in range(3):
        r = ml.get(URL, headers=customer.headers)
        assert r.status_code == 200, r.text
        assert [i["product_id"] for i in r.json()["items"]] == products
    assert count("recommend", "recommend") == 1

    # A product page's answer (the product's similar items) is the same whoever asks, in
    # whichever session: reused across sessions and shoppers, but not for another question.
    page = {"context": "product", "product_id": products[0], "session_id": "s-1"}
    for _ in range(2):
        assert ml.get(URL, params=page).status_code == 200
    assert count("recommend", "recommend") == 2
    assert ml.get(URL, params={**page, "session_id": "s-2"}).status_code == 200
    assert ml.get(URL, params=page, headers=customer.headers).status_code == 200
    assert count("recommend", "recommend") == 2
    assert ml.get(URL, params={**page, "k": 3}).status_code == 200
    assert count("recommend", "recommend") == 3

    # A home page with a session may change with every event: asked each time.
    for _ in range(2):
        r = ml.get(URL, params={"session_id": "s-1"})
        assert r.status_code == 200
        assert r.json()["model"]["version"] == MODEL["version"]
    assert count("recommend", "recommend") == 5

    for _ in range(2):
        r = ml.get("/api/v1/search", params={"q": "mug"})
        assert r.status_code == 200, r.text
        assert [i["product_id"] for i in r.json()["items"]] == [products[0]]
    assert count("search", "search") == 1

    # Stock is part of the question: a sold-out product makes it a new one at once.
    inventory.set_stock(session=session, sku=variants[1].sku, on_hand=0)
    r = ml.get(URL, headers=customer.headers)
    assert [i["product_id"] for i in r.json()["items"]] == [products[0], products[2]]
    assert count("recommend", "recommend") == 6
    assert products[1] not in fake_ml.calls_to("recommend", "recommend")[-1].kwargs["allowed"]
