"""A small generated shop in PostgreSQL with all five areas trained and promoted (tests).

Built once per test session by the ``trained_shop`` fixture, through the same commands a person
runs (``cartwise db upgrade``, ``data synth``, ``features ...``, ``models train all``,
``models evaluate all``), each in a subprocess so no settings cache or Ray leaks into the test
process. Set ``CARTWISE_TEST_SHOP_DIR`` to keep the shop in that folder (and its database)
between runs while developing; without it the shop lives in a temporary folder and its
database is dropped at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

PG_ADMIN = os.environ.get("CARTWISE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
# Small enough to train all five areas in about a minute on 2 cores, big enough that every
# area learns something (sessions with categories, search clicks, fraud, purchase orders).
SHOP = {"customers": 300, "days": 90, "products": 80, "seed": 5, "fraud_rate": 0.05}
STEPS: tuple[tuple[str, ...], ...] = (
    ("db", "upgrade", "head"),
    (
        "data",
        "synth",
        "--customers",
        str(SHOP["customers"]),
        "--days",
        str(SHOP["days"]),
        "--products",
        str(SHOP["products"]),
        "--seed",
        str(SHOP["seed"]),
        "--fraud-rate",
        str(SHOP["fraud_rate"]),
    ),
    ("features", "export"),
    ("features", "build"),
    ("features", "apply"),
    ("features", "materialize"),
    ("models", "train", "all", "--budget", "demo"),
    ("models", "evaluate", "all"),
)


@dataclass(frozen=True)
class TrainedShop:
    """Where the trained shop lives and the ``CARTWISE_*`` environment that reaches it."""

    root: Path
    database: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def var_dir(self) -> Path:
        """The shop's VAR_DIR (features, MLflow, synth ground truth)."""
        return self.root / "var"

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the shop's PostgreSQL database."""
        return self.env["CARTWISE_DATABASE_URL"]

    def overrides(self, **extra: Any) -> dict[str, Any]:
        """Settings overrides (lower-case field names) that point at this shop."""
        out: dict[str, Any] = {
            key.removeprefix("CARTWISE_").lower(): value
            for key, value in self.env.items()
            if key.startswith("CARTWISE_")
        }
        out.update(extra)
        return out


def _env(root: Path, database: str) -> dict[str, str]:
    return {
        "CARTWISE_ENV": "development",
        "CARTWISE_VAR_DIR": str(root / "var"),
        "CARTWISE_DATABASE_URL": (
            PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            + f"/{database}"
        ),
        "CARTWISE_REDIS_URL": "",
        "CARTWISE_FEAST_PROJECT": database,
        "CARTWISE_LOG_LEVEL": "WARNING",
        "CARTWISE_LOG_JSON": "false",
    }


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def drop(shop: TrainedShop) -> None:
    """Drop the shop's database (its folder goes with the pytest temporary directory)."""
    _admin(f'DROP DATABASE IF EXISTS "{shop.database}" WITH (FORCE)')


class Cancelled(RuntimeError):
    """The build was stopped by :meth:`Build.cancel`."""


def build(root: Path, *, keep: bool = False, control: Build | None = None) -> TrainedShop:
    """Build the shop under ``root`` (reuse it if ``keep`` and a finished one is there).

    ``control`` (a :class:`Build`) can stop the build from another thread.
    """
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "ready.json"
    if keep and marker.exists():
        database = json.loads(marker.read_text())["database"]
        shop = TrainedShop(root, database, _env(root, database))
        # A kept shop may predate a migration added since.
        cli = Path(sys.executable).with_name("cartwise")
        subprocess.run(
            [str(cli), "db", "upgrade", "head"],
            env={**os.environ, **shop.env},
            check=True,
            capture_output=True,
        )
        return shop
    database = f"cw_shop_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{database}"')
    _admin(f'ALTER DATABASE "{database}" SET synchronous_commit = off')  # a test database
    shop = TrainedShop(root, database, _env(root, database))
    env = {**os.environ, **shop.env}
    env.pop("CARTWISE_TUNE_MAX_CONCURRENT", None)
    cli = Path(sys.executable).with_name("cartwise")
    log = root / "build.log"
    timings: dict[str, float] = {}
    control = control or Build()
    try:
        with log.open("w") as out:
            for step in STEPS:
                started = time.monotonic()
                returncode = control.run([str(cli), *step], env=env, out=out)
                timings[" ".join(step[:2])] = round(time.monotonic() - started, 1)
                if returncode != 0:
                    raise RuntimeError(
                        f"cartwise {' '.join(step)} failed ({returncode}); "
                        f"log: {log}\n{log.read_text()[-3000:]}"
                    )
    except BaseException:
        drop(shop)
        raise
    marker.write_text(json.dumps({"database": database, "timings": timings}, indent=2))
    return shop


class Build:
    """Runs the build's steps one subprocess at a time; :meth:`cancel` stops it from anywhere."""

    def __init__(self, *, nice: int = 0) -> None:
        # A build beside other tests runs niced: it gets the core they leave idle and yields
        # when they want both (its Ray and Tune trials inherit the niceness).
        self.nice = nice
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._cancelled = False

    def run(self, argv: list[str], *, env: dict[str, str], out: Any) -> int:
        """Run one step to its end; raises :class:`Cancelled` once cancelled."""
        with self._lock:
            if self._cancelled:
                raise Cancelled("the shop build was cancelled")
            if self.nice:
                argv = ["nice", "-n", str(self.nice), *argv]  # exec's: same pid and group
            self._process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        returncode = self._process.wait()
        with self._lock:
            self._process = None
            if self._cancelled:
                raise Cancelled("the shop build was cancelled")
        return returncode

    def cancel(self) -> None:
        """Stop the running step (and its Ray, in its process group) and any later one."""
        with self._lock:
            self._cancelled = True
            process = self._process
        if process is not None and process.poll() is None:
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
