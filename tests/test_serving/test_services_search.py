"""SearchService against the trained shop: correction, filters, paging, facets, suggest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model and MiniLM load once)."""
    from cartwise.serving.services.search import SearchService

    return SearchService(overrides, QUIET)


@pytest.fixture(scope="module")
def categories(model: Any) -> dict[int, str]:
    """Product id → category name, as the predictor knows them."""
    p = model.predictor
    return {int(i): str(c) for i, c in zip(p.product_ids.tolist(), p.categories, strict=True)}


def ids(answer: dict[str, Any]) -> list[int]:
    """The product ids of an answer, in order."""
    return [item["product_id"] for item in answer["items"]]


def test_search_answers_with_the_champion_and_highlights_matches(service: Any) -> None:
    out = run(service.search(q="chair", k=5))
    assert out["model"]["name"] == "search"
    assert out["model"]["alias"] == "champion"
    assert isinstance(out["model"]["version"], int)
    assert out["did_you_mean"] is None
    assert out["total"] >= len(out["items"]) == 5
    assert out["items"][0]["matched"] == ["chair"]
    assert all(set(item["matched"]) <= {"chair"} for item in out["items"])


def test_a_typo_gets_a_did_you_mean_and_the_corrected_results(service: Any) -> None:
    right = run(service.search(q="chair", k=5))
    typo = run(service.search(q="chiar", k=5))
    assert typo["did_you_mean"] == "chair"
    assert typo["corrected"] == "chair"
    assert ids(typo) == ids(right)


def test_the_second_identical_search_is_cached(service: Any) -> None:
    first = run(service.search(q="lamp", k=3, filters={"max_price": 500}))
    second = run(service.search(q="lamp", k=3, filters={"max_price": 500}))
    assert (first["cached"], second["cached"]) == (False, True)
    assert ids(first) == ids(second)


def test_allowed_ids_restrict_results_before_retrieval(
    service: Any, categories: dict[int, str]
) -> None:
    allowed = sorted(categories)[::4]
    out = run(service.search(q="chair", k=10, filters={"allowed": allowed, "in_stock": True}))
    assert out["items"]
    assert set(ids(out)) <= set(allowed)
    assert out["total"] <= len(allowed)
    # Every allowed result is in stock by definition; the facet says so.
    in_stock = {f["value"]: f["count"] for f in out["facets"]["in_stock"]}
    assert in_stock == {True: out["total"], False: 0}


def test_category_and_price_filters_and_facets(service: Any, categories: dict[int, str]) -> None:
    out = run(service.search(q="home", k=50, filters={"category": "Furniture"}))
    assert out["items"]
    assert {categories[p] for p in ids(out)} == {"Furniture"}
    facets = out["facets"]
    assert facets["category"] == [{"value": "Furniture", "count": out["total"]}]
    assert sum(f["count"] for f in facets["price"]) == out["total"]
    assert [f["value"] for f in facets["price"]] == ["<5", "5-20", "20-50", "50+"]

    cheap = run(service.search(q="home", k=50, filters={"max_price": 20}))
    prices = dict(
        zip(
            service_catalog(service)["product_id"].tolist(),
            service_catalog(service)["price"].tolist(),
            strict=True,
        )
    )
    assert cheap["items"]
    # Price filters use the price the ranker was trained with; the shop has not re-priced.
    assert all(prices[p] <= 20 for p in ids(cheap))


def service_catalog(service: Any) -> Any:
    """The service's catalogue snapshot (loaded with the first facets)."""
    catalog = run(service.catalog())
    assert catalog is not None
    return catalog


def test_pages_follow_each_other(service: Any) -> None:
    whole = run(service.search(q="bag", k=6))
    first = run(service.search(q="bag", k=3))
    second = run(service.search(q="bag", k=3, offset=3))
    assert ids(first) + ids(second) == ids(whole)
    assert first["total"] == second["total"] == whole["total"]
    beyond = run(service.search(q="bag", k=3, offset=whole["total"]))
    assert beyond["items"] == []


def test_a_baseline_variant_searches_bm25_only(service: Any) -> None:
    out = run(service.search(q="chair", k=5, variant="baseline:bm25"))
    assert out["mode"] == "bm25"
    assert all(item["matched"] == ["chair"] for item in out["items"])


