"""The scheduled_exports and scheduled_export_runs tables: the API's configuration writes, and each run's transitions.

A run is one window of ingestion time, [window_start, window_end). Windows are planned one after
another (each starts where the previous ended), Postgres refuses two that overlap, and the unique
(schedule, window_start) makes a second scheduler's plan of the same window a no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from db.connection import Connection

# The columns the API returns; `run_started_at` is the start of the run in progress, if any.
_COLUMNS = """
    x.id, x.project_id, x.user_id, x.name, x.destination, x.secret, x.tables, x.format, x.compression,
    x.columns, x.schedule, x.start_mode, x.start_date, x.enabled, x.disabled_reason, x.next_sync_at,
    x.last_error, x.last_failure_email_at, x.created_at, x.updated_at,
    (SELECT max(r.window_end) FROM scheduled_export_runs r
      WHERE r.scheduled_export_id = x.id AND r.status = 'COMPLETED') AS last_sync_at,
    (SELECT r.started_at FROM scheduled_export_runs r
      WHERE r.scheduled_export_id = x.id AND r.status = 'PROCESSING' ORDER BY r.window_start DESC LIMIT 1)
      AS run_started_at
"""

INSERT_SQL = """
INSERT INTO scheduled_exports (id, project_id, user_id, name, destination, secret, tables, format, compression,
                               columns, schedule, start_mode, start_date, enabled, next_sync_at)
VALUES (%(id)s, %(project_id)s, %(user_id)s, %(name)s, %(destination)s, %(secret)s, %(tables)s, %(format)s,
        %(compression)s, %(columns)s, %(schedule)s, %(start_mode)s, %(start_date)s, %(enabled)s,
        CASE WHEN %(enabled)s THEN now() END)
"""
GET_SQL = f"SELECT {_COLUMNS} FROM scheduled_exports x WHERE x.id = %(id)s AND x.project_id = %(project_id)s"
GET_FOR_UPDATE_SQL = GET_SQL + " FOR UPDATE OF x"
LIST_SQL = f"SELECT {_COLUMNS} FROM scheduled_exports x WHERE x.project_id = %(project_id)s ORDER BY x.created_at, x.id"
# An update writes every field the API may change; enabling a schedule makes it due at once and
# clears why it was disabled, disabling it takes it off the scheduler's list.
UPDATE_SQL = """
UPDATE scheduled_exports SET
    name = %(name)s, destination = %(destination)s, secret = %(secret)s, tables = %(tables)s,
    format = %(format)s, compression = %(compression)s, columns = %(columns)s, schedule = %(schedule)s,
    start_mode = %(start_mode)s, start_date = %(start_date)s, enabled = %(enabled)s,
    disabled_reason = CASE WHEN %(enabled)s THEN NULL ELSE disabled_reason END,
    next_sync_at = CASE WHEN NOT %(enabled)s THEN NULL WHEN enabled THEN next_sync_at ELSE now() END,
    updated_at = now()
