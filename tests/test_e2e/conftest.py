"""One Ray Serve application per test session, on a PostgreSQL database of its own.

Ray starts once (``ray.init(num_cpus=2)``), Serve once, with the HAProxy ingress that
``cartwise serve`` uses. Every side port Serve binds is moved to a free one, so this can run
next to a ``cartwise demo`` or another test session on the same machine.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import PG_ADMIN_DSN

E2E_REDIS_URL = os.environ.get("CARTWISE_TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/10")
ADMIN_EMAIL = "admin-e2e@example.com"
ADMIN_PASSWORD = "e2e-admin-password-1"
SAMPLE_ROWS = 400  # the first rows of the committed sample: ~150 real products, in seconds


@dataclass(frozen=True)
class ServeApp:
    """The running Serve application and what the tests need to drive it."""

    url: str
    database_url: str
    redis_url: str
    admin_email: str
    admin_password: str


def _sample_subset(dest: Path) -> Path:
    from cartwise.commerce.catalog.sample import default_sample_path

    with gzip.open(default_sample_path(), "rt", encoding="utf-8") as src:
        lines = [line for _, line in zip(range(SAMPLE_ROWS + 1), src, strict=False)]
    dest.write_text("".join(lines), encoding="utf-8")
    return dest


def _prepare_database(url: str, sample: Path) -> None:
    from sqlmodel import Session

    from cartwise.commerce.catalog.sample import load_sample
    from cartwise.commerce.customers.service import ensure_admin
    from cartwise.commerce.migrations_api import upgrade
    from cartwise.platform.db import make_engine

    upgrade(url)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            load_sample(session=session, path=sample, stock=50)
            ensure_admin(session=session, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    finally:
        engine.dispose()


def _copy_database(template: str, name: str) -> None:
    """A copy of the trained shop's database (so the journey's writes stay out of it)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        for attempt in range(5):
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
                return
            except psycopg.errors.ObjectInUse:
                # A pooled connection of an in-process test still sits on the template.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (template,),
                )
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not copy database {template}")


# Package scope: the app reserves the CPUs of the session's Ray; later packages (Tune trials,
# the serving tests' own app) need them back.
@pytest.fixture(scope="package")
def serve_app(tmp_path_factory: pytest.TempPathFactory, trained_shop: Any) -> Iterator[ServeApp]:
    """Ray and the whole Serve application (ingress + five model deployments) on a copy of the
    trained shop, plus ~150 real sample products; stopped and dropped after the session."""
    from cartwise.serving.args import AppArgs
    from cartwise.serving.launch import (
        deploy,
        free_port,
        private_ports_env,
        shutdown,
        start_ray,
        wait_http,
    )

    tmp = tmp_path_factory.mktemp("serve")
    name = f"cartwise_e2e_{uuid.uuid4().hex[:8]}"
    _copy_database(trained_shop.database, name)
    database_url = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    cache = redis.Redis.from_url(E2E_REDIS_URL)
    cache.flushdb()
    try:
        _prepare_database(database_url, _sample_subset(tmp / "sample.csv"))
        start_ray(
            num_cpus=2,
            dashboard=False,
            ingress="haproxy",
            log_to_driver=False,
            extra_env=private_ports_env(),
        )
        port = free_port()
        settings = {
            **trained_shop.overrides(),
            "env": "test",
            "database_url": database_url,
            "redis_url": E2E_REDIS_URL,
            "storage_local_path": str(tmp / "media"),
            "log_level": "WARNING",
        }
        deploy(AppArgs(settings=settings), host="127.0.0.1", port=port)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", timeout=180)
        yield ServeApp(url, database_url, E2E_REDIS_URL, ADMIN_EMAIL, ADMIN_PASSWORD)
    finally:
        shutdown()
        cache.flushdb()
        cache.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
