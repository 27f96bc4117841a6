"""The two-tower hybrid, cold start, the session GRU, the pyfunc and MovieLens helpers.

They train on the shared generated shop (``synth_source``: 400 customers with hidden tastes,
Feast features) through the same path as ``tune.run`` (:mod:`cartwise.models.recommend.dataset`),
with a deterministic bag-of-words stand-in for MiniLM so no test pays for loading it.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cartwise.models import tracking
from cartwise.models.recommend import dataset
from cartwise.models.recommend.baselines import Popularity, SessionTransitions
from cartwise.models.recommend.data import read_source
from cartwise.models.recommend.evaluate import (
    ML100K_MEMBER,
    evaluate,
    holdout_truth,
    movielens,
    movielens_path,
    random_split,
    read_movielens,
    session_benchmark,
)
from cartwise.models.recommend.metrics import evaluate_next_item
from cartwise.models.recommend.model import SessionGRU, TwoTower
from cartwise.models.recommend.predict import Recommender
from cartwise.models.recommend.train import train_session, train_two_tower
from cartwise.models.recommend.tune import input_example, signature

TOWER = {"epochs": 6, "dim": 32, "lr": 0.005, "seed": 0}


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A stand-in for MiniLM: unit vectors of hashed words (shared words → close vectors)."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            out[row, zlib.crc32(word.encode()) % 384] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    result: np.ndarray = out / np.where(norms > 0, norms, 1.0)
    return result


@pytest.fixture(scope="module")
def shop(synth_source: Any) -> dict[str, Any]:
    """The shop's purchases, split, catalogue and tower data (validation = the last 28 days)."""
    purchases = read_source(synth_source)
    split = dataset.windows(purchases, holdout_days=28, valid_days=28)
    cat = dataset.catalogue(synth_source, encoder=bag_of_words)
    data = dataset.load(synth_source, purchases, cat, cutoff=split.valid, valid_end=split.holdout)
    return {"purchases": purchases, "split": split, "cat": cat, "data": data}


@pytest.fixture(scope="module")
def tower(shop: dict[str, Any]) -> tuple[Recommender, dict[str, Any]]:
    """The two-tower trained once, with its per-epoch losses."""
    losses: list[float] = []
    rec, metrics = train_two_tower(
        TOWER, shop["data"], on_epoch=lambda _e, m: losses.append(m["loss"])
    )
    return rec, {"metrics": metrics, "losses": losses}


@pytest.fixture(scope="module")
def sessions(synth_source: Any, shop: dict[str, Any]) -> Any:
    """Session sequences split at the validation cut-off."""
    ids = shop["cat"].products["product_id"].astype(np.int64).tolist()
    every = dataset.sessions(synth_source, {p: i for i, p in enumerate(ids)})
    cut = shop["split"].valid
    return every.window(None, cut), every.window(cut, None), len(ids)


# ---------------------------------------------------------------------- two-tower


def test_features_come_from_the_feature_services(shop: dict[str, Any]) -> None:
    data = shop["data"]
    spec = data.towers.spec
    assert spec is not None
    assert spec.categories
    assert data.user_inputs.shape == (data.train.n_users, spec.user_width)
    # Every catalogue product has a row (bought or not), with content after the features.
    assert data.train.n_items == len(shop["cat"].products)
    assert data.item_inputs.shape[1] == spec.item_width + data.towers.content_basis.shape[1]
    # Customers have recommend_v1 rows as of the cut-off: the "has features" flag is mostly 1.
    assert data.user_inputs[:, -1].mean() > 0.9
    assert np.isfinite(data.user_inputs).all()
    assert np.isfinite(data.item_inputs).all()


def test_two_tower_loss_falls_and_beats_popularity(
    shop: dict[str, Any], tower: tuple[Recommender, dict[str, Any]]
) -> None:
    rec, fit = tower
    losses = fit["losses"]
    assert len(losses) == TOWER["epochs"]
    assert losses[-1] < 0.85 * losses[0]
    data = shop["data"]
    pop = evaluate(Popularity().fit(data.train), data.valid)["ndcg@10"]
    assert fit["metrics"]["val_ndcg@10"] > 1.2 * pop, (fit["metrics"], pop)
    # The tower alone (no repurchase blend) is personalised too.
    alone = Recommender(**{**rec.__dict__, "repurchase_weight": 0.0, "_users": {}, "_items": {}})
    assert evaluate(alone.score_users, data.valid)["ndcg@10"] > pop


