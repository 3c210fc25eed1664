"""How an attempt at an export's work ends: one attempt at a time, failures in words a user can act on, completion.

Every job of an export (the export's own, each part's, the assembly's) holds its work's advisory
lock for the whole attempt, records a failed attempt as a retry note or FAILED (with an email),
and a completed file as COMPLETED with its download link emailed.
"""

from __future__ import annotations

import errno
import logging
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import rq
from psycopg import errors as pg_errors

import db
from db import batch_exports
from schemas.settings import Settings
from workers import notifications
from workers.compression import COMPRESSIONS
from workers.formats import FORMATS, SourceError
from workers.storage import object_key
from workers.stream import ExportedFile

log = logging.getLogger(__name__)


class ExportFailed(Exception):
    """An attempt failed; the message is the one the user sees in `log` (RQ records it too)."""


def attempt_failed(
    settings: Settings, conn: db.Connection, export: dict[str, Any], exc: Exception, where: str = ""
) -> None:
    """Records a failed attempt (a retry note while RQ retries, FAILED and an email after the last) and
    raises ExportFailed with the user's message. `where` names the part that failed, if any."""
    message = where + describe_failure(exc, settings)
    job = rq.get_current_job()
    if job is not None and job.retries_left:
        log.warning("export %s attempt failed, RQ will retry: %s", export["id"], message, exc_info=True)
        batch_exports.note_retry(conn, export["id"], f"{message} Retrying automatically.")
    else:
        log.error("export %s failed: %s", export["id"], message, exc_info=True)
        fail(settings, conn, export, message)
    raise ExportFailed(message) from exc


# Advisory locks on (this, hashtext(export id)): a key space of the job's own.
_ATTEMPT_LOCK_CLASS = 0x62786174  # "bxat", a positive int4


def one_attempt_at_a_time(conn: db.Connection, work: str) -> None:
    """Holds the lock of `work` (an export's id, or a part's `{id}/part/{n}`) for the whole attempt,
    first waiting for any earlier attempt to let go.

    RQ retries a job whose worker stopped sending heartbeats, but a worker that is only frozen or cut
    off from Redis may still have a work horse exporting: two attempts at once would take the export
    from each other and delete each other's files. The lock belongs to this connection's session, so
    Postgres releases it as soon as the attempt's process dies, and (with these keepalives) within
    about half a minute when its machine vanishes.
    """
    key = (_ATTEMPT_LOCK_CLASS, work)
    locked = db.one(
        conn.execute(
            "SELECT set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false),"
            " set_config('tcp_keepalives_count', '3', false), pg_try_advisory_lock(%s::int, hashtext(%s)) AS ok",
            key,
        ).fetchone()
    )["ok"]
    if not locked:
        log.warning("export %s: an earlier attempt is still running; waiting for it to end", work)
        conn.execute("SELECT pg_advisory_lock(%s::int, hashtext(%s))", key)


def final_key(export: dict[str, Any]) -> str:
    """Where the export's file is stored (the extension says its format and compression)."""
    fmt = FORMATS[export["format"]]
    compression = COMPRESSIONS[export["compression"] if fmt.text else "none"]
    return object_key(export["project_id"], export["id"], export["name"], compression.extension(fmt.extension))


def complete(
    settings: Settings,
    conn: db.Connection,
    export: dict[str, Any],
    storage: Any,
    key: str,
    result: ExportedFile,
    elapsed: float,
    *,
    truncated_at: int | None,
    parts: int = 1,
) -> None:
    """The stored file becomes the export's download (unless a cancel came first), and its creator is told.

    `truncated_at`: the row limit the file was cut at, if it was."""
    export_id = export["id"]
    message = f"Exported {result.rows:,} rows in {elapsed:.1f} s" + (f", in {parts} parts." if parts > 1 else ".")
    if truncated_at is not None:
        message += (
            f" The table has more matching rows than the export limit of {truncated_at:,} (BATCH_EXPORT_ROW_LIMIT):"
            f" the file holds the first {truncated_at:,}. Narrow the filters to export the rest."
        )
        log.warning("export %s cut at the row limit of %d rows", export_id, truncated_at)
    completed = batch_exports.mark_completed(
        conn,
        export_id,
        object_key=key,
        rows_exported=result.rows,
        file_bytes=result.file_bytes,
        sha256=result.sha256,
        expires_hours=settings.BATCH_EXPORT_DOWNLOAD_LINK_EXPIRATION_HOURS,
        log=message,
    )
    if completed is None:
        # Cancelled after the last row: a cancelled export keeps no file.
        storage.delete(key)
        log.info("export %s was cancelled as it finished; its file is deleted", export_id)
        return
    log.info("export %s completed: %s", export_id, message)
    _notify_completed(settings, conn, completed, storage, key, result, truncated_at)


