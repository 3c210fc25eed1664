"""One stream of an export's rows into one stored object, inside one REPEATABLE READ snapshot.

Rows stream out of Postgres with `COPY (SELECT …) TO STDOUT` (Parquet: the typed SELECT read by
ADBC), restricted to rows created no later than the export itself, in a total order (`id` breaks
ties), so a retry after a crash writes the same bytes. Two helper threads share the snapshot: one
records progress every second and stops the query when the export was cancelled, one counts the
rows for `rowsTotal`; both log with the export's ids (workers.logs.JobThread). A whole export is one stream (workers.batch_export); each part of a large
one is another (workers.export_parts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg import errors as pg_errors

import db
from schemas.settings import Settings
from workers.compression import Compression, FileSink
from workers.filters import CompiledQuery
from workers.formats import FileFormat, PumpResult, SourceError, StatementCancel, count_rows, one_more
from workers.logs import JobThread
from workers.tables import SCORE_NAMES_SQL, ScoreName

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0


class Cancelled(Exception):
    """The export was cancelled while its rows streamed: nothing of the stream is kept."""


def export_params(export: dict[str, Any], compiled: CompiledQuery) -> dict[str, Any]:
    """The values the export's statements bind: the query's own, its project and its cut-off."""
    return {**compiled.params, "project_id": export["project_id"], "cutoff": export["created_at"]}


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
    """Streams the rows into the object `key`, inside one REPEATABLE READ snapshot; raises Cancelled
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
                        raise Cancelled()
            except (pg_errors.QueryCanceled, SourceError):
                if watchdog.cancelled:
                    raise Cancelled() from None
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


class _Watchdog(JobThread):
    """Every second: records progress, and stops the export's query once the export is cancelled."""

    def __init__(
        self,
        database_url: str,
        export_id: str,
        counter: _RowCounter,
        cancel_query: StatementCancel,
        record: Callable[[db.Connection, int, int | None], bool],
    ):
        super().__init__(name=f"export-progress-{export_id}")
        self.database_url, self.export_id, self.counter, self.record = database_url, export_id, counter, record
        # Stops the statement that reads the rows, whichever it turns out to be.
        self.cancel_query = cancel_query
        self.rows = 0
        self.cancelled = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def work(self) -> None:
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


class _RowCounter(JobThread):
    """Counts the export's rows inside the same snapshot, beside the stream, for `rowsTotal`."""

    def __init__(self, database_url: str, snapshot: str, statement: Any, params: dict[str, Any], enabled: bool):
        super().__init__(name="export-row-count")
        self.database_url, self.snapshot, self.statement, self.params = database_url, snapshot, statement, params
        self.enabled = enabled
        self.total: int | None = None
        self._conn: db.Connection | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def work(self) -> None:
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