def test_two_tower_is_deterministic(shop: dict[str, Any]) -> None:
    config = {**TOWER, "epochs": 2}
    first, m1 = train_two_tower(config, shop["data"])
    second, m2 = train_two_tower(config, shop["data"])
    assert np.array_equal(first.item_vectors, second.item_vectors)
    assert m1["loss"] == m2["loss"]
    with pytest.raises(ValueError, match="unknown config keys"):
        train_two_tower({"epoch": 2}, shop["data"])
    with pytest.raises(ValueError, match="id_dropout"):
        train_two_tower({"id_dropout": 1.0}, shop["data"])


def test_numpy_towers_match_torch() -> None:
    torch.manual_seed(0)
    model = TwoTower(5, 7, 3, 4, dim=8, hidden=(16,))
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(5, 3)), rng.normal(size=(7, 4))
    model.standardise(users, items)
    model.eval()
    from cartwise.models.recommend.predict import Towers

    towers = Towers(weights=model.export())
    ids = np.array([0, 1, 5])
    with torch.no_grad():
        expected_u = model.users(
            torch.from_numpy(ids), torch.tensor(users[:3], dtype=torch.float32)
        )
        expected_i = model.items(torch.arange(0, 7), torch.tensor(items, dtype=torch.float32))
    np.testing.assert_allclose(towers.users(ids, users[:3]), expected_u.numpy(), atol=1e-5)
    np.testing.assert_allclose(towers.items(np.arange(7), items), expected_i.numpy(), atol=1e-5)


# ---------------------------------------------------------------------- cold start


def test_new_customer_gets_feature_based_recommendations(
    synth_source: Any, shop: dict[str, Any], tower: tuple[Recommender, dict[str, Any]]
) -> None:
    rec = tower[0]
    from cartwise.models.recommend.features import historical_users

    known = rec.user_ids[:40].tolist()
    rows = historical_users(synth_source, known, shop["split"].valid)
    columns = [*rec.towers.spec.user_columns, "category_ids", "category_scores"]
    lists = []
    for _, row in rows.iterrows():
        features = {c: row[c] for c in columns if c in row.index}
        answer = rec.recommend("brand-new", 10, features=features)
        assert not answer.fallback
        assert answer.reason == "new customer: features"
        assert len(answer) == 10
        lists.append(tuple(answer.items))
    # Different customers' features give different lists (the tower is not popularity).
    assert len(set(lists)) > 5
    assert rec.recommend("brand-new", 10).fallback  # no features: the flagged fallback
    # On held-out purchases, features alone beat popularity for these customers.
    data = shop["data"]
    truth = {u: items for u, items in data.valid.items() if u < 40}
    if truth:
        scores = np.vstack(
            [
                rec.new_customer_scores({c: rows.iloc[u][c] for c in columns if c in rows.columns})
                for u in sorted(truth)
            ]
        )
        lookup = {u: r for r, u in enumerate(sorted(truth))}
        cold = evaluate(lambda users: scores[[lookup[int(u)] for u in users]], truth)["ndcg@10"]
        pop = evaluate(Popularity().fit(data.train), truth)["ndcg@10"]
        assert cold >= pop * 0.9, (cold, pop)


def test_new_items_are_placed_by_content(
    shop: dict[str, Any], tower: tuple[Recommender, dict[str, Any]]
) -> None:
    rec = tower[0]
    products = shop["cat"].products
    original = products.iloc[5]
    new = pd.DataFrame(
        {
            "product_id": [10_000, 10_001],
            "name": [f"{original['name']} Mk II", "Completely Unrelated Zyx Widget"],
            "description": [original["description"], "qwerty asdf zxcv"],
            "category": [original["category"], "Nothing"],
            "category_id": [original["category_id"], None],
        }
    )
    grown = rec.add_items(new, content=bag_of_words(dataset.product_texts(new)))
    assert grown.n_items == rec.n_items + 2
    assert grown.item_index(10_000) == rec.n_items
    similar = grown.similar_items(10_000, 5)
    assert not similar.fallback
    assert similar.reason == "new item: content"
    assert similar.items[0] == int(original["product_id"])
    # The new item has a real vector: it is ranked for customers, with a finite score.
    user = rec.user_ids[0].item()
    everything = grown.recommend(user, grown.n_items)
    assert 10_000 in everything.items
    assert np.isfinite(everything.scores).all()
    assert rec.add_items(products.iloc[:3]) is rec  # nothing new: unchanged
    with pytest.raises(ValueError, match="product_id"):
        rec.add_items(pd.DataFrame({"name": ["x"]}))


