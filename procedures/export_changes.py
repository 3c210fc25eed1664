"""The exports' changes, live: one LISTEN per API process, fanned out to every open batchExport.onChange.

Postgres records each change of an export a client can see in batch_export_changes and notifies
`batch_export_changes` with its seq and project (migration 009). `ExportChangeFeed.run` keeps one
listening connection for the whole process; the changes of projects someone here follows are read in
one query per wake-up, turned into the API's model once, and offered to each follower. Nothing is
queried per follower per change.

A follower keeps at most `max_pending` changes it has not sent yet. One that falls further behind (a
client reading slowly), or that may have missed notifications (the listening connection dropped, or
it has just started), drops what it holds and replays from the log after the last change it sent:
memory stays bounded and no change is lost. Within a project, seq order is commit order (migration
009), so "after seq N" is exact, and a change heard both live and in the log is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from db import batch_exports, export_changes
from db.connection import FailFastPool
from procedures.metrics import EXPORT_CHANGES, STREAM_REPLAYS
from rpc import RPCError

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 1.0
# Rows read per query when a follower replays the log. Small: a stream whose client reads slowly holds
# the rest of its page while it waits (1,000 stalled streams: ~100 MB at 500 rows, ~20 MB at 100).
REPLAY_PAGE = 100
# How many exports a follower that cannot replay (it was away longer than the log is kept) gets the
# current state of: the newest, as the exports page shows them.
CURRENT_STATE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Change:
    """One change of an export: its position in the log (the event id) and the export as it became."""

    seq: int
    export_id: str
    export: Any  # what `convert` made of the row: the API's BatchExport


class Follower:
    """One open onChange stream's place in the feed: the changes it has yet to send, or the need to replay."""

    def __init__(self, project_id: str, export_id: str | None, max_pending: int) -> None:
        self.project_id = project_id
        self.export_id = export_id
        self.max_pending = max_pending
        self.pending: deque[Change] = deque()
        self.behind = False  # must replay from the log instead of trusting `pending`
        self._wake = asyncio.Event()

    def offer(self, change: Change) -> None:
        if self.behind or (self.export_id is not None and change.export_id != self.export_id):
            return  # (a follower that is behind reads this change from the log)
        if len(self.pending) >= self.max_pending:
            self.fall_behind()
            return
        self.pending.append(change)
        self._wake.set()

    def fall_behind(self) -> None:
        self.behind = True
        self.pending.clear()
        self._wake.set()

    async def wait(self) -> None:
        """Until there is a change to send, or a replay to do."""
        while not (self.pending or self.behind):
            self._wake.clear()
            await self._wake.wait()


class ChangeStream:
    """One stream's changes, in order, each once: live as the feed offers them, from the log when behind."""

    def __init__(self, feed: ExportChangeFeed, follower: Follower, sent: int, current: list[Change]) -> None:
        self.feed = feed
        self.follower = follower
        self.sent = sent  # the seq up to which the stream has every change
        self._ready = deque(current)
        self._replay: AsyncGenerator[Change, None] | None = None

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        follower = self.follower
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._replay is not None:
                change = await anext(self._replay, None)
                if change is not None:
                    self.sent = change.seq
                    return change
                self._replay = None
            await follower.wait()
            if follower.behind:
                follower.behind = False
                STREAM_REPLAYS.inc()
                self._replay = self.feed.replay(follower.project_id, follower.export_id, self.sent)
                continue
            change = follower.pending.popleft()
            if change.seq > self.sent:
                self.sent = change.seq
                return change

    async def aclose(self) -> None:
        self.feed._forget(self.follower)
        if self._replay is not None:
            await self._replay.aclose()