def test_a_first_page_logs_the_rankers_input_for_its_top_result(service: Any, model: Any) -> None:
    import uuid
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from cartwise.models.monitoring import feature_log
    from cartwise.models.search.predict import FEATURES

    logger = service.feature_logger
    assert logger is not None
    before = logger.logged
    # A price limit no other test used: the answer is computed, not read from the cache.
    limit = {"max_price": 10_000 + uuid.uuid4().int % 1_000_000}
    out = run(service.search(q="chiar", k=5, filters=limit))
    assert out["mode"] == "ranked"
    assert out["items"]
    assert logger.logged == before + 1
    # A later page and a BM25 baseline are not what the ranker monitoring compares: not logged.
    run(service.search(q="chiar", k=5, offset=5, filters=limit))
    run(service.search(q="chiar", k=5, variant="baseline:bm25", filters=limit))
    assert logger.logged == before + 1

    assert logger.flush()
    now = datetime.now(UTC)
    frame = feature_log.read(
        "search", now - timedelta(hours=1), now + timedelta(minutes=5), service.model_settings
    )
    row = frame[frame["key"] == "chair"].iloc[-1]  # keyed by the corrected query
    assert int(row["model_version"]) == out["model"]["version"]
    assert row["prediction"] == pytest.approx(out["items"][0]["score"])
    # The logged features are the ranker's input: scoring them again gives the logged score.
    x = np.asarray([[float(row[name]) for name in FEATURES]])
    assert model.predictor.rank_scores(x)[0] == pytest.approx(row["prediction"])


def test_a_new_version_encodes_the_shops_popular_queries_at_warm_up(service: Any) -> None:
    from sqlalchemy import text

    loaded = run(service.model(None))
    predictor = loaded.predictor
    queries = service.popular_queries(15)
    assert len(queries) == 15, "the shop logged searches in the last 30 days"
    with service.engine.connect() as conn:
        counts = dict(
            conn.execute(
                text(
                    "SELECT lower(trim(query)), count(*) FROM shopper_event WHERE type = 'search'"
                    " AND query IS NOT NULL AND received_at >= :since GROUP BY 1"
                ),
                {"since": datetime.now(UTC) - timedelta(days=30)},
            ).all()
        )
    # The most frequent first, and none more frequent left out.
    assert [counts[q] for q in queries] == sorted((counts[q] for q in queries), reverse=True)
    assert counts[queries[-1]] >= sorted(counts.values(), reverse=True)[14]

    predictor._qcache.clear()
    assert service.warm_queries(predictor) > 0
    for query in queries:
        assert predictor.speller.correct(query) in predictor._qcache
    # A search of one of them then encodes nothing new.
    cached = len(predictor._qcache)
    run(service.search(q=queries[0], k=3))
    assert len(predictor._qcache) == cached


def test_suggest_completes_prefixes_without_feast(overrides: dict[str, Any]) -> None:
    from cartwise.serving.services.search import SearchService

    service = SearchService(overrides, QUIET)
    out = run(service.suggest(prefix="ch", k=5))
    assert out["model"]["name"] == "search"
    assert 0 < len(out["suggestions"]) <= 5
    for s in out["suggestions"]:
        assert any(word.startswith("ch") for word in s["text"].lower().split()), s
    assert run(service.suggest(prefix="zzzzqx", k=5))["suggestions"] == []
    # Autocomplete never touched the feature store.
    assert service._features is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": ""}, "empty"),
        ({"q": "!!!"}, "empty"),
        ({"q": 42}, "string"),
        ({"q": "x" * 1000}, "at most"),
        ({"q": "chair", "k": 0}, "k must be"),
        ({"q": "chair", "offset": -1}, "offset"),
        ({"q": "chair", "filters": {"colour": "red"}}, "unknown filters"),
        ({"q": "chair", "filters": {"allowed": ["a"]}}, "allowed"),
        ({"q": "chair", "filters": {"min_price": "cheap"}}, "min_price"),
        ({"q": "chair", "variant": "best one"}, "variant"),
        ({"q": "chair", "variant": "baseline:popularity"}, "variant"),
    ],
)
def test_bad_search_input_is_a_value_error(
    service: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(service.search(**kwargs))


def test_bad_suggest_input_is_a_value_error(service: Any) -> None:
    with pytest.raises(ValueError, match="k must be"):
        run(service.suggest(prefix="ch", k=500))
    with pytest.raises(ValueError, match="string"):
        run(service.suggest(prefix=None))


def test_no_model_in_the_registry_is_model_unavailable(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    from cartwise.serving.services.search import SearchService

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    service = SearchService({**overrides, "mlflow_tracking_uri": uri, "mlflow_registry_uri": uri})
    with pytest.raises(ModelUnavailable):
        run(service.search(q="chair"))
    with pytest.raises(ModelUnavailable):
        run(service.suggest(prefix="ch"))
