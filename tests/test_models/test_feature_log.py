"""The feature log: buffering, flushing by rows and time, sampling, dropping, reading windows;
and the drift check reading live features from it."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models.monitoring import feature_log
from cartwise.models.monitoring.feature_log import FeatureLogger
from tests.test_models.shop_registry import copy_registry, shop_source


def _settings(tmp_path: Path, **extra: Any) -> Any:
    from cartwise.models.settings import ModelSettings

    return ModelSettings(env="test", var_dir=tmp_path / "var", log_level="WARNING", **extra)


class Clock:
    """A monotonic clock and a UTC wall clock that tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self.t = 0.0
        self.wall = start

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC))


def _logger(tmp_path: Path, clock: Clock, **extra: Any) -> FeatureLogger:
    return FeatureLogger(
        "fraud",
        "fraud",
        _settings(tmp_path, **extra),
        clock=clock.monotonic,
        now=clock.now,
        background=False,
    )


def _files(tmp_path: Path, area: str = "fraud") -> list[Path]:
    return sorted((tmp_path / "var" / "media" / "feature_logs" / area).glob("date=*/*.parquet"))


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"order_amount": float(start + i), "orders_lifetime": 2, "note": "x"} for i in range(n)]


def test_rows_wait_in_the_buffer_until_a_flush_is_due_by_rows(tmp_path: Path, clock: Clock) -> None:
    logger = _logger(tmp_path, clock, feature_log_flush_rows=5, feature_log_flush_seconds=3600)
    assert logger.log(7, _rows(3), [0.1, 0.2, 0.3], ["a", 2, None]) == 3
    assert logger.pending() == 3
    assert not logger.due()
    assert logger.maybe_flush() == []
    assert _files(tmp_path) == []
    logger.log(7, _rows(2, 3), [0.4, 0.5], ["d", "e"])
    assert logger.due()
    keys = logger.maybe_flush()
    assert len(keys) == 1
    assert keys[0].startswith("feature_logs/fraud/date=2026-11-30/")
    assert logger.pending() == 0
    [path] = _files(tmp_path)
    frame = pd.read_parquet(path)
    assert list(frame.columns[:6]) == list(feature_log.META_COLUMNS)
    assert set(frame.columns) == {
        *feature_log.META_COLUMNS,
        "order_amount",
        "orders_lifetime",
        "note",
    }
    assert frame["order_amount"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert frame["orders_lifetime"].dtype == "float64"
    # Features are numbers: a text value is logged as NaN.
    assert frame["note"].isna().all()
    assert frame["prediction"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    # Keys are text (an int key becomes its digits), None stays null.
    assert frame["key"].tolist()[:2] == ["a", "2"]
    assert pd.isna(frame["key"][2])
    assert set(frame["model_version"]) == {7}
    assert set(frame["area"]) == {"fraud"}
    assert set(frame["model_name"]) == {"fraud"}
    assert str(frame["logged_at"].dt.tz) == "UTC"
    assert logger.stats()["written"] == 5


def test_a_flush_is_due_after_flush_seconds_even_with_few_rows(
    tmp_path: Path, clock: Clock
) -> None:
    logger = _logger(tmp_path, clock, feature_log_flush_rows=1000, feature_log_flush_seconds=30)
    logger.log(1, _rows(2), [0.5, 0.6], ["a", "b"])
    clock.advance(29)
    assert not logger.due()
    assert logger.maybe_flush() == []
    clock.advance(2)
    assert logger.due()
    assert len(logger.maybe_flush()) == 1
    assert len(_files(tmp_path)) == 1
    # An empty buffer is never due, however long ago the last flush was.
    clock.advance(3600)
    assert not logger.due()


def test_the_background_thread_flushes_by_rows_and_close_flushes_the_rest(
    tmp_path: Path,
) -> None:
    logger = FeatureLogger(
        "fraud",
        "fraud",
        _settings(tmp_path, feature_log_flush_rows=3, feature_log_flush_seconds=3600),
    )
    logger.log(1, _rows(3), [0.1, 0.2, 0.3], ["a", "b", "c"])
    deadline = time.monotonic() + 30
    while not _files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_files(tmp_path)) == 1
    logger.log(1, _rows(1), [0.9], ["d"])
    assert logger.pending() == 1
    logger.close()
    assert logger.pending() == 0
    assert len(_files(tmp_path)) == 2
    total = sum(len(pd.read_parquet(p)) for p in _files(tmp_path))
    assert total == 4


def test_sampling_keeps_about_the_configured_fraction(tmp_path: Path, clock: Clock) -> None:
    logger = FeatureLogger(
        "fraud",
        "fraud",
        _settings(tmp_path, feature_log_sample=0.25, feature_log_flush_rows=100_000),
        now=clock.now,
        background=False,
        rng=random.Random(3),
    )
    n = 4000
    kept = sum(logger.log(1, _rows(1, i), [0.1], [i]) for i in range(n))
    assert kept == logger.pending() == logger.logged
    assert logger.sampled_out == n - kept
    assert 0.2 * n < kept < 0.3 * n
    none = _logger(tmp_path, clock, feature_log_sample=0.0)
    assert none.log(1, _rows(10), [0.1] * 10, list(range(10))) == 0
    assert none.pending() == 0
    assert none.sampled_out == 10


def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(tmp_path: Path, clock: Clock) -> None:
    logger = _logger(tmp_path, clock, feature_log_max_rows=5, feature_log_flush_rows=100)
    logger.log(1, _rows(4), [0.0] * 4, ["k0", "k1", "k2", "k3"])
    logger.log(1, _rows(4, 4), [0.0] * 4, ["k4", "k5", "k6", "k7"])
    assert logger.pending() == 5
    assert logger.dropped == 3
    assert logger.stats()["dropped"] == 3
    logger.flush()
    [path] = _files(tmp_path)
    assert pd.read_parquet(path)["key"].tolist() == ["k3", "k4", "k5", "k6", "k7"]


def test_bad_input_and_a_disabled_logger_never_raise(tmp_path: Path, clock: Clock) -> None:
    logger = _logger(tmp_path, clock)
    assert logger.log(1, _rows(2), [0.1], ["a", "b"]) == 0  # lengths differ
    assert logger.pending() == 0
    off = _logger(tmp_path, clock, feature_log_enabled=False)
    assert off.log(1, _rows(2), [0.1, 0.2], ["a", "b"]) == 0
    assert off.flush() == []
    assert _files(tmp_path) == []


def test_a_failed_write_counts_the_lost_rows(tmp_path: Path, clock: Clock) -> None:
    class Broken:
        def put(self, key: str, data: bytes, content_type: str) -> None:
            raise OSError("disk full")

    logger = FeatureLogger(
        "fraud",
        "fraud",
        _settings(tmp_path),
        storage=Broken(),  # type: ignore[arg-type]
        now=clock.now,
        background=False,
    )
    logger.log(1, _rows(3), [0.1] * 3, ["a", "b", "c"])
    assert logger.flush() == []
    assert logger.failed == 3
    assert logger.pending() == 0


def test_read_returns_the_window_across_day_partitions(tmp_path: Path, clock: Clock) -> None:
    settings = _settings(tmp_path)
    logger = FeatureLogger(
        "fraud", "fraud", settings, clock=clock.monotonic, now=clock.now, background=False
    )
    # 2026-11-30 23:00 then every two hours: rows on Nov 30, Dec 1, Dec 2 (12 + 1 per day).
    stamps = []
    for i in range(24):
        stamps.append(clock.now())
        logger.log(1, [{"order_amount": float(i)}], [i / 100], [f"o{i}"])
        clock.advance(2 * 3600)
    logger.flush()
    days = sorted(p.parent.name for p in _files(tmp_path))
    assert days == ["date=2026-11-30", "date=2026-12-01", "date=2026-12-02"]
    # Another area's logs are never read.
    other = FeatureLogger("customers", "customers", settings, now=clock.now, background=False)
    other.log(1, [{"orders_lifetime": 1.0}], [0.1], [1])
    other.flush()

    start, end = stamps[3], stamps[15]  # Dec 1 05:00 .. Dec 2 05:00 (end excluded)
    frame = feature_log.read("fraud", start, end, settings)
    assert frame["key"].tolist() == [f"o{i}" for i in range(3, 15)]
    assert frame["logged_at"].is_monotonic_increasing
    assert (frame["logged_at"] >= start).all()
    assert (frame["logged_at"] < end).all()
    assert set(frame["area"]) == {"fraud"}
    # Only the partitions of the window's days are listed.
    keys = feature_log.day_keys("fraud", start, end, storage=feature_log_storage(settings))
    assert {k.split("/")[2] for k in keys} == {"date=2026-12-01", "date=2026-12-02"}
    everything = feature_log.read("fraud", stamps[0], stamps[-1] + timedelta(seconds=1), settings)
    assert len(everything) == 24
    empty = feature_log.read("fraud", "2025-01-01", "2025-01-05", settings)
    assert empty.empty
    assert set(feature_log.META_COLUMNS) <= set(empty.columns)


def test_prune_deletes_whole_days_older_than_the_retention(tmp_path: Path, clock: Clock) -> None:
    settings = _settings(tmp_path)
    start = clock.wall
    for area in ("fraud", "customers"):
        clock.wall = start
        logger = FeatureLogger(area, area, settings, now=clock.now, background=False)
        for _ in range(3):  # Nov 30, Dec 1, Dec 2 (23:00 each)
            logger.log(1, [{"x": 1.0}], [0.5], ["k"])
            logger.flush()
            clock.advance(24 * 3600)
    assert len(_files(tmp_path)) + len(_files(tmp_path, "customers")) == 6
    now = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)

    # Two days back from Dec 3 01:00 is Dec 1 01:00: Nov 30 goes, Dec 1 (partly inside) stays.
    deleted = feature_log.prune(2, settings, now=now)
    assert sorted(k.split("/")[1:3] for k in deleted) == [
        ["customers", "date=2026-11-30"],
        ["fraud", "date=2026-11-30"],
    ]
    for area in ("fraud", "customers"):
        left = sorted(p.parent.name for p in _files(tmp_path, area))
        assert left == ["date=2026-12-01", "date=2026-12-02"]
    assert len(feature_log.read("fraud", "2026-11-01", now, settings)) == 2
    assert feature_log.prune(2, settings, now=now) == []  # a re-run deletes nothing more
    with pytest.raises(ValueError, match="retention_days"):
        feature_log.prune(0, settings, now=now)


