"""DemandService against the trained shop: quantile forecasts and reorder suggestions."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from cartwise.serving.runtime.errors import ModelUnavailable
from tests.test_serving.services_support import QUIET, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(overrides: dict[str, Any]) -> Any:
    """One service for the module (the model loads once)."""
    from cartwise.serving.services.demand import DemandService

    return DemandService(overrides, QUIET)


@pytest.fixture(scope="module")
def best_seller(model: Any) -> int:
    """The product with the most units in the forecaster's stored history."""
    import numpy as np

    f = model.predictor
    totals = np.nansum(f.history, axis=1)
    return int(f.product_ids[int(np.argmax(totals))])


def test_a_forecast_has_ordered_quantiles_for_28_days(
    service: Any, model: Any, best_seller: int
) -> None:
    out = run(service.forecast(product_id=best_seller))
    assert out["model"] == model.info()
    assert out["product_id"] == best_seller
    assert out["quantiles"] == list(model.predictor.quantiles)
    keys = [f"q{q:g}" for q in out["quantiles"]]
    assert "q0.1" in keys
    assert "q0.9" in keys
    assert len(out["days"]) == 28
    first = date.fromisoformat(out["days"][0]["date"])
    assert first == date.fromisoformat(out["origin"])
    for i, day in enumerate(out["days"]):
        assert date.fromisoformat(day["date"]) == first + timedelta(days=i)
        values = [day[k] for k in keys]
        assert all(v >= 0 for v in values)
        assert values == sorted(values)
    # A demo-budget model on a sparse shop may put the best seller's median at 0 units a day,
    # but not its upper band: the forecast must still expect it to sell.
    top = keys[-1]
    assert sum(day[top] for day in out["days"]) > 0, "the best seller is expected to sell"


