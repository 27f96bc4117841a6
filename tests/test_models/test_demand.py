"""Demand: the quantile forecaster learns, serves, persists; inventory, suppliers, decomposition."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models.demand import baselines, data, inventory, metrics, suppliers
from cartwise.models.demand.decompose import decompose, seasonal_strength, weekly_profile
from cartwise.models.demand.predict import DemandForecaster
from cartwise.models.demand.train import train, validate

HOLD = 28
FAST = {"epochs": 6, "lookback": 28, "hidden": 32, "max_windows": 4000, "seed": 0}


@pytest.fixture(scope="module")
def panel(synth_source: Any) -> data.Panel:
    """The generated shop's daily units through demand_v1."""
    return data.read_panel(synth_source)


@pytest.fixture(scope="module")
def fitted(panel: data.Panel) -> tuple[DemandForecaster, dict[str, float]]:
    """A small forecaster trained on all but the last 28 days."""
    return train(FAST, panel.window(0, panel.n_days - HOLD))


def test_panel_comes_from_the_feature_service(panel: data.Panel, synth_source: Any) -> None:
    truth = synth_source.truth("demand")
    assert panel.n_days == 150
    assert panel.n_series > 50
    # Units follow the simulator's record of units sold (less refunded and cancelled orders).
    sold = truth.groupby("product_id")["units_sold"].sum()
    ours = pd.Series(np.nansum(panel.units, axis=1), index=panel.product_ids)
    common = ours.index.intersection(sold.index)
    assert 0.85 <= ours[common].sum() / sold[common].sum() <= 1.05
    assert np.corrcoef(ours[common], sold[common])[0, 1] > 0.95
    assert not panel.closed.any()


def test_loss_falls_and_beats_seasonal_naive(
    fitted: tuple[DemandForecaster, dict[str, float]], panel: data.Panel
) -> None:
    predictor, fit = fitted
    assert fit["loss"] < fit["loss_first"]
    cut = panel.n_days - HOLD
    scores, y, _q, open_days = validate(predictor, panel, cut, HOLD)
    naive = baselines.seasonal_naive(panel.units[:, :cut], HOLD)
    naive_wape = metrics.wape(y, naive, open_days)
    assert scores["val_wape"] < 0.9 * naive_wape


def test_forecast_follows_the_true_demand(
    fitted: tuple[DemandForecaster, dict[str, float]], panel: data.Panel, synth_source: Any
) -> None:
    predictor, _ = fitted
    cut = panel.n_days - HOLD
    _, _, q, _ = validate(predictor, panel, cut, HOLD)
    forecast_mean = q.mean(axis=2).sum(axis=1)
    truth = synth_source.truth("demand")
    truth = truth[pd.to_datetime(truth["date"]) >= panel.start + pd.Timedelta(days=cut)]
    expected = truth.groupby("product_id")["expected"].sum().reindex(panel.product_ids)
    corr = np.corrcoef(forecast_mean, expected.fillna(0).to_numpy())[0, 1]
    # The level per SKU is learned from noisy, mostly-zero daily sales.
    assert corr > 0.6


def test_quantiles_ordered_and_intervals_cover(
    fitted: tuple[DemandForecaster, dict[str, float]], panel: data.Panel
) -> None:
    predictor, _ = fitted
    frame = predictor.forecast(horizon=28)
    values = frame[predictor.columns].to_numpy()
    assert (np.diff(values, axis=1) >= -1e-9).all()
    assert (values >= 0).all()
    assert frame["date"].min() == panel.end - pd.Timedelta(days=HOLD)
    cut = panel.n_days - HOLD
    scores, *_ = validate(predictor, panel, cut, HOLD)
    assert 0.6 <= scores["val_coverage80"] <= 0.97


def test_numpy_predictor_matches_torch(fitted: tuple[DemandForecaster, dict[str, float]]) -> None:
    import torch

    from cartwise.models.demand import windows
    from cartwise.models.demand.model import QuantileMLP

    predictor, _ = fitted
    net = QuantileMLP(predictor.lookback, predictor.horizon, predictor.quantiles, hidden=32)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in predictor.weights.items()})
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(5, windows.encoder_width(predictor.lookback))).astype(np.float32)
    cal = rng.normal(size=(5, 28, data.N_CALENDAR)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(inputs), torch.from_numpy(cal)).numpy()
    got = windows.forward(predictor.weights, inputs, cal, depth=2, median=predictor.median)
    assert np.allclose(got, expected, atol=1e-4)


