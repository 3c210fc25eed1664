"""The batch_exports table: the API's writes and reads, and every named state transition of a job.

Transitions are conditional UPDATEs: each names the states it may leave, so a late write can never
overwrite CANCELLED (or any other final state) no matter how processes interleave.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from db.connection import Connection
from schemas import ACTIVE_STATUSES

# `status IN {active}`: the statuses of an export that may still change, as schemas/ defines them.
_ACTIVE = sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(status) for status in ACTIVE_STATUSES))

# The columns the API returns, of an export `e` with its creator `u` joined in.
COLUMNS = sql.SQL("""
       e.id, e.project_id, e.user_id, e.name, e.status, e.format, e.query, e.object_key, e.log,
       e.compression, e.columns, e.file_bytes, e.sha256,
       e.rows_exported, e.rows_total, e.parts_done, e.parts_total, e.created_at, e.updated_at, e.finished_at, e.expires_at,
       u.name AS user_name, u.image AS user_image
""")
_FROM = sql.SQL("FROM batch_exports e LEFT JOIN users u ON u.id = e.user_id\n")

INSERT_SQL = """
INSERT INTO batch_exports (project_id, user_id, name, format, query, compression, columns)
VALUES (%(project_id)s, %(user_id)s, %(name)s, %(format)s, %(query)s, %(compression)s, %(columns)s)
RETURNING id
"""
# The API's create: a new export, unless the project already has `max_active` queued or running.
# One statement that always returns one row: `active` (the count before) and the new export's
# columns (all NULL when it was refused). Run it after LOCK_PROJECT_SQL, in the same
# transaction, so that concurrent creates cannot both see room for one more.
LOCK_PROJECT_SQL = "SELECT pg_advisory_xact_lock(hashtext('batch_exports:' || %(project_id)s))"
CREATE_SQL = sql.SQL("""
WITH active AS (
    SELECT count(*) AS n FROM batch_exports
    WHERE project_id = %(project_id)s AND status IN {active}
), e AS (
    INSERT INTO batch_exports (project_id, user_id, name, format, query, compression, columns)
    SELECT %(project_id)s, %(user_id)s, %(name)s, %(format)s, %(query)s, %(compression)s, %(columns)s
    WHERE (SELECT n FROM active) < %(max_active)s
    RETURNING *
)
SELECT (SELECT n FROM active) AS active,{columns}FROM (SELECT 1) AS one LEFT JOIN e ON true LEFT JOIN users u ON u.id = e.user_id
""").format(active=_ACTIVE, columns=COLUMNS)
GET_SQL = sql.SQL("SELECT{columns}{from_}WHERE e.id = %(id)s AND e.project_id = %(project_id)s").format(
    columns=COLUMNS, from_=_FROM
)
# The same row, locked until the transaction ends (cancel reads, decides and writes under it).
GET_FOR_UPDATE_SQL = sql.SQL("{get} FOR UPDATE OF e").format(get=GET_SQL)
# One page, newest first, each row carrying the project's total (`total_count`) so one round
# trip answers both; a page past the end has no rows to carry it, so COUNT_SQL answers that.
PAGE_SQL = sql.SQL(
    "SELECT count(*) OVER () AS total_count,{columns}{from_}WHERE e.project_id = %(project_id)s"
    " ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=COLUMNS, from_=_FROM)
COUNT_SQL = "SELECT count(*) AS n FROM batch_exports WHERE project_id = %(project_id)s"
CANCEL_SQL = sql.SQL("""
UPDATE batch_exports SET status = 'CANCELLED', finished_at = now(), updated_at = now(),
       log = coalesce(log || E'\n', '') || 'Cancelled by a user.'