# ---------------------------------------------------------------------- session model


def test_session_gru_learns_and_beats_popularity(sessions: Any) -> None:
    train_part, test_part, n_items = sessions
    losses: list[float] = []
    model, _fit = train_session(
        {"epochs": 3, "seed": 0},
        train_part.sequences,
        n_items,
        on_epoch=lambda _e, m: losses.append(m["loss"]),
    )
    assert losses[-1] < losses[0]
    test = test_part.sequences[:1500]
    gru = evaluate_next_item(model.scores, test)
    counts = np.bincount(np.concatenate(train_part.sequences), minlength=n_items).astype(float)
    pop = evaluate_next_item(lambda p: np.tile(counts, (len(p), 1)), test)
    transitions = evaluate_next_item(
        SessionTransitions().fit(train_part.sequences, n_items).scores, test
    )
    assert gru["hr@10"] > 1.5 * pop["hr@10"], (gru, pop)
    # The honest bar: within a few points of (or above) the last-item transitions baseline.
    assert gru["hr@10"] > 0.9 * transitions["hr@10"], (gru, transitions)


def test_numpy_gru_matches_torch() -> None:
    torch.manual_seed(0)
    model = SessionGRU(9, dim=6, hidden=5)
    model.eval()
    from cartwise.models.recommend.predict import SessionModel

    numpy_model = SessionModel(model.export())
    sequences = [[3, 1, 4], [2], [8, 0]]
    scores = numpy_model.scores(sequences)
    for row, seq in enumerate(sequences):
        with torch.no_grad():
            logits = model(torch.tensor([[i + 1 for i in seq]]))[0, -1, 1:]
        np.testing.assert_allclose(scores[row], logits.numpy(), atol=1e-5)


def test_recommend_session_and_the_benchmark_report(
    sessions: Any, tower: tuple[Recommender, dict[str, Any]]
) -> None:
    train_part, test_part, n_items = sessions
    model, _ = train_session({"epochs": 1, "seed": 0}, train_part.sequences[:3000], n_items)
    rec = Recommender(**{**tower[0].__dict__, "session_model": model, "_users": {}, "_items": {}})
    seq = test_part.sequences[0]
    last_products = rec.item_ids[seq[::-1]].tolist()  # newest first, as session_v1 keeps them
    answer = rec.recommend_session(last_products, 5)
    assert not answer.fallback
    assert len(answer) == 5
    assert not set(answer.items) & set(last_products)
    assert rec.recommend_session([-5], 5).fallback  # no known product
    user = rec.user_ids[0].item()
    blended = rec.recommend_session(last_products, 5, user=user)
    assert len(blended) == 5
    report = session_benchmark(
        train_part.sequences[:3000],
        test_part.sequences,
        n_items,
        config={"epochs": 1},
        max_test=300,
    )
    assert [r.model for r in report.rows] == ["popularity", "last-item transitions", "session GRU"]


# ---------------------------------------------------------------------- pyfunc and inputs


def test_registry_round_trip_gives_identical_recommendations(
    tower: tuple[Recommender, dict[str, Any]], sessions: Any, model_settings: Any
) -> None:
    train_part, _, n_items = sessions
    model, _ = train_session({"epochs": 1, "seed": 0}, train_part.sequences[:2000], n_items)
    rec = Recommender(**{**tower[0].__dict__, "session_model": model, "_users": {}, "_items": {}})
    example = input_example(rec)
    tracking.register(
        "recommend",
        rec,
        area="recommend",
        input_example=example,
        signature=signature(),
        metrics={"ndcg_at_10": 0.1},
        settings=model_settings,
    )
    loaded = tracking.load("recommend", tracking.CHALLENGER, settings=model_settings)
    frame = pd.DataFrame(
        {
            "user_id": [*rec.user_ids[:3].tolist(), 987_654],
            "k": [3, 5, 7, 4],
            "session": [[], rec.item_ids[:2].tolist(), [], []],
        }
    )
    served = loaded.predict(frame)
    direct = rec.predict(frame)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), direct)
    assert len(served) == 3 + 5 + 7 + 4
    assert served[served["user_id"] == 987_654]["fallback"].all()
    assert not served[served["user_id"] != 987_654]["fallback"].any()
    # Optional columns may be left out.
    only_users = loaded.predict(pd.DataFrame({"user_id": rec.user_ids[:2].tolist()}))
    assert len(only_users) == 20
    user = rec.user_ids[1].item()
    assert loaded.predictor.recommend(user, 10) == rec.recommend(user, 10)


