"""The batch_export_changes log (migration 009): what batchExport.onChange streams, replays and prunes.

Every change is a row of batch_export_changes holding the export as it was; its `seq` is the SSE event
id. The queries here read changes back in the shape of `batch_exports.GET_SQL` (plus `seq`), so
one function turns either into the API's BatchExport; where a stream starts from the exports' current
state, it reads them with batch_exports.GET_SQL and PAGE_SQL.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from db.batch_exports import COLUMNS
from db.connection import AsyncConnection, Connection, one

CHANNEL = "batch_export_changes"

# A change's export, read back as a batch_exports row (`e`), with its creator (`u`) joined in.
_CHANGES = sql.SQL(
    "SELECT c.seq,{columns}FROM batch_export_changes c"
    " CROSS JOIN LATERAL jsonb_populate_record(NULL::batch_exports, c.export) AS e"
    " LEFT JOIN users u ON u.id = e.user_id\n"
).format(columns=COLUMNS)

# The changes a listener was notified of, in order.
BY_SEQ_SQL = sql.SQL("{changes}WHERE c.seq = ANY(%(seqs)s) ORDER BY c.seq").format(changes=_CHANGES)
# One page of what a project (or one of its exports) went through after `after`, in order.
PROJECT_AFTER_SQL = sql.SQL(
    "{changes}WHERE c.project_id = %(project_id)s AND c.seq > %(after)s ORDER BY c.seq LIMIT %(limit)s"
).format(changes=_CHANGES)
EXPORT_AFTER_SQL = sql.SQL(
    "{changes}WHERE c.export_id = %(export_id)s AND c.project_id = %(project_id)s AND c.seq > %(after)s"
    " ORDER BY c.seq LIMIT %(limit)s"
).format(changes=_CHANGES)

# Where a project's log stands now (never below what pruning removed: a project whose changes were
# all pruned has seen everything up to there), and up to what pruning may have removed changes.
POSITION_SQL = """
SELECT greatest((SELECT max(seq) FROM batch_export_changes WHERE project_id = %(project_id)s), up_to) AS head,
       up_to AS pruned_up_to
FROM batch_export_changes_pruned
"""
# Deletes a batch of changes older than the replay window; records the highest seq it removed.
PRUNE_SQL = """
WITH gone AS (
    DELETE FROM batch_export_changes WHERE seq IN (
        SELECT seq FROM batch_export_changes WHERE changed_at < now() - make_interval(secs => %(keep_seconds)s)
        ORDER BY seq LIMIT %(limit)s
    ) RETURNING seq
), mark AS (
    UPDATE batch_export_changes_pruned SET up_to = greatest(up_to, (SELECT max(seq) FROM gone))
    WHERE EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) AS n FROM gone
"""


async def position(conn: AsyncConnection, project_id: str) -> tuple[int, int]:
    """(the project's latest seq, the highest seq pruned): read before any state a stream starts from."""
    cur = await conn.execute(POSITION_SQL, {"project_id": project_id})
    row = await cur.fetchone()
    assert row is not None
    return row["head"], row["pruned_up_to"]


async def after(
    conn: AsyncConnection, project_id: str, export_id: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    params = {"project_id": project_id, "export_id": export_id, "after": after, "limit": limit}
    cur = await conn.execute(EXPORT_AFTER_SQL if export_id else PROJECT_AFTER_SQL, params)
    return await cur.fetchall()


async def by_seq(conn: AsyncConnection, seqs: list[int]) -> list[dict[str, Any]]:
    cur = await conn.execute(BY_SEQ_SQL, {"seqs": seqs})
    return await cur.fetchall()


def prune(conn: Connection, keep_seconds: float, batch_size: int = 10_000) -> int:
    """Deletes changes older than `keep_seconds`, a batch at a time; returns how many."""
    pruned = 0
    while True:
        row = one(conn.execute(PRUNE_SQL, {"keep_seconds": keep_seconds, "limit": batch_size}).fetchone())
        pruned += row["n"]
        if row["n"] < batch_size:
            return pruned
