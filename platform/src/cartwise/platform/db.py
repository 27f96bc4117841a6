"""SQLModel engines and sessions for SQLite (embedded) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from cartwise.platform.settings import Settings, get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Make plain ``postgresql://`` URLs use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """Build an engine with pre-ping, pooling for PostgreSQL and safe pragmas for SQLite."""
    settings = settings or get_settings()
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_recycle=1800,
    )


def get_engine(settings: Settings | None = None) -> Engine:
    """The cached engine for the configured database URL."""
    settings = settings or get_settings()
    url = normalize_url(settings.effective_database_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url, settings)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests and shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def is_postgres(engine: Engine) -> bool:
    """True when the engine talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A request-scoped session on the app's engine; services own the commit.

    Async on purpose: opening a Session touches no connection, and closing one only hands it
    back to the pool, so running this on the event loop saves two threadpool hops a request.
    """
    engine: Engine = request.app.state.engine
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
