"""The new-customer fast path of the recommender against the trained shop: same tower input.

``cartwise.models.recommend.predict.user_row`` turns one customer's online features into the
customer tower's input without a pandas frame (a new customer is scored on every request). It
must give exactly what ``FeatureSpec.user_row`` gives, for the shop's real ``recommend_v1`` rows
and for the awkward values online features can hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One recommender service for the module."""
    from cartwise.serving.services.recommend import RecommenderService

    return RecommenderService(overrides, QUIET)


@pytest.fixture(scope="module")
def recommender(service: Any) -> Any:
    """The champion recommender (with its two towers)."""
    rec = run(service.model(None)).predictor
    assert rec.towers is not None
    assert rec.towers.spec is not None
    return rec


def _cases(service: Any, spec: Any) -> list[dict[str, Any]]:
    from cartwise.models.recommend.features import USER_SERVICE

    rows = service.features.get(USER_SERVICE, [{"customer_id": c} for c in range(1, 41)])
    # As the service passes them: the tower's columns (None kept here, it drops them).
    known = {*spec.user_columns, "category_ids", "category_scores", "customer_id"}
    real = [{k: v for k, v in r.items() if k in known} for r in rows]
    assert any(any(r.get(c) is not None for c in spec.user_columns) for r in real)
    first, second = spec.user_columns[0], spec.user_columns[1]
    cats = list(spec.categories[:3])
    return [
        *real,
        {},
        {"customer_id": 7},
        {first: None, second: None},
        {first: math.nan},
        {first: math.inf, second: -math.inf},
        {first: True, second: np.float32(2.5)},
        {first: np.int64(3), second: -4, "category_ids": cats, "category_scores": [0.5] * 3},
        {"category_ids": np.array(cats), "category_scores": [None, math.nan, 1.0]},
        {first: 1.0, "category_ids": [*cats, 10**9], "category_scores": [0.1, 0.2]},
        {first: "3.5"},
    ]


def test_the_fast_row_equals_the_frame_row(service: Any, recommender: Any) -> None:
    from cartwise.models.recommend.predict import user_row

    spec = recommender.towers.spec
    for features in _cases(service, spec):
        expected = spec.user_row(features)
        got = user_row(spec, features)
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=str(features))


def test_bad_features_raise_as_before(recommender: Any) -> None:
    from cartwise.models.recommend.predict import user_row

    spec = recommender.towers.spec
    with pytest.raises(ValueError, match="unknown customer features"):
        user_row(spec, {"shoe_size": 9})
    with pytest.raises(ValueError, match="must be numeric"):
        user_row(spec, {spec.user_columns[0]: "lots"})
    with pytest.raises(OverflowError):
        user_row(spec, {spec.user_columns[0]: 10**400})
    with pytest.raises(ValueError, match="mapping"):
        user_row(spec, [1, 2])  # type: ignore[arg-type]


def test_a_new_customer_is_scored_from_the_same_row(service: Any, recommender: Any) -> None:
    from cartwise.models.recommend.features import USER_SERVICE

    spec = recommender.towers.spec
    row = next(
        r
        for r in service.features.get(USER_SERVICE, [{"customer_id": c} for c in range(1, 41)])
        if any(r.get(c) is not None for c in spec.user_columns)
    )
    wanted = {*spec.user_columns, "category_ids", "category_scores"}
    features = {k: v for k, v in row.items() if k in wanted and v is not None}
    vector = recommender.towers.users(np.zeros(1, dtype=np.int64), spec.user_row(features)[None])
    expected = (recommender.item_vectors @ vector[0] + recommender.item_bias).astype(np.float64)
    np.testing.assert_array_equal(recommender.new_customer_scores(features), expected)
