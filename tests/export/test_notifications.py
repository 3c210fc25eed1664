"""Emails: sent over SMTP to a real server on loopback when SMTP_URL is set, written to the outbox when not."""

from __future__ import annotations

import email
from email import policy

import pytest

from db import batch_exports
from devstack.servers import free_port
from schemas.settings import get_settings
from workers.batch_export import ExportFailed, run_batch_export


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, message))
        return "250 OK"


@pytest.fixture
def smtp_inbox(export_settings, monkeypatch):
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
    get_settings.cache_clear()
    yield inbox
    controller.stop()


def test_completed_export_is_emailed_with_its_link_over_smtp(conn, smtp_inbox, seeded, tmp_path):
    export_id = seeded.new_export(conn, {"tableName": "sessions"}, "JSON", name="Sessions\nBcc: evil@example.com")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    [(sender, recipients, message)] = smtp_inbox.messages
    assert sender == "exports@example.com" and recipients == [seeded.user_email]
    assert message["Subject"] == "Export ready: Sessions Bcc: evil@example.com"
    assert message["Bcc"] is None
    body = message.get_content()
    assert f"Rows: {row['rows_exported']} (JSON)" in body
    assert "http://exports.test/exports/download?key=" in body
    assert row["expires_at"].strftime("%Y-%m-%d %H:%M UTC") in body
    assert not (tmp_path / ".data" / "outbox").exists()


def test_completed_email_gives_the_compression_size_and_checksum_of_the_file(conn, smtp_inbox, seeded):
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "CSV", compression="gzip")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    [(_, _, message)] = smtp_inbox.messages
    body = message.get_content()
    assert f"Rows: {row['rows_exported']} (CSV, gzip)" in body
    assert f"({row['file_bytes']:,} bytes), SHA-256 {row['sha256']}" in body
    assert len(row["sha256"]) == 64


def test_failed_export_email_says_what_went_wrong(conn, smtp_inbox, seeded, tmp_path, monkeypatch):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EXPORT_STORAGE_URL", blocker.as_uri())
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "CSV", name="broken")
    with pytest.raises(ExportFailed):  # a file where the export folder should be
        run_batch_export(export_id)
    [(_, _, message)] = smtp_inbox.messages
    assert message["Subject"] == "Export failed: broken"
    assert batch_exports.load(conn, export_id)["log"] in message.get_content()


def test_unreachable_smtp_server_does_not_fail_the_export(conn, export_settings, seeded, monkeypatch):
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, {"tableName": "audit_logs"}, "CSV")
    run_batch_export(export_id)
    assert batch_exports.load(conn, export_id)["status"] == "COMPLETED"