def test_a_repeated_forecast_is_cached(service: Any, best_seller: int) -> None:
    first = run(service.forecast(product_id=best_seller, horizon=7))
    second = run(service.forecast(product_id=best_seller, horizon=7))
    assert len(first["days"]) == 7
    assert second["cached"] is True
    assert second["days"] == first["days"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"product_id": 99_999_999}, "unknown product"),
        ({"product_id": "3"}, "product_id"),
        ({"product_id": 3, "horizon": 0}, "horizon"),
        ({"product_id": 3, "horizon": 29}, "horizon"),
    ],
)
def test_bad_forecast_input_is_a_value_error(
    service: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(service.forecast(**kwargs))


def test_reorder_suggests_the_empty_shelf_not_the_full_one(
    service: Any, model: Any, best_seller: int
) -> None:
    others = [int(p) for p in model.predictor.product_ids if int(p) != best_seller]
    full = others[0]
    out = run(
        service.reorder_suggestions(
            # JSON object keys arrive as strings: both spellings work.
            stock={str(best_seller): 0, full: 100_000, 99_999_999: 3},
            lead_times={best_seller: 5.0},
            service_level=0.95,
            limit=10,
        )
    )
    assert out["model"] == model.info()
    assert out["evaluated"] == 2
    assert out["skipped"] == [99_999_999]
    suggested = {s["product_id"]: s for s in out["suggestions"]}
    assert set(suggested) == {best_seller}
    row = suggested[best_seller]
    assert row["reorder"] is True
    assert row["order_quantity"] >= 1
    assert row["lead_time_days"] == 5.0
    assert row["reorder_point"] >= row["safety_stock"] >= 0


def test_reorder_uses_the_default_lead_time_and_the_limit(service: Any, model: Any) -> None:
    ids = [int(p) for p in model.predictor.product_ids[:5]]
    # An unknown (NaN) lead time falls back to the default, like a missing one.
    out = run(
        service.reorder_suggestions(
            stock=dict.fromkeys(ids, 0), lead_times={ids[0]: float("nan")}, limit=2
        )
    )
    assert len(out["suggestions"]) <= 2
    for s in out["suggestions"]:
        assert s["lead_time_days"] == out["default_lead_time_days"] == 7.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stock": [1, 2]}, "stock must be"),
        ({"stock": {"abc": 1}}, "not a product id"),
        ({"stock": {1: -1}}, "non-negative"),
        ({"stock": {1: 1.5}}, "whole number"),
        ({"stock": {1: 1}, "lead_times": {1: "soon"}}, "number"),
        ({"stock": {1: 1}, "service_level": 1.5}, "service_level"),
        ({"stock": {1: 1}, "limit": 0}, "limit"),
    ],
)
def test_bad_reorder_input_is_a_value_error(
    service: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(service.reorder_suggestions(**kwargs))


def test_no_model_in_the_registry_is_model_unavailable(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    from cartwise.serving.services.demand import DemandService

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    service = DemandService({**overrides, "mlflow_tracking_uri": uri, "mlflow_registry_uri": uri})
    with pytest.raises(ModelUnavailable):
        run(service.forecast(product_id=3))
    with pytest.raises(ModelUnavailable):
        run(service.reorder_suggestions(stock={3: 0}))


class _Threading:
    """A stand-in for the ``threading`` module the services use, with a counting Thread."""

    def __init__(self, thread: type[Any]) -> None:
        import threading

        self.Thread = thread
        self.Lock = threading.Lock
        self.RLock = threading.RLock


def test_concurrent_first_calls_share_one_model_load(
    overrides: dict[str, Any], best_seller: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from cartwise.serving.services import base
    from cartwise.serving.services.demand import DemandService

    started: list[str] = []

    class CountingThread(threading.Thread):
        def start(self) -> None:
            started.append(self.name)
            super().start()

    monkeypatch.setattr(base, "threading", _Threading(CountingThread))
    service = DemandService(overrides, QUIET)

    async def burst() -> list[dict[str, Any]]:
        calls = [service.forecast(product_id=best_seller, horizon=3) for _ in range(6)]
        return list(await asyncio.gather(*calls))

    answers = run(burst())
    assert len({a["model"]["version"] for a in answers}) == 1
    assert started.count("demand-load") == 1
    assert run(service.status())["model"]["loads"] == 1


# ---------------------------------------------------------------------- the feature log


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _logged(settings: Any, keys: list[int], since: Any) -> Any:
    """The demand feature-log rows logged since ``since`` with these product ids as keys."""
    from cartwise.models.monitoring import feature_log

    frame = feature_log.read("demand", since, _now() + timedelta(minutes=5), settings)
    return frame[frame["key"].isin([str(k) for k in keys])]


def _reference_row(forecaster: Any, product_id: int) -> tuple[dict[str, float], float]:
    """A product's monitored features and prediction, measured as the drift reference does:
    the summaries of the history before the origin and the mean daily median over 28 days."""
    import numpy as np

    from cartwise.models.monitoring.areas import DEMAND_FEATURES, demand_features

    row = int(np.flatnonzero(forecaster.product_ids == product_id)[0])
    hist, price = forecaster.history[row : row + 1], forecaster.history_price[row : row + 1]
    features = demand_features(hist, price).iloc[0]
    q = forecaster.forecast_arrays(
        hist, price, forecaster.history_closed, forecaster.history_end, 28
    )
    return (
        {name: float(features[name]) for name in DEMAND_FEATURES},
        float(q[0, :, forecaster.median].mean()),
    )


def _same(logged: float, expected: float) -> bool:
    import math

    if math.isnan(expected):
        return math.isnan(logged)
    return bool(logged == pytest.approx(expected, rel=1e-5, abs=1e-6))


def _ranked(model: Any) -> list[int]:
    """Stored products by units sold, most first."""
    import numpy as np

    f = model.predictor
    order = np.argsort(-np.nansum(f.history, axis=1), kind="stable")
    return [int(f.product_ids[i]) for i in order]


def test_computed_forecasts_are_logged_with_the_reference_features_and_prediction(
    service: Any, model: Any
) -> None:
    from cartwise.models.monitoring.areas import DEMAND_FEATURES

    logger = service.feature_logger
    assert logger is not None
    ranked = _ranked(model)
    # Products and horizons no other test asked for: computed, not read from the cache.
    full, short = ranked[1], ranked[2]
    before, since = logger.logged, _now()
    out = run(service.forecast(product_id=full, horizon=28))
    assert out["cached"] is False
    brief = run(service.forecast(product_id=short, horizon=5))
    assert brief["cached"] is False
    assert logger.logged == before + 2
    # A cached answer is not logged again.
    assert run(service.forecast(product_id=full, horizon=28))["cached"] is True
    assert logger.logged == before + 2

    logger.flush()
    frame = _logged(service.model_settings, [full, short], since)
    assert sorted(frame["key"].tolist()) == sorted([str(full), str(short)])
    # Exactly the reference sample's columns, as the drift check matches them.
    assert set(DEMAND_FEATURES) <= set(frame.columns)
    assert not set(frame.columns) - {*DEMAND_FEATURES, *_META}
    for product_id in (full, short):
        row = frame[frame["key"] == str(product_id)].iloc[-1]
        assert row["area"] == "demand"
        assert row["model_name"] == model.name
        assert int(row["model_version"]) == model.version
        features, prediction = _reference_row(model.predictor, product_id)
        for name in DEMAND_FEATURES:
            assert _same(float(row[name]), features[name]), name
        # The 28-day mean daily median, even for a 5-day question.
        assert _same(float(row["prediction"]), prediction)
    # ... which for a 28-day question is the mean of the answered medians.
    median = f"q{model.predictor.quantiles[model.predictor.median]:g}"
    answered = sum(day[median] for day in out["days"]) / 28
    logged = frame[frame["key"] == str(full)].iloc[-1]["prediction"]
    assert logged == pytest.approx(answered, rel=1e-5, abs=1e-6)


_META = {"logged_at", "area", "model_name", "model_version", "key", "prediction"}


def test_reorder_logs_every_evaluated_product(service: Any, model: Any) -> None:
    logger = service.feature_logger
    assert logger is not None
    ids = [int(p) for p in model.predictor.product_ids[:6]]
    before, since = logger.logged, _now()
    out = run(service.reorder_suggestions(stock={**dict.fromkeys(ids, 3), 99_999_998: 1}))
    assert out["evaluated"] == len(ids)
    # One row per evaluated product; the unknown one has nothing to log.
    assert logger.logged == before + len(ids)
    logger.flush()
    frame = _logged(service.model_settings, [*ids, 99_999_998], since)
    assert set(frame["key"]) == {str(p) for p in ids}
    for product_id in ids:
        row = frame[frame["key"] == str(product_id)].iloc[-1]
        _, prediction = _reference_row(model.predictor, product_id)
        assert _same(float(row["prediction"]), prediction)


def test_logging_does_not_change_answers_and_warm_up_calls_are_not_logged(
    overrides: dict[str, Any], service: Any, model: Any
) -> None:
    from cartwise.serving.services.base import _NOT_LIVE
    from cartwise.serving.services.demand import DemandService

    # Its own (in-process) prediction cache: both services compute their answers.
    quiet = DemandService({**overrides, "feature_log_enabled": False, "redis_url": ""}, QUIET)
    product = _ranked(model)[3]
    logged = run(service.forecast(product_id=product, horizon=11))
    unlogged = run(quiet.forecast(product_id=product, horizon=11))
    assert quiet.feature_logger is None
    assert logged["cached"] is unlogged["cached"] is False
    assert logged == unlogged
    stock = {int(p): 1 for p in model.predictor.product_ids[:20]}
    assert run(service.reorder_suggestions(stock=stock)) == run(
        quiet.reorder_suggestions(stock=stock)
    )

    logger = service.feature_logger
    assert logger is not None
    before = logger.logged
    run(service.warmup())
    # A call made while warming up (as ``warmup`` marks it) is not live traffic.
    token = _NOT_LIVE.set(True)
    try:
        run(service.forecast(product_id=product, horizon=13))
        run(service.reorder_suggestions(stock=stock))
    finally:
        _NOT_LIVE.reset(token)
    assert logger.logged == before
    assert run(service.status())["feature_log"]["logged"] == before


@pytest.mark.slow
def test_the_drift_check_reads_the_logged_forecasts_once_there_are_enough(
    trained_shop: Any, overrides: dict[str, Any], tmp_path: Path
) -> None:
    import mlflow

    from cartwise.models import monitoring, tracking
    from cartwise.models.monitoring.areas import DEMAND_FEATURES
    from cartwise.models.monitoring.check import load_predictor
    from cartwise.serving.services.demand import DemandService
    from tests.test_models.shop_registry import copy_registry, shop_source

    var = tmp_path / "var"
    # A copy of the registry; feature logs land in its var_dir, not in the shared shop.
    probe = copy_registry(trained_shop, var)
    n = len(load_predictor("demand", _champion(probe), settings=probe).product_ids)
    registry = probe.model_copy(update={"monitor_min_rows": n + 1})
    try:
        source = shop_source(trained_shop)
        version = _champion(registry)
        try:
            reference = monitoring.load_reference("demand", version, settings=registry)
        except LookupError:  # a shop kept from before reference samples
            champion = tracking.current("demand", tracking.CHAMPION, settings=registry)
            assert champion is not None
            monitoring.capture(
                "demand",
                load_predictor("demand", version, settings=registry),
                source,
                model_name="demand",
                version=version,
                run_id=str(champion.run_id),
                data_window=champion.tags["data_window"],
                settings=registry,
            )
            reference = monitoring.load_reference("demand", version, settings=registry)
        assert list(reference.features.columns) == list(DEMAND_FEATURES)

        service = DemandService({**overrides, "var_dir": str(var)}, QUIET)
        forecaster = load_predictor("demand", version, settings=registry)
        everything = {int(p): 0 for p in forecaster.product_ids}
        # One reorder pass logs one row per product: two make more than monitor_min_rows
        # (fewer fall back to the offline rows: see tests/test_models/test_feature_log.py).
        run(service.reorder_suggestions(stock=everything))
        run(service.reorder_suggestions(stock=everything))
        service.close()  # writes the buffered rows
        live = monitoring.check("demand", source, settings=registry)
        assert live.current_source == "feature_log"
        assert live.current_rows == 2 * n
        assert live.model_version == version
        # Every reference feature is compared: the log holds the same columns.
        assert live.n_features == len(DEMAND_FEATURES)
        assert set(live.features) == set(DEMAND_FEATURES)
        assert not any("not monitored now" in note for note in live.notes)
        assert live.drift_share is not None
        assert live.prediction_drift is not None
        assert any("live features from the feature log" in note for note in live.notes)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _champion(settings: Any) -> int:
    from cartwise.models import tracking

    champion = tracking.current("demand", tracking.CHAMPION, settings=settings)
    assert champion is not None
    return int(champion.version)