def feature_log_storage(settings: Any) -> Any:
    from cartwise.platform.storage import get_storage

    return get_storage(settings)


# ---------------------------------------------------------------------- the drift check


@pytest.fixture
def registry(trained_shop: Any, tmp_path: Path) -> Iterator[Any]:
    """Model settings on a copy of the shop's MLflow store, with storage in tmp_path."""
    import mlflow

    yield copy_registry(trained_shop, tmp_path / "shopvar", monitor_min_rows=200)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _source(shop: Any) -> Any:
    return shop_source(shop)


def _with_reference(source: Any, settings: Any) -> tuple[int, Any]:
    """The fraud champion's version and reference (captured if the kept shop predates it)."""
    from cartwise.models import monitoring, tracking
    from cartwise.models.monitoring.check import load_predictor

    champion = tracking.current("fraud", tracking.CHAMPION, settings=settings)
    assert champion is not None
    version = int(champion.version)
    try:
        reference = monitoring.load_reference("fraud", version, settings=settings)
    except LookupError:
        monitoring.capture(
            "fraud",
            load_predictor("fraud", version, settings=settings),
            source,
            model_name="fraud",
            version=version,
            run_id=str(champion.run_id),
            data_window=champion.tags["data_window"],
            settings=settings,
        )
        reference = monitoring.load_reference("fraud", version, settings=settings)
    return version, reference


