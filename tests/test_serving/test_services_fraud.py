"""FraudService against the trained shop: fraud_v1 online features, guests, reasons, batches."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model loads once)."""
    from cartwise.serving.services.fraud import FraudService

    return FraudService(overrides, QUIET)


@pytest.fixture(scope="module")
def regular(service: Any) -> dict[str, Any]:
    """A customer with a fraud profile in the online store, and that profile."""
    from cartwise.serving.runtime.features import OnlineFeatures

    online = OnlineFeatures(service.settings)
    rows = online.get(
        "fraud_v1",
        [
            {
                "customer_id": c,
                "order_amount": 50.0,
                "shipping_country": "GB",
                "orders_last_hour": 0,
                "request_epoch": int(time.time()),
            }
            for c in range(1, 60)
        ],
    )
    found = [r for r in rows if (r.get("orders_lifetime") or 0) >= 2]
    assert found, "the shop has repeat customers with fraud profiles"
    return found[0]


def order(customer_id: int | None, amount: float = 60.0, **extra: Any) -> dict[str, Any]:
    """A scoring request as checkout sends it."""
    return {
        "order_id": f"o-{customer_id}-{amount}",
        "customer_id": customer_id,
        "order_amount": amount,
        "shipping_country": "GB",
        "orders_last_hour": 0,
        "request_epoch": int(time.time()),
        **extra,
    }


def test_a_customer_order_is_scored_from_their_online_profile(
    service: Any, model: Any, regular: dict[str, Any]
) -> None:
    out = run(service.score(request=order(regular["customer_id"])))
    assert out["model"] == model.info()
    assert out["model"]["alias"] == "champion"
    assert out["cached"] is False
    assert 0.0 <= out["risk"] <= 1.0
    assert 0.0 <= out["anomaly"] <= 1.0
    assert out["decision"] in {"allow", "review", "block"}
    # The profile came from Feast: the same numbers the online store holds.
    assert out["features"]["orders_lifetime"] == regular["orders_lifetime"]
    assert out["features"]["avg_order_amount"] == pytest.approx(regular["avg_order_amount"])
    assert out["features"]["order_amount"] == 60.0
    assert out["features"]["amount_vs_avg"] == pytest.approx(60.0 / regular["avg_order_amount"])
    features = set(model.predictor.features)
    assert 1 <= len(out["reasons"]) <= 3
    for reason in out["reasons"]:
        assert reason["feature"] in features
        assert isinstance(reason["contribution"], float)
        assert reason["text"].startswith(reason["feature"] + "=")
    contributions = [r["contribution"] for r in out["reasons"]]
    assert contributions == sorted(contributions, reverse=True)


def test_a_guest_has_no_history_and_its_own_signals(service: Any) -> None:
    out = run(service.score(request=order(None, 80.0, shipping_country="FR", orders_last_hour=2)))
    f = out["features"]
    assert f["orders_lifetime"] == 0.0
    assert f["avg_order_amount"] == 0.0
    assert f["amount_vs_avg"] == 1.0
    assert f["is_new_country"] == 1.0
    assert f["order_velocity_1h"] == 2.0
    assert f["order_amount"] == 80.0


def test_a_burst_of_orders_raises_the_risk(service: Any, regular: dict[str, Any]) -> None:
    calm = run(service.score(request=order(regular["customer_id"], 60.0)))
    burst = run(service.score(request=order(regular["customer_id"], 60.0, orders_last_hour=6)))
    assert burst["features"]["order_velocity_1h"] == 6.0
    assert burst["risk"] > calm["risk"]


