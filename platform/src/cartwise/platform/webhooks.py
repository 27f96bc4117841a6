"""Signed outgoing webhooks: JSON POSTs a receiver can authenticate and deduplicate.

The signature header is ``Cartwise-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
``"<t>.<raw body>"`` with the shared secret; ``Cartwise-Delivery`` is a stable id per event
and channel, so a resend after a crash can be recognised. Receivers call :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

SIGNATURE_HEADER = "Cartwise-Signature"
DELIVERY_HEADER = "Cartwise-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookError(Exception):
    """The receiver could not be reached or did not answer 2xx."""


class SignatureError(ValueError):
    """A webhook signature is missing, malformed, stale or wrong."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header value for a body (``t=...,v1=...``)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={_mac(secret, moment, body)}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a signature header against the raw body; returns its timestamp or raises.

    Several ``v1`` values are accepted (a sender rotating secrets signs with both); the
    timestamp must be within ``tolerance`` seconds of now, which stops replays.
    """
    if not header:
        raise SignatureError("missing signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise SignatureError("malformed timestamp") from exc
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("malformed signature header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("signature timestamp outside the tolerance")
    expected = _mac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match")
    return timestamp


def post_signed(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    delivery_id: str,
    timeout: float = 5.0,
) -> int:
    """POST ``payload`` as signed JSON; returns the status, raises :class:`WebhookError`."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is operator configuration
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "cartwise-webhooks/1",
            SIGNATURE_HEADER: sign(secret, body),
            DELIVERY_HEADER: delivery_id,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"webhook {url} answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WebhookError(f"webhook {url}: {exc}") from exc
    if not 200 <= status < 300:
        raise WebhookError(f"webhook {url} answered {status}")
    return status
