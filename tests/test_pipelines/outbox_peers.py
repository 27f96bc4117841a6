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
from typing import Any


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
