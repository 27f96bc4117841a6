"""Run the commerce Alembic migrations from code (CLI, tests, demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cartwise.platform.db import normalize_url


def _script_location() -> Path:
    # Editable installs keep the migrations folder beside src/; a wheel ships it as data.
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("commerce migrations folder not found")


def alembic_config(url: str) -> Any:
    """An Alembic Config pointed at the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database up to a revision."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database down to a revision ("base" removes everything)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rev: str | None = MigrationContext.configure(conn).get_current_revision()
            return rev
    finally:
        engine.dispose()


def check(url: str) -> list[Any]:
    """Differences between the models and a migrated database (empty when in sync)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from cartwise.commerce.tables import metadata

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "render_as_batch": True}
            )
            diffs: list[Any] = compare_metadata(ctx, metadata)
            return diffs
    finally:
        engine.dispose()