WHERE id = %(id)s AND project_id = %(project_id)s AND status IN {active}
RETURNING id
""").format(active=_ACTIVE)


def insert_params(
    *,
    project_id: str,
    user_id: str | None,
    name: str,
    format: str,
    query: dict[str, Any],
    compression: str = "none",
    columns: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "user_id": user_id,
        "name": name,
        "format": format,
        "query": Jsonb(query),
        "compression": compression,
        "columns": Jsonb(columns) if columns is not None else None,
    }


# --- worker-side transitions (sync connections) -------------------------------------------------


def load(conn: Connection, export_id: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM batch_exports WHERE id = %s", (export_id,)).fetchone()


def mark_processing(conn: Connection, export_id: str) -> dict[str, Any] | None:
    """QUEUED → PROCESSING; a retry after a crash finds PROCESSING and takes it over, from zero (or,
    for an export written in parts, from its plan: the progress of its DONE parts stays)."""
    return conn.execute(
        sql.SQL(
            "UPDATE batch_exports SET status = 'PROCESSING',"
            " rows_exported = CASE WHEN plan IS NULL THEN 0 ELSE rows_exported END,"
            " rows_total = CASE WHEN plan IS NULL THEN NULL ELSE rows_total END,"
            " updated_at = now() WHERE id = %s AND status IN {active} RETURNING *"
        ).format(active=_ACTIVE),
        (export_id,),
    ).fetchone()


def record_progress(conn: Connection, export_id: str, rows_exported: int, rows_total: int | None) -> bool:
    """Returns False when the export is no longer PROCESSING (cancelled): the job must stop."""
    row = conn.execute(
        "UPDATE batch_exports SET rows_exported = %s, rows_total = coalesce(%s, rows_total), updated_at = now()"
        " WHERE id = %s AND status = 'PROCESSING' RETURNING id",
        (rows_exported, rows_total, export_id),
    ).fetchone()
    return row is not None


def mark_completed(
    conn: Connection,
    export_id: str,
    *,
    object_key: str,
    rows_exported: int,
    file_bytes: int,
    sha256: str,
    expires_hours: float,
    log: str | None,
) -> dict[str, Any] | None:
    """PROCESSING → COMPLETED; None when a cancel got there first."""
    return conn.execute(
        "UPDATE batch_exports SET status = 'COMPLETED', object_key = %s, rows_exported = %s,"
        " rows_total = %s, file_bytes = %s, sha256 = %s, log = %s, finished_at = now(), updated_at = now(),"
        " expires_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'PROCESSING' RETURNING *",
        (object_key, rows_exported, rows_exported, file_bytes, sha256, log, expires_hours * 3600, export_id),
    ).fetchone()


def mark_failed(conn: Connection, export_id: str, message: str) -> bool:
    """QUEUED/PROCESSING → FAILED with a message a user can act on; never overwrites a final state."""
    row = conn.execute(
        sql.SQL(
            "UPDATE batch_exports SET status = 'FAILED', log = %s, finished_at = now(), updated_at = now()"
            " WHERE id = %s AND status IN {active} RETURNING id"
        ).format(active=_ACTIVE),
        (message, export_id),
    ).fetchone()
    return row is not None


def note_retry(conn: Connection, export_id: str, message: str) -> None:
    """Keeps a failed attempt visible in `log` while RQ retries; the export stays active."""
    conn.execute(
        sql.SQL("UPDATE batch_exports SET log = %s, updated_at = now() WHERE id = %s AND status IN {active}").format(
            active=_ACTIVE
        ),
        (message, export_id),
    )


def queued_without_recent_activity(conn: Connection, grace_seconds: int) -> list[str]:
    """Exports still QUEUED after the grace period: candidates for the sweep to re-enqueue."""
    rows = conn.execute(
        "SELECT id FROM batch_exports WHERE status = 'QUEUED'"
        " AND created_at < now() - make_interval(secs => %s) ORDER BY created_at",
        (grace_seconds,),
    ).fetchall()
    return [r["id"] for r in rows]


def processing_without_recent_activity(conn: Connection, idle_seconds: float) -> list[str]:
    """Exports PROCESSING whose row has not changed for `idle_seconds`: a running attempt writes its
    progress every second, so these are dead attempts or retries waiting for their turn."""
    rows = conn.execute(
        "SELECT id FROM batch_exports WHERE status = 'PROCESSING'"
        " AND updated_at < now() - make_interval(secs => %s) ORDER BY created_at",
        (idle_seconds,),
    ).fetchall()
    return [r["id"] for r in rows]


def active_counts(conn: Connection) -> dict[str, int]:
    """How many exports are in each active status (every one named, 0 when none), for the metrics."""
    rows = conn.execute(
        sql.SQL("SELECT status, count(*) AS n FROM batch_exports WHERE status IN {active} GROUP BY status").format(
            active=_ACTIVE
        )
    ).fetchall()
    return dict.fromkeys(ACTIVE_STATUSES, 0) | {r["status"]: r["n"] for r in rows}


# --- the export engine's reads and the expiry sweep ---------------------------------------------


def creator(conn: Connection, export_id: str) -> dict[str, Any] | None:
    """The user who requested the export (email, name), for the notification; None if deleted."""
    return conn.execute(
        "SELECT u.id, u.email, u.name FROM batch_exports e JOIN users u ON u.id = e.user_id WHERE e.id = %s",
        (export_id,),
    ).fetchone()


def expired_with_objects(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """Completed exports past their expiry whose object is still stored."""
    return conn.execute(
        "SELECT id, object_key FROM batch_exports WHERE status = 'COMPLETED' AND object_key IS NOT NULL"
        " AND expires_at <= now() ORDER BY expires_at LIMIT %s",
        (limit,),
    ).fetchall()


def forget_object(conn: Connection, export_id: str, object_key: str) -> None:
    """The object was deleted: the export stays listed (COMPLETED, expired) but has nothing to download."""
    conn.execute(
        "UPDATE batch_exports SET object_key = NULL, updated_at = now(),"
        " log = coalesce(log || E'\\n', '') || 'The file was deleted when its download link expired.'"
        " WHERE id = %s AND object_key = %s",
        (export_id, object_key),
    )
