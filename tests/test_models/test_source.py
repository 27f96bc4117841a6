"""The models' view of the data: facts, dimensions, ground truth and Feast historical features."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest


def test_facts_prune_by_day_and_dimensions_read(synth_source: Any) -> None:
    lines = synth_source.facts("order_lines")
    march = synth_source.facts("order_lines", start="2026-03-01", end="2026-04-01")
    assert 0 < len(march) < len(lines)
    created = pd.to_datetime(march["created_at"], utc=True)
    assert created.min() >= pd.Timestamp("2026-03-01", tz="UTC")
    assert created.max() < pd.Timestamp("2026-04-01", tz="UTC")
    products = synth_source.dimension("products")
    assert set(lines["product_id"]) <= set(products["product_id"])
    # Absent tables: an error, or an empty frame when the caller names the columns.
    with pytest.raises(FileNotFoundError):
        synth_source.facts("nothing_here")
    assert list(synth_source.facts("nothing_here", columns=["a"]).columns) == ["a"]


def test_truth_and_data_version(synth_source: Any) -> None:
    segments = synth_source.truth("customers")
    assert {"segment"} <= set(segments.columns)
    with pytest.raises(LookupError):
        synth_source.truth("no_such_table")
    version = synth_source.data_version()
    assert len(version) == 12
    assert version == synth_source.data_version()


def test_historical_features_are_point_in_time(synth_source: Any) -> None:
    lines = synth_source.facts("order_lines", columns=["user_id", "status", "created_at"])
    lines = lines[lines["status"] == "delivered"].dropna()
    first = lines.sort_values("created_at").groupby("user_id").head(1).head(20)
    before = first["created_at"] - pd.Timedelta(days=1)
    after = first["created_at"] + pd.Timedelta(days=1)
    entity = pd.DataFrame(
        {
            "customer_id": list(first["user_id"].astype("int64")) * 2,
            "event_timestamp": list(before) + list(after),
        }
    )
    rows = synth_source.historical(entity, "customer_v1")
    rows["when"] = rows["event_timestamp"].dt.tz_convert("UTC")
    lifetime = rows.set_index(["customer_id", "when"])["orders_lifetime"].fillna(0)
    # The day before its first purchase a customer has no orders; the day after, at least one.
    for user, b, a in zip(first["user_id"], before, after, strict=True):
        assert lifetime.get((user, b), 0) == 0
        assert lifetime[(user, a)] >= 1
