"""The commerce FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from cartwise.commerce.catalog import cache as catalog_cache
from cartwise.platform.cache import JsonCache, get_redis
from cartwise.platform.db import get_engine
from cartwise.platform.errors import install_problem_handlers
from cartwise.platform.logging import configure_logging
from cartwise.platform.middleware import CartwiseMiddleware
from cartwise.platform.ratelimit import RateLimiter, rate_limit
from cartwise.platform.settings import Settings, get_settings
from cartwise.platform.storage import LocalStorage, get_storage

API_DESCRIPTION = """
Cartwise commerce API: catalog, stock, carts, checkout, orders, payments, images, suppliers
and purchase orders.

Every error is an RFC 9457 problem document (`application/problem+json`).
Authenticate with `POST /api/v1/auth/token` (OAuth2 password form) and send
`Authorization: Bearer <access_token>`. Guest carts are reached with `X-Cart-Token`.
"""

AUTH_ROUTE_LIMITS = (
    "POST:/api/v1/auth/token",
    "POST:/api/v1/auth/register",
    "POST:/api/v1/auth/refresh",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for the given settings (the process settings by default)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="Cartwise API",
        version="1.0.0",
        description=API_DESCRIPTION,
        dependencies=[Depends(rate_limit)],
    )
    app.state.settings = settings
    app.state.engine = get_engine(settings)
    app.state.redis = get_redis(settings)
    app.state.cache = JsonCache(app.state.redis, "cw")
    # Commits that change what the catalog listing shows bump its cache version.
    catalog_cache.register(app.state.engine, app.state.cache)
    app.state.storage = get_storage(settings)
    app.state.rate_limiter = RateLimiter(
        app.state.redis,
        per_minute=settings.rate_limit_per_minute,
        overrides=dict.fromkeys(AUTH_ROUTE_LIMITS, settings.auth_rate_limit_per_minute),
        enabled=settings.rate_limit_enabled,
    )
    install_problem_handlers(app)

    from cartwise.commerce import health
    from cartwise.commerce.alerts.routes import router as alerts_router
    from cartwise.commerce.carts.routes import router as carts_router
    from cartwise.commerce.catalog.routes import router as catalog_router
    from cartwise.commerce.customers.routes import auth_router, users_router
    from cartwise.commerce.events.analytics_routes import router as search_analytics_router
    from cartwise.commerce.events.business_routes import router as business_analytics_router
    from cartwise.commerce.events.routes import router as events_router
    from cartwise.commerce.experiments.routes import router as experiments_router
    from cartwise.commerce.exports.routes import router as exports_router
    from cartwise.commerce.inventory.routes import router as inventory_router
    from cartwise.commerce.monitoring.routes import router as monitoring_router
    from cartwise.commerce.orders.routes import router as orders_router
    from cartwise.commerce.payments.routes import router as payments_router
    from cartwise.commerce.suppliers.routes import router as suppliers_router
    from cartwise.commerce.vouchers.routes import router as vouchers_router

    app.include_router(health.router)
    for router in (
        auth_router,
        users_router,
        catalog_router,
        inventory_router,
        carts_router,
        orders_router,
        payments_router,
        vouchers_router,
        events_router,
        suppliers_router,
        alerts_router,
        experiments_router,
        search_analytics_router,
        business_analytics_router,
        exports_router,
        monitoring_router,
    ):
        app.include_router(router)
    from cartwise.commerce.metrics import install_metrics

    # GET /metrics (Prometheus); refuses to start in production without CARTWISE_METRICS_TOKEN.
    install_metrics(app, settings)

    if isinstance(app.state.storage, LocalStorage):
        root = app.state.storage.root
        root.mkdir(parents=True, exist_ok=True)
        app.mount(settings.storage_public_url, StaticFiles(directory=root), name="media")

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Cart-Token",
            "X-Cart-Id",
            "X-Request-Id",
            "If-None-Match",
        ],
        expose_headers=["X-Request-Id", "ETag", "Retry-After"],
    )
    app.add_middleware(
        CartwiseMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        hsts=settings.is_production,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
        "type": "object",
        "title": "Problem",
        "description": "RFC 9457 problem document.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
        "additionalProperties": True,
    }
    app.openapi_schema = schema
    return schema
