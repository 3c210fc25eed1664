"""The RQ job: one export, from QUEUED to a complete file in storage and an email with its link.

`run_batch_export(batch_export_id)` is called by RQ with the id only. Rows stream out of
Postgres with `COPY (SELECT …) TO STDOUT` inside one REPEATABLE READ snapshot, restricted to
rows created no later than the export itself, in a total order (`id` breaks ties); so a retry
after a crash writes the same bytes. Two helper threads share the export's snapshot: one
records progress every second and stops the query when the export was cancelled, one counts
the rows for `rowsTotal`.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import rq
from psycopg import IsolationLevel, sql
from psycopg import errors as pg_errors

import db
from db import batch_exports
from schemas import FINAL_STATUSES, BatchExportQuery
from schemas.settings import Settings, get_settings
from workers import export_parts, notifications
from workers.compression import COMPRESSIONS, Compression, FileSink
from workers.filters import CompiledQuery, InvalidExportQuery, compile_query
from workers.formats import FORMATS, FileFormat, PumpResult, SourceError, StatementCancel, count_rows, one_more
from workers.storage import object_key, open_storage
from workers.tables import SCORE_NAMES_SQL, ScoreName

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0


class ExportFailed(Exception):
    """An attempt failed; the message is the one the user sees in `log` (RQ records it too)."""


class _Cancelled(Exception):
    pass


def run_batch_export(batch_export_id: str) -> None:
    settings = get_settings()
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        one_attempt_at_a_time(conn, batch_export_id)
        export = batch_exports.load(conn, batch_export_id)
        if export is None or export["status"] in FINAL_STATUSES:
            log.info("export %s is %s: nothing to do", batch_export_id, export["status"] if export else "gone")
            return
        export = batch_exports.mark_processing(conn, batch_export_id)
        if export is None:
            log.info("export %s was cancelled before it started", batch_export_id)
            return
        # One line per attempt at its start and its end (or none for an attempt that was killed), so
        # operators can count and time the attempts at an export across workers.
        log.info("export %s: attempt started in process %d", batch_export_id, os.getpid())
        try:
            _run(settings, conn, export)
        except InvalidExportQuery as exc:
            # Retrying cannot fix a query; the API validates at create time, so this is a stored old query.
            fail(settings, conn, export, f"The export's query cannot run: {exc.message}")
        except ExportFailed:
            raise
        except Exception as exc:
            attempt_failed(settings, conn, export, exc)
        finally:
            log.info("export %s: attempt ended in process %d", batch_export_id, os.getpid())


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


def _run(settings: Settings, conn: db.Connection, export: dict[str, Any]) -> None:
    export_id = export["id"]
    if export["plan"] is not None:
        # A retry of an export that was already planned: the parts that are DONE stay done.
        export_parts.resume(settings, conn, export)
        return
    compiled = compile_query(BatchExportQuery.model_validate(export["query"]), export["columns"])
    fmt = FORMATS[export["format"]]
    # Parquet compresses column by column (the export's `compression` is its codec): the file itself is not.
    compression = COMPRESSIONS[export["compression"] if fmt.text else "none"]
    storage = open_storage(settings)
    key = final_key(export)
    limit = settings.BATCH_EXPORT_ROW_LIMIT
    started = time.monotonic()

    storage.discard_partials(key)  # what a crashed attempt may have left
    stream = Stream(
        compiled=compiled,
        params=export_params(export, compiled),
        limit=limit,
        framed=True,
        scores=None,
        record_progress=lambda c, rows, total: batch_exports.record_progress(c, export_id, rows, total),
        count=True,
    )
    try:
        result = write_stream(settings, export, stream, fmt, compression, storage, key, plan=export_parts.plan_if_large)
    except _Cancelled:
        log.info("export %s was cancelled; its partial file is deleted", export_id)
        return
    except export_parts.Planned as planned:
        log.info("export %s is written as %d parts of up to %d rows", export_id, planned.parts, planned.part_rows)
        return
    truncated_at = limit if result.truncated else None
    complete(settings, conn, export, storage, key, result, time.monotonic() - started, truncated_at=truncated_at)


def final_key(export: dict[str, Any]) -> str:
    """Where the export's file is stored (the extension says its format and compression)."""
    fmt = FORMATS[export["format"]]
    compression = COMPRESSIONS[export["compression"] if fmt.text else "none"]
    return object_key(export["project_id"], export["id"], export["name"], compression.extension(fmt.extension))


