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
