"""``process_outbox``: send the mails and webhooks the order events call for, once each.

The work is :func:`cartwise.commerce.outbox.delivery.process_outbox`: every channel of every
event is recorded as sent before the event is acknowledged, so a retried task or a re-run
after a crash sends nothing twice and loses nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

# A database or mail-server hiccup is worth another try; delivery records make it safe.
RETRIES = 2
RETRY_DELAYS: list[float] = [5.0, 20.0]


@task(name="deliver-outbox", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def deliver_outbox(
    limit: int | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, int]:
    """Claim pending events and deliver their channels; returns the counts."""
    from sqlmodel import Session

    from cartwise.commerce.outbox.delivery import process_outbox as deliver
    from cartwise.platform.db import get_engine
    from cartwise.platform.settings import Settings, get_settings

    settings = Settings(**overrides) if overrides else get_settings()
    with Session(get_engine(settings), expire_on_commit=False) as session:
        summary = deliver(session=session, settings=settings, limit=limit)
    log = get_run_logger()
    log.info(
        "outbox: %d claimed, %d acknowledged, %d sent, %d already sent, %d failed, %d dead",
        summary.claimed,
        summary.acknowledged,
        summary.sent,
        summary.already_sent,
        summary.failed,
        summary.dead,
    )
    return summary.as_dict()


@flow(name="process-outbox")
def process_outbox(
    limit: int | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, int]:
    """Deliver pending outbox events (mails, signed webhooks) exactly once each."""
    return deliver_outbox(limit, overrides)