class ExportChangeFeed:
    def __init__(
        self, database_url: str, pool: FailFastPool, convert: Callable[[dict[str, Any]], Any], max_pending: int = 256
    ) -> None:
        self.database_url = database_url
        self.pool = pool
        self.convert = convert
        self.max_pending = max_pending
        self.connected = False
        # The listening connection's application_name, to find it in pg_stat_activity.
        self.connection_name = f"batch-export export changes {os.getpid()}-{id(self):x}"
        self._followers: dict[str, set[Follower]] = {}
        self._notified: list[int] = []
        self._notified_event = asyncio.Event()

    # --- what a stream uses -------------------------------------------------------------------------

    async def open(self, project_id: str, export_id: str | None, last_event_id: int | None) -> ChangeStream:
        """The changes of a project (or of one of its exports) from now on, or after `last_event_id`.

        Without a last event id, a stream of one export starts with its current state (NOT_FOUND if
        the project has no such export); a stream of a project starts with the next change. When this
        returns, the stream follows the project: nothing committed from then on can be missed.
        """
        sent, current = await self._start(project_id, export_id, last_event_id)
        follower = Follower(project_id, export_id, self.max_pending)
        self._followers.setdefault(project_id, set()).add(follower)
        # What committed after `sent` and before the follower was registered is in the log: the stream
        # starts by reading it (and skips, by seq, what it then hears live as well).
        follower.fall_behind()
        return ChangeStream(self, follower, sent, current)

    def _forget(self, follower: Follower) -> None:
        followers = self._followers.get(follower.project_id)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[follower.project_id]

    @property
    def followers(self) -> int:
        """Streams following any project in this process."""
        return sum(len(followers) for followers in self._followers.values())

    def following(self, project_id: str) -> int:
        """Streams following `project_id` in this process."""
        return len(self._followers.get(project_id, ()))

    async def _start(
        self, project_id: str, export_id: str | None, last_event_id: int | None
    ) -> tuple[int, list[Change]]:
        """Where a stream starts: the seq after which it reads the log, and the current state to send first."""
        async with self.pool.connection() as conn:
            head, pruned_up_to = await export_changes.position(conn, project_id)
            if last_event_id is not None and pruned_up_to <= last_event_id <= head:
                return last_event_id, []
            if export_id is None and last_event_id is None:
                return head, []
            # The state now, as of `head` (read after it: a change in between is sent twice, never missed).
            if export_id is not None:
                cur = await conn.execute(batch_exports.GET_SQL, {"id": export_id, "project_id": project_id})
            else:
                # Away longer than the log is kept (or an id this log never gave): what is there now.
                page = {"project_id": project_id, "limit": CURRENT_STATE_LIMIT, "offset": 0}
                cur = await conn.execute(batch_exports.PAGE_SQL, page)
            rows = await cur.fetchall()
        if export_id is not None and not rows:
            raise RPCError("NOT_FOUND", "No batch export with this id in this project.")
        # Oldest first, as changes come.
        return head, [Change(head, row["id"], self.convert(row)) for row in reversed(rows)]

    async def replay(self, project_id: str, export_id: str | None, sent: int) -> AsyncGenerator[Change, None]:
        """The log's changes of a project (or of one export) after `sent`, in order, a page at a time."""
        while True:
            async with self.pool.connection() as conn:
                rows = await export_changes.after(conn, project_id, export_id, sent, REPLAY_PAGE)
            for row in rows:
                sent = row["seq"]
                yield Change(sent, row["id"], self.convert(row))
            if len(rows) < REPLAY_PAGE:
                return

    # --- the listener ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs for the app's lifetime: the LISTEN connection, and the reads it wakes up."""
        reader = asyncio.create_task(self._read_notified())
        try:
            await self._listen()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name=self.connection_name
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(export_changes.CHANNEL)))
                    self.connected = True
                    # Whatever was committed while nobody listened is in the log: every follower reads it.
                    self._everyone_falls_behind()
                    async for notify in conn.notifies():
                        seq, _, project_id = notify.payload.partition(" ")
                        if project_id in self._followers:
                            self._notified.append(int(seq))
                            self._notified_event.set()
            except psycopg.Error as exc:
                log.warning("live export changes paused until Postgres answers again (%s)", type(exc).__name__)
            finally:
                self.connected = False
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _read_notified(self) -> None:
        while True:
            await self._notified_event.wait()
            self._notified_event.clear()
            seqs, self._notified = self._notified, []
            try:
                async with self.pool.connection() as conn:
                    rows = await export_changes.by_seq(conn, seqs)
            except Exception as exc:
                # The followers will read these from the log once they can.
                log.warning("could not read %d export change(s) (%s)", len(seqs), type(exc).__name__)
                self._everyone_falls_behind()
                continue
            EXPORT_CHANGES.inc(len(rows))
            for row in rows:
                followers = self._followers.get(row["project_id"])
                if followers:
                    change = Change(row["seq"], row["id"], self.convert(row))
                    for follower in list(followers):
                        follower.offer(change)

    def _everyone_falls_behind(self) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.fall_behind()
