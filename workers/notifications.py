"""Emails to the user who requested an export: its link when it completes, the reason when it fails.

With SMTP_URL (`smtp://user:pass@host:port`, `smtps://…` for TLS from the start, `?starttls=true`
to upgrade) the message is sent; without it the message is written as an .eml file into the
outbox folder (OUTBOX_DIR) and logged, so a local run shows what would have been sent.
A notification never fails an export: problems are logged.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from schemas.settings import Settings

log = logging.getLogger(__name__)


def completed_message(
    *, to: str, export: dict[str, Any], url: str, rows: int, truncated_at: int | None, settings: Settings
) -> EmailMessage:
    expires = _when(export["expires_at"])
    lines = [
        f'Your export "{export["name"]}" is ready.',
        "",
        f"Rows: {rows:,} ({file_kind(export)})",
    ]
    if export.get("file_bytes") is not None:
        lines.append(f"File: {human_bytes(export['file_bytes'])}, SHA-256 {export['sha256']}")
    if truncated_at is not None:
        lines += [
            "",
            f"The table had more rows than the export limit of {truncated_at:,}: this file holds the first {truncated_at:,}."
            " Narrow the filters (for example the time range) and export again for the rest.",
        ]
    lines += ["", f"Download (link valid until {expires}):", url, ""]
    return _message(settings, to, f"Export ready: {export['name']}", "\n".join(lines))


def file_kind(export: dict[str, Any]) -> str:
    """ "CSV", or "CSV, gzip" for a compressed file."""
    compression = export.get("compression") or "none"
    return export["format"] if compression == "none" else f"{export['format']}, {compression}"


def human_bytes(size: int) -> str:
    """ "1,234 bytes" below a KiB, else "12.3 MiB (12,901,222 bytes)": readable and still exact."""
    if size < 1024:
        return f"{size:,} bytes"
    value = size / 1024
    units = ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]} ({size:,} bytes)"


def failed_message(*, to: str, export: dict[str, Any], reason: str, settings: Settings) -> EmailMessage:
    body = "\n".join(
        [
            f'Your export "{export["name"]}" failed.',
            "",
            "What went wrong:",
            reason,
            "",
            "You can start the export again.",
        ]
    )
    return _message(settings, to, f"Export failed: {export['name']}", body)


def scheduled_failed_message(
    *, to: str, schedule: dict[str, Any], window: str, reason: str, settings: Settings
) -> EmailMessage:
    body = "\n".join(
        [
            f'The scheduled export "{schedule["name"]}" could not export the window {window}, after every retry.',
            "",
            "What went wrong:",
            reason,
            "",
            "The window is tried again at the next scheduled run; later windows wait for it, so nothing is skipped.",
        ]
    )
    return _message(settings, to, f"Scheduled export failing: {schedule['name']}", body)


def scheduled_disabled_message(*, to: str, schedule: dict[str, Any], reason: str, settings: Settings) -> EmailMessage:
    body = "\n".join(
        [
            f'The scheduled export "{schedule["name"]}" has been disabled: its destination refused its credentials.',
            "",
            "What the destination said:",
            reason,
            "",
            "Fix the destination's credentials on the exports page and enable the scheduled export again;"
            " it resumes where it stopped.",
        ]
    )
    return _message(settings, to, f"Scheduled export disabled: {schedule['name']}", body)


def send(message: EmailMessage, settings: Settings) -> None:
    """Sends over SMTP_URL, or writes into the outbox when SMTP is not configured; never raises."""
    try:
        if settings.SMTP_URL:
            _send_smtp(message, settings.SMTP_URL)
            log.info("emailed %s: %s", message["To"], message["Subject"])
        else:
            settings.OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
            path = settings.OUTBOX_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
            path.write_bytes(bytes(message))
            log.info("SMTP_URL is not set: wrote the email to %s instead of sending it", path)
    except Exception:
        log.exception("could not send the export email to %s", message["To"])


def _message(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.EMAIL_FROM
    message["To"] = to
    # Export names are user text: a newline must not become a header of its own.
    message["Subject"] = " ".join(subject.split())
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="batch-export")
    message.set_content(body)
    return message


def _send_smtp(message: EmailMessage, smtp_url: str) -> None:
    url = urlparse(smtp_url)
    if url.scheme not in ("smtp", "smtps"):
        raise ValueError("SMTP_URL must be smtp://user:pass@host:port or smtps://…")
    query = parse_qs(url.query)
    host = url.hostname or "localhost"
    if url.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, url.port or 465, timeout=30, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(host, url.port or 25, timeout=30)
    with client:
        if url.scheme == "smtp" and query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"):
            client.starttls(context=ssl.create_default_context())
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        client.send_message(message)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "the export expires"
