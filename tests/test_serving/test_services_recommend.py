"""RecommenderService against the trained shop: strategies, filters, session features, caching."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration

# No background alias checks during a test: a promotion is tested explicitly below.


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model loads once)."""
    from cartwise.serving.services.recommend import RecommenderService

    return RecommenderService(overrides, QUIET)


@pytest.fixture(scope="module")
def categories(model: Any) -> dict[int, str]:
    """Product id → category name, as the model knows them."""
    rec = model.predictor
    return {int(p): str(c) for p, c in zip(rec.item_ids.tolist(), rec.item_category, strict=True)}


def ids(answer: dict[str, Any]) -> list[int]:
    """The product ids of an answer, in order."""
    return [item["product_id"] for item in answer["items"]]


def champion_version(overrides: dict[str, Any]) -> int:
    """The version the registry's champion alias points at."""
    from cartwise.models import tracking
    from cartwise.models.settings import ModelSettings

    found = tracking.current("recommend", "champion", settings=ModelSettings(**overrides))
    assert found is not None
    return int(found.version)


def test_known_user_gets_personal_results_from_the_champion(
    service: Any, model: Any, overrides: dict[str, Any]
) -> None:
    user = int(model.predictor.user_ids[0])
    out = run(service.recommend(user_id=user, k=5))
    assert out["strategy"] == "personal"
    assert out["model"] == {
        "name": "recommend",
        "version": champion_version(overrides),
        "alias": "champion",
    }
    assert len(out["items"]) == 5
    assert len(set(ids(out))) == 5
    scores = [item["score"] for item in out["items"]]
    assert scores == sorted(scores, reverse=True)


def test_a_second_identical_call_is_cached_but_a_session_call_is_not(
    service: Any, model: Any, categories: dict[int, str]
) -> None:
    user = int(model.predictor.user_ids[1])
    first = run(service.recommend(user_id=user, k=4, category=None))
    second = run(service.recommend(user_id=user, k=4, category=None))
    assert first["cached"] is False
    assert second["cached"] is True
    assert ids(second) == ids(first)
    stats = run(service.status())["cache"]
    assert stats["hits"] >= 1

    session = f"s-{uuid.uuid4().hex}"
    push_session(service.settings, session, list(categories)[:2])
    again = [run(service.recommend(user_id=user, session_id=session, k=4)) for _ in range(2)]
    assert [a["strategy"] for a in again] == ["session", "session"]
    assert [a["cached"] for a in again] == [False, False]


@pytest.mark.parametrize(
    "call",
    [
        {"context": "home"},
        {"context": "home", "user": True},
        {"context": "product"},
        {"context": "cart"},
        {"context": "home", "variant": "baseline:popularity"},
    ],
)
def test_results_never_leave_the_allowed_ids(
    service: Any, model: Any, call: dict[str, Any]
) -> None:
    rec = model.predictor
    allowed = [int(p) for p in rec.item_ids.tolist()[::3]]
    kwargs: dict[str, Any] = {"context": call["context"], "k": 10, "allowed": allowed}
    if call.get("user"):
        kwargs["user_id"] = int(rec.user_ids[2])
    if call.get("variant"):
        kwargs["variant"] = call["variant"]
    if call["context"] == "product":
        kwargs["product_id"] = int(rec.item_ids[0])
    if call["context"] == "cart":
        kwargs["cart"] = [int(rec.item_ids[0]), int(rec.item_ids[1])]
    out = run(service.recommend(**kwargs))
    assert out["items"], out
    assert set(ids(out)) <= set(allowed)
    assert not set(ids(out)) & set(kwargs.get("cart", []))
    assert kwargs.get("product_id") not in ids(out)


