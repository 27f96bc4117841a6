"""Signed webhooks: the signature round-trips, tampering and replays are refused."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cartwise.platform.settings import DEV_ALERT_WEBHOOK_SECRET, Settings
from cartwise.platform.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    WebhookError,
    post_signed,
    sign,
    verify,
)
from tests.test_pipelines.outbox_peers import free_port, webhook_server

SECRET = "a-long-random-secret-0123456789abcdef"
BODY = b'{"type":"fraud.review_required"}'


def test_sign_then_verify() -> None:
    header = sign(SECRET, BODY, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, BODY, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, 1_700_000_000, "missing"),
        ("v1=abc", BODY, 1_700_000_000, "malformed"),
        ("t=soon,v1=abc", BODY, 1_700_000_000, "malformed"),
        ("GOOD", BODY + b" ", 1_700_000_000, "does not match"),
        ("GOOD", BODY, 1_700_000_000 + 301, "tolerance"),
    ],
)
def test_verify_refuses(header: str | None, body: bytes, now: int, message: str) -> None:
    if header == "GOOD":
        header = sign(SECRET, BODY, timestamp=1_700_000_000)
    with pytest.raises(SignatureError, match=message):
        verify(SECRET, header, body, now=now)


def test_verify_accepts_any_of_several_signatures() -> None:
    good = sign(SECRET, BODY, timestamp=1_700_000_000).split(",")[1]
    header = f"t=1700000000,v1={'0' * 64},{good}"
    assert verify(SECRET, header, BODY, now=1_700_000_000) == 1_700_000_000


def test_post_signed_reaches_a_real_receiver_which_can_verify() -> None:
    with webhook_server() as sink:
        status = post_signed(sink.url, {"b": 2, "a": 1}, secret=SECRET, delivery_id="d-1")
        sink.status = 500
        with pytest.raises(WebhookError, match="500"):
            post_signed(sink.url, {"a": 1}, secret=SECRET, delivery_id="d-2", timeout=5)
    assert status == 204
    ((headers, body),) = sink.requests
    verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert headers[DELIVERY_HEADER] == "d-1"
    assert json.loads(body) == {"a": 1, "b": 2}


def test_post_signed_unreachable_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(WebhookError):
        post_signed(url, {}, secret=SECRET, delivery_id="d", timeout=2)


PROD = {
    "env": "production",
    "jwt_secret": "x" * 48,
    "database_url": "postgresql://cartwise@db/cartwise",
    "redis_url": "redis://cache:6379/0",
}


def test_production_refuses_a_dev_or_missing_webhook_secret_when_a_url_is_set() -> None:
    assert Settings(**PROD).alert_webhook_secret.get_secret_value() == DEV_ALERT_WEBHOOK_SECRET
    for secret in ({}, {"alert_webhook_secret": "short"}):
        with pytest.raises(ValidationError, match="CARTWISE_ALERT_WEBHOOK_SECRET"):
            Settings(**PROD, alert_webhook_url="https://hooks.example/x", **secret)
    ok = Settings(**PROD, alert_webhook_url="https://hooks.example/x", alert_webhook_secret=SECRET)
    assert ok.alert_webhook_url
