"""A small Stripe-API-shaped HTTP server for tests: a stand-in for api.stripe.com only.

What is real in the payment tests: the official ``stripe`` library (``StripeClient`` with its form
encoding, headers, idempotency keys, retries and error classes) talking real HTTP to this server;
the webhook signatures, made by the library's own ``stripe.WebhookSignature.
generate_signature_header`` (``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>">``) and checked
in the app by ``stripe.Webhook.construct_event``; and the app, its databases and its HTTP stack.

What is a stand-in: this server. It implements just the endpoints Cartwise uses, with Stripe's
shapes and rules: ``POST /v1/payment_intents``, ``GET /v1/payment_intents/{id}``,
``POST /v1/payment_intents/{id}/confirm`` (what the shopper's browser does with the client
secret), ``POST /v1/refunds``; form-encoded bodies with ``a[b]=c`` nesting; Bearer API keys;
``Idempotency-Key`` (same key and parameters -> the stored response, different parameters -> an
``idempotency_error``); refunds limited to what is left on the charge. Stripe's events are built
by :meth:`StripePeer.event` from the peer's own objects.

localstripe (PyPI 1.15.10) was tried first: it installs and runs on Python 3.11 with aiohttp 3.14,
but ignores ``Idempotency-Key`` (two calls create two intents) and rejects
``automatic_payment_methods``, so it cannot test what matters here.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

API_VERSION = "2025-01-27.acacia"


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe's form encoding (``metadata[order_id]=x``) into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _error(status: int, kind: str, message: str, code: str | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"type": kind, "message": message}
    if code:
        body["code"] = code
    return status, {"error": body}


@dataclass
class Call:
    """One request the peer received."""

    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    authorization: str | None


@dataclass
class StripePeer:
    """The server's state and its control surface for tests."""

    api_key: str = "sk_test_cartwise_peer"
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _idempotent: dict[str, tuple[str, int, Any]] = field(default_factory=dict)
    _lose_responses: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base to give the client (``settings.stripe_api_base``)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StripePeer:
        """Listen on 127.0.0.1 at a free port, in a daemon thread."""
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                peer._serve(self, "GET")

            def do_POST(self) -> None:
                peer._serve(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- test controls ---------------------------------------------------------------------

    def calls_to(self, method: str, path: str) -> list[Call]:
        """The requests received for one method and path."""
        return [c for c in self.calls if c.method == method and c.path == path]

    def intents_for(self, order_id: str) -> list[dict[str, Any]]:
        """Intents created for an order (by metadata)."""
        return [i for i in self.intents.values() if i["metadata"].get("order_id") == order_id]

    def refunds_for(self, intent_id: str) -> list[dict[str, Any]]:
        """Refunds made on an intent."""
        return [r for r in self.refunds.values() if r["payment_intent"] == intent_id]

    def lose_next_response(self, path: str, times: int = 1) -> None:
        """Process the next request to ``path`` but answer 500 (the outcome looks unknown)."""
        self._lose_responses[path] = times

    def confirm(self, intent_id: str) -> dict[str, Any]:
        """What the shopper's browser does: the card is charged and the intent succeeds."""
        status, body = self._confirm(intent_id)
        assert status == 200, body
        return dict(body)

    def refund_in_dashboard(self, intent_id: str, amount: int) -> dict[str, Any]:
        """A refund made in the Stripe dashboard, outside Cartwise."""
        status, body = self._refund({"payment_intent": intent_id, "amount": str(amount)})
        assert status == 200, body
        return dict(body)

    def event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A Stripe event envelope around a copy of one of the peer's objects."""
        return {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def charge_of(self, intent_id: str) -> dict[str, Any]:
        """The charge behind a succeeded intent."""
        return dict(self.charges[self.intents[intent_id]["latest_charge"]])

    @staticmethod
    def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
        """The ``Stripe-Signature`` header for a payload, computed by the stripe library."""
        header: str = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
        return header

    # --- the API ---------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        path = urlsplit(handler.path).path
        params = _nest(parse_qsl(raw, keep_blank_values=True))
        key = handler.headers.get("Idempotency-Key")
        auth = handler.headers.get("Authorization")
        with self._lock:
            self.calls.append(Call(method, path, params, key, auth))
            status, body, replayed = self._dispatch(method, path, params, key, auth)
            lose = self._lose_responses.get(path, 0)
            if lose and method == "POST":
                self._lose_responses[path] = lose - 1
                status, body = _error(500, "api_error", "Something went wrong on the peer.")
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
        if status >= 500:
            handler.send_header("Stripe-Should-Retry", "false")
        if replayed:
            handler.send_header("Idempotent-Replayed", "true")
        if key:
            handler.send_header("Idempotency-Key", key)
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(
        self, method: str, path: str, params: dict[str, Any], key: str | None, auth: str | None
    ) -> tuple[int, Any, bool]:
        if auth != f"Bearer {self.api_key}":
            status, body = _error(401, "invalid_request_error", "Invalid API Key provided.")
            return status, body, False
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        if method == "POST" and key:
            seen = self._idempotent.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    status, body = _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                    return status, body, False
                return seen[1], seen[2], True
        status, body = self._route(method, path, params)
        if method == "POST" and key and status < 500:
            self._idempotent[key] = (fingerprint, status, body)
        return status, body, False

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "payment_intents"]:
            return self._create_intent(params)
        if method == "GET" and parts[:2] == ["v1", "payment_intents"] and len(parts) == 3:
            intent = self.intents.get(parts[2])
            if intent is None:
                return _error(
                    404, "invalid_request_error", "No such payment_intent", "resource_missing"
                )
            return 200, intent
        if method == "POST" and parts[:2] == ["v1", "payment_intents"] and parts[3:] == ["confirm"]:
            return self._confirm(parts[2])
        if method == "POST" and parts == ["v1", "refunds"]:
            return self._refund(params)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({method} {path}).")

    def _create_intent(self, params: dict[str, Any]) -> tuple[int, Any]:
        amount = params.get("amount")
        currency = params.get("currency", "")
        if amount is None or not amount.isdigit() or int(amount) < 1:
            return _error(
                400, "invalid_request_error", "Invalid amount.", "parameter_invalid_integer"
            )
        if len(currency) != 3 or currency != currency.lower():
            return _error(400, "invalid_request_error", "Invalid currency.", "parameter_invalid")
        intent_id = f"pi_{secrets.token_hex(12)}"
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(amount),
            "amount_received": 0,
            "currency": currency,
            "status": "requires_payment_method",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "metadata": params.get("metadata", {}),
            "automatic_payment_methods": {
                "enabled": params.get("automatic_payment_methods", {}).get("enabled") == "true"
            },
            "receipt_email": params.get("receipt_email"),
            "latest_charge": None,
            "last_payment_error": None,
            "livemode": False,
            "created": int(time.time()),
        }
        self.intents[intent_id] = intent
        return 200, intent

    def _confirm(self, intent_id: str) -> tuple[int, Any]:
        intent = self.intents.get(intent_id)
        if intent is None:
            return _error(
                404, "invalid_request_error", "No such payment_intent", "resource_missing"
            )
        if intent["status"] == "succeeded":
            return _error(
                400,
                "invalid_request_error",
                "Already succeeded.",
                "payment_intent_unexpected_state",
            )
        charge_id = f"ch_{secrets.token_hex(12)}"
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "refunded": False,
            "status": "succeeded",
        }
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge_id)
        return 200, intent

    def _refund(self, params: dict[str, Any]) -> tuple[int, Any]:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None:
            return _error(
                400, "invalid_request_error", "No such payment_intent", "resource_missing"
            )
        if intent["status"] != "succeeded":
            return _error(
                400,
                "invalid_request_error",
                "This PaymentIntent has no successful charge to refund.",
                "charge_not_refundable",
            )
        charge = self.charges[intent["latest_charge"]]
        left = charge["amount"] - charge["amount_refunded"]
        if left <= 0:
            return _error(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                "charge_already_refunded",
            )
        raw_amount = params.get("amount")
        if raw_amount is not None and not raw_amount.isdigit():
            return _error(
                400, "invalid_request_error", "Invalid amount.", "parameter_invalid_integer"
            )
        amount = left if raw_amount is None else int(raw_amount)
        if amount < 1 or amount > left:
            return _error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left}).",
                "amount_too_large",
            )
        refund_id = f"re_{secrets.token_hex(12)}"
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "currency": charge["currency"],
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "metadata": params.get("metadata", {}),
            "reason": params.get("reason"),
            "status": "succeeded",
            "created": int(time.time()),
        }
        self.refunds[refund_id] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return 200, refund


@contextmanager
def running_peer(api_key: str = "sk_test_cartwise_peer") -> Iterator[StripePeer]:
    """A started peer, stopped afterwards."""
    peer = StripePeer(api_key=api_key).start()
    try:
        yield peer
    finally:
        peer.stop()
