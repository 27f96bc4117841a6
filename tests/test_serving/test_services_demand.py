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