def test_malformed_inputs_raise_value_errors(tower: tuple[Recommender, dict[str, Any]]) -> None:
    rec = tower[0]
    user = rec.user_ids[0].item()
    bad_frames = [
        pd.DataFrame({"customer": [user]}),
        pd.DataFrame({"k": [3]}),
        pd.DataFrame({"user_id": [None]}),
        pd.DataFrame({"user_id": [float("nan")]}),
        pd.DataFrame({"user_id": [1.5]}),
        pd.DataFrame({"user_id": [user], "k": [0]}),
        pd.DataFrame({"user_id": [user], "k": [2.5]}),
        pd.DataFrame({"user_id": [user], "k": ["3"]}),
        pd.DataFrame({"user_id": [user], "k": [10_000]}),
        pd.DataFrame({"user_id": [user], "session": ["12,13"]}),
        pd.DataFrame({"user_id": [user], "session": [[1, None]]}),
    ]
    for frame in bad_frames:
        with pytest.raises(ValueError):
            rec.predict(frame)
    with pytest.raises(ValueError):
        rec.predict([[user, 3]])
    with pytest.raises(ValueError, match="unknown customer features"):
        rec.recommend("new", 5, features={"favourite_colour": 3})
    with pytest.raises(ValueError, match="numeric"):
        rec.recommend("new", 5, features={"orders_7d": "many"})
    with pytest.raises(ValueError, match="list of product ids"):
        rec.recommend_session("123", 5)
    holdout = pd.DataFrame(
        {"user": [user, user, "stranger"], "item": [rec.item_ids[0].item(), "new", "new"]}
    )
    # Strangers are left out; products the model cannot rank stay in the truth as misses.
    assert holdout_truth(rec, holdout) == {0: {0, -1}}


# ---------------------------------------------------------------------- MovieLens helpers


def _fake_inter(path: Path, users: int = 30, items: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        liked = rng.choice(items, size=20, replace=False) + 1
        for i in liked:
            rows.append((u, int(i), int(rng.integers(1, 6)), 880_000_000 + len(rows)))
    frame = pd.DataFrame(
        rows, columns=["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    )
    frame.to_csv(path, sep="\t", index=False)
    return path


def test_movielens_helpers(tmp_path: Path) -> None:
    inter = _fake_inter(tmp_path / "fake.inter")
    wheel_dir = tmp_path / "cache"
    wheel_dir.mkdir()
    with zipfile.ZipFile(wheel_dir / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
        wheel.write(inter, ML100K_MEMBER)
    path = movielens_path(wheel_dir)  # from the cached wheel: no download
    assert path.read_bytes() == inter.read_bytes()
    purchases = read_movielens(path)
    raw = pd.read_csv(inter, sep="\t")
    assert len(purchases) == int((raw["rating:float"] >= 4).sum())
    train_part, valid_part, test_part = random_split(purchases, seed=1)
    assert len(train_part) + len(valid_part) + len(test_part) == len(purchases)
    sizes = purchases.groupby("user").size()
    train_sizes = train_part.groupby("user").size().reindex(sizes.index, fill_value=0)
    assert (train_sizes == np.floor(sizes * 0.8)).all()
    report = movielens(
        path,
        quick=True,
        bpr={"epochs": 2, "dim": 8},
        tower={"epochs": 2, "dim": 8},
        grids={"itemknn": [10], "ease": [10.0]},
    )
    assert [r.model for r in report.rows] == [
        "popularity",
        "item-kNN",
        "EASE",
        "BPR-MF",
        "two-tower",
    ]
    assert all(0 <= r.test["ndcg@10"] <= 1 for r in report.rows)
    with pytest.raises(ValueError, match="lacks"):
        read_movielens(_bad_inter(tmp_path))


def _bad_inter(tmp_path: Path) -> Path:
    path = tmp_path / "bad.inter"
    path.write_text("a\tb\n1\t2\n")
    return path
