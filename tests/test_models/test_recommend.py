"""Recommendations: metrics by hand, baselines, BPR-MF, the hybrid protocol and the predictor.

The learning tests use a small generated shop (``cartwise.features.synth``) whose customers
have hidden tastes, so a personalised model must beat popularity on it.
"""

from __future__ import annotations

import math
import pickle
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cartwise.models.recommend.baselines import (
    EASE,
    ItemKNN,
    Popularity,
    Repurchase,
    RepurchaseBlend,
    ease_weights,
)
from cartwise.models.recommend.data import (
    PURCHASE_STATUSES,
    TrainData,
    encode,
    from_online_retail,
    read_categories,
    read_exports,
    split,
    targets,
)
from cartwise.models.recommend.evaluate import QUICK_GRIDS, evaluate, temporal_protocol
from cartwise.models.recommend.metrics import evaluate_ranking, ndcg_at_k, recall_at_k, top_k
from cartwise.models.recommend.predict import Recommender
from cartwise.models.recommend.train import train, train_reranker

START = date(2024, 1, 1)
DAYS = 150
CUTOFF = pd.Timestamp(START) + pd.Timedelta(days=DAYS - 21)
BPR = {"epochs": 12, "dim": 16, "reg": 1e-3, "lr": 0.01, "seed": 0}
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "online_retail_sample"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated shop in the facts layout (1,500 customers with hidden tastes, 150 days)."""
    from cartwise.features.synth import SynthConfig, synth

    out = tmp_path_factory.mktemp("recommend-shop")
    config = SynthConfig(customers=1500, days=DAYS, products=120, seed=3, start=START)
    synth(config, to="parquet", out=out)
    return out


@pytest.fixture(scope="module")
def purchases(shop: Path) -> pd.DataFrame:
    """The shop's purchases."""
    return read_exports(shop)


@pytest.fixture(scope="module")
def holdout(purchases: pd.DataFrame) -> tuple[Any, dict[int, set[int]]]:
    """Train before the last three weeks; the truth is what known customers bought after."""
    return split(purchases, CUTOFF)


@pytest.fixture(scope="module")
def trained(holdout: tuple[Any, dict[int, set[int]]], shop: Path) -> tuple[Recommender, Any]:
    """BPR-MF trained once on the holdout's training part, with per-epoch losses."""
    data, truth = holdout
    losses: list[float] = []
    rec, metrics = train(
        BPR,
        TrainData(data, truth, categories=read_categories(shop)),
        on_epoch=lambda _epoch, m: losses.append(m["loss"]),
    )
    return rec, {"metrics": metrics, "losses": losses}


# ---------------------------------------------------------------------- metrics


