"""Search: retrieval finds targets, typos are corrected, the ranker learns, serving contract.

Everything runs on the session's small generated shop (``synth_source``: 120 products, 150
days of searches and clicks). Its catalog and queries are encoded with MiniLM once per module
(``prepared``), which is where most of this file's time goes.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models.search import evaluate, train
from cartwise.models.search.data import STAT_COLUMNS, normalize_query, search_sessions, tokenize
from cartwise.models.search.predict import FEATURES, SearchPredictor

RANKER = {"hidden": 16, "lr": 0.01, "epochs": 8, "seed": 0}


@pytest.fixture(scope="module")
def prepared(synth_source: Any) -> train.Prepared:
    """Catalog, vectors, stats snapshots and click lists before the holdout window."""
    return train.prepare(synth_source)


@pytest.fixture(scope="module")
def fitted(prepared: train.Prepared) -> tuple[SearchPredictor, dict[str, Any]]:
    """The predictor with a ranker trained on the earlier 80% of the click lists."""
    train_lists, valid_lists = prepared.lists.split(0.2)
    weights, history = train.train(RANKER, train_lists, valid_lists)
    predictor = pickle.loads(pickle.dumps(prepared.predictor))  # noqa: S301
    return train.attach(predictor, weights), history


def test_tokenize_and_normalize() -> None:
    assert tokenize("The USB-C Charger, 2m!") == ["usb", "c", "charger", "2m"]
    assert normalize_query("  Table   LAMP ") == "table lamp"


def test_each_retriever_finds_the_product_by_its_name(fitted: Any) -> None:
    predictor, _ = fitted
    picks = np.random.default_rng(0).choice(predictor.n_products, size=25, replace=False)
    for mode in ("bm25", "semantic", "hybrid", "ranked"):
        results = predictor.search_batch([predictor.names[i] for i in picks], 3, mode=mode)
        found = sum(
            int(predictor.product_ids[i]) in r.items for i, r in zip(picks, results, strict=True)
        )
        assert found >= 22, f"{mode} found {found}/25 products by their own name"


def test_misspelled_queries_are_corrected_and_still_find_their_products(
    synth_source: Any, fitted: Any
) -> None:
    predictor, _ = fitted
    typos, clean, relevant = evaluate.synth_queries(synth_source, evaluate._catalog(predictor))
    assert len(typos) >= 30
    fixed = [predictor.correct(t) for t in typos]
    restored = np.mean([f["corrected"] == c for f, c in zip(fixed, clean, strict=True)])
    assert restored >= 0.8
    assert all(f["did_you_mean"] == f["corrected"] for f in fixed if f["corrected"] != f["query"])
    full = evaluate.ranking_metrics([r.items for r in predictor.search_batch(typos, 10)], relevant)[
        "mrr_at_10"
    ]
    as_typed = evaluate.ranking_metrics(
        [r.items for r in predictor.search_batch(typos, 10, mode="bm25", spell=False)], relevant
    )["mrr_at_10"]
    # BM25 still matches the words spelled right; the full stack must do clearly better.
    assert full >= 0.9
    assert full > as_typed + 0.05
    # A word the catalog knows is left alone; a slip in it is undone.
    word = max((w for n in predictor.names for w in tokenize(n)), key=len)
    slip = word[:2] + word[3:]
    assert predictor.correct(word)["did_you_mean"] is None
    assert predictor.correct(slip)["corrected"] == word


def test_ranker_loss_falls_and_beats_the_unranked_hybrid_on_held_out_clicks(
    synth_source: Any, fitted: Any
) -> None:
    predictor, history = fitted
    assert history["loss"][-1] < history["loss"][0]
    assert history["best"]["mrr_at_10"] > history["base"]["mrr_at_10"]
    # The holdout window (never trained on): the ranker must beat hybrid and BM25 there too.
    start, end = train.holdout_window(synth_source)
    sessions = search_sessions(synth_source, start=start, end=end)
    sessions = sessions[sessions["clicked"].str.len() > 0]
    queries = sessions["query"].tolist()
    relevant = [set(c) for c in sessions["clicked"]]

    def mrr(mode: str) -> float:
        results = predictor.search_batch(queries, 10, mode=mode)
        return evaluate.ranking_metrics([r.items for r in results], relevant)["mrr_at_10"]

    ranked, hybrid, bm25 = mrr("ranked"), mrr("hybrid"), mrr("bm25")
    assert ranked > hybrid
    assert ranked > bm25


def test_ranker_runs_without_torch_on_numpy_weights(fitted: Any) -> None:
    predictor, _ = fitted
    assert predictor.ranker is not None
    assert all(isinstance(v, np.ndarray) for v in predictor.ranker.values())
    assert predictor.vectors.dtype == np.float32
    assert predictor.feature_mean is not None
    assert len(predictor.feature_mean) == len(FEATURES)


def test_autocomplete_returns_prefix_matches_most_popular_first(fitted: Any) -> None:
    predictor, _ = fitted
    popular = max(predictor.autocomplete.texts[:50], key=len)
    prefix = popular[:2]
    out = predictor.suggest(prefix, k=8)
    assert 0 < len(out) <= 8
    assert all(any(w.startswith(prefix) for w in normalize_query(o["text"]).split()) for o in out)
    scores = [o["score"] for o in out]
    assert scores == sorted(scores, reverse=True)
    # The most popular entry with a word starting with the prefix comes first.
    best = next(
        t
        for t in predictor.autocomplete.texts
        if any(w.startswith(prefix) for w in normalize_query(t).split())
    )
    assert out[0]["text"] == best
    # Misspelled past queries are never suggested; products are.
    queries = [o["text"] for o in out if o["kind"] == "query"]
    assert all(predictor.speller.correct(q) == normalize_query(q) for q in queries)
    name = predictor.names[0]
    assert any(o["product_id"] == int(predictor.product_ids[0]) for o in predictor.suggest(name, 3))
    assert predictor.suggest("zzzzqx") == []


def test_filters_are_respected(fitted: Any) -> None:
    predictor, _ = fitted
    category = predictor.categories[0]
    query = predictor.names[0].split()[-1]
    result = predictor.search(query, k=10, filters={"category": category})
    assert result.items
    index = [predictor.index_of(i) for i in result.items]
    assert all(predictor.categories[i] == category for i in index)
    stock = predictor.stats[:, STAT_COLUMNS.index("stock_on_hand")]
    price = predictor.stats[:, STAT_COLUMNS.index("price")]
    assert (stock > 0).any()
    assert (stock <= 0).any()
    for in_stock in (True, False):
        items = predictor.search("set", k=50, filters={"in_stock": in_stock}).items
        assert all((stock[predictor.index_of(i)] > 0) == in_stock for i in items)
    cap = float(np.median(price))
    items = predictor.search("set", k=50, filters={"max_price": cap}).items
    assert items
    assert all(price[predictor.index_of(i)] <= cap for i in items)
    # A narrow filter still fills the page from the allowed products (not just the top hits).
    other = next(c for c in predictor.categories if c != predictor.categories[0])
    members = int((predictor.categories == other).sum())
    narrow = predictor.search(predictor.names[0], k=5, filters={"category": [other]})
    assert len(narrow.items) == min(5, members)
    assert all(predictor.categories[predictor.index_of(i)] == other for i in narrow.items)
    # Paging: offset continues where the first page ended.
    first = predictor.search(query, k=3)
    second = predictor.search(query, k=3, offset=3)
    both = predictor.search(query, k=6)
    assert first.items + second.items == both.items


def test_search_result_carries_matched_terms(fitted: Any) -> None:
    predictor, _ = fitted
    name = predictor.names[5]
    result = predictor.search(name.lower(), k=1)
    assert result.items == [int(predictor.product_ids[5])]
    assert set(result.matched[0]) == set(tokenize(name))
    assert result.to_dict()["items"][0]["product_id"] == result.items[0]


def test_registered_predictor_loads_by_alias_and_answers_the_same(
    fitted: Any, model_settings: Any
) -> None:
    from cartwise.models import tracking
    from cartwise.models.search.tune import _signature

    predictor, _ = fitted
    frame = pd.DataFrame({"query": [predictor.names[3], "sett", "lamp"], "k": [5, 3, 4]})
    tracking.register(
        "search",
        predictor,
        area="search",
        input_example=frame,
        signature=_signature(predictor, frame),
        metrics={"mrr_at_10": 0.5},
        settings=model_settings,
    )
    loaded = tracking.load("search", "challenger", settings=model_settings)
    expected = predictor.predict(frame)
    got = loaded.predict(frame)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    assert got.groupby("row").size().tolist() == [5, 3, 4]
    # k is optional in the signature.
    assert len(loaded.predict(pd.DataFrame({"query": ["lamp"]}))) == 10
    served = loaded.predictor
    assert served.search("sett", 5).items == predictor.search("sett", 5).items
    assert served.suggest("la") == predictor.suggest("la")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.search(""), "empty"),
        (lambda p: p.search("  !! "), "empty"),
        (lambda p: p.search(42), "string"),
        (lambda p: p.search(None), "string"),
        (lambda p: p.search("lamp", k=0), "k must be"),
        (lambda p: p.search("lamp", k=-3), "k must be"),
        (lambda p: p.search("lamp", k="5"), "k must be"),
        (lambda p: p.search("lamp", offset=-1), "offset"),
        (lambda p: p.search("lamp", filters={"colour": "red"}), "unknown filters"),
        (lambda p: p.search("lamp", filters={"in_stock": "yes"}), "in_stock"),
        (lambda p: p.search("lamp", filters={"max_price": "ten"}), "max_price"),
        (lambda p: p.search("lamp", mode="magic"), "mode"),
        (lambda p: p.suggest(5), "string"),
        (lambda p: p.suggest("la", k=0), "k must be"),
        (lambda p: p.correct(""), "empty"),
        (lambda p: p.predict([["lamp"]]), "DataFrame"),
        (lambda p: p.predict(pd.DataFrame({"q": ["lamp"]})), "unknown columns"),
        (lambda p: p.predict(pd.DataFrame({"k": [3]})), "'query' column"),
        (lambda p: p.predict(pd.DataFrame({"query": ["lamp", np.nan]})), "string"),
        (lambda p: p.predict(pd.DataFrame({"query": ["lamp"], "k": [0]})), "k must be"),
        (lambda p: p.predict(pd.DataFrame({"query": ["lamp"], "k": [2.5]})), "k must be"),
    ],
)
def test_malformed_input_is_refused(fitted: Any, call: Any, message: str) -> None:
    predictor, _ = fitted
    with pytest.raises(ValueError, match=message):
        call(predictor)
