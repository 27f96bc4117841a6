"""Where an area's training data comes from: the facts export and the Feast store over it.

``models`` never imports ``cartwise.features`` (see the architecture's import rules): the caller
(the CLI, a Prefect flow, a test, a notebook) builds the Feast ``FeatureStore`` and hands it in,
and the areas read features by feature-service name through :meth:`Source.historical`, point in
time correct. Raw facts (order lines, events, payments) come from the Parquet export layout::

    <facts_dir>/<table>/date=YYYY-MM-DD/part-0.parquet    # facts
    <facts_dir>/<dimension>.parquet                      # dimension snapshots

Example::

    source = Source(facts_dir=settings.exports_dir, store=get_store(settings))
    lines = source.facts("order_lines")
    rows = source.historical(entity_df, "customer_v1")   # customer_id + event_timestamp
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# Written by cartwise.features.export next to the facts; its watermarks identify the snapshot.
_EXPORT_STATE = "_state.json"


@dataclass(frozen=True)
class Source:
    """The facts export folder, and optionally the Feast store built over it."""

    facts_dir: Path
    # A feast.FeatureStore (typed loosely: the models member does not import feast eagerly).
    store: Any | None = None
    # Ground truth of a generated run (``cartwise data synth``), when there is one.
    truth_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts_dir", Path(self.facts_dir))
        if self.truth_dir is None and (Path(self.facts_dir) / "ground_truth").is_dir():
            object.__setattr__(self, "truth_dir", Path(self.facts_dir) / "ground_truth")

    def facts(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """A partitioned fact table as a frame; ``start``/``end`` (UTC days) prune partitions.

        ``start`` is inclusive and ``end`` exclusive; an absent table is an empty frame only if
        ``columns`` are given (so callers can handle a shop without, say, purchase orders).
        """
        import pyarrow.dataset as ds

        folder = self.facts_dir / table
        if not folder.is_dir():
            if columns is not None:
                return pd.DataFrame(columns=list(columns))
            raise FileNotFoundError(f"no {table}/ under {self.facts_dir}: not a facts export")
        dataset = ds.dataset(folder, format="parquet", partitioning="hive")
        expression = None
        if start is not None:
            expression = ds.field("date") >= pd.Timestamp(start).strftime("%Y-%m-%d")
        if end is not None:
            upper = ds.field("date") < pd.Timestamp(end).strftime("%Y-%m-%d")
            expression = upper if expression is None else expression & upper
        wanted = None if columns is None else [c for c in columns if c != "date"]
        return dataset.to_table(columns=wanted, filter=expression).to_pandas()

    def dimension(self, name: str, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A dimension snapshot (``products``, ``customers``, ``categories``, ...)."""
        path = self.facts_dir / f"{name}.parquet"
        if not path.is_file():
            if columns is not None:
                return pd.DataFrame(columns=list(columns))
            raise FileNotFoundError(f"no {name}.parquet under {self.facts_dir}")
        return pd.read_parquet(path, columns=list(columns) if columns else None)

    def truth(self, name: str) -> pd.DataFrame:
        """A ground-truth table of a generated run; ``LookupError`` on real data."""
        if self.truth_dir is None or not (self.truth_dir / f"{name}.parquet").is_file():
            raise LookupError(f"no ground truth {name!r}: this source is not a generated run")
        return pd.read_parquet(self.truth_dir / f"{name}.parquet")

    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        """``get_historical_features`` of a feature service, point-in-time correct.

        ``entity_df`` holds the entity key columns plus ``event_timestamp`` (UTC); the result has
        the same rows (Feast may reorder them: join back on the keys and timestamp).
        """
        if self.store is None:
            raise RuntimeError("this source has no Feast store; build one with get_store()")
        frame = entity_df.copy()
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        job = self.store.get_historical_features(
            entity_df=frame, features=self.store.get_feature_service(service)
        )
        return job.to_df()

    def data_version(self) -> str:
        """A short id of the export snapshot: its watermarks, else its partition listing."""
        state = self.facts_dir / _EXPORT_STATE
        digest = hashlib.sha256()
        if state.is_file():
            digest.update(json.dumps(json.loads(state.read_text()), sort_keys=True).encode())
        else:
            for path in sorted(self.facts_dir.rglob("*.parquet")):
                if "ground_truth" in path.parts:
                    continue
                digest.update(f"{path.relative_to(self.facts_dir)}:{path.stat().st_size}".encode())
        return digest.hexdigest()[:12]


__all__ = ["Source"]