def test_category_and_exclude_purchased_filters(
    service: Any, model: Any, categories: dict[int, str]
) -> None:
    rec = model.predictor
    user = next(
        int(u)
        for i, u in enumerate(rec.user_ids.tolist())
        if rec.own[i].nnz >= 2  # someone with purchases to exclude
    )
    bought = {int(rec.item_ids[j]) for j in rec.own[rec.user_index(user)].indices}
    everything = run(service.recommend(user_id=user, k=len(categories)))
    assert set(ids(everything)) & bought, "a buyer's full ranking includes what they bought"
    fresh = run(service.recommend(user_id=user, k=len(categories), exclude_purchased=True))
    assert fresh["items"]
    assert not set(ids(fresh)) & bought

    furniture = run(service.recommend(user_id=user, k=5, category="Furniture"))
    assert furniture["items"]
    assert {categories[p] for p in ids(furniture)} == {"Furniture"}
    # Case-insensitive; a category no product has gives nothing, not an error.
    lower = run(service.recommend(user_id=user, k=5, category="furniture"))
    assert ids(lower) == ids(furniture)
    assert run(service.recommend(user_id=user, k=5, category="Spaceships"))["items"] == []


def test_popularity_baseline_and_unknown_users(service: Any, model: Any) -> None:
    rec = model.predictor
    baseline = run(
        service.recommend(user_id=int(rec.user_ids[0]), k=5, variant="baseline:popularity")
    )
    assert baseline["strategy"] == "popular"
    anonymous = run(service.recommend(k=5))
    assert anonymous["strategy"] == "popular"
    assert ids(anonymous) == ids(baseline)
    stranger = run(service.recommend(user_id=10_000_000, k=5))
    assert stranger["strategy"] == "popular"


def test_a_customer_unseen_in_training_is_scored_by_their_features(
    service: Any, model: Any
) -> None:
    from cartwise.serving.runtime.features import OnlineFeatures

    rec = model.predictor
    online = OnlineFeatures(service.settings)
    unseen = [c for c in range(1, 400) if not rec.knows_user(c)]
    rows = online.get("recommend_v1", [{"customer_id": c} for c in unseen])
    with_features = [r["customer_id"] for r in rows if r.get("orders_lifetime") is not None]
    assert with_features, "the shop has customers with features the model never saw"
    out = run(service.recommend(user_id=with_features[0], k=5))
    assert out["strategy"] == "new_customer"
    assert len(out["items"]) == 5