def _log_like_reference(
    reference: Any,
    settings: Any,
    *,
    version: int,
    at: datetime,
    n: int,
    amount_factor: float = 1.0,
) -> None:
    """Write ``n`` log rows resampled from the reference (order amounts scaled)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(reference.features), size=n)
    rows = reference.features.iloc[picks].reset_index(drop=True).copy()
    rows["order_amount"] = rows["order_amount"] * amount_factor
    rows["amount_vs_avg"] = rows["amount_vs_avg"] * amount_factor
    predictions = np.clip(reference.predictions.to_numpy()[picks] * amount_factor, 0.0, 1.0)
    clock = Clock(at)
    logger = FeatureLogger(
        "fraud", "fraud", settings, now=clock.now, clock=clock.monotonic, background=False
    )
    records = rows.to_dict("records")
    for i in range(0, n, 50):
        logger.log(
            version,
            records[i : i + 50],
            predictions[i : i + 50],
            [f"o{j}" for j in range(i, i + 50)],
        )
        clock.advance(600)
    logger.flush()


@pytest.mark.slow
def test_check_reads_live_features_from_the_log_and_sees_their_drift(
    trained_shop: Any, registry: Any
) -> None:
    from cartwise.models import monitoring

    source = _source(trained_shop)
    version, reference = _with_reference(source, registry)
    offline = monitoring.check("fraud", source, settings=registry)
    assert offline.current_source == "offline"
    assert any("rebuilt from the offline store" in n for n in offline.notes)
    end = offline.window_end
    assert end is not None

    # Too few logged rows: the offline path stays.
    _log_like_reference(reference, registry, version=version, at=end - timedelta(days=3), n=100)
    few = monitoring.check("fraud", source, now=end, settings=registry)
    assert few.current_source == "offline"
    assert any("100 rows in the feature log" in n for n in few.notes)
    # Rows of another version do not count either.
    _log_like_reference(
        reference, registry, version=version + 100, at=end - timedelta(days=2), n=400
    )
    assert monitoring.check("fraud", source, now=end, settings=registry).current_source == (
        "offline"
    )

    # Enough rows of the champion, drawn like the reference: live, and nothing much drifts.
    _log_like_reference(reference, registry, version=version, at=end - timedelta(days=20), n=250)
    control = monitoring.check("fraud", source, now=end - timedelta(days=10), settings=registry)
    assert control.current_source == "feature_log"
    assert control.current_rows == 250
    assert control.features["order_amount"]["drifted"] is False
    assert control.features["amount_vs_avg"]["drifted"] is False

    # Enough rows of the champion with order amounts four times higher: drift from the log.
    _log_like_reference(
        reference,
        registry,
        version=version,
        at=end - timedelta(days=5),
        n=300,
        amount_factor=4.0,
    )
    live = monitoring.check("fraud", source, now=end, settings=registry)
    assert live.current_source == "feature_log"
    assert live.current_rows == 400  # 100 + 300 champion rows in the window
    assert any("live features from the feature log (400 rows)" in n for n in live.notes)
    assert live.features["order_amount"]["drifted"] is True
    assert live.features["amount_vs_avg"]["drifted"] is True
    assert live.drift_share is not None
    assert control.drift_share is not None
    assert live.drift_share > control.drift_share
    assert control.prediction_drift is not None
    assert live.prediction_drift is not None
    assert live.prediction_drift > control.prediction_drift
    # Quality is still the adapter's, over the exported facts.
    assert live.quality == offline.quality
    body = json.loads(live.json)
    assert body["current_source"] == "feature_log"
    assert body["feature_log"]["rows"] == 400