def test_predict_and_history_forecast_agree(
    fitted: tuple[DemandForecaster, dict[str, float]], panel: data.Panel
) -> None:
    predictor, _ = fitted
    ids = predictor.product_ids[:3]
    out = predictor.predict(pd.DataFrame({"product_id": ids, "horizon": [7, 7, 3]}))
    assert len(out) == 17
    assert list(out.columns) == ["product_id", "date", *predictor.columns]
    # The same SKU forecast from an explicit history frame (as the offline store would give).
    pid = int(ids[0])
    history = panel.window(0, panel.n_days - HOLD).to_long()
    history = history[history["product_id"] == pid]
    again = predictor.forecast(history, horizon=7)
    mine = out[out["product_id"] == pid]
    assert np.allclose(
        again[predictor.columns].to_numpy(), mine[predictor.columns].to_numpy(), atol=1e-6
    )


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"product_id": [1], "colour": ["red"]}), "unknown columns"),
        (pd.DataFrame({"sku": [1]}), "unknown columns"),
        (pd.DataFrame({"product_id": [1.0, np.nan]}), "missing"),
        (pd.DataFrame({"product_id": [1.5]}), "integers"),
        (pd.DataFrame({"product_id": [1], "horizon": [99]}), "horizon"),
        (pd.DataFrame({"product_id": [10**9]}), "unknown product_id"),
    ],
)
def test_malformed_inputs_are_refused(
    fitted: tuple[DemandForecaster, dict[str, float]], frame: pd.DataFrame, message: str
) -> None:
    predictor, _ = fitted
    if message == "unknown columns" and "colour" in frame:
        frame["product_id"] = predictor.product_ids[:1]
    with pytest.raises(ValueError, match=message):
        predictor.predict(frame)


def test_malformed_history_and_config_are_refused(
    fitted: tuple[DemandForecaster, dict[str, float]], panel: data.Panel
) -> None:
    predictor, _ = fitted
    with pytest.raises(ValueError, match="units"):
        predictor.forecast(pd.DataFrame({"product_id": [1], "date": ["2026-01-01"]}))
    with pytest.raises(ValueError, match="negative"):
        predictor.forecast(pd.DataFrame({"product_id": [1], "date": ["2026-01-01"], "units": [-2]}))
    with pytest.raises(ValueError, match="unknown config"):
        train({"epocs": 3}, panel)
    with pytest.raises(ValueError, match="median"):
        train({"quantiles": (0.1, 0.9)}, panel)


def test_lead_time_demand_and_reorder_point_by_hand() -> None:
    # Four days of demand, each with mean 10 and sd 3 (q05/q95 = 10 -/+ 1.645 * 3).
    z90 = 1.6448536269514722
    forecast = pd.DataFrame(
        {
            "product_id": 7,
            "date": pd.date_range("2026-03-01", periods=14),
            "q05": 10 - z90 * 3,
            "q50": 10.0,
            "q95": 10 + z90 * 3,
        }
    )
    moments = inventory.daily_moments(forecast)
    assert np.allclose(moments["mean"], 10.0)
    assert np.allclose(moments["sd"], 3.0)
    mu, sd = inventory.lead_time_demand(moments["mean"].to_numpy(), moments["sd"].to_numpy(), 4, 1)
    # sigma^2 = 4 * 3^2 + (10 * 1)^2 = 136.
    assert mu == pytest.approx(40.0)
    assert sd == pytest.approx(math.sqrt(136))
    stock = pd.DataFrame({"product_id": [7], "stock_on_hand": [30], "on_order": [5]})
    lead = pd.DataFrame({"product_id": [7], "lead_time_days": [4.0], "lead_time_sd": [1.0]})
    table = inventory.reorder_table(forecast, stock, lead, service_level=0.95, review_days=3)
    row = table.iloc[0]
    z = 1.6448536269514722
    assert row["safety_stock"] == pytest.approx(z * math.sqrt(136))  # 19.18
    assert row["reorder_point"] == pytest.approx(40 + z * math.sqrt(136))  # 59.18
    # Order up to 7 days of demand: 70 + z * sqrt(7 * 9 + 100) = 91.00; position 35.
    assert row["order_up_to"] == pytest.approx(70 + z * math.sqrt(163))
    assert bool(row["reorder"])
    assert row["order_quantity"] == math.ceil(70 + z * math.sqrt(163) - 35)
    assert row["order_quantity"] == 57
    # Enough stock: no order.
    full = inventory.reorder_table(
        forecast, stock.assign(stock_on_hand=100), lead, service_level=0.95, review_days=3
    ).iloc[0]
    assert not bool(full["reorder"])
    assert full["order_quantity"] == 0
    # Half a day counts as half.
    assert inventory.over_days(np.array([2.0, 4.0, 6.0]), 1.5) == pytest.approx(4.0)
    assert inventory.economic_order_quantity(1000, 50, 4) == pytest.approx(math.sqrt(25_000))
    with pytest.raises(ValueError, match="service_level"):
        inventory.reorder_table(forecast, stock, lead, service_level=1.2)
    with pytest.raises(ValueError, match="lead time"):
        inventory.reorder_table(
            forecast, stock, pd.DataFrame({"product_id": [8], "lead_time_days": [3]})
        )


