"""The trained shop seen from model tests: a writable copy of its MLflow store, its facts."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

# Where MLflow keeps absolute paths of a store's artifacts.
PATH_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


def copy_registry(shop: Any, var: Path, **settings: Any) -> Any:
    """Model settings on a copy of the shop's MLflow store under ``var`` (new artifacts and
    tags land there, never in the shared shop)."""
    from cartwise.models.settings import ModelSettings

    var.mkdir(parents=True, exist_ok=True)
    shutil.copy(shop.var_dir / "mlflow.db", var / "mlflow.db")
    shutil.copytree(shop.var_dir / "mlartifacts", var / "mlartifacts")
    with sqlite3.connect(var / "mlflow.db") as db:
        for table, column in PATH_COLUMNS:
            db.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?)',  # noqa: S608
                (str(shop.var_dir), str(var)),
            )
    return ModelSettings(
        env="test", var_dir=var, log_level="WARNING", code_version="test", **settings
    )


def shop_source(shop: Any, facts_dir: Path | None = None) -> Any:
    """The shop's exported facts (or ``facts_dir``), its feature store and generated truth."""
    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.source import Source
    from cartwise.pipelines.training import ground_truth_dir

    settings = FeatureSettings(**shop.overrides())
    return Source(
        facts_dir=facts_dir or settings.exports_dir,
        store=store.get_store(settings),
        truth_dir=ground_truth_dir(settings),
    )
