"""``GET /metrics`` and the business metrics read from the commerce database at scrape time.

Orders, revenue and carts are facts in the database, so they are read with SQL (cached for
``metrics_cache_seconds``) and every replica reports the same numbers; a process counter would
only see the checkouts its own replica served. Checkout failures leave no row, so they are a
process counter (``cartwise_checkout_failures_total``, incremented in ``orders/checkout.py``).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.engine import Engine

from cartwise.commerce.carts.models import Cart, CartItem, CartStatus
from cartwise.commerce.orders.models import Order, OrderStatus
from cartwise.platform.errors import Unauthorized
from cartwise.platform.metrics import CONTENT_TYPE, CachedCollector, MetricsHub
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow

# Orders whose payment was captured at some point (refunds are reported on their own).
CAPTURED = (
    OrderStatus.paid,
    OrderStatus.fulfilled,
    OrderStatus.shipped,
    OrderStatus.delivered,
    OrderStatus.refunded,
)
# Carts last touched longer ago than this are history, not abandonment.
CART_WINDOW = timedelta(days=30)
MIN_TOKEN_CHARS = 16

router = APIRouter(tags=["ops"])


class MetricsUnauthorized(Unauthorized):
    """A scrape without the configured metrics token."""

    slug, title = "metrics-unauthorized", "Metrics token required"


def check_production(settings: Settings) -> None:
    """Refuse to serve ``/metrics`` in production without a real token (like the JWT secret)."""
    if not settings.is_production:
        return
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            "refusing to start in production: CARTWISE_METRICS_TOKEN must be set to a random "
            f"value of {MIN_TOKEN_CHARS}+ characters (Prometheus sends it as a bearer token)"
        )


def _authorize(settings: Settings, authorization: str | None) -> None:
    if settings.metrics_token is None:
        return
    expected = settings.metrics_token.get_secret_value()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), expected):
        raise MetricsUnauthorized("Send the metrics token as `Authorization: Bearer <token>`.")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
        401: {"description": "A metrics token is configured and the request did not send it."},
    },
)
async def metrics(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus metrics of this replica: API, business and ML (bearer token when configured)."""
    _authorize(request.app.state.settings, authorization)
    hub: MetricsHub = request.app.state.metrics
    await hub.refresh()
    body = await anyio.to_thread.run_sync(hub.render)
    return Response(body, media_type=CONTENT_TYPE)


def business_families(engine: Engine, *, abandon_after: timedelta) -> list[Metric]:
    """Orders, revenue, refunds and cart abandonment, in two aggregate queries."""
    o = Order.__table__  # type: ignore[attr-defined]
    c = Cart.__table__  # type: ignore[attr-defined]
    ci = CartItem.__table__  # type: ignore[attr-defined]
    placed = CounterMetricFamily(
        "cartwise_orders_placed",
        "Orders ever placed (any status), by currency.",
        labels=["currency"],
    )
    by_status = GaugeMetricFamily(
        "cartwise_orders", "Orders in each status right now.", labels=["status"]
    )
    revenue = CounterMetricFamily(
        "cartwise_revenue",
        "Order totals whose payment was captured, by currency (refunds not deducted).",
        labels=["currency"],
    )
    refunds = CounterMetricFamily(
        "cartwise_refunds", "Amounts refunded, by currency.", labels=["currency"]
    )
    carts = GaugeMetricFamily(
        "cartwise_carts",
        "Carts with lines touched in the last 30 days: converted, abandoned (idle longer than "
        "cart_abandon_hours) or active.",
        labels=["state"],
    )
    ratio = GaugeMetricFamily(
        "cartwise_cart_abandonment_ratio",
        "Abandoned / (abandoned + converted) carts over the last 30 days.",
    )
    now = utcnow()
    idle_before = now - abandon_after
    state = case(
        (c.c.status == CartStatus.converted.value, "converted"),
        (c.c.updated_at < idle_before, "abandoned"),
        else_="active",
    ).label("state")
    has_lines = exists(select(ci.c.id).where(ci.c.cart_id == c.c.id))
    with engine.connect() as conn:
        order_rows = conn.execute(
            select(
                o.c.status,
                o.c.currency,
                func.count(),
                func.coalesce(func.sum(o.c.total), 0),
                func.coalesce(func.sum(o.c.refunded_amount), 0),
            ).group_by(o.c.status, o.c.currency)
        ).all()
        cart_rows = conn.execute(
            select(state, func.count())
            .where(
                c.c.updated_at >= now - CART_WINDOW,
                or_(
                    c.c.status == CartStatus.converted.value,
                    and_(c.c.status == CartStatus.active.value, has_lines),
                ),
            )
            .group_by(state)
        ).all()
    totals: dict[str, list[float]] = {}
    statuses = dict.fromkeys((s.value for s in OrderStatus), 0.0)
    for status, currency, count, total, refunded in order_rows:
        acc = totals.setdefault(currency, [0.0, 0.0, 0.0])
        acc[0] += count
        if status in {s.value for s in CAPTURED}:
            acc[1] += float(total)
        acc[2] += float(refunded)
        statuses[status] = statuses.get(status, 0.0) + count
    for currency, (count, captured, refunded) in sorted(totals.items()):
        placed.add_metric([currency], count)
        revenue.add_metric([currency], captured)
        refunds.add_metric([currency], refunded)
    for status, count in statuses.items():
        by_status.add_metric([status], count)
    cart_counts = {"converted": 0.0, "abandoned": 0.0, "active": 0.0}
    for name, count in cart_rows:
        cart_counts[name] = float(count)
    for name, count in cart_counts.items():
        carts.add_metric([name], count)
    decided = cart_counts["abandoned"] + cart_counts["converted"]
    ratio.add_metric([], cart_counts["abandoned"] / decided if decided else 0.0)
    return [placed, by_status, revenue, refunds, carts, ratio]


def install_metrics(app: FastAPI, settings: Settings) -> MetricsHub:
    """Add ``/metrics`` and the business collector to the app (refused in production sans token)."""
    check_production(settings)
    hub = MetricsHub()
    engine: Engine = app.state.engine
    abandon_after = timedelta(hours=settings.cart_abandon_hours)
    hub.add(
        CachedCollector(
            "business",
            lambda: business_families(engine, abandon_after=abandon_after),
            settings.metrics_cache_seconds,
        )
    )
    app.state.metrics = hub
    app.include_router(router)
    return hub


__all__ = ["business_families", "check_production", "install_metrics", "router"]