def test_predictor_reorder_table(fitted: tuple[DemandForecaster, dict[str, float]]) -> None:
    predictor, _ = fitted
    ids = predictor.product_ids[:4]
    stock = pd.DataFrame({"product_id": ids, "stock_on_hand": [0, 1, 5, 1000]})
    table = predictor.reorder(stock, 5.0, service_level=0.9)
    assert list(table["product_id"]) == list(ids)
    assert (table["reorder_point"] >= table["demand_lead_time"]).all()
    assert not table.iloc[3]["reorder"]
    assert (table["order_quantity"] >= 0).all()


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_supplier_scores_by_hand() -> None:
    po = pd.DataFrame(
        {
            "po_id": ["a", "a", "b", "c", "d", "e"],
            "supplier_id": [1, 1, 1, 1, 2, 2],
            "product_id": [10, 11, 10, 12, 20, 21],
            "sku": ["s10", "s11", "s10", "s12", "s20", "s21"],
            "status": [
                "received",
                "partially_received",
                "received",
                "placed",
                "cancelled",
                "received",
            ],
            "quantity_ordered": [100, 50, 100, 40, 10, 20],
            "quantity_received": [100, 30, 100, 0, 0, 20],
            "unit_cost": 1.0,
            "placed_at": [
                _ts("2026-01-01"),
                _ts("2026-01-01"),
                _ts("2026-01-10"),
                _ts("2026-01-20"),
                _ts("2026-01-05"),
                _ts("2026-01-02"),
            ],
            "expected_at": [
                _ts("2026-01-08"),
                _ts("2026-01-08"),
                _ts("2026-01-17"),
                _ts("2026-01-27"),
                _ts("2026-01-12"),
                _ts("2026-01-09"),
            ],
            "received_at": [
                _ts("2026-01-08 15:00"),
                _ts("2026-01-10"),
                _ts("2026-01-16"),
                pd.NaT,
                pd.NaT,
                _ts("2026-01-12"),
            ],
            "updated_at": _ts("2026-01-28"),
        }
    )
    out = suppliers.scores(po, as_of="2026-01-28").set_index("supplier_id")
    one, two = out.loc[1], out.loc[2]
    # Supplier 1: 4 due lines (c is due on the 27th, not received: late); on time: a/s10, b.
    assert one["due_lines"] == 4
    assert one["on_time_rate"] == pytest.approx(2 / 4)
    assert one["fill_rate"] == pytest.approx((100 + 30 + 100 + 0) / (100 + 50 + 100 + 40))
    leads = np.array([7.625, 9.0, 6.0])
    assert one["lead_time_mean"] == pytest.approx(leads.mean())
    assert one["lead_time_sd"] == pytest.approx(leads.std(ddof=1))
    assert one["open_lines"] == 2
    assert one["cancelled_lines"] == 0
    # Supplier 2: the cancelled line does not count; one line, 3 days late, fully filled.
    assert two["due_lines"] == 1
    assert two["on_time_rate"] == 0.0
    assert two["fill_rate"] == 1.0
    assert two["mean_delay_days"] == pytest.approx(3.0)
    assert two["lead_time_mean"] == 10.0
    # As of the 20th, line c is not yet due.
    early = suppliers.scores(po, as_of="2026-01-20").set_index("supplier_id").loc[1]
    assert early["due_lines"] == 3
    assert early["on_time_rate"] == pytest.approx(2 / 3)
    leads_table = suppliers.product_lead_times(po)
    assert leads_table.set_index("product_id").loc[20, "lead_time_days"] == 10.0
    with pytest.raises(ValueError, match="statuses"):
        suppliers.scores(po.assign(status="lost"))
    with pytest.raises(ValueError, match="lack"):
        suppliers.scores(po.drop(columns="expected_at"))


def test_supplier_scores_recover_the_generated_suppliers(synth_source: Any) -> None:
    truth = synth_source.truth("suppliers")
    po = suppliers.from_truth(synth_source.truth("purchase_orders"), truth)
    truth = truth.rename(columns={"fill_rate": "true_fill_rate"})
    out = suppliers.scores(po).merge(truth, on="supplier_id")
    big = out[out["lines"] >= 5]
    assert len(big) >= 2
    # Observed lead times follow the true means; fill rates the true fill rates.
    assert np.corrcoef(big["lead_time_mean"], big["lead_time_mean_days"])[0, 1] > 0.7
    assert (big["fill_rate"] - big["true_fill_rate"]).abs().mean() < 0.1


