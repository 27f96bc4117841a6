"""The mail port: SMTP against a real aiosmtpd server, ``.eml`` files, adapter choice."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from cartwise.platform.mail import (
    FileMailer,
    MailError,
    SmtpMailer,
    build_message,
    get_mailer,
    mail_domain,
    message_id,
)
from cartwise.platform.settings import Settings
from tests.test_pipelines.outbox_peers import free_port, smtp_server


def _message(key: str = "outbox-1-customer-mail") -> email.message.EmailMessage:
    return build_message(
        sender="Cartwise <shop@cartwise.test>",
        to=["ann@example.com", "bob@example.com"],
        subject="Order o1 confirmed",
        text="Thank you.\n",
        html="<p>Thank you.</p>",
        msg_id=message_id(key, mail_domain("Cartwise <shop@cartwise.test>")),
    )


def test_message_id_is_stable_and_safe() -> None:
    assert (
        message_id("outbox-7-staff mail", "cartwise.test") == "<outbox-7-staff-mail@cartwise.test>"
    )
    assert message_id("k", "d") == message_id("k", "d")
    assert mail_domain("no-domain") == "localhost"


def test_smtp_mailer_delivers_to_every_recipient() -> None:
    with smtp_server() as sink:
        SmtpMailer(host=sink.host, port=sink.port, timeout=5).send(_message())
        sink.fail = True
        with pytest.raises(MailError, match="451"):
            SmtpMailer(host=sink.host, port=sink.port, timeout=5).send(_message("other"))
    ((rcpt, received),) = sink.messages
    assert rcpt == ["ann@example.com", "bob@example.com"]
    assert received["Subject"] == "Order o1 confirmed"
    assert received["Message-ID"] == "<outbox-1-customer-mail@cartwise.test>"
    assert received.is_multipart()


def test_smtp_mailer_unreachable_server_raises_mail_error() -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(MailError, match=r"SMTP 127\.0\.0\.1"):
        mailer.send(_message())


def test_file_mailer_writes_one_file_per_message_id(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "mail")
    mailer.send(_message())
    mailer.send(_message())  # a resend replaces, it does not add
    mailer.send(_message("outbox-2-customer-mail"))
    files = sorted(p.name for p in (tmp_path / "mail").iterdir())
    assert files == [
        "outbox-1-customer-mail@cartwise.test.eml",
        "outbox-2-customer-mail@cartwise.test.eml",
    ]
    parsed = email.message_from_bytes((tmp_path / "mail" / files[0]).read_bytes())
    assert parsed["To"] == "ann@example.com, bob@example.com"


def test_file_mailer_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(MailError, match="cannot write"):
        FileMailer(blocker / "mail").send(_message())


def test_settings_choose_the_adapter(tmp_path: Path) -> None:
    embedded = get_mailer(Settings(var_dir=tmp_path))
    assert isinstance(embedded, FileMailer)
    assert embedded.folder == tmp_path / "mail"
    smtp = get_mailer(
        Settings(
            mail_backend="smtp",
            smtp_host="mail.example",
            smtp_port=587,
            smtp_security="starttls",
            smtp_user="u",
            smtp_password="p",
        )
    )
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.security, smtp.password) == (
        "mail.example",
        587,
        "starttls",
        "p",
    )
