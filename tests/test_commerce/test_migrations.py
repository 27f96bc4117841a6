"""Alembic migrations upgrade and downgrade on SQLite and PostgreSQL and match the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from cartwise.commerce import migrations_api
from cartwise.commerce.tables import metadata
from cartwise.platform.db import normalize_url
from tests.conftest import PG_ADMIN_DSN, _pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"cartwise_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_matches_models_then_downgrade_and_again(empty_db: str) -> None:
    migrations_api.upgrade(empty_db)
    assert _tables(empty_db) == set(metadata.tables)
    diffs = migrations_api.check(empty_db)
    assert diffs == [], f"models and migrations differ: {diffs}"
    assert migrations_api.current(empty_db) is not None

    migrations_api.downgrade(empty_db, "base")
    assert _tables(empty_db) == set()
    assert migrations_api.current(empty_db) is None

    migrations_api.upgrade(empty_db)
    assert _tables(empty_db) == set(metadata.tables)


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations_api.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
