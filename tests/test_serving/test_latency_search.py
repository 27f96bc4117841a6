"""SearchService's per-request shortcuts against the trained shop: they change no answer.

The live price/stock/active arrays are computed once per (predictor, catalogue snapshot), so
a new snapshot or a new model version must be seen at once; the answer is built from plain
JSON types, so it must equal what ``answer``'s jsonable walk would have made of it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import numpy as np
import pytest

from cartwise.serving.services.base import jsonable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model and MiniLM load once)."""
    from cartwise.serving.services.search import SearchService

    return SearchService(overrides, QUIET)


def _ids(answer: dict[str, Any]) -> list[int]:
    return [item["product_id"] for item in answer["items"]]


def _uncached_limit() -> dict[str, float]:
    # A price limit no other search used: the answer is computed, not read from the cache.
    return {"max_price": float(500_000 + uuid.uuid4().int % 400_000)}


def _use_snapshot(service: Any, frame: Any) -> None:
    with service._lock:
        service._catalog, service._catalog_at = frame, time.monotonic()


def test_a_new_catalogue_snapshot_reprices_the_next_search(service: Any) -> None:
    before = run(service.search(q="chair", k=20, filters=_uncached_limit()))
    assert before["items"]
    top = _ids(before)[0]
    original = run(service.catalog())
    assert original is not None
    repriced = original.copy()
    repriced.loc[repriced["product_id"] == top, "price"] = 999_999.0
    try:
        _use_snapshot(service, repriced)
        after = run(service.search(q="chair", k=20, filters=_uncached_limit()))
        assert after["items"]
        assert top not in _ids(after)
    finally:
        _use_snapshot(service, original)
    again = run(service.search(q="chair", k=20, filters=_uncached_limit()))
    assert _ids(again) == _ids(before)


def test_the_live_arrays_follow_the_model_version_and_are_read_only(service: Any) -> None:
    from cartwise.models.search.data import STAT_COLUMNS

    predictor = run(service.model(None)).predictor
    price, stocked, active = service._live(predictor, None)
    assert service._live(predictor, None)[0] is price  # reused while nothing changed
    for array in (price, stocked, active):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[0]
    stats = predictor.stats.copy()
    stats[:, STAT_COLUMNS.index("price")] *= 2
    newer = dataclasses.replace(predictor, stats=stats)  # what a new version loads as
    np.testing.assert_allclose(service._live(newer, None)[0], 2 * price)
    np.testing.assert_allclose(service._live(predictor, None)[0], price)


def test_answers_are_plain_json_computed_and_cached(service: Any) -> None:
    limit = _uncached_limit()
    first = run(service.search(q="chiar lamp", k=10, filters=limit))
    second = run(service.search(q="chiar lamp", k=10, filters=limit))
    assert (first["cached"], second["cached"]) == (False, True)
    for out in (first, second):
        assert out == jsonable(out)
        assert all(type(item["product_id"]) is int for item in out["items"])
        assert all(type(item["score"]) is float for item in out["items"])
    assert first == {**second, "cached": False}