def export_params(export: dict[str, Any], compiled: CompiledQuery) -> dict[str, Any]:
    """The values the export's statements bind: the query's own, its project and its cut-off."""
    return {**compiled.params, "project_id": export["project_id"], "cutoff": export["created_at"]}


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


@dataclass(frozen=True)
class Stream:
    """One stream of rows into one object: a whole export, or one part of a large one."""

    compiled: CompiledQuery
    params: dict[str, Any]
    limit: int | None
    # The format's header and footer are written (a whole file); a part leaves them to the assembly.
    framed: bool
    # The score columns, fixed by the export's plan; None: read inside the stream's snapshot.
    scores: list[ScoreName] | None
    # Writes the rows so far (and the total, once counted); returns False once the export is no longer running.
    record_progress: Callable[[db.Connection, int, int | None], bool]
    # Whether a helper counts the stream's rows for `rowsTotal` (a part's rows are planned).
    count: bool


# Called inside a whole export's snapshot before any row is written: raises export_parts.Planned when
# the export is large enough to be written in parts instead.
Planner = Callable[[Settings, dict[str, Any], db.Connection, CompiledQuery, dict[str, Any]], None]


def write_stream(
    settings: Settings,
    export: dict[str, Any],
    stream: Stream,
    fmt: FileFormat,
    compression: Compression,
    storage: Any,
    key: str,
    *,
    plan: Planner | None = None,
) -> ExportedFile:
    """Streams the rows into the object `key`, inside one REPEATABLE READ snapshot; raises _Cancelled
    (having written nothing) when the export is cancelled meanwhile."""
    params = stream.params
    limit = stream.limit
    with db.connect(settings.DATABASE_URL) as data:
        data.isolation_level = IsolationLevel.REPEATABLE_READ
        data.read_only = True
        data.execute("SET client_encoding TO 'UTF8'")
        data.commit()
        with data.transaction():
            snapshot = db.one(data.execute("SELECT pg_export_snapshot() AS id").fetchone())["id"]
            if plan is not None:
                plan(settings, export, data, stream.compiled, params)
            # Inside the snapshot: the score columns are the names the rows below can carry.
            compiled = with_score_columns(data, stream.compiled, params, stream.scores)
            counter = _RowCounter(settings.DATABASE_URL, snapshot, count_rows(compiled, limit), params, stream.count)
            cancel = StatementCancel()
            watchdog = _Watchdog(settings.DATABASE_URL, export["id"], counter, cancel, stream.record_progress)
            counter.start()
            watchdog.start()
            try:
                with (
                    storage.writer(key, compression.content_type or fmt.content_type) as out,
                    FileSink(out.write, compression) as sink,
                ):
                    if fmt.text:
                        cancel.attach(data.cancel_safe)
                        result = _write_text(data, fmt, compiled, params, sink.write, limit, watchdog, stream.framed)
                    else:
                        result = _write_parquet(
                            settings, data, snapshot, compiled, params, export, sink, limit, watchdog
                        )
                    if watchdog.cancelled:
                        raise _Cancelled()
            except (pg_errors.QueryCanceled, SourceError):
                if watchdog.cancelled:
                    raise _Cancelled() from None
                raise
            finally:
                watchdog.stop()
                counter.stop()
    return ExportedFile(result.rows, result.truncated, sink.bytes, sink.sha256)


def _write_text(
    data: db.Connection,
    fmt: FileFormat,
    compiled: CompiledQuery,
    params: dict[str, Any],
    write: Any,
    limit: int | None,
    watchdog: _Watchdog,
    framed: bool,
) -> PumpResult:
    """CSV, JSON or JSONL: COPY's rows, between the format's header and footer when `framed`."""
    if framed:
        write(fmt.header(compiled.table))
    with data.cursor() as cur, cur.copy(fmt.copy_statement(compiled, one_more(limit)), params) as copy:
        result = fmt.pump(copy, write, limit, watchdog)
    if framed and not watchdog.cancelled:
        write(fmt.footer(result.rows))
    return result