WHERE id = %(id)s AND project_id = %(project_id)s
"""
DELETE_SQL = "DELETE FROM scheduled_exports WHERE id = %(id)s AND project_id = %(project_id)s RETURNING id"
HAS_RUNS_SQL = "SELECT EXISTS (SELECT 1 FROM scheduled_export_runs WHERE scheduled_export_id = %(id)s) AS any"

_RUN_FIELDS = (
    "id, scheduled_export_id, window_start, window_end, status, tables_total, tables_done,"
    " rows_exported, files, attempts, error, started_at, finished_at, created_at"
)
_RUN_COLUMNS = ", ".join(f"r.{name.strip()}" for name in _RUN_FIELDS.split(","))
RUNS_PAGE_SQL = f"""
SELECT count(*) OVER () AS total_count, {_RUN_COLUMNS} FROM scheduled_export_runs r
WHERE r.scheduled_export_id = %(id)s ORDER BY r.window_start DESC LIMIT %(limit)s OFFSET %(offset)s
"""
RUNS_COUNT_SQL = "SELECT count(*) AS n FROM scheduled_export_runs WHERE scheduled_export_id = %(id)s"
GET_RUN_SQL = f"SELECT {_RUN_COLUMNS} FROM scheduled_export_runs r WHERE r.id = %(run_id)s"


def params(row: dict[str, Any]) -> dict[str, Any]:
    """The bound values of INSERT_SQL / UPDATE_SQL from a row-shaped dict."""
    return {
        **row,
        "destination": Jsonb(row["destination"]),
        "columns": None if row["columns"] is None else Jsonb(row["columns"]),
    }


# --- the scheduler's side ----------------------------------------------------------------------------


def due(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """The enabled schedules whose next run is due, each locked (SKIP LOCKED: two schedulers share the work)."""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM scheduled_exports x WHERE x.enabled AND x.next_sync_at <= %s"
        " ORDER BY x.next_sync_at FOR UPDATE OF x SKIP LOCKED",
        (now,),
    ).fetchall()


def load(conn: Connection, scheduled_export_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    sql = f"SELECT {_COLUMNS} FROM scheduled_exports x WHERE x.id = %s" + (" FOR UPDATE OF x" if lock else "")
    return conn.execute(sql, (scheduled_export_id,)).fetchone()


def latest_run(conn: Connection, scheduled_export_id: str) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM scheduled_export_runs r WHERE r.scheduled_export_id = %s"
        " ORDER BY r.window_start DESC LIMIT 1",
        (scheduled_export_id,),
    ).fetchone()


def load_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    return conn.execute(GET_RUN_SQL, {"run_id": run_id}).fetchone()


def unfinished_runs(conn: Connection, older_than_seconds: float) -> list[dict[str, Any]]:
    """Enabled schedules' runs QUEUED or PROCESSING that have not moved for a while (a running attempt writes every second)."""
    return conn.execute(
        f"SELECT {_RUN_COLUMNS}, x.project_id FROM scheduled_export_runs r"
        " JOIN scheduled_exports x ON x.id = r.scheduled_export_id"
        " WHERE x.enabled AND r.status IN ('QUEUED', 'PROCESSING')"
        " AND r.updated_at < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    ).fetchall()


def insert_run(
    conn: Connection, scheduled_export_id: str, window_start: datetime, window_end: datetime, tables_total: int
) -> dict[str, Any] | None:
    """The new run of this window, or None when a run of it exists already (another scheduler planned it)."""
    return conn.execute(
        "INSERT INTO scheduled_export_runs (scheduled_export_id, window_start, window_end, tables_total)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (scheduled_export_id, window_start) DO NOTHING"
        f" RETURNING {_RUN_FIELDS}",
        (scheduled_export_id, window_start, window_end, tables_total),
    ).fetchone()


def set_next_sync(conn: Connection, scheduled_export_id: str, at: datetime | None) -> None:
    conn.execute(
        "UPDATE scheduled_exports SET next_sync_at = %s, updated_at = now() WHERE id = %s AND enabled",
        (at, scheduled_export_id),
    )


def requeue_run(conn: Connection, run_id: str) -> None:
    """A FAILED run is tried again (its window is not skipped: the next window waits for it)."""
    conn.execute(
        "UPDATE scheduled_export_runs SET status = 'QUEUED', updated_at = now() WHERE id = %s AND status = 'FAILED'",
        (run_id,),
    )


# --- a run's transitions -----------------------------------------------------------------------------


def start_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """QUEUED (or PROCESSING, after a crash) → PROCESSING, one more attempt; None when it already ended."""
    return conn.execute(
        "UPDATE scheduled_export_runs SET status = 'PROCESSING', attempts = attempts + 1, error = NULL,"
        " started_at = coalesce(started_at, now()), updated_at = now()"
        " WHERE id = %s AND status IN ('QUEUED', 'PROCESSING', 'FAILED')"
        f" RETURNING {_RUN_FIELDS}",
        (run_id,),
    ).fetchone()


def record_file(conn: Connection, run_id: str, file: dict[str, Any]) -> None:
    """One table's file of the window is stored: progress for runs, and the manifest's list."""
    conn.execute(
        "UPDATE scheduled_export_runs SET files = files || %s, tables_done = tables_done + 1,"
        " rows_exported = rows_exported + %s, updated_at = now() WHERE id = %s",
        (Jsonb([file]), file["rows"], run_id),
    )


def reset_files(conn: Connection, run_id: str) -> None:
    """A new attempt rewrites the window's objects from the start (the same keys, so nothing is left twice)."""
    conn.execute(
        "UPDATE scheduled_export_runs SET files = '[]', tables_done = 0, rows_exported = 0 WHERE id = %s", (run_id,)
    )


def complete_run(conn: Connection, run_id: str) -> None:
    conn.execute(
        "UPDATE scheduled_export_runs SET status = 'COMPLETED', error = NULL, finished_at = now(), updated_at = now()"
        " WHERE id = %s AND status = 'PROCESSING'",
        (run_id,),
    )


def note_run_error(conn: Connection, run_id: str, message: str, *, final: bool) -> None:
    conn.execute(
        "UPDATE scheduled_export_runs SET error = %s, updated_at = now(),"
        " status = CASE WHEN %s THEN 'FAILED' ELSE status END,"
        " finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE id = %s",
        (message, final, final, run_id),
    )


def note_schedule_error(conn: Connection, scheduled_export_id: str, message: str | None) -> None:
    conn.execute(
        "UPDATE scheduled_exports SET last_error = %s, updated_at = now() WHERE id = %s",
        (message, scheduled_export_id),
    )


def disable(conn: Connection, scheduled_export_id: str, reason: str) -> bool:
    """Turns the schedule off, saying why; False if it was off already (so only one email goes out)."""
    row = conn.execute(
        "UPDATE scheduled_exports SET enabled = false, disabled_reason = %s, last_error = %s, next_sync_at = NULL,"
        " updated_at = now() WHERE id = %s AND enabled RETURNING id",
        (reason, reason, scheduled_export_id),
    ).fetchone()
    return row is not None


def claim_failure_email(conn: Connection, scheduled_export_id: str, cooldown_hours: float) -> bool:
    """Whether a failure email may go out now (at most one per cooldown); if so, records that it did."""
    row = conn.execute(
        "UPDATE scheduled_exports SET last_failure_email_at = now() WHERE id = %s AND"
        " (last_failure_email_at IS NULL OR last_failure_email_at <= now() - make_interval(secs => %s))"
        " RETURNING id",
        (scheduled_export_id, cooldown_hours * 3600),
    ).fetchone()
    return row is not None