def test_metrics_by_hand() -> None:
    # Relevant items 1 and 0; ranking 3, 1, 2, 0: one hit at rank 2, one at rank 4.
    ranked, truth = [3, 1, 2, 0], {1, 0}
    assert ndcg_at_k(ranked, truth, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(ranked, truth, 4) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    )
    assert recall_at_k(ranked, truth, 2) == 0.5
    assert recall_at_k(ranked, truth, 4) == 1.0
    assert ndcg_at_k([0, 1], {0, 1}, 2) == pytest.approx(1.0)
    # Ideal DCG counts min(|truth|, k) hits: one relevant item at rank 1 is perfect at k=10.
    assert ndcg_at_k([5, 6, 7], {5}, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ndcg_at_k(ranked, truth, 0)
    with pytest.raises(ValueError):
        recall_at_k(ranked, set(), 5)


def test_evaluate_ranking_matches_by_hand_and_excludes() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    truth = {0: {1, 0}, 1: {3}, 2: set()}  # user 2 has no truth: skipped, not a zero
    result = evaluate_ranking(lambda users: scores[users], truth, ks=(2,))
    # User 0 ranks 1, 3, ...: one hit at rank 1 → NDCG 1/(1+1/log2 3); user 1 ranks 0, 1: none.
    assert result["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 0.0) / 2)
    assert result["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["users"] == 2
    # Excluding user 1's items 0 and 1 (seen) lifts item 3 into the top 2.
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0], [1, 1, 0, 0]]))
    excluded = evaluate_ranking(lambda users: scores[users], truth, ks=(2,), exclude=seen)
    assert excluded["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert top_k(scores, 2).tolist() == [[1, 3], [0, 1]]


# ---------------------------------------------------------------------- data


def test_read_exports_keeps_paid_purchases_of_customers(
    shop: Path, purchases: pd.DataFrame
) -> None:
    lines = pd.read_parquet(shop / "order_lines")
    paid = lines[lines["status"].isin(PURCHASE_STATUSES) & lines["user_id"].notna()]
    assert len(purchases) == len(paid)
    assert set(purchases["order"]) <= set(paid["order_id"])
    assert purchases["ts"].is_monotonic_increasing
    assert purchases["ts"].dt.tz is None


def test_from_online_retail_sample() -> None:
    from cartwise.commerce.importing.online_retail import (
        ImportSummary,
        clean,
        normalize,
        read_frame,
    )

    _, raw = read_frame(SAMPLE / "online_retail_2011-11.csv.gz")
    cleaned = clean(normalize(raw), ImportSummary(path="sample"))
    bought = from_online_retail(cleaned)
    sales = cleaned[~cleaned["cancel"] & cleaned["customer"].notna()]
    assert len(bought) == len(sales) > 0
    assert not bought["order"].str.startswith("C").any()
    with pytest.raises(ValueError, match="lacks"):
        from_online_retail(raw)


def test_targets_keep_unknown_items_as_misses() -> None:
    frame = pd.DataFrame(
        {
            "user": [1, 1, 2],
            "item": ["a", "b", "a"],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "quantity": [1, 1, 1],
            "order": ["o1", "o2", "o3"],
        }
    )
    data = encode(frame)
    later = frame.assign(item=["a", "new", "b"], user=[1, 1, 9])
    truth = targets(later, data)
    assert truth == {0: {0, -1}}  # user 9 unknown: dropped; "new" counts, unrankable
    assert targets(later, data, known_items_only=True) == {0: {0}}


# ---------------------------------------------------------------------- baselines


def test_ease_closed_form_solves_each_column() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 6)) < 0.4).astype(np.float64))
    lam = 3.0
    b = ease_weights(x, lam)
    gram = (x.T @ x).toarray()
    assert np.allclose(np.diag(b), 0.0)
    # Each column j is the ridge regression of item j on the other items (Steck 2019).
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = gram[np.ix_(others, others)] + lam * np.eye(5)
        expected = np.linalg.solve(a, gram[others, j])
        assert np.allclose(b[others, j], expected, atol=1e-8)
    with pytest.raises(ValueError):
        ease_weights(x, 0.0)


def _tiny() -> Any:
    # User 10 bought "x" three times and "y" once; others make "z" the most popular item.
    frame = pd.DataFrame(
        {
            "user": [10, 10, 10, 10, 11, 12, 13, 13],
            "item": ["x", "x", "x", "y", "z", "z", "z", "y"],
            "ts": pd.date_range("2024-01-01", periods=8, freq="D"),
            "quantity": 1,
            "order": ["o1", "o2", "o3", "o3", "o4", "o5", "o6", "o6"],
        }
    )
    return encode(frame)


def test_repurchase_ranks_own_items_first_then_popular() -> None:
    data = _tiny()
    scores = Repurchase().fit(data).score(np.array([0]))[0]
    ranked = data.item_ids[np.argsort(-scores, kind="stable")].tolist()
    assert ranked == ["x", "y", "z"]  # own items by frequency, then the popular item
    stranger = Repurchase().fit(data).score(np.array([1]))[0]  # user 11 bought only "z"
    assert data.item_ids[np.argmax(stranger)] == "z"


