"""``release_expired_reservations``: cancel unpaid orders whose reservation ran out.

The service only touches orders still unpaid with an expired reservation, and each order is
its own transaction, so a re-run after a crash just finishes what is left.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

RETRIES = 2
RETRY_DELAYS: list[float] = [5.0, 20.0]


@task(name="expire-pending-orders", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def expire_pending_orders(limit: int = 500, overrides: dict[str, Any] | None = None) -> int:
    """Release the stock of expired unpaid orders; returns how many were cancelled."""
    from sqlmodel import Session

    from cartwise.commerce.orders.service import expire_pending_orders as expire
    from cartwise.platform.db import get_engine
    from cartwise.platform.settings import Settings, get_settings

    settings = Settings(**overrides) if overrides else get_settings()
    with Session(get_engine(settings), expire_on_commit=False) as session:
        released = expire(session=session, limit=limit)
    get_run_logger().info("released the reservations of %d expired order(s)", released)
    return released


@flow(name="release-expired-reservations")
def release_expired_reservations(
    limit: int = 500, overrides: dict[str, Any] | None = None
) -> dict[str, int]:
    """Cancel unpaid orders whose stock reservation expired, giving the units back."""
    return {"released": expire_pending_orders(limit, overrides)}
