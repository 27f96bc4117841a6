"""The mail port: an SMTP adapter for production and an ``.eml`` file adapter (embedded).

Every message carries a deterministic ``Message-ID`` (see :func:`message_id`), so a message
sent twice after a crash is recognisably the same message and receivers can drop the copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Protocol

from cartwise.platform.settings import Settings, get_settings


class MailError(Exception):
    """A message could not be handed over (connection, refusal, timeout, disk)."""


class Mailer(Protocol):
    """Hands a message to the outside world; raises :class:`MailError` when it cannot."""

    def send(self, message: EmailMessage) -> None:
        """Send one message (all of its To/Cc recipients)."""
        ...


def mail_domain(sender: str) -> str:
    """The domain of a From address (``localhost`` if it has none)."""
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    return domain if at and domain else "localhost"


def message_id(key: str, domain: str) -> str:
    """A stable ``Message-ID`` for a key (e.g. ``outbox-42-customer``): same key, same id."""
    safe = re.sub(r"[^A-Za-z0-9.\-_]", "-", key)
    return f"<{safe}@{domain}>"


def build_message(
    *,
    sender: str,
    to: list[str],
    subject: str,
    text: str,
    msg_id: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A plain-text (optionally also HTML) message with the given ``Message-ID``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = msg_id
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


class SmtpMailer:
    """Sends through an SMTP server (plain, STARTTLS or implicit TLS), one connection a send."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str = "none",
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.user, self.password, self.timeout = user, password, timeout

    def send(self, message: EmailMessage) -> None:
        """Deliver to the server; any refusal or network failure raises :class:`MailError`."""
        try:
            client: smtplib.SMTP
            if self.security == "ssl":
                client = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if self.user:
                    client.login(self.user, self.password or "")
                refused = client.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"SMTP {self.host}:{self.port}: {exc}") from exc
        if refused:
            raise MailError(f"SMTP {self.host}:{self.port} refused {sorted(refused)}")


class FileMailer:
    """Writes each message as ``<folder>/<Message-ID>.eml`` (atomically; a resend overwrites)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, message: EmailMessage) -> Path:
        """Where a message lands: named after its Message-ID (or a hash of it)."""
        mid = str(message.get("Message-ID", "")).strip("<> ")
        name = re.sub(r"[^A-Za-z0-9.\-_@]", "-", mid)
        if not name:
            name = hashlib.sha256(message.as_bytes()).hexdigest()[:24]
        return self.folder / f"{name}.eml"

    def send(self, message: EmailMessage) -> None:
        """Write the message; a half-written file is never visible under its final name."""
        target = self.path_for(message)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(message.as_bytes())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise MailError(f"cannot write {target}: {exc}") from exc


def mail_folder(settings: Settings) -> Path:
    """The folder the file mailer writes to."""
    return settings.var_dir / "mail"


def get_mailer(settings: Settings | None = None) -> Mailer:
    """The mailer the settings choose (``file`` by default, ``smtp`` in production)."""
    settings = settings or get_settings()
    if settings.mail_backend == "smtp":
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            user=settings.smtp_user,
            password=password,
            timeout=settings.smtp_timeout_seconds,
        )
    return FileMailer(mail_folder(settings))
