"""``refresh_features``: export the commerce facts, rebuild the feature tables, apply, materialise.

Each step is idempotent, so a crashed run is simply run again: the export only rewrites the
day partitions touched since its saved watermark, the tables are rebuilt from the exports,
``feast apply`` is skipped when the definitions have not changed, and materialisation loads
only rows newer than the last successful run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from cartwise.features.settings import FeatureSettings, get_feature_settings

# Database, file-system and registry hiccups are worth a second try; a bug is not worth five.
RETRIES = 2
RETRY_DELAYS: list[float] = [2.0, 10.0]


def _settings(overrides: dict[str, Any] | None) -> FeatureSettings:
    return FeatureSettings(**overrides) if overrides else get_feature_settings()


@task(name="export-facts", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def export_facts(overrides: dict[str, Any] | None = None, full: bool = False) -> dict[str, int]:
    """Export the commerce facts to date-partitioned Parquet (incremental)."""
    from cartwise.features.export import export_facts as run_export
    from cartwise.platform.db import get_engine

    settings = _settings(overrides)
    summary = run_export(get_engine(settings), settings.exports_dir, full=full)
    log = get_run_logger()
    for name, rows in summary.rows.items():
        log.info("exported %s: %d rows in %d day partitions", name, rows, summary.partitions[name])
    for name, rows in summary.dimensions.items():
        log.info("exported dimension %s: %d rows", name, rows)
    return {**summary.rows, **{f"dim:{k}": v for k, v in summary.dimensions.items()}}


@task(name="build-feature-tables", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def build_tables(overrides: dict[str, Any] | None = None) -> dict[str, int]:
    """Compute the feature tables from the exports with DuckDB."""
    from cartwise.features.tables import build_feature_tables

    settings = _settings(overrides)
    counts = build_feature_tables(settings.exports_dir, settings.tables_dir)
    log = get_run_logger()
    for name, rows in counts.items():
        log.info("feature table %s: %d rows", name, rows)
    return counts


@task(name="feast-apply", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def apply_definitions(overrides: dict[str, Any] | None = None) -> bool:
    """``feast apply`` when the definitions changed since the last apply."""
    from cartwise.features import store

    applied = store.apply(_settings(overrides))
    get_run_logger().info("feast apply: %s", "applied" if applied else "unchanged, skipped")
    return applied


@task(name="materialize", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def materialize(overrides: dict[str, Any] | None = None, full: bool = False) -> dict[str, int]:
    """Load the feature rows newer than the last run into the online store."""
    from cartwise.features import store

    summary = store.materialize(_settings(overrides), full=full)
    log = get_run_logger()
    if summary.skipped:
        log.info("materialize: nothing newer than %s", summary.start.isoformat())
    for name, rows in summary.rows.items():
        log.info("materialized %s: %d rows", name, rows)
    return summary.rows


@flow(name="refresh-features", log_prints=True)
def refresh_features(
    overrides: dict[str, Any] | None = None, full: bool = False
) -> dict[str, dict[str, int] | bool]:
    """Export → build tables → apply if changed → materialise incrementally; returns row counts."""
    exported = export_facts(overrides, full)
    tables = build_tables(overrides)
    applied = apply_definitions(overrides)
    loaded = materialize(overrides, full)
    return {"exported": exported, "tables": tables, "applied": applied, "materialized": loaded}
