"""The drift check of each area against the trained shop, with a shift injected into the facts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cartwise.models import monitoring
from tests.test_models.shop_registry import copy_registry, shop_source

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(trained_shop: Any, tmp_path: Path) -> Any:
    """Model settings on a copy of the shop's MLflow store: new artifacts land in tmp_path."""
    import mlflow

    yield copy_registry(trained_shop, tmp_path / "var")
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _source(shop: Any, facts_dir: Path | None = None) -> Any:
    return shop_source(shop, facts_dir)


def _shift_orders(exports: Path, target: Path, *, since: pd.Timestamp, factor: float) -> None:
    """A copy of the facts where every order from ``since`` on costs ``factor`` times more."""
    shutil.copytree(exports, target)
    for part in sorted((target / "orders").glob("date=*/*.parquet")):
        day = pd.Timestamp(part.parent.name.removeprefix("date="), tz="UTC")
        if day < since.normalize():
            continue
        table = pq.read_table(part)
        frame = table.to_pandas()
        for column in ("subtotal", "total"):
            frame[column] = frame[column] * factor
        pq.write_table(
            type(table).from_pandas(frame, schema=table.schema, preserve_index=False), part
        )


def _champion(area: str, settings: Any) -> Any:
    from cartwise.models import tracking
    from cartwise.models.areas import spec

    champion = tracking.current(spec(area).model_name, tracking.CHAMPION, settings=settings)
    assert champion is not None
    return champion


def _drop_reference(champion: Any, settings: Any) -> bool:
    """Delete the champion's reference artifacts (in the copied store); True if it had one."""
    from cartwise.models import tracking

    run = tracking.client(settings).get_run(champion.run_id)
    folder = Path(run.info.artifact_uri.removeprefix("file://")) / "monitoring"
    had = (folder / "reference.parquet").is_file()
    shutil.rmtree(folder, ignore_errors=True)
    return had


def test_fraud_check_flags_a_shift_in_order_amounts(
    trained_shop: Any, registry: Any, tmp_path: Path
) -> None:
    from cartwise.models.monitoring.check import load_predictor

    source = _source(trained_shop)
    champion = _champion("fraud", registry)
    had = _drop_reference(champion, registry)
    if not os.environ.get("CARTWISE_TEST_SHOP_DIR"):
        # A shop trained by this code got its reference when the version was registered.
        assert had
    # A version without a reference (registered before monitoring existed) is reported.
    bare = monitoring.check("fraud", source, settings=registry)
    assert bare.model_version == int(champion.version)
    assert bare.drift_share is None
    assert any("no reference sample" in note for note in bare.notes)
    assert bare.current_rows > 20
    # Labelled outcomes give a fraud rate and a PR-AUC; precision only exists when the review
    # threshold flagged something in the window (on this small shop it may flag nothing).
    assert bare.quality["labelled_rows"] > 0
    assert "fraud_rate" in bare.quality
    if bare.quality.get("labelled_frauds", 0) > 0:
        assert "pr_auc" in bare.quality
    # Quality comes from the shop's outcomes (its chargebacks), on the orders old enough for
    # them to have arrived: [end - 30 - 14 days, end - 30 days), labels known at the end.
    assert bare.quality["label_maturity_days"] == 30
    assert bare.quality["quality_window_end_days_ago"] == pytest.approx(30)
    assert bare.quality["quality_window_start_days_ago"] == pytest.approx(44)
    # Every paid order of the matured window is labelled; a never-paid one stays unknown.
    assert 0.8 * bare.quality["quality_orders"] <= bare.quality["labelled_rows"]
    assert bare.quality["labelled_rows"] <= bare.quality["quality_orders"]
    assert any("fraud: quality on the" in note for note in bare.notes)
    assert not any("ground truth" in note for note in bare.notes)
    # An export from before order_outcomes existed: the generated truth, said in the notes.
    old_dir = tmp_path / "old-export"
    shutil.copytree(source.facts_dir, old_dir)
    assert (old_dir / "order_outcomes").is_dir()  # the shop's chargebacks were exported
    shutil.rmtree(old_dir / "order_outcomes")
    old = monitoring.check("fraud", _source(trained_shop, old_dir), settings=registry)
    assert any("ground truth instead" in note for note in old.notes)
    assert "quality_window_end_days_ago" not in old.quality
    assert old.quality["labelled_rows"] == old.current_rows  # the truth labels every order

    kept = monitoring.capture(
        "fraud",
        load_predictor("fraud", int(champion.version), settings=registry),
        source,
        model_name="fraud",
        version=int(champion.version),
        run_id=str(champion.run_id),
        data_window=champion.tags["data_window"],
        settings=registry,
    )
    assert set(kept["importance"]) == set(bare.features)
    baseline = monitoring.check("fraud", source, settings=registry)
    assert baseline.model_version == int(champion.version)
    assert baseline.drift_share is not None
    assert baseline.n_features == 9
    assert baseline.current_rows == bare.current_rows
    assert 0 < baseline.reference_rows <= 5_000
    assert baseline.features["order_amount"]["drifted"] is False
    assert all(f["importance"] is not None for f in baseline.features.values())
    summary = json.loads(baseline.json)
    assert summary["drift_share"] == pytest.approx(baseline.drift_share)
    assert summary["evidently"]["metrics"]
    assert b"<html" in baseline.html[:5000].lower()

    end = baseline.window_end
    assert end is not None
    shifted_dir = tmp_path / "shifted"
    _shift_orders(
        source.facts_dir, shifted_dir, since=pd.Timestamp(end) - pd.Timedelta(days=14), factor=4.0
    )
    shifted = monitoring.check("fraud", _source(trained_shop, shifted_dir), settings=registry)
    assert shifted.current_rows == baseline.current_rows
    assert shifted.features["order_amount"]["drifted"] is True
    assert shifted.features["amount_vs_avg"]["drifted"] is True
    assert shifted.drifted_features > baseline.drifted_features
    assert shifted.prediction_drift is not None
    assert baseline.prediction_drift is not None
    assert shifted.prediction_drift > baseline.prediction_drift
    assert shifted.importance_weighted_drift is not None
    assert shifted.importance_weighted_drift > (baseline.importance_weighted_drift or 0.0)
    assert "order_amount" in shifted.drifting_features