# --- failures and notifications --------------------------------------------------------------------


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """A message a user (or their operator) can act on, naming the cause; never a bare 'internal error'."""
    from rq.timeouts import JobTimeoutException

    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
    if isinstance(exc, JobTimeoutException):
        return (
            f"The export did not finish within the time limit of {settings.BATCH_EXPORT_JOB_TIMEOUT_SECONDS:,} s."
            " Narrow the filters (for example the time range) and export again."
        )
    if isinstance(exc, pg_errors.QueryCanceled):
        return "The database stopped the export's query because it ran too long. Narrow the filters and export again."
    if isinstance(exc, (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)):
        return f"The database restarted while the export ran ({detail})."
    if isinstance(exc, pg_errors.TransactionRollback):
        return f"The database broke off the export's transaction ({detail})."
    if isinstance(exc, psycopg.OperationalError):
        return f"The connection to the database was lost while the export ran ({detail})."
    if isinstance(exc, SourceError):
        # Postgres's own words from the Parquet driver: a lost connection, a restart, a value out of range.
        return f"The database stopped sending the export's rows ({detail})."
    if isinstance(exc, (psycopg.DataError, psycopg.ProgrammingError)):
        return f"The database could not run the export's query ({detail}). Check the export's filters."
    if isinstance(exc, MemoryError):
        return "The worker ran out of memory while exporting."
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"The export storage is full ({settings.EXPORT_STORAGE_URL}); an operator must free space."
    if isinstance(exc, OSError) and exc.errno in _UNWRITABLE and settings.EXPORT_STORAGE_URL.startswith("file:"):
        folder = unquote(urlparse(settings.EXPORT_STORAGE_URL).path)
        return (
            f"Writing the export file to storage failed ({detail}): the export folder {folder} is missing, is not"
            " a folder, or may not be written. An operator must fix it, or point EXPORT_STORAGE_URL elsewhere."
        )
    if _is_s3_unreachable(exc):
        endpoint = settings.S3_ENDPOINT_URL or "AWS"
        return (
            f"The S3 storage could not be reached at {endpoint} ({detail}). Check that it is up and that"
            " S3_ENDPOINT_URL points at it."
        )
    if type(exc).__module__.startswith(("botocore", "boto3")):
        return f"The S3 storage refused the export file ({detail})."
    if isinstance(exc, OSError):
        return f"Writing the export file to storage failed ({detail})."
    return f"The export failed: {type(exc).__name__}: {detail}"


# The folder is missing, is not a folder, or may not be written (EPERM/EACCES hit root only on read-only mounts).
_UNWRITABLE = (errno.ENOTDIR, errno.ENOENT, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS)


def _is_s3_unreachable(exc: BaseException) -> bool:
    """No answer from S3 at all (refused, cut off, timed out), as opposed to S3 answering with an error."""
    if not type(exc).__module__.startswith("botocore"):
        return False
    from botocore.exceptions import ConnectionError, HTTPClientError

    return isinstance(exc, (ConnectionError, HTTPClientError))


def fail(settings: Settings, conn: db.Connection, export: dict[str, Any], message: str) -> None:
    if not batch_exports.mark_failed(conn, export["id"], message):
        return  # cancelled meanwhile: no email about a failure the user no longer waits for
    user = batch_exports.creator(conn, export["id"])
    if user and user["email"]:
        notifications.send(
            notifications.failed_message(to=user["email"], export=export, reason=message, settings=settings), settings
        )


def _notify_completed(
    settings: Settings,
    conn: db.Connection,
    export: dict[str, Any],
    storage: Any,
    key: str,
    result: ExportedFile,
    truncated_at: int | None,
) -> None:
    user = batch_exports.creator(conn, export["id"])
    if not user or not user["email"]:
        return
    try:
        url = storage.download_url(key, export["expires_at"], settings)
    except Exception:
        log.exception("could not sign the download link of export %s for its email", export["id"])
        return
    notifications.send(
        notifications.completed_message(
            to=user["email"], export=export, url=url, rows=result.rows, truncated_at=truncated_at, settings=settings
        ),
        settings,
    )
