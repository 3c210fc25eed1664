"""The batch_export_parts table: a large export's plan, and the named transitions of each part.

A part is PENDING until an attempt takes it (PROCESSING), and DONE once its object is stored. A
part is only ever marked DONE while its export is PROCESSING, under a lock on the export's row, so
a cancel either comes before (and the part deletes its own object) or after (and the cancel's
clean-up sees the part DONE and deletes it). Every transaction that writes both rows locks the
export's row first, so parts running at once never deadlock each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from db.connection import Connection


def plan(conn: Connection, export_id: str, plan: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Stores the export's plan and its parts, in one transaction: a crash leaves no half plan."""
    with conn.transaction():
        conn.execute(
            "UPDATE batch_exports SET plan = %s, parts_total = %s, parts_done = 0, rows_total = %s,"
            " rows_exported = 0, updated_at = now() WHERE id = %s",
            (Jsonb(plan), len(parts), sum(p["rows_planned"] for p in parts), export_id),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO batch_export_parts (export_id, part, first_row, next_row, rows_planned)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(export_id, p["part"], _json(p["first_row"]), _json(p["next_row"]), p["rows_planned"]) for p in parts],
            )


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def parts(conn: Connection, export_id: str) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM batch_export_parts WHERE export_id = %s ORDER BY part", (export_id,)).fetchall()


def load(conn: Connection, export_id: str, part: int) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT * FROM batch_export_parts WHERE export_id = %s AND part = %s", (export_id, part)
    ).fetchone()


def start(conn: Connection, export_id: str, part: int, worker: str) -> dict[str, Any] | None:
    """PENDING/PROCESSING → PROCESSING, counting the attempt; None when the part is DONE already."""
    return conn.execute(
        "UPDATE batch_export_parts SET status = 'PROCESSING', attempts = attempts + 1, rows_exported = 0,"
        " worker = %s, started_at = now(), updated_at = now()"
        " WHERE export_id = %s AND part = %s AND status <> 'DONE' RETURNING *",
        (worker, export_id, part),
    ).fetchone()


def record_progress(conn: Connection, export_id: str, part: int, rows: int) -> bool:
    """The part's rows so far, and the export's as the sum of its parts'; False once the export is no
    longer PROCESSING (cancelled, or failed in another part): the part must stop."""
    with conn.transaction():
        if not _lock_running_export(conn, export_id):
            return False
        conn.execute(
            "UPDATE batch_export_parts SET rows_exported = %s, updated_at = now() WHERE export_id = %s AND part = %s",
            (rows, export_id, part),
        )
        row = conn.execute(
            "UPDATE batch_exports SET updated_at = now(), rows_exported ="
            " (SELECT sum(rows_exported) FROM batch_export_parts WHERE export_id = %(id)s)"
            " WHERE id = %(id)s AND status = 'PROCESSING' RETURNING id",
            {"id": export_id},
        ).fetchone()
    return row is not None


def finish(
    conn: Connection, export_id: str, part: int, *, rows: int, object_key: str, file_bytes: int, sha256: str
) -> bool:
    """PROCESSING → DONE while the export is PROCESSING; False when it is not (the caller deletes its object)."""
    with conn.transaction():
        if not _lock_running_export(conn, export_id):
            return False
        conn.execute(
            "UPDATE batch_export_parts SET status = 'DONE', rows_exported = %s, object_key = %s, file_bytes = %s,"
            " sha256 = %s, finished_at = now(), updated_at = now() WHERE export_id = %s AND part = %s",
            (rows, object_key, file_bytes, sha256, export_id, part),
        )
        conn.execute(
            "UPDATE batch_exports SET updated_at = now(),"
            " parts_done = (SELECT count(*) FROM batch_export_parts WHERE export_id = %(id)s AND status = 'DONE'),"
            " rows_exported = (SELECT sum(rows_exported) FROM batch_export_parts WHERE export_id = %(id)s)"
            " WHERE id = %(id)s",
            {"id": export_id},
        )
    return True


def _lock_running_export(conn: Connection, export_id: str) -> bool:
    """Locks the export's row until the transaction ends; False (and no lock) when it is not PROCESSING."""
    row = conn.execute(
        "SELECT id FROM batch_exports WHERE id = %s AND status = 'PROCESSING' FOR NO KEY UPDATE", (export_id,)
    ).fetchone()
    return row is not None


def stored_objects(conn: Connection, export_id: str) -> list[str]:
    """The keys of the parts' objects that are stored (DONE parts), for clean-up."""
    rows = conn.execute(
        "SELECT object_key FROM batch_export_parts WHERE export_id = %s AND object_key IS NOT NULL ORDER BY part",
        (export_id,),
    ).fetchall()
    return [r["object_key"] for r in rows]


def forget_objects(conn: Connection, export_id: str) -> None:
    conn.execute("UPDATE batch_export_parts SET object_key = NULL WHERE export_id = %s", (export_id,))


def first_started_at(conn: Connection, export_id: str) -> datetime | None:
    """When the first of the export's parts started (its last attempt), for the rate it was written at."""
    row = conn.execute(
        "SELECT min(started_at) AS started_at FROM batch_export_parts WHERE export_id = %s", (export_id,)
    ).fetchone()
    return row["started_at"] if row else None