def test_stacked_blend_keeps_own_items_first() -> None:
    data = _tiny()
    ease = EASE(1.0).fit(data)
    stacked = RepurchaseBlend(ease, weight=math.inf, fitted=True).fit(data)
    scores = stacked.score(np.array([1]))[0]  # user 11 owns "z" only
    assert data.item_ids[np.argmax(scores)] == "z"
    rest = np.argsort(-ease.score(np.array([1]))[0], kind="stable")
    rest = [data.item_ids[i] for i in rest if data.item_ids[i] != "z"]
    order = np.argsort(-scores, kind="stable")
    assert [data.item_ids[i] for i in order[1:]] == rest  # then EASE's order fills
    assert Popularity().fit(data).counts.tolist() == [1.0, 2.0, 3.0]  # x, y, z: distinct buyers


def test_models_beat_popularity_on_hidden_tastes(
    holdout: tuple[Any, dict[int, set[int]]], trained: tuple[Recommender, Any]
) -> None:
    data, truth = holdout
    pop = evaluate(Popularity().fit(data), truth)["ndcg@10"]
    ease = evaluate(EASE(50.0).fit(data), truth)["ndcg@10"]
    knn = evaluate(ItemKNN(50).fit(data), truth)["ndcg@10"]
    bpr = trained[1]["metrics"]["val_ndcg@10"]
    assert bpr > 1.15 * pop, (bpr, pop)
    assert ease > pop, (ease, pop)
    assert knn > 0
    # Repurchase is the one to beat in repeat-purchase shops, here as on Online Retail.
    assert evaluate(Repurchase().fit(data), truth)["ndcg@10"] > pop


# ---------------------------------------------------------------------- BPR-MF


def test_bpr_loss_falls(trained: tuple[Recommender, Any]) -> None:
    losses = trained[1]["losses"]
    assert len(losses) == BPR["epochs"]
    assert losses[-1] < 0.8 * losses[0]
    assert trained[1]["metrics"]["loss"] == losses[-1]


def test_bpr_is_deterministic_for_a_seed(holdout: tuple[Any, dict[int, set[int]]]) -> None:
    data, truth = holdout
    config = {**BPR, "epochs": 2}
    first, m1 = train(config, TrainData(data, truth))
    second, m2 = train(config, TrainData(data, truth))
    other, _ = train({**config, "seed": 1}, TrainData(data, truth))
    assert np.array_equal(first.item_vectors, second.item_vectors)
    assert {k: v for k, v in m1.items() if k != "seconds"} == {
        k: v for k, v in m2.items() if k != "seconds"
    }
    assert not np.array_equal(first.item_vectors, other.item_vectors)


def test_train_rejects_bad_config(holdout: tuple[Any, dict[int, set[int]]]) -> None:
    data, _ = holdout
    with pytest.raises(ValueError, match="unknown config keys"):
        train({"epoch": 3}, TrainData(data))
    with pytest.raises(ValueError, match="positive"):
        train({"dim": 0}, TrainData(data))


# ---------------------------------------------------------------------- predictor


def test_predictor_filters_and_answers(trained: tuple[Recommender, Any], shop: Path) -> None:
    rec = trained[0]
    user = rec.user_ids[0].item()
    top = rec.recommend(user, 10)
    assert len(top) == 10
    assert not top.fallback
    assert top.scores == sorted(top.scores, reverse=True)
    banned = set(top.items[:5])
    stock = set(rec.item_ids[::2].tolist())
    filtered = rec.recommend(user, 10, exclude=banned, in_stock=stock)
    assert not banned & set(filtered.items)
    assert set(filtered.items) <= stock
    categories = read_categories(shop)
    category = categories[top.items[0]]
    in_category = rec.recommend(user, 5, category=category)
    assert in_category.items
    assert all(categories[i] == category for i in in_category.items)
    bought = set(rec.item_ids[rec.own[rec.user_index(user)].indices].tolist())
    fresh = rec.recommend(user, 20, exclude_purchased=True)
    assert bought
    assert not bought & set(fresh.items)
    # Nothing allowed → an empty answer, not an error.
    assert rec.recommend(user, 5, in_stock=set()).items == []

    item = top.items[0]
    similar = rec.similar_items(item, 5)
    assert item not in similar.items
    assert len(similar) == 5
    vectors = rec.item_vectors / np.linalg.norm(rec.item_vectors, axis=1, keepdims=True)
    i = rec.item_index(item)
    assert i is not None
    cosine = vectors @ vectors[i]
    cosine[i] = -np.inf
    assert similar.items[0] == rec.item_ids[int(np.argmax(cosine))].item()

    cart = [item]
    complements = rec.complements(cart, 5, exclude=[similar.items[0]])
    assert item not in complements.items
    assert similar.items[0] not in complements.items
    co = np.asarray(rec.co_purchases[i].toarray()).ravel()
    co[rec.item_index(similar.items[0])] = 0
    if co.max() > 0:
        assert co[rec.item_index(complements.items[0])] == co.max()