def _write_parquet(
    settings: Settings,
    data: db.Connection,
    snapshot: str,
    compiled: CompiledQuery,
    params: dict[str, Any],
    export: dict[str, Any],
    sink: FileSink,
    limit: int | None,
    watchdog: _Watchdog,
) -> PumpResult:
    """Parquet: the typed SELECT read by ADBC on its own connection, inside the export's snapshot."""
    from workers import parquet  # pyarrow and the driver: loaded by Parquet exports only

    # psycopg binds the values client-side, as it does for COPY: one SQL text for the driver.
    statement = psycopg.ClientCursor(data).mogrify(parquet.select_statement(compiled, one_more(limit)), params)
    return parquet.write(
        settings.DATABASE_URL,
        snapshot,
        statement,
        compiled.table,
        sink.write,
        codec=export["compression"],
        limit=limit,
        watch=watchdog,
    )


@dataclass(frozen=True)
class ExportedFile:
    """What one export wrote: its rows (cut at the limit or not) and the stored object's size and checksum."""

    rows: int
    truncated: bool
    file_bytes: int
    sha256: str


def with_score_columns(
    conn: db.Connection, compiled: CompiledQuery, params: dict[str, Any], scores: list[ScoreName] | None = None
) -> CompiledQuery:
    """The query with the project's score names as columns, for the tables whose rows carry scores.

    `scores` None: the names are read on `conn` (inside the export's snapshot)."""
    if compiled.table.score_alias is None:
        return compiled
    if scores is None:
        scores = score_names(conn, params)
    return compiled.with_score_columns(scores, lambda name: sql.Literal(name).as_string(conn))


def score_names(conn: db.Connection, params: dict[str, Any]) -> list[ScoreName]:
    return [ScoreName(r["name"], r["numeric"]) for r in conn.execute(SCORE_NAMES_SQL, params)]


class _Watchdog(threading.Thread):
    """Every second: records progress, and stops the export's query once the export is cancelled."""

    def __init__(
        self,
        database_url: str,
        export_id: str,
        counter: _RowCounter,
        cancel_query: StatementCancel,
        record: Callable[[db.Connection, int, int | None], bool],
    ):
        super().__init__(name=f"export-progress-{export_id}", daemon=True)
        self.database_url, self.export_id, self.counter, self.record = database_url, export_id, counter, record
        # Stops the statement that reads the rows, whichever it turns out to be.
        self.cancel_query = cancel_query
        self.rows = 0
        self.cancelled = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with db.connect(self.database_url, autocommit=True) as conn:
                while not self._stopping.wait(PROGRESS_INTERVAL_SECONDS):
                    try:
                        active = self.record(conn, self.rows, self.counter.total)
                    except psycopg.Error:
                        log.warning("could not record progress of export %s", self.export_id, exc_info=True)
                        continue
                    if not active:
                        self._cancel()
                        return
        except psycopg.Error:
            # Without a database the export's own query fails too, and reports it.
            log.warning("progress reporting for export %s stopped", self.export_id, exc_info=True)

    def _cancel(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return  # the stream is over: a cancel now would hit the next statement instead
            self.cancelled = True
            self.counter.stop()
            self.cancel_query()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        self.join()


class _RowCounter(threading.Thread):
    """Counts the export's rows inside the same snapshot, beside the stream, for `rowsTotal`."""

    def __init__(self, database_url: str, snapshot: str, statement: Any, params: dict[str, Any], enabled: bool):
        super().__init__(name="export-row-count", daemon=True)
        self.database_url, self.snapshot, self.statement, self.params = database_url, snapshot, statement, params
        self.enabled = enabled
        self.total: int | None = None
        self._conn: db.Connection | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        if not self.enabled:
            return
        try:
            with db.connect(self.database_url) as conn:
                with self._lock:
                    if self._done.is_set():
                        return
                    self._conn = conn
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    conn.execute(
                        psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(self.snapshot))
                    )
                    self.total = db.one(conn.execute(self.statement, self.params).fetchone())["n"]
        except psycopg.Error as exc:
            if not self._done.is_set():
                log.info("row count for progress skipped: %s", exc)
        finally:
            with self._lock:
                self._conn = None

    def stop(self) -> None:
        with self._lock:
            self._done.set()
            if self._conn is not None:
                try:
                    self._conn.cancel_safe(timeout=5)
                except Exception:
                    pass
        self.join(timeout=10)


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
