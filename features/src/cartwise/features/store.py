"""The Feast store for the current settings: embedded (SQLite) or production (Redis, SQL registry).

The two committed ``features/feature_store*.yaml`` describe the same two set-ups for the
``feast`` CLI; this module builds the equivalent :class:`RepoConfig` from ``CARTWISE_*``
settings so code, tests and the CLI never disagree on paths.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
from feast import FeatureStore, RepoConfig

from cartwise.features import definitions
from cartwise.features.settings import REPO_PATH, FeatureSettings
from cartwise.features.tables import TABLES

APPLIED_FILE = "_applied.json"


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,password=...`` form of a ``redis://`` URL."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: FeatureSettings) -> RepoConfig:
    """The RepoConfig for the settings (see the module docstring)."""
    # Absolute: Feast resolves relative paths against the repo folder, not the working dir.
    root = settings.effective_features_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any]
    if settings.online_store_kind == "redis":
        online = {
            "type": "redis",
            "connection_string": redis_connection_string(settings.online_redis_url),
        }
    else:
        online = {"type": "sqlite", "path": str(root / "online.db")}
    registry_url = settings.registry_url
    if "://" not in registry_url:
        registry_url = str(Path(registry_url).resolve())
    registry: dict[str, Any] = {"path": registry_url, "cache_ttl_seconds": 60}
    if "://" in registry_url:
        registry["registry_type"] = "sql"
        # Each replica should not hold a pool of registry connections it barely uses.
        registry["sqlalchemy_config_kwargs"] = {"pool_pre_ping": True}
    else:
        registry["registry_type"] = "file"
    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry=registry,
        online_store=online,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=REPO_PATH,
    )


def get_store(settings: FeatureSettings) -> FeatureStore:
    """A FeatureStore on the settings' registry, online and offline stores."""
    return FeatureStore(config=repo_config(settings))


def definitions_hash(objects: list[Any]) -> str:
    """A digest of the definitions' specs, to skip ``apply`` when nothing changed."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: (type(o).__name__, o.name)):
        digest.update(type(obj).__name__.encode())
        proto = obj.to_proto()
        _clear_meta(proto)
        digest.update(proto.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _clear_meta(message: Any) -> None:
    """Drop the creation/update stamps Feast puts in every (nested) ``meta``."""
    for field, value in list(message.ListFields()):
        if field.name == "meta":
            message.ClearField("meta")
        elif field.type == field.TYPE_MESSAGE:
            if getattr(field, "is_repeated", False):
                items = value.values() if hasattr(value, "values") else value
                for item in items:
                    if hasattr(item, "ListFields"):
                        _clear_meta(item)
            else:
                _clear_meta(value)


def _state_path(settings: FeatureSettings) -> Path:
    return settings.effective_features_dir / APPLIED_FILE


def _read_state(settings: FeatureSettings) -> dict[str, Any]:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(settings: FeatureSettings, state: dict[str, Any]) -> None:
    path = _state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def ensure_tables(settings: FeatureSettings) -> None:
    """Write empty feature tables where none exist yet, so apply can infer and validate."""
    from cartwise.features.tables import build_feature_tables

    if all((settings.tables_dir / f"{n}.parquet").exists() for n in TABLES):
        return
    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    build_feature_tables(settings.exports_dir, settings.tables_dir)


def apply(settings: FeatureSettings, *, force: bool = False) -> bool:
    """``feast apply`` the definitions if they changed since the last apply; True if applied."""
    ensure_tables(settings)
    objects = definitions.build(settings)
    digest = definitions_hash(objects)
    state = _read_state(settings)
    if not force and state.get("definitions") == digest and _registry_has(settings):
        return False
    store = get_store(settings)
    store.apply(objects)
    state["definitions"] = digest
    state["applied_at"] = datetime.now(UTC).isoformat()
    _write_state(settings, state)
    return True


def _registry_has(settings: FeatureSettings) -> bool:
    try:
        names = {fs.name for fs in get_store(settings).list_feature_services()}
    except Exception:
        return False
    return set(definitions.FEATURE_SERVICES) <= names


@dataclass
class MaterializeSummary:
    """What one materialisation loaded: entities written per feature view."""

    start: datetime
    end: datetime
    rows: dict[str, int]

    @property
    def skipped(self) -> bool:
        """True when there was nothing newer than the last run."""
        return not self.rows


def _newest(settings: FeatureSettings, name: str) -> datetime | None:
    path = settings.tables_dir / f"{name}.parquet"
    if not path.exists():
        return None
    meta = pq.read_metadata(path)
    if meta.num_rows == 0:
        return None
    column = pq.read_table(path, columns=["event_timestamp"]).column(0)
    value = column.to_pylist()[-1]  # the tables are written sorted by event_timestamp
    return value if isinstance(value, datetime) else None


def materialize(settings: FeatureSettings, *, full: bool = False) -> MaterializeSummary:
    """Load feature rows newer than the last run (all with ``full``) into the online store.

    The window ends just after the newest row of the tables, not at "now": imported history
    (Online Retail is 2010-2011) is materialised as of its own last day.
    """
    state = _read_state(settings)
    views = [n for n in TABLES]
    newest = [t for t in (_newest(settings, n) for n in views) if t is not None]
    if not newest:
        now = datetime.now(UTC)
        return MaterializeSummary(now, now, {})
    end = max(newest) + timedelta(microseconds=1)
    last = state.get("materialized_until")
    start = datetime(1970, 1, 1, tzinfo=UTC) if full or not last else datetime.fromisoformat(last)
    if start >= end:
        return MaterializeSummary(start, end, {})
    store = get_store(settings)
    store.materialize(start_date=start, end_date=end, feature_views=views)
    rows = {n: _rows_between(settings, n, start, end) for n in views}
    state["materialized_until"] = end.isoformat()
    _write_state(settings, state)
    return MaterializeSummary(start, end, rows)


def _rows_between(settings: FeatureSettings, name: str, start: datetime, end: datetime) -> int:
    """Entities whose newest row in [start, end) was loaded (the online store keeps one each)."""
    import pyarrow.compute as pc

    path = settings.tables_dir / f"{name}.parquet"
    if not path.exists():
        return 0
    keys = [f.name for f in pq.read_schema(path) if f.name.endswith("_id")][:1]
    table = pq.read_table(path, columns=[*keys, "event_timestamp"])
    ts = table.column("event_timestamp")
    mask = pc.and_(pc.greater_equal(ts, start), pc.less(ts, end))
    return len(pc.unique(table.filter(mask).column(0))) if keys else 0
