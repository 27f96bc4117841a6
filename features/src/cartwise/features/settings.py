"""Feature-store settings, read from ``CARTWISE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from cartwise.platform.db import normalize_url
from cartwise.platform.settings import Settings

# The push source the events API feeds, and how many recent products a session row keeps.
SESSION_PUSH_SOURCE = "session_events_push"
SESSION_LAST_N = 5

# The Feast repo (definitions + feature_store*.yaml) ships in the source tree beside this member.
REPO_PATH = Path(__file__).resolve().parents[3]


class FeatureSettings(Settings):
    """Platform settings plus where the exports, feature tables and Feast stores live."""

    features_dir: Path | None = None
    feast_project: str = "cartwise"
    # Embedded: SQLite online store + file registry; production: Redis + SQL registry.
    feast_online_store: Literal["sqlite", "redis"] | None = None
    feast_redis_url: str | None = None
    feast_registry_url: str | None = None
    # Session features pushed after each ingest batch; off leaves only the batch path.
    feast_push_enabled: bool = True
    feature_ttl_days: int = 120

    @property
    def effective_features_dir(self) -> Path:
        """Root of exports/, tables/ and the embedded stores."""
        return self.features_dir or self.var_dir / "features"

    @property
    def exports_dir(self) -> Path:
        """Where the commerce facts are exported as Parquet."""
        return self.effective_features_dir / "exports"

    @property
    def tables_dir(self) -> Path:
        """Where the feature tables (the Feast batch sources) are written."""
        return self.effective_features_dir / "tables"

    @property
    def online_store_kind(self) -> Literal["sqlite", "redis"]:
        """Redis in production (or when asked), SQLite otherwise."""
        if self.feast_online_store:
            return self.feast_online_store
        return "redis" if self.is_production else "sqlite"

    @property
    def online_redis_url(self) -> str:
        """The Redis URL of the online store."""
        return self.feast_redis_url or self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def registry_url(self) -> str:
        """The registry: a file under features_dir, or a SQL registry (PostgreSQL in production)."""
        if self.feast_registry_url:
            return self.feast_registry_url
        if self.is_production:
            return normalize_url(self.effective_database_url)
        return str(self.effective_features_dir / "registry.db")


@lru_cache
def get_feature_settings() -> FeatureSettings:
    """The process-wide feature settings, built on first use."""
    return FeatureSettings()