def test_score_many_matches_one_by_one(service: Any, regular: dict[str, Any]) -> None:
    requests = [order(regular["customer_id"], 30.0), order(None, 900.0), order(10_000_000, 5.0)]
    many = run(service.score_many(requests=requests))
    assert len(many) == 3
    for request, batched in zip(requests, many, strict=True):
        single = run(service.score(request=request))
        assert batched["order_id"] == request["order_id"]
        assert batched["risk"] == pytest.approx(single["risk"])
        assert batched["decision"] == single["decision"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"customer_id": 1}, "order_amount"),
        ({"order_amount": -5.0}, "non-negative"),
        ({"order_amount": float("nan")}, "finite"),
        ({"order_amount": "12"}, "order_amount"),
        ({"order_amount": 5.0, "customer_id": "abc"}, "customer_id"),
        ({"order_amount": 5.0, "orders_last_hour": -1}, "orders_last_hour"),
        ({"order_amount": 5.0, "card_number": "4242"}, "unknown request fields"),
    ],
)
def test_bad_requests_are_value_errors(
    service: Any, request_: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(service.score(request=request_))


def test_bad_batches_are_value_errors(service: Any) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        run(service.score_many(requests=[]))
    with pytest.raises(ValueError, match="at most"):
        run(service.score_many(requests=[order(None)] * 1000))


def test_no_model_in_the_registry_is_model_unavailable(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    from cartwise.serving.services.fraud import FraudService

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    service = FraudService({**overrides, "mlflow_tracking_uri": uri, "mlflow_registry_uri": uri})
    with pytest.raises(ModelUnavailable):
        run(service.score(request=order(None)))


def _logged(settings: Any, keys: list[str]) -> Any:
    """The feature-log rows of the last hour with these keys, indexed by key."""
    from cartwise.models.monitoring import feature_log

    now = datetime.now(UTC)
    frame = feature_log.read(
        "fraud", now - timedelta(hours=1), now + timedelta(minutes=5), settings
    )
    return frame[frame["key"].isin(keys)].set_index("key")


def test_scored_orders_are_logged_with_the_model_input_and_the_answered_risk(
    service: Any, model: Any, regular: dict[str, Any]
) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = [
        order(regular["customer_id"], 40.0, order_id=f"log-{tag}-a"),
        order(None, 300.0, order_id=f"log-{tag}-b", orders_last_hour=3, shipping_country="FR"),
        order(regular["customer_id"], 900.0, order_id=f"log-{tag}-c", orders_last_hour=5),
    ]
    answers = run(service.score_many(requests=requests))
    logger = service.feature_logger
    assert logger is not None
    assert logger.flush()  # a file was written
    mine = _logged(service.model_settings, [r["order_id"] for r in requests])
    assert sorted(mine.index) == sorted(r["order_id"] for r in requests)
    for answered in answers:
        row = mine.loc[answered["order_id"]]
        assert row["prediction"] == pytest.approx(answered["risk"])
        assert int(row["model_version"]) == answered["model"]["version"] == model.version
        assert row["area"] == "fraud"
        assert row["model_name"] == model.name
        # Every model input, exactly as the model saw it (and as the answer shows it).
        for name in model.predictor.features:
            assert row[name] == pytest.approx(answered["features"][name]), name
    assert mine.loc[f"log-{tag}-b", "order_velocity_1h"] == 3.0
    assert mine.loc[f"log-{tag}-c", "order_amount"] == 900.0


def test_logging_does_not_change_answers_and_warm_up_calls_are_not_logged(
    overrides: dict[str, Any], service: Any, regular: dict[str, Any]
) -> None:
    from cartwise.serving.services.fraud import FraudService

    quiet = FraudService({**overrides, "feature_log_enabled": False}, QUIET)
    request = order(regular["customer_id"], 75.0, order_id=f"same-{uuid.uuid4().hex[:8]}")
    logged = run(service.score(request=request))
    unlogged = run(quiet.score(request=request))
    assert quiet.feature_logger is None
    assert logged == unlogged

    logger = service.feature_logger
    assert logger is not None
    before = logger.logged
    run(service.warmup())  # scores a synthetic order: not live traffic
    assert logger.logged == before
    assert run(service.status())["feature_log"]["logged"] == before