def test_predictor_malformed_inputs(trained: tuple[Recommender, Any]) -> None:
    rec = trained[0]
    unknown = rec.recommend("nobody", 5)
    assert unknown.fallback
    assert unknown.reason == "unknown user"
    assert unknown.items == rec.popular(5).items
    assert rec.similar_items(-1, 3).fallback
    assert rec.complements(["nothing"], 3).fallback
    assert rec.complements([], 3).reason == "no known item in the cart"
    user = rec.user_ids[0].item()
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            rec.recommend(user, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        rec.similar_items(rec.item_ids[0].item(), 0)
    without = Recommender(**{**rec.__dict__, "item_category": None, "_users": {}, "_items": {}})
    with pytest.raises(ValueError, match="no item categories"):
        without.recommend(user, 3, category="anything")


def test_predictor_pickles_without_torch(trained: tuple[Recommender, Any]) -> None:
    rec = trained[0]
    user = rec.user_ids[3].item()
    copy = pickle.loads(pickle.dumps(rec))  # noqa: S301 - our own bytes
    assert copy.recommend(user, 10) == rec.recommend(user, 10)
    assert isinstance(copy.item_vectors, np.ndarray)
    blended = Recommender(**{**rec.__dict__, "repurchase_weight": math.inf})
    own = set(rec.item_ids[rec.own[rec.user_index(user)].indices].tolist())
    first = blended.recommend(user, len(own)).items
    assert set(first) == own  # stacked: the customer's own items come first


# ---------------------------------------------------------------------- protocol


def test_temporal_protocol_runs_and_the_hybrid_learns(purchases: pd.DataFrame) -> None:
    steps: list[tuple[str, int, int]] = []
    report = temporal_protocol(
        purchases,
        cutoff=CUTOFF,
        valid_days=14,
        windows=2,
        bpr={"epochs": 6, "dim": 16, "positives": "pairs", "reg": 1e-3, "lr": 0.01},
        grids=QUICK_GRIDS,
        rerank={"epochs": 4},
        progress=lambda stage, done, total: steps.append((stage, done, total)),
    )
    names = [r.model for r in report.rows]
    assert names[:5] == ["popularity", "item-kNN", "EASE", "repurchase", "EASE + repurchase"]
    assert "hybrid (re-ranker)" in names
    assert steps[-1][1] == steps[-1][2]
    pop = report.row("popularity").test["ndcg@10"]
    assert report.best_baseline().test["ndcg@10"] > pop
    assert report.row("hybrid (re-ranker)").test["ndcg@10"] > pop
    assert report.ratio(report.best_baseline()) == pytest.approx(1.0)
    assert report.info["test_users"] > 0


def test_reranker_loss_falls_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 3)).astype(np.float32)
    labels = (features[:, 0] + 0.3 * rng.normal(size=600) > 1.0).astype(np.float32)
    groups = np.repeat(np.arange(30), 20)
    w1, m1 = train_reranker({"epochs": 10, "groups_per_batch": 5}, features, labels, groups)
    w2, _ = train_reranker({"epochs": 10, "groups_per_batch": 5}, features, labels, groups)
    assert m1["loss"] < m1["loss_first"]
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))
    with pytest.raises(ValueError):
        train_reranker({"loss": "nope"}, features, labels, groups)
