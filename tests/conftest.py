"""Shared fixtures: real PostgreSQL and Redis, per-test SQLite, the app and its clients."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

os.environ.setdefault("CARTWISE_ENV", "test")

PG_ADMIN_DSN = os.environ.get(
    "CARTWISE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("CARTWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


# A test database gives up durability across a server crash for commits that do not wait for
# the WAL flush (a real PostgreSQL otherwise: same SQL, locks and isolation).
FAST_COMMIT = 'ALTER DATABASE "{name}" SET synchronous_commit = off'


@pytest.fixture(scope="session", autouse=True)
def _no_heap_watch_in_the_test_process() -> Iterator[None]:
    """Keep the collection watcher (``cartwise.serving.runtime.heap``) out of pytest's own
    process: the in-process ML client installs it, and its freezes of this process's heap
    (millions of objects, several seconds on a loaded machine) would land inside unrelated
    tests. It stays on in the servers the tests start; ``test_heap`` tests it by itself."""
    from cartwise.serving.runtime import heap

    saved = heap.SLOW_FULL_COLLECTION_MS
    heap.SLOW_FULL_COLLECTION_MS = float("inf")
    yield
    heap.SLOW_FULL_COLLECTION_MS = saved


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}".replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this session's own, dropped afterwards; yields its URL."""
    name = f"cartwise_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(FAST_COMMIT.format(name=name))
    url = _pg_url(name)
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    yield url
    from cartwise.platform.db import dispose_engines

    dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis, on a test-only database index, flushed before each test."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


_RESTART_SEQUENCES = (
    "SELECT setval(c.oid::regclass, 1, false) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'S' AND n.nspname = current_schema()"
)


def _truncate_all(url: str) -> None:
    """Empty every table and restart the ids, children first.

    DELETE on the few rows a test leaves takes milliseconds; TRUNCATE recreates the files of
    every table and index (about 0.6 s a test here), which made it the costliest fixture.
    """
    from sqlalchemy.exc import DBAPIError

    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import get_engine
    from cartwise.platform.settings import Settings

    engine = get_engine(Settings(database_url=url))
    tables = metadata.sorted_tables
    try:
        with engine.begin() as conn:
            deletes = "; ".join(f'DELETE FROM "{t.name}"' for t in reversed(tables))  # noqa: S608
            conn.exec_driver_sql(deletes)
            conn.exec_driver_sql(_RESTART_SEQUENCES)
    except DBAPIError:  # a foreign-key cycle the order cannot satisfy
        names = ", ".join(f'"{t.name}"' for t in tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cartwise.db'}"
        from cartwise.commerce.tables import metadata
        from cartwise.platform.db import make_engine

        engine = make_engine(url)
        metadata.create_all(engine)
        engine.dispose()
        return url
    url: str = request.getfixturevalue("pg_database")
    _truncate_all(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str) -> Callable[..., Any]:
    """Build test settings (real Redis, files under tmp_path) with overrides."""
    from cartwise.platform.settings import Settings

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "var_dir": tmp_path / "var",
            "redis_url": redis_url,
            "rate_limit_per_minute": 100_000,
            "auth_rate_limit_per_minute": 100_000,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Any], db_url: str) -> Any:
    """Settings for the current database backend."""
    return make_settings(database_url=db_url)


@pytest.fixture
def app(settings: Any) -> FastAPI:
    """The commerce app on the current backend."""
    from cartwise.commerce import create_app

    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client on the app (problem documents instead of raised errors)."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def session(app: FastAPI) -> Iterator[Session]:
    """A database session on the app's engine, for arranging and checking state."""
    with Session(app.state.engine, expire_on_commit=False) as s:
        yield s


_HASH_CACHE: dict[str, str] = {}


@dataclass
class Account:
    """A user with a valid access token."""

    id: int
    email: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(app: FastAPI) -> Callable[..., Account]:
    """Create a user straight in the database (argon2 hashes cached) and issue a token."""
    from cartwise.commerce.customers.models import User
    from cartwise.platform.auth import Role, hash_password, issue_access_token

    def build(
        role: str = "customer", email: str | None = None, password: str = "correct-horse-1"
    ) -> Account:
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        if password not in _HASH_CACHE:
            _HASH_CACHE[password] = hash_password(password)
        with Session(app.state.engine) as s:
            user = User(email=email, hashed_password=_HASH_CACHE[password], role=Role(role))
            s.add(user)
            s.commit()
            s.refresh(user)
            assert user.id is not None
            token = issue_access_token(app.state.settings, user.id, Role(role)).token
            return Account(user.id, email, password, role, token)

    return build


@pytest.fixture
def customer(make_user: Callable[..., Account]) -> Account:
    """A signed-in customer."""
    return make_user("customer")


@pytest.fixture
def staff(make_user: Callable[..., Account]) -> Account:
    """A signed-in member of staff."""
    return make_user("staff")