def test_similar_and_complements(service: Any, model: Any) -> None:
    rec = model.predictor
    product = int(rec.item_ids[0])
    similar = run(service.similar(product_id=product, k=5))
    assert similar["strategy"] == "similar"
    assert product not in ids(similar)
    assert len(ids(similar)) == 5
    # The same through recommend(context=product).
    via = run(service.recommend(context="product", product_id=product, k=5))
    assert ids(via) == ids(similar)

    pair = rec.co_purchases.tocoo()
    i, j = int(pair.row[0]), int(pair.col[0])
    cart = [int(rec.item_ids[i])]
    complements = run(service.complements(product_ids=cart, k=5))
    assert complements["strategy"] == "complements"
    assert int(rec.item_ids[j]) in ids(complements)
    assert cart[0] not in ids(complements)


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("recommend", {"k": 0}, "k must be"),
        ("recommend", {"k": "5"}, "k must be"),
        ("recommend", {"k": 10_000}, "k must be"),
        ("recommend", {"context": "checkout"}, "context must be"),
        ("recommend", {"context": "product"}, "needs a product_id"),
        ("recommend", {"user_id": -3}, "user_id"),
        ("recommend", {"allowed": ["x"]}, "allowed"),
        ("recommend", {"variant": "no such!"}, "variant"),
        ("recommend", {"variant": "baseline:bm25"}, "variant"),
        ("recommend", {"session_id": ""}, "session_id"),
        ("similar", {"product_id": 99_999_999}, "unknown product"),
        ("complements", {"product_ids": []}, "at least one"),
        ("complements", {"product_ids": [99_999_999]}, "unknown product"),
    ],
)
def test_bad_input_is_a_value_error(
    service: Any, method: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(getattr(service, method)(**kwargs))


def push_session(settings: Any, session_id: str, viewed: list[int]) -> None:
    """Write a session's features to the online store the way the events API's push does."""
    import pandas as pd

    from cartwise.features import push
    from cartwise.features.settings import SESSION_PUSH_SOURCE
    from cartwise.features.store import get_store

    store = get_store(settings)
    frame = pd.DataFrame(
        [
            {
                "session_id": session_id,
                "event_timestamp": datetime.now(UTC),
                "last_products": list(reversed(viewed)),  # newest first, as session_v1 keeps it
                "view_count": len(viewed),
                "search_count": 0,
                "event_count": len(viewed),
                "cart_value": 0.0,
            }
        ]
    )
    views = [
        fv
        for fv in store.list_feature_views()
        if fv.stream_source is not None and fv.stream_source.name == SESSION_PUSH_SOURCE
    ]
    assert views
    provider = store._get_provider()
    for view in views:
        provider.online_write_batch(store.config, view, push._online_rows(frame), progress=None)


@pytest.mark.parametrize("signed_in", [False, True])
def test_three_views_in_a_category_put_it_on_top_within_a_second(
    service: Any, model: Any, categories: dict[int, str], signed_in: bool
) -> None:
    rec = model.predictor
    user = int(rec.user_ids[3]) if signed_in else None
    session = f"s-{uuid.uuid4().hex}"
    before = run(service.recommend(user_id=user, session_id=session, k=3))
    assert before["strategy"] == ("personal" if signed_in else "popular")
    # Pick the category that is least present in the answer without a session.
    counts = {c: list(categories.values()).count(c) for c in set(categories.values())}
    target = next(
        c
        for c in sorted(counts, key=lambda c: -counts[c])
        if c not in {categories[p] for p in ids(before)} and counts[c] >= 6
    )
    viewed = [p for p, c in categories.items() if c == target][:3]

    started = time.monotonic()
    push_session(service.settings, session, viewed)
    after = run(service.recommend(user_id=user, session_id=session, k=3))
    elapsed = time.monotonic() - started

    assert after["strategy"] == "session"
    assert after["session_products"] == list(reversed(viewed))
    assert {categories[p] for p in ids(after)} == {target}
    assert not set(ids(after)) & set(viewed), "what the shopper just saw is not re-suggested"
    assert elapsed < 1.0


@pytest.fixture
def new_product(trained_shop: Any, model: Any) -> Iterator[dict[str, Any]]:
    """A product created after training (in the shop database), deleted afterwards."""
    from sqlalchemy import delete, insert, select

    from cartwise.commerce.catalog.models import Category, Product
    from cartwise.platform.db import get_engine
    from cartwise.platform.settings import Settings

    engine = get_engine(Settings(database_url=trained_shop.database_url))
    product = Product.__table__  # type: ignore[attr-defined]
    category = Category.__table__  # type: ignore[attr-defined]
    suffix = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        category_id = conn.execute(
            select(category.c.id).where(category.c.name == "Furniture")
        ).scalar_one()
        pid = conn.execute(
            insert(product)
            .values(
                name="Solid Oak Writing Desk",
                slug=f"solid-oak-writing-desk-{suffix}",
                description="A sturdy oak desk with two drawers, for a home office or study.",
                category_id=category_id,
                status="active",
                created_at=now,
                updated_at=now,
            )
            .returning(product.c.id)
        ).scalar_one()
    yield {"product_id": int(pid), "category": "Furniture"}
    with engine.begin() as conn:
        conn.execute(delete(product).where(product.c.id == pid))


def test_a_new_catalog_product_is_placed_by_its_content(
    overrides: dict[str, Any], new_product: dict[str, Any], categories: dict[int, str]
) -> None:
    from cartwise.serving.services.recommend import RecommenderService

    service = RecommenderService(overrides, QUIET)
    pid = new_product["product_id"]
    first = run(service.similar(product_id=pid, k=5))
    assert first["strategy"] == "similar"
    assert first["items"]
    assert pid not in ids(first)

    refreshed = run(service.refresh())
    assert refreshed["items"] == refreshed["trained_items"] + 1
    similar = run(service.similar(product_id=pid, k=5))
    assert similar["strategy"] == "similar"
    assert pid not in ids(similar)
    # Its content (an oak desk) places it among the furniture.
    assert categories[ids(similar)[0]] == "Furniture"
    # And it can now be recommended from the furniture aisle.
    aisle = run(service.recommend(k=20, category="Furniture", allowed=[pid, *categories]))
    assert pid in ids(aisle)


def copy_registry(shop: Any, tmp_path: Path) -> dict[str, Any]:
    """The shop's MLflow registry copied under tmp_path, new artifacts written there too."""
    target = tmp_path / "var"
    target.mkdir()
    shutil.copy(shop.var_dir / "mlflow.db", target / "mlflow.db")
    shutil.copytree(shop.var_dir / "mlartifacts", target / "mlartifacts")
    with sqlite3.connect(target / "mlflow.db") as db:
        db.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
            (str(shop.var_dir), str(target)),
        )
    uri = f"sqlite:///{target / 'mlflow.db'}"
    return {
        "mlflow_tracking_uri": uri,
        "mlflow_registry_uri": uri,
        "mlflow_artifact_root": str(target / "mlartifacts"),
    }


