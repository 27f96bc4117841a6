"""The ``cartwise`` command line: lazy imports, and the commands on a temporary SQLite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select
from typer.testing import CliRunner

from cartwise.pipelines.cli import _replica_overrides, app, generate_password

ROOT = Path(__file__).resolve().parents[2]
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
HEAVY = ("ray", "fastapi", "sqlalchemy", "sqlmodel", "uvicorn", "torch")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from cartwise.pipelines.cli import app\n"
        "for argv in (['--help'], ['serve', '--help'], ['catalog', 'load-sample', '--help']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "LOADED=\n" in out.stdout, out.stdout[-500:]
    assert "--replicas" in out.stdout
    assert "--ingress" in out.stdout


def test_entry_point_answers_help() -> None:
    script = Path(sys.executable).with_name("cartwise")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in ("db", "users", "catalog", "serve", "api", "demo"):
        assert re.search(rf"\b{command}\b", out.stdout), command


def test_generated_passwords_are_strong() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert len(password) == 20
        assert re.search(r"[a-z]", password)
        assert re.search(r"[A-Z]", password)
        assert re.search(r"\d", password)


def _invoke(env: dict[str, str], *args: str) -> Any:
    from cartwise.platform.settings import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    get_settings.cache_clear()
    return result


def test_db_admin_and_sample_commands_on_sqlite(cli_env: dict[str, str], tmp_path: Path) -> None:
    from cartwise.commerce.catalog.models import Product
    from cartwise.commerce.customers.service import authenticate
    from cartwise.platform.auth import Role
    from cartwise.platform.db import make_engine

    db_file = tmp_path / "var" / "cartwise.db"
    result = _invoke(cli_env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert db_file.is_file()
    head = _invoke(cli_env, "db", "current").output.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", head), head

    # An admin with a generated password, printed once; a second run resets it.
    result = _invoke(cli_env, "users", "create-admin")
    assert result.exit_code == 0, result.output
    assert "admin created" in result.output
    password = re.search(r"password:\s+(\S+)", result.output)
    assert password is not None
    engine = make_engine(f"sqlite:///{db_file}")
    with Session(engine) as session:
        admin = authenticate(session=session, email="admin@cartwise.example", password=password[1])
        assert admin.role == Role.admin
    result = _invoke(cli_env, "users", "create-admin", "--password", "another-secret-9")
    assert result.exit_code == 0
    assert "updated" in result.output
    assert _invoke(cli_env, "users", "create-admin", "--password", "short").exit_code == 2
    bad = _invoke(
        cli_env, "users", "create-admin", "--email", "not-an-email", "--password", "x" * 9
    )
    assert bad.exit_code == 2

    # The sample loader, from a small file in the sample's format; idempotent.
    sample = tmp_path / "sample.csv"
    sample.write_text(
        HEADER
        + "\n1,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2011-11-01 08:26:00,2.55,17850.0,UK"
        + "\n2,POST,POSTAGE,1,2011-11-01 08:26:00,18.0,17850.0,UK"
        + "\n3,21212,PACK OF 72 RETROSPOT CAKE CASES,24,2011-11-01 12:00:00,0.55,,UK\n"
    )
    result = _invoke(cli_env, "catalog", "load-sample", "--path", str(sample), "--stock", "3")
    assert result.exit_code == 0, result.output
    assert re.search(r"products created\s+│?\s*2", result.output), result.output
    assert "CC BY 4.0" in result.output
    result = _invoke(cli_env, "catalog", "load-sample", "--path", str(sample))
    assert re.search(r"already present\s+│?\s*2", result.output), result.output
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Product)).one() == 2

    # Down to nothing and back up.
    assert _invoke(cli_env, "db", "downgrade", "base").exit_code == 0
    assert _invoke(cli_env, "db", "current").output.strip() == "base"
    assert _invoke(cli_env, "db", "upgrade").exit_code == 0
    assert _invoke(cli_env, "db", "current").output.strip() == head
    engine.dispose()


def test_api_command_serves_the_app_with_uvicorn(tmp_path: Path) -> None:
    from cartwise.serving.launch import free_port, wait_http

    port = free_port()
    env = {
        **os.environ,
        "CARTWISE_VAR_DIR": str(tmp_path / "var"),
        "CARTWISE_DATABASE_URL": "",
        "CARTWISE_REDIS_URL": "",
        "CARTWISE_ENV": "development",
    }
    script = Path(sys.executable).with_name("cartwise")
    subprocess.run([str(script), "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [str(script), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_replicas_get_absolute_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cartwise.platform.settings import Settings

    monkeypatch.chdir(tmp_path)
    settings = Settings(var_dir=Path("var"), database_url="sqlite:///data/shop.db")
    overrides = _replica_overrides(settings)
    assert overrides["var_dir"] == str(tmp_path / "var")
    assert overrides["database_url"] == f"sqlite:///{tmp_path / 'data' / 'shop.db'}"
    assert "storage_local_path" not in overrides
    pg = Settings(var_dir=tmp_path, database_url="postgresql://u@h/db")
    assert "database_url" not in _replica_overrides(pg)


def test_orders_release_expired_command(cli_env: dict[str, str], tmp_path: Path) -> None:
    from datetime import timedelta

    from cartwise.commerce.catalog.models import Product, Variant
    from cartwise.commerce.inventory import service as inventory
    from cartwise.commerce.inventory.models import StockLevel
    from cartwise.commerce.orders.models import Order, OrderStatus
    from cartwise.platform.db import make_engine
    from cartwise.platform.types import utcnow

    assert _invoke(cli_env, "db", "upgrade").exit_code == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'cartwise.db'}")
    with Session(engine) as session:
        product = Product(name="Mug", slug="mug")
        session.add(product)
        session.flush()
        session.add(Variant(product_id=product.id or 0, sku="MUG-1", price="3.00"))
        session.flush()
        inventory.ensure_stock_row(session=session, sku="MUG-1", on_hand=5)
        for oid, minutes in (("expired", -1), ("fresh", 30)):
            session.add(
                Order(id=oid, email="a@example.com", currency="GBP", subtotal="3.00", total="3.00")
            )
            session.flush()
            inventory.reserve(
                session=session,
                sku="MUG-1",
                quantity=2,
                order_id=oid,
                expires_at=utcnow() + timedelta(minutes=minutes),
            )
        session.commit()
    result = _invoke(cli_env, "orders", "release-expired")
    assert result.exit_code == 0, result.output
    assert "1 expired order" in result.output
    with Session(engine) as session:
        assert session.get(Order, "expired").status == OrderStatus.cancelled
        assert session.get(Order, "fresh").status == OrderStatus.pending_payment
        assert session.get(StockLevel, "MUG-1").reserved == 2
    engine.dispose()