def test_supplier_scores_and_reorder_from_the_facts(
    synth_source: Any, fitted: tuple[DemandForecaster, dict[str, float]]
) -> None:
    po = suppliers.read_purchase_orders(synth_source)
    if po.empty:
        pytest.skip("this generated shop exports no purchase_orders")
    perf = suppliers.scores(po)
    assert perf["on_time_rate"].between(0, 1).all()
    assert perf["fill_rate"].dropna().between(0, 1).all()
    products = synth_source.dimension("products")
    dims = synth_source.dimension("suppliers", columns=["supplier_id", "lead_time_days"])
    leads = suppliers.product_lead_times(po, products=products, suppliers=dims)
    predictor, _ = fitted
    known = [p for p in predictor.product_ids[:20].tolist() if p in set(leads["product_id"])]
    assert known
    stock = pd.DataFrame({"product_id": known, "stock_on_hand": 0})
    table = predictor.reorder(stock, leads, service_level=0.95)
    assert table["reorder"].all()
    assert (table["lead_time_days"] > 0).all()
    assert (table["safety_stock"] >= 0).all()


def test_decomposition_recovers_a_planted_weekly_pattern() -> None:
    rng = np.random.default_rng(3)
    days = pd.date_range("2026-01-05", periods=140)  # a Monday
    pattern = np.array([2.0, 1.0, 0.0, -1.0, -2.0, 3.0, -3.0])
    units = 20 + 0.05 * np.arange(140) + pattern[days.dayofweek] + rng.normal(0, 0.3, 140)
    series = pd.Series(units, index=days)
    for method in ("stl", "ma"):
        parts = decompose(series, method=method)  # type: ignore[arg-type]
        assert np.allclose(parts["trend"] + parts["seasonal"] + parts["resid"], parts["units"])
        profile = weekly_profile(parts)
        assert np.abs(profile.to_numpy() - pattern).max() < 0.5
        assert seasonal_strength(parts) > 0.8
    frame = pd.DataFrame({"product_id": 1, "date": days, "units": units})
    assert len(decompose(frame, product_id=1)) == 140
    with pytest.raises(ValueError, match="at least"):
        decompose(series.iloc[:5])


def test_cancellations_are_netted_and_closures_learned() -> None:
    lines = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 4, 4, 4],
            "product_id": [5, 5, 5, 6, 7, 7, 7],
            "quantity": [80_995, 80_995, 3, 4, 2, 2, 2],
            "status": [
                "delivered",
                "refunded",
                "delivered",
                "refunded",
                "delivered",
                "delivered",
                "refunded",
            ],
            "created_at": pd.to_datetime(
                [
                    "2011-12-09 09:15",
                    "2011-12-09 09:27",
                    "2011-12-09 10:00",
                    "2011-12-09 11:00",
                    "2011-12-01 08:00",
                    "2011-12-08 08:00",
                    "2011-12-08 08:05",
                ],
                utc=True,
            ),
        }
    )
    cancelled = data.cancelled_units(lines).sort_values("product_id")
    # A refund with no earlier sale (user 3) cancels nothing; user 4's refund cancels the sale
    # five minutes before it, not the one a week earlier.
    assert cancelled["units"].tolist() == [80_995.0, 2.0]
    assert cancelled["product_id"].tolist() == [5, 7]
    assert cancelled["date"].tolist() == [pd.Timestamp("2011-12-09"), pd.Timestamp("2011-12-08")]
    days = pd.date_range("2026-01-01", periods=70)
    closed = (days.dayofweek == 5) | (days == pd.Timestamp("2026-02-10"))
    rules = data.Closures.learn(days, closed)
    assert rules.weekdays == frozenset({5})
    assert (2, 10) in rules.month_days
    assert rules.closed(pd.date_range("2027-02-06", periods=5)).tolist() == [
        True,
        False,
        False,
        False,
        True,
    ]


def test_persistence_through_the_registry(
    fitted: tuple[DemandForecaster, dict[str, float]], model_settings: Any
) -> None:
    from cartwise.models import tracking
    from cartwise.models.demand.tune import input_example, signature

    predictor, fit = fitted
    example = input_example(predictor.product_ids)
    version = tracking.register(
        "demand",
        predictor,
        area="demand",
        input_example=example,
        signature=signature(example, predictor.predict(example)),
        metrics={"wape": fit["val_wape"]},
        settings=model_settings,
    )
    loaded = tracking.load("demand", "challenger", settings=model_settings)
    assert loaded.version == int(version.version)
    request = pd.DataFrame({"product_id": predictor.product_ids[:3].astype(np.int64)})
    got = loaded.predict(request)
    expected = predictor.predict(request)
    assert len(got) == 3 * 28
    assert np.allclose(got[predictor.columns].to_numpy(), expected[predictor.columns].to_numpy())
    with pytest.raises(ValueError):
        loaded.predict(pd.DataFrame({"product_id": ["x"]}))