@pytest.mark.slow
def test_a_new_version_never_reads_the_old_versions_cache(
    trained_shop: Any, overrides: dict[str, Any], model: Any, tmp_path: Path
) -> None:
    import pandas as pd

    from cartwise.models import tracking
    from cartwise.models.settings import ModelSettings
    from cartwise.serving.services.recommend import RecommenderService

    registry = {**overrides, **copy_registry(trained_shop, tmp_path)}
    service = RecommenderService(registry, QUIET)
    user = int(model.predictor.user_ids[4])
    old = run(service.recommend(user_id=user, k=3))
    assert run(service.recommend(user_id=user, k=3))["cached"] is True

    settings = ModelSettings(**registry)
    version = tracking.register(
        "recommend",
        model.predictor,
        area="recommend",
        input_example=pd.DataFrame({"user_id": [user], "k": [3]}),
        metrics={"ndcg_at_10": 0.5},
        alias="champion",
        settings=settings,
    )
    service.holder.refresh()
    new = run(service.recommend(user_id=user, k=3))
    assert new["model"]["version"] == int(version.version) == old["model"]["version"] + 1
    assert new["cached"] is False
    assert ids(new) == ids(old)
    assert run(service.recommend(user_id=user, k=3))["cached"] is True


def test_no_model_in_the_registry_is_model_unavailable(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    from cartwise.serving.services.recommend import RecommenderService

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    service = RecommenderService(
        {**overrides, "mlflow_tracking_uri": uri, "mlflow_registry_uri": uri}, QUIET
    )
    with pytest.raises(ModelUnavailable):
        run(service.recommend(k=5))
    with pytest.raises(ModelUnavailable):
        run(service.similar(product_id=1, k=5))


def test_an_alias_nobody_set_is_model_unavailable(service: Any) -> None:
    with pytest.raises(ModelUnavailable):
        run(service.recommend(k=5, variant="experiment-b"))


def test_reconfigure_follows_another_alias_and_status_reports_it(
    overrides: dict[str, Any], model: Any
) -> None:
    from cartwise.serving.services.recommend import RecommenderService

    service = RecommenderService(overrides, QUIET)
    assert run(service.recommend(k=3))["model"]["alias"] == "champion"
    service.reconfigure({"alias": "challenger", "cache_ttl_s": 5})
    service.holder.refresh()  # the registry check a replica would run in the background
    out = run(service.recommend(k=3))
    assert out["model"]["alias"] == "challenger"
    status = run(service.status())
    assert status["model"]["alias"] == "challenger"
    assert status["model"]["version"] == out["model"]["version"]
    assert status["config"]["cache_ttl_s"] == 5
    assert status["cache"]["ttl_s"] == 5
    # A/B: the champion stays reachable by name while the service follows the challenger.
    assert run(service.recommend(k=3, variant="v1"))["model"]["version"] == 1
    with pytest.raises(ValueError, match="unknown recommend config"):
        service.reconfigure({"alais": "champion"})


# ---------------------------------------------------------------------- the feature log


def _logged(settings: Any, keys: list[int], since: datetime) -> Any:
    """The recommend feature-log rows logged since ``since`` with these customer ids as keys."""
    from datetime import timedelta

    from cartwise.models.monitoring import feature_log

    end = datetime.now(UTC) + timedelta(minutes=5)
    frame = feature_log.read("recommend", since, end, settings)
    return frame[frame["key"].isin([str(k) for k in keys])]


def _profiles(service: Any, customers: list[int]) -> list[dict[str, Any]]:
    """The ``recommend_v1`` rows of these customers that have statistics."""
    rows = service.features.get("recommend_v1", [{"customer_id": c} for c in customers])
    return [r for r in rows if r.get("orders_lifetime") is not None]


def _expected(rec: Any, online: dict[str, Any]) -> tuple[dict[str, float], float]:
    """A customer's monitored row as ``RecommendAdapter`` builds the reference: the
    statistics (missing as 0) and the mean score of the unfiltered top 10."""
    import math

    import numpy as np

    from cartwise.models.recommend.features import USER_COLUMNS

    def number(value: Any) -> float:
        return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else value

    features = {c: float(number(online.get(c))) for c in USER_COLUMNS}
    mapping = {
        c: v
        for c, v in online.items()
        if c in {*USER_COLUMNS, "category_ids", "category_scores"} and v is not None
    }
    recs = rec.recommend(int(online["customer_id"]), k=10, features=mapping)
    assert not recs.fallback
    return features, float(np.mean(recs.scores))


def _fresh_allowed(rec: Any) -> list[int]:
    """Every product plus an id no product has: the same answers under a cache key no other
    call used."""
    return [*map(int, rec.item_ids.tolist()), 1_000_000_000 + uuid.uuid4().int % 1_000_000]


def test_personal_and_new_customer_answers_log_the_reference_features(
    service: Any, model: Any, overrides: dict[str, Any]
) -> None:
    from cartwise.models import monitoring
    from cartwise.models.recommend.features import USER_COLUMNS

    rec = model.predictor
    known = _profiles(service, [int(u) for u in rec.user_ids.tolist()[-40:]])
    unseen = _profiles(service, [c for c in range(1, 400) if not rec.knows_user(c)])
    assert known, "customers of the training data have recommend_v1 statistics"
    assert unseen, "the shop has customers with features the model never saw"
    member, stranger = known[0], unseen[0]
    logger = service.feature_logger
    assert logger is not None
    assert service.wait_feature_log(120)
    before, since = logger.logged, datetime.now(UTC)

    allowed = _fresh_allowed(rec)
    personal = run(service.recommend(user_id=member["customer_id"], k=5, allowed=allowed))
    assert personal["strategy"] == "personal"
    assert personal["cached"] is False
    fresh = run(service.recommend(user_id=stranger["customer_id"], k=5, allowed=allowed))
    assert fresh["strategy"] == "new_customer"
    assert fresh["cached"] is False
    # Neither a cached answer nor a guest's popular items are logged.
    assert run(service.recommend(user_id=member["customer_id"], k=5, allowed=allowed))["cached"]
    again = run(service.recommend(user_id=stranger["customer_id"], k=5, allowed=allowed))
    assert again["cached"]
    assert again["items"] == fresh["items"]
    run(service.recommend(k=5, allowed=allowed))
    assert service.wait_feature_log(120)
    assert logger.logged == before + 2

    logger.flush()
    frame = _logged(service.model_settings, [member["customer_id"], stranger["customer_id"]], since)
    assert sorted(frame["key"]) == sorted(str(r["customer_id"]) for r in (member, stranger))
    # The reference sample's columns, as the drift check matches them.
    reference = monitoring.load_reference(
        "recommend", model.version, settings=service.model_settings
    )
    assert list(reference.features.columns) == list(USER_COLUMNS)
    meta = {"logged_at", "area", "model_name", "model_version", "key", "prediction"}
    assert set(frame.columns) == {*USER_COLUMNS, *meta}
    for online in (member, stranger):
        row = frame[frame["key"] == str(online["customer_id"])].iloc[-1]
        assert int(row["model_version"]) == personal["model"]["version"] == model.version
        features, prediction = _expected(rec, online)
        for name in USER_COLUMNS:
            assert row[name] == pytest.approx(features[name]), name
        assert row["prediction"] == pytest.approx(prediction)


def test_logging_does_not_change_recommendations_and_warm_up_calls_are_not_logged(
    overrides: dict[str, Any], service: Any, model: Any
) -> None:
    from cartwise.serving.services.base import _NOT_LIVE
    from cartwise.serving.services.recommend import RecommenderService

    rec = model.predictor
    # Its own (in-process) prediction cache: both services compute their answers.
    quiet = RecommenderService({**overrides, "feature_log_enabled": False, "redis_url": ""}, QUIET)
    member = _profiles(service, [int(u) for u in rec.user_ids.tolist()[-40:]])[1]
    stranger = _profiles(service, [c for c in range(1, 400) if not rec.knows_user(c)])[-1]
    allowed = _fresh_allowed(rec)
    for user in (member["customer_id"], stranger["customer_id"]):
        logged = run(service.recommend(user_id=user, k=6, allowed=allowed))
        unlogged = run(quiet.recommend(user_id=user, k=6, allowed=allowed))
        assert logged["cached"] is unlogged["cached"] is False
        assert logged == unlogged
    assert quiet.feature_logger is None
    assert quiet.wait_feature_log(120)  # nothing was queued

    logger = service.feature_logger
    assert logger is not None
    assert service.wait_feature_log(120)
    before = logger.logged
    run(service.warmup())
    # Calls made while warming up (as ``warmup`` marks them) are not live traffic.
    token = _NOT_LIVE.set(True)
    try:
        run(service.recommend(user_id=member["customer_id"], k=6, allowed=_fresh_allowed(rec)))
        run(service.recommend(user_id=stranger["customer_id"], k=6))
    finally:
        _NOT_LIVE.reset(token)
    assert service.wait_feature_log(120)
    assert logger.logged == before
    assert run(service.status())["feature_log"]["logged"] == before


@pytest.mark.slow
def test_the_drift_check_reads_the_logged_customers_once_there_are_enough(
    trained_shop: Any, overrides: dict[str, Any], model: Any, tmp_path: Path
) -> None:
    import mlflow

    from cartwise.models import monitoring
    from cartwise.models.recommend.features import USER_COLUMNS
    from cartwise.models.settings import ModelSettings
    from cartwise.serving.services.recommend import RecommenderService
    from tests.test_models.shop_registry import shop_source

    # The shop's registry (only read), with the feature log in tmp_path.
    live = {**overrides, "storage_local_path": str(tmp_path / "media")}
    service = RecommenderService(live, QUIET)
    rec = model.predictor
    members = [
        int(r["customer_id"])
        for r in _profiles(service, [int(u) for u in rec.user_ids.tolist()[:60]])
    ]
    assert len(members) >= 30
    allowed = _fresh_allowed(rec)
    for user in members:
        assert run(service.recommend(user_id=user, k=5, allowed=allowed))["strategy"] == "personal"
    assert service.wait_feature_log(120)
    service.close()  # writes the buffered rows
    registry = ModelSettings(**live, monitor_min_rows=len(members))
    try:
        found = monitoring.check("recommend", shop_source(trained_shop), settings=registry)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert found.current_source == "feature_log"
    assert found.current_rows == len(members)
    assert found.model_version == model.version
    # Every reference feature is compared: the log holds the same columns.
    assert found.n_features == len(USER_COLUMNS)
    assert set(found.features) == set(USER_COLUMNS)
    assert not any("not monitored now" in note for note in found.notes)
    assert any("live features from the feature log" in note for note in found.notes)
    assert found.prediction_drift is not None
