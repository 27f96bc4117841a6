"""Model settings (MLflow, the gate, Ray Tune), read from ``CARTWISE_*`` environment variables.

Example::

    from cartwise.models.settings import get_model_settings

    settings = get_model_settings()
    settings.tracking_uri  # sqlite:////abs/var/mlflow.db unless CARTWISE_MLFLOW_TRACKING_URI
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cartwise.platform.db import normalize_url
from cartwise.platform.settings import Settings

# Quality metrics where lower is better: their bound is a ceiling, not a floor.
CEILING_METRICS: frozenset[str] = frozenset({"wape", "mae", "rmse"})
# Conservative bounds: a model this bad is worth retraining whatever the drift says.
DEFAULT_QUALITY_FLOORS: dict[str, dict[str, float]] = {
    "recommend": {"ndcg_at_10": 0.02, "hit_rate_at_10": 0.05},
    "search": {"mrr_at_10": 0.05},
    "customers": {"churn_pr_auc": 0.05},
    "fraud": {"precision": 0.2, "recall": 0.2},
    "demand": {"wape": 1.5},
}


class ModelSettings(Settings):
    """Platform settings plus where MLflow tracks, how the gate decides and how Tune runs."""

    # Embedded: SQLite under var_dir; production: a tracking server (http://...) or PostgreSQL.
    mlflow_tracking_uri: str | None = None
    # Defaults to the tracking URI (the registry lives in the same store).
    mlflow_registry_uri: str | None = None
    # Where new experiments put artifacts: a folder under var_dir, or s3://bucket/mlflow.
    mlflow_artifact_root: str | None = None
    # The challenger must beat the champion by this fraction of the champion's score.
    gate_margin: float = Field(default=0.01, ge=0.0, lt=1.0)
    tune_num_samples: int = Field(default=4, ge=1)
    # Two cores on the development machines: two one-CPU trials at a time.
    tune_max_concurrent: int = Field(default=2, ge=1)
    # None starts (or joins) a local Ray; "auto" or ray://host:10001 joins a cluster.
    ray_address: str | None = None
    # CPUs of a local Ray started by us; None lets Ray count them.
    ray_num_cpus: int | None = None
    # Tune's trial folders and checkpoints; must be shared storage (s3://) on a cluster.
    ray_storage_path: str | None = None
    # Stamped on every model version; the git sha of the checkout when unset.
    code_version: str | None = None

    # Drift monitoring (``monitor_drift``). A share of drifted features above the area's
    # threshold is a breach; JSON from the environment, e.g.
    # CARTWISE_MONITOR_DRIFT_THRESHOLDS='{"fraud": 0.3}' (areas left out keep the default).
    monitor_drift_thresholds: dict[str, float] = Field(default_factory=dict)
    monitor_default_drift_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    # area -> which drift number is held against the threshold: "share" (of drifted features)
    # or "weighted" (the share of the champion's permutation importance that sits on drifted
    # features, so drift in features the model ignores does not retrain it; a version without
    # importance falls back to the share).
    monitor_drift_measures: dict[str, Literal["share", "weighted"]] = Field(default_factory=dict)
    monitor_default_drift_measure: Literal["share", "weighted"] = "share"
    # area -> {metric: bound}: a floor, or a ceiling for the error metrics in CEILING_METRICS
    # (WAPE). Measured only where labels have arrived; merged over DEFAULT_QUALITY_FLOORS.
    monitor_quality_floors: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Fewer current rows than this is "not enough data": no verdict, no retraining.
    monitor_min_rows: int = Field(default=200, ge=1)
    monitor_window_days: int = Field(default=14, ge=1, le=365)
    # After a retraining, a further breach of the same area waits this long (no retrain storms).
    retrain_cooldown_hours: float = Field(default=24.0, ge=0.0)
    # Fraud labels from outcomes (``fraud.data.outcomes``): an order this many days old with
    # no fraud outcome (chargeback or review reject) counts as legitimate; younger ones are
    # unknown until then. Monitoring measures fraud quality on orders this old.
    fraud_label_maturity_days: int = Field(default=30, ge=1, le=365)

    # The feature log (``monitoring.feature_log``): serving buffers the rows it scored and
    # writes them to object storage every ``flush_rows`` rows or ``flush_seconds`` seconds.
    feature_log_enabled: bool = True
    feature_log_flush_rows: int = Field(default=1_000, ge=1)
    feature_log_flush_seconds: float = Field(default=60.0, gt=0.0)
    # Fraction of scored rows kept (1.0: every one).
    feature_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    # Most rows a replica buffers; past it the oldest are dropped (and counted).
    feature_log_max_rows: int = Field(default=50_000, ge=1)
    # Days of feature-log partitions ``monitor-drift`` keeps (older ones are deleted).
    feature_log_retention_days: int = Field(default=30, ge=1)

    @field_validator("monitor_drift_thresholds")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 < float(v) <= 1.0}
        if bad:
            raise ValueError(f"drift-share thresholds must be in (0, 1]: {bad}")
        return value

    def drift_threshold(self, area: str) -> float:
        """The area's drift-share threshold (its own, else the default)."""
        return float(self.monitor_drift_thresholds.get(area, self.monitor_default_drift_threshold))

    def drift_measure(self, area: str) -> Literal["share", "weighted"]:
        """Which drift number breaches for the area (its own, else the default)."""
        return self.monitor_drift_measures.get(area, self.monitor_default_drift_measure)

    def quality_floors(self, area: str) -> dict[str, float]:
        """The area's quality bounds: the defaults overridden metric by metric."""
        return {
            **DEFAULT_QUALITY_FLOORS.get(area, {}),
            **{k: float(v) for k, v in self.monitor_quality_floors.get(area, {}).items()},
        }

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, or SQLite at an absolute var_dir path."""
        if self.mlflow_tracking_uri:
            # MLflow's SQL store goes through SQLAlchemy, and only psycopg 3 is installed.
            return normalize_url(self.mlflow_tracking_uri)
        return f"sqlite:///{(self.var_dir.resolve() / 'mlflow.db').as_posix()}"

    @property
    def registry_uri(self) -> str:
        """The MLflow model registry URI (the tracking store unless set)."""
        if self.mlflow_registry_uri:
            return normalize_url(self.mlflow_registry_uri)
        return self.tracking_uri

    @property
    def artifact_root(self) -> str | None:
        """Artifact location root for new experiments; None leaves it to the tracking server."""
        if self.mlflow_artifact_root:
            root = self.mlflow_artifact_root
            return root if "://" in root else Path(root).resolve().as_uri()
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            # A tracking server proxies artifacts itself (mlflow-artifacts:/).
            return None
        return (self.var_dir.resolve() / "mlartifacts").as_uri()

    @property
    def tune_storage_path(self) -> str:
        """Where Ray Tune keeps trial results and checkpoints (absolute)."""
        if self.ray_storage_path:
            path = self.ray_storage_path
            return path if "://" in path else str(Path(path).resolve())
        return str(self.var_dir.resolve() / "ray_results")

    @model_validator(mode="after")
    def _refuse_embedded_tracking_in_production(self) -> ModelSettings:
        if not self.is_production:
            return self
        problems: list[str] = []
        uri = self.mlflow_tracking_uri or ""
        # Local files cannot be shared by the Ray workers and Serve replicas of a cluster.
        if "://" not in uri or uri.startswith(("sqlite:", "file:")):
            problems.append(
                "CARTWISE_MLFLOW_TRACKING_URI must point at an MLflow tracking server or "
                "PostgreSQL, not SQLite or a local folder"
            )
        elif not uri.startswith(("http://", "https://")):
            # Straight to the database, the client writes artifacts itself: they need S3.
            root = self.mlflow_artifact_root or ""
            if "://" not in root or root.startswith("file:"):
                problems.append(
                    "CARTWISE_MLFLOW_ARTIFACT_ROOT must be shared storage (s3://...) when "
                    "MLflow tracks straight to a database"
                )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self


@lru_cache
def get_model_settings() -> ModelSettings:
    """The process-wide model settings, built on first use (never at import time)."""
    return ModelSettings()