def _with_reference(area: str, source: Any, settings: Any) -> None:
    """Keep a reference for the champion if it predates monitoring (a kept older shop)."""
    from cartwise.models.monitoring.check import load_predictor

    champion = _champion(area, settings)
    try:
        monitoring.load_reference(area, int(champion.version), settings=settings)
    except LookupError:
        monitoring.capture(
            area,
            load_predictor(area, int(champion.version), settings=settings),
            source,
            model_name=area,
            version=int(champion.version),
            run_id=str(champion.run_id),
            data_window=champion.tags["data_window"],
            settings=settings,
        )


def test_demand_and_customers_checks_measure_drift_and_quality(
    trained_shop: Any, registry: Any
) -> None:
    from cartwise.models.customers.data import STATS

    source = _source(trained_shop)
    for area in ("demand", "customers"):
        _with_reference(area, source, registry)

    demand = monitoring.check("demand", source, settings=registry)
    assert demand.drift_share is not None
    assert demand.current_rows > 10
    assert set(demand.features) == {
        "units_7d",
        "units_28d",
        "zero_share_28d",
        "price",
        "price_change_28d",
    }
    # WAPE against the units actually sold in the window, whose days are all in the past.
    assert demand.quality["wape"] >= 0.0
    # A 14-day window touches 15 calendar days, unless the model's horizon is shorter.
    assert 1.0 <= demand.quality["forecast_days"] <= 15.0
    assert demand.features["units_7d"]["importance"] is not None

    customers = monitoring.check("customers", source, settings=registry)
    assert customers.drift_share is not None
    assert customers.n_features == len(STATS)
    # The demo shop spans 90 days and the churn horizon is 30: its outcome is known.
    assert 0.0 <= customers.quality["churn_pr_auc"] <= 1.0
    assert customers.quality["labelled_customers"] > 10
    assert customers.prediction_drift is not None


def test_recommend_and_search_checks_measure_ranking_quality(
    trained_shop: Any, registry: Any
) -> None:
    from cartwise.models.recommend.features import USER_COLUMNS
    from cartwise.models.search.predict import FEATURES

    source = _source(trained_shop)
    for area in ("recommend", "search"):
        _with_reference(area, source, registry)

    recommend = monitoring.check("recommend", source, settings=registry)
    assert recommend.drift_share is not None
    assert set(recommend.features) == set(USER_COLUMNS)
    assert recommend.quality["customers"] == recommend.current_rows
    assert 0.0 <= recommend.quality["ndcg_at_10"] <= recommend.quality["hit_rate_at_10"] <= 1.0

    search = monitoring.check("search", source, settings=registry)
    assert search.drift_share is not None
    assert set(search.features) == set(FEATURES)
    assert search.quality["clicked_searches"] > 0
    assert 0.0 < search.quality["mrr_at_10"] <= 1.0
    # The ranker reads its query-click features: shuffling them moves its scores.
    assert search.features["log_query_clicks"]["importance"] > 0.0
