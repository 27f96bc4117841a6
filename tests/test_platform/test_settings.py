"""Settings: embedded defaults, CARTWISE_ env overrides, and production refusing dev secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cartwise.platform.settings import DEV_JWT_SECRET, Settings

PROD_OK = {
    "env": "production",
    "jwt_secret": "x" * 48,
    "database_url": "postgresql://cartwise@db/cartwise",
    "redis_url": "redis://cache:6379/0",
}


def test_embedded_defaults_live_under_var(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path)
    assert s.effective_database_url == f"sqlite:///{tmp_path.as_posix()}/cartwise.db"
    assert s.effective_storage_path == tmp_path / "media"
    assert s.payment_provider == "manual"
    assert not s.is_production


def test_env_vars_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTWISE_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("CARTWISE_TAX_RATE", "0.1")
    monkeypatch.setenv("CARTWISE_CORS_ORIGINS", '["https://shop.example"]')
    s = Settings()
    assert s.effective_database_url == "postgresql://u@h/db"
    assert str(s.tax_rate) == "0.1"
    assert s.cors_origins == ["https://shop.example"]


def test_production_accepts_real_secrets() -> None:
    s = Settings(**PROD_OK)
    assert s.is_production


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"jwt_secret": DEV_JWT_SECRET}, "CARTWISE_JWT_SECRET"),
        ({"jwt_secret": "short"}, "CARTWISE_JWT_SECRET"),
        ({"database_url": ""}, "CARTWISE_DATABASE_URL"),
        ({"database_url": "sqlite:///x.db"}, "CARTWISE_DATABASE_URL"),
        ({"redis_url": ""}, "CARTWISE_REDIS_URL"),
        (
            {"payment_provider": "stripe", "stripe_api_key": "sk_live_x"},
            "CARTWISE_STRIPE_WEBHOOK_SECRET",
        ),
        (
            {"payment_provider": "stripe", "stripe_webhook_secret": "whsec_real"},
            "CARTWISE_STRIPE_API_KEY",
        ),
    ],
)
def test_production_refuses_dev_defaults(override: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{**PROD_OK, **override})


def test_production_from_environment_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTWISE_ENV", "production")
    with pytest.raises(ValidationError, match="refusing to start in production"):
        Settings()
