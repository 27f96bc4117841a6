"""The recommend area end to end: Ray Tune → MLflow challenger → the gate, and the pyfunc."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models import areas, tracking

pytestmark = pytest.mark.slow


def test_tune_registers_a_challenger_that_the_gate_scores(
    synth_source: Any, model_settings: Any, ray_session: None
) -> None:
    stages: list[str] = []
    trained = areas.train(
        "recommend",
        synth_source,
        budget="demo",
        tune_samples=2,
        seed=3,
        settings=model_settings,
        progress=lambda area, message: stages.append(f"{area}: {message}"),
    )
    assert trained.model_name == "recommend"
    assert trained.info["trials"] == 2
    assert trained.metrics["val_ndcg_at_10"] > 0
    assert any("Ray Tune" in s for s in stages)

    client = tracking.client(model_settings)
    experiment = client.get_experiment_by_name("recommend")
    assert experiment is not None
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'trial'")
    assert len(trials) == 2
    history = client.get_metric_history(trials[0].info.run_id, "val_ndcg_at_10")
    assert len(history) >= 1

    version = tracking.current("recommend", tracking.CHALLENGER, settings=model_settings)
    assert version is not None
    assert int(version.version) == trained.version
    assert version.tags["feature_service"] == "recommend_v1"
    assert version.tags["budget"] == "demo"

    decision = areas.evaluate("recommend", synth_source, settings=model_settings)
    assert decision.outcome == "first_champion"
    assert decision.metric == "ndcg_at_10"
    assert decision.challenger_score is not None
    assert decision.challenger_score > 0

    # The champion serves through the pyfunc alone; its answers match the predictor's.
    loaded = tracking.load("recommend", tracking.CHAMPION, settings=model_settings)
    predictor = loaded.predictor
    users = predictor.user_ids[:3].tolist()
    frame = pd.DataFrame({"user_id": users, "k": [4, 4, 4]})
    out = loaded.predict(frame)
    assert list(out.columns) == ["user_id", "rank", "product_id", "score", "fallback"]
    assert len(out) == 12
    assert not out["fallback"].any()
    first = predictor.recommend(users[0], 4)
    assert out[out["user_id"] == users[0]]["product_id"].tolist() == first.items
    session = predictor.item_ids[:3].tolist()
    with_session = loaded.predict(
        pd.DataFrame({"user_id": [users[0]], "k": [5], "session": [session]})
    )
    assert not set(with_session["product_id"]) & set(session)
    assert np.isfinite(with_session["score"]).all()
    with pytest.raises(ValueError):
        loaded.predict(pd.DataFrame({"customer": [1]}))

    # Content cold start with the real MiniLM vectors: a product described like an existing
    # one finds it first; a new product added by its text gets a vector and neighbours.
    products = synth_source.dimension("products")
    known = products.iloc[0]
    described = {k: known[k] for k in ("name", "description", "category")}
    similar = predictor.similar_items(999_999, 5, product=described)
    assert not similar.fallback
    assert similar.items[0] == int(known["product_id"])
    new = pd.DataFrame([{**described, "product_id": 999_999, "name": f"{known['name']} v2"}])
    grown = predictor.add_items(new)
    neighbours = grown.similar_items(999_999, 3)
    assert neighbours.reason == "new item: content"
    assert int(known["product_id"]) in neighbours.items
