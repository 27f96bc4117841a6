"""Platform settings, read from ``CARTWISE_*`` environment variables."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-insecure-jwt-secret-change-me-0123456789"  # noqa: S105
DEV_WEBHOOK_SECRET = "whsec_dev_insecure_change_me"  # noqa: S105
DEV_ALERT_WEBHOOK_SECRET = "alert-dev-insecure-change-me"  # noqa: S105


class Environment(StrEnum):
    """Where the platform runs: embedded defaults or production services."""

    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    """Every knob of the platform; embedded defaults live under ``var/``."""

    model_config = SettingsConfigDict(
        env_prefix="CARTWISE_", env_file=".env", extra="ignore", frozen=True
    )

    env: Environment = Environment.development
    var_dir: Path = Path("var")
    database_url: str = ""
    database_pool_size: int = 10
    database_max_overflow: int = 20
    redis_url: str = ""
    storage_backend: Literal["local", "s3"] = "local"
    storage_local_path: Path | None = None
    storage_public_url: str = "/media"
    s3_bucket: str = "cartwise"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_presign_seconds: int = 3600

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: str = "HS256"
    access_token_minutes: int = 15
    refresh_token_days: int = 14

    trust_forwarded_for: bool = False
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000"])
    rate_limit_per_minute: int = 600
    auth_rate_limit_per_minute: int = 30
    rate_limit_enabled: bool = True
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 8_388_608
    max_image_pixels: int = 40_000_000

    currency: str = "GBP"
    shipping_flat: Decimal = Decimal("4.95")
    free_shipping_over: Decimal | None = Decimal("50.00")
    tax_rate: Decimal = Decimal("0.20")
    max_line_quantity: int = 100
    max_cart_lines: int = 100
    reservation_minutes: int = 15
    catalog_cache_seconds: int = 60

    payment_provider: Literal["manual", "stripe"] = "manual"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    stripe_api_base: str | None = None

    # Outbox mails and alerts: "file" writes .eml files under var/mail (embedded default).
    mail_backend: Literal["file", "smtp"] = "file"
    mail_from: str = "Cartwise <shop@cartwise.example>"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 10.0
    staff_alert_email: str = "staff@cartwise.example"
    alert_webhook_url: str = ""
    alert_webhook_secret: SecretStr = SecretStr(DEV_ALERT_WEBHOOK_SECRET)
    webhook_timeout_seconds: float = 5.0
    outbox_batch_size: int = 100
    outbox_max_attempts: int = 8
    outbox_retry_base_seconds: float = 30.0

    # Export jobs: "thread" runs them in the API process; "prefect" starts the export
    # deployment on the Prefect server at prefect_api_url (e.g. http://prefect:4200/api).
    exports_runner: Literal["thread", "prefect"] = "thread"
    prefect_api_url: str = ""
    export_deployment: str = "export/on-demand"

    admin_email: str = "admin@cartwise.example"
    log_level: str = "INFO"
    log_json: bool = True

    # /metrics: with a token, scrapes need `Authorization: Bearer <token>`; an app serving
    # /metrics refuses to start in production without one (see the commerce metrics module).
    metrics_token: SecretStr | None = None
    # Scrape-time SQL (orders, revenue, carts, drift) is re-read at most this often.
    metrics_cache_seconds: float = 15.0
    # A cart with lines and no change for this long counts as abandoned.
    cart_abandon_hours: float = 24.0

    @property
    def is_production(self) -> bool:
        """True when running against production services."""
        return self.env == Environment.production

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file under ``var/``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'cartwise.db').as_posix()}"

    @property
    def effective_storage_path(self) -> Path:
        """The folder used by the local storage adapter."""
        return self.storage_local_path or self.var_dir / "media"

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if not self.is_production:
            return self
        problems: list[str] = []
        secret = self.jwt_secret.get_secret_value()
        if secret == DEV_JWT_SECRET or len(secret) < 32:
            problems.append("CARTWISE_JWT_SECRET must be set to a random value of 32+ characters")
        if not self.database_url or self.database_url.startswith("sqlite"):
            problems.append("CARTWISE_DATABASE_URL must point at PostgreSQL")
        if not self.redis_url:
            problems.append("CARTWISE_REDIS_URL must be set (stand-ins are embedded-only)")
        if self.payment_provider == "stripe":
            if self.stripe_webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
                problems.append("CARTWISE_STRIPE_WEBHOOK_SECRET must be set")
            if self.stripe_api_key is None:
                problems.append("CARTWISE_STRIPE_API_KEY must be set")
        if self.alert_webhook_url:
            hook_secret = self.alert_webhook_secret.get_secret_value()
            if hook_secret == DEV_ALERT_WEBHOOK_SECRET or len(hook_secret) < 32:
                problems.append(
                    "CARTWISE_ALERT_WEBHOOK_SECRET must be set to a random value of 32+ characters"
                )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
