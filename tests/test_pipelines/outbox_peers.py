"""Real peers for outbox tests: an aiosmtpd SMTP server and an HTTP webhook receiver."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpSink:
    """What the SMTP server received; ``fail`` makes it answer 451 to every message."""

    host: str
    port: int
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    fail: bool = False

    def ids(self) -> list[str]:
        """The Message-IDs received, in order (duplicates kept)."""
        return [str(m["Message-ID"]) for _, m in self.messages]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: keep the message, or refuse it for now."""
        if self.fail:
            return "451 4.3.0 mailbox temporarily unavailable"
        content = envelope.content
        raw = content if isinstance(content, bytes) else content.encode()
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(raw)))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free local port."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class HookSink:
    """What the webhook receiver got; ``status`` is what it answers."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204


@contextmanager
def webhook_server() -> Iterator[HookSink]:
    """A real HTTP server on a free local port that records each POST."""
    sink = HookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if sink.status < 300:
                sink.requests.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(sink.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/cartwise"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def shipped_order_shop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order_id: str, email_to: str
) -> Engine:
    """A SQLite shop holding one ``order.shipped`` outbox event, set as the process's
    ``CARTWISE_*`` environment (file mail under ``tmp_path/var/mail``) for the flow processes
    the test starts; returns its engine (the caller disposes of it)."""
    from sqlmodel import Session

    from cartwise.commerce.outbox.models import emit
    from cartwise.commerce.tables import metadata
    from cartwise.platform.db import make_engine

    db = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = make_engine(db)
    metadata.create_all(engine)
    with Session(engine) as s:
        emit(s, "order", order_id, "order.shipped", {"order_id": order_id, "email": email_to})
        s.commit()
    env = {
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "CARTWISE_DATABASE_URL": db,
        "CARTWISE_VAR_DIR": str(tmp_path / "var"),
        "CARTWISE_REDIS_URL": "",
        "CARTWISE_MAIL_BACKEND": "file",
        "CARTWISE_MAIL_FROM": "shop@cartwise.test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return engine