@pytest.fixture
def admin(make_user: Callable[..., Account]) -> Account:
    """A signed-in admin."""
    return make_user("admin")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Check that a response is a problem document with the given status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for an embedded (SQLite, in-process Redis) CLI run under tmp_path."""
    from cartwise.platform.db import dispose_engines
    from cartwise.platform.settings import get_settings

    env = {
        "CARTWISE_VAR_DIR": str(tmp_path / "var"),
        "CARTWISE_DATABASE_URL": "",
        "CARTWISE_REDIS_URL": "",
        "CARTWISE_ENV": "development",
        "CARTWISE_LOG_LEVEL": "WARNING",
    }
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture(scope="module")
def peer() -> Iterator[Any]:
    """The local Stripe stand-in (tests/stripe_peer.py), one per module."""
    from tests.stripe_peer import running_peer

    with running_peer() as p:
        yield p


@pytest.fixture
def stripe_settings(make_settings: Callable[..., Any], db_url: str, peer: Any) -> Any:
    """Settings on the current database, with Stripe pointed at the peer."""
    return make_settings(
        database_url=db_url,
        payment_provider="stripe",
        stripe_api_key=peer.api_key,
        stripe_api_base=peer.url,
    )


@pytest.fixture(params=["embedded", "production"])
def feature_env(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, pg_database: str
) -> Iterator[tuple[Any, Session]]:
    """Commerce DB + feature settings: SQLite/SQLite/file, or PostgreSQL/Redis/SQL registry."""
    from cartwise.commerce.tables import metadata
    from cartwise.features.settings import FeatureSettings
    from cartwise.platform.db import get_engine

    common: dict[str, Any] = {
        "env": "test",
        "var_dir": tmp_path / "var",
        "redis_url": redis_url,
        "feast_project": f"t{uuid.uuid4().hex[:10]}",
        "log_level": "WARNING",
    }
    if request.param == "embedded":
        settings = FeatureSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}", **common)
        metadata.create_all(get_engine(settings))
    else:
        _truncate_all(pg_database)
        settings = FeatureSettings(
            database_url=pg_database,
            feast_online_store="redis",
            feast_redis_url=redis_url,
            feast_registry_url=pg_database,
            **common,
        )
    with Session(get_engine(settings), expire_on_commit=False) as s:
        yield settings, s


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """The served app (commerce + session push) for feature settings, as a test client."""
    from fastapi.testclient import TestClient

    from cartwise.serving.asgi import create_app

    opened: list[Any] = []

    def make(settings: Any) -> tuple[TestClient, Any]:
        overrides = settings.model_dump()
        overrides.update(rate_limit_per_minute=100_000, auth_rate_limit_per_minute=100_000)
        app = create_app(overrides)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client, app.state.session_push

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray with 2 CPUs for the whole session (starting one costs seconds)."""
    import ray

    from cartwise.models.settings import ModelSettings
    from cartwise.models.tuning import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(ModelSettings(env="test", var_dir=tmp_path_factory.mktemp("ray"), ray_num_cpus=2))
    yield
    if started:
        ray.shutdown()


# Tests that need the trained shop, or the session's Ray, run after all the others (each
# module whole, in its usual order), so the shop can build in the background meanwhile: its
# build is a chain of `cartwise` subprocesses, minutes of work that would otherwise stall the
# session at the first test that needs it. It runs at nice 19: on two cores it takes what the
# tests leave idle (most of them keep one core busy) and yields when they want both, as the
# notebooks, the fuzzer and a Ray deploy do. Without the niceness it slowed them by half.
LATE_FIXTURES = frozenset({"trained_shop", "ray_session"})


@dataclass
class _ShopBuild:
    """The session's trained-shop build, started at collection time in a thread."""

    root: Path
    keep: bool
    control: Any
    thread: Any = None
    shop: Any = None
    error: BaseException | None = None

    def start(self) -> None:
        import threading

        from tests import trained_shop as shops

        def work() -> None:
            try:
                self.shop = shops.build(self.root, keep=self.keep, control=self.control)
            except BaseException as exc:  # handed to the fixture, raised there
                self.error = exc

        self.thread = threading.Thread(target=work, name="trained-shop", daemon=True)
        self.thread.start()

    def result(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"the trained shop could not be built: {self.error}") from (
                self.error
            )
        return self.shop

    def stop(self) -> None:
        """At the end of the session: cancel a build still running, drop an unused shop."""
        from tests import trained_shop as shops

        self.control.cancel()
        self.thread.join(timeout=60)
        if self.shop is not None and not self.keep:
            shops.drop(self.shop)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


_SHOP_BUILD: dict[str, _ShopBuild] = {}


def _needs(item: pytest.Item, names: frozenset[str]) -> bool:
    return bool(names & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only what will run counts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the modules that need the shop or Ray last; start building the shop now."""
    late = {item.path for item in items if _needs(item, LATE_FIXTURES)}
    items[:] = [i for i in items if i.path not in late] + [i for i in items if i.path in late]
    wanted = any(_needs(item, frozenset({"trained_shop"})) for item in items)
    if wanted and not config.option.collectonly and "shop" not in _SHOP_BUILD:
        from tests import trained_shop as shops

        keep = os.environ.get("CARTWISE_TEST_SHOP_DIR")
        root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cw-shop-"))
        build = _ShopBuild(root, bool(keep), shops.Build(nice=19))
        build.start()
        _SHOP_BUILD["shop"] = build


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = _SHOP_BUILD.pop("shop", None)
    if build is not None:
        build.stop()


@pytest.fixture(scope="session")
def trained_shop() -> Any:
    """A generated shop in PostgreSQL with all five areas trained and promoted (see
    ``tests/trained_shop.py``), built in the background from collection time on;
    ``CARTWISE_TEST_SHOP_DIR`` keeps it between runs."""
    build = _SHOP_BUILD.get("shop")
    if build is None:  # collected without the hook (a plugin reordering, say): build now
        from tests import trained_shop as shops

        build = _ShopBuild(Path(tempfile.mkdtemp(prefix="cw-shop-")), False, shops.Build())
        build.start()
        _SHOP_BUILD["shop"] = build
    # The shop is dropped in pytest_sessionfinish, after every session fixture is done.
    return build.result()
