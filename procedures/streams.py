"""The subscription streams open in this API process: at most so many per user, and each one ended the
moment its caller may no longer see what it streams.

A query checks the caller's access once, when it runs; a stream runs for hours. So every open stream
is registered here with the session and project it was opened with and the scopes it needs. When
access changes anywhere (the access cache's NOTIFY from Postgres, procedures/access_cache.py), one
query rechecks every distinct (session, project) open here, and each stream that lost its session or
its scope ends with UNAUTHORIZED or FORBIDDEN, within milliseconds. A stream also ends when its
session expires. While the access cache's listener is down, the recheck runs every few seconds instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db import access
from db.connection import FailFastPool
from procedures.access_cache import AccessCache
from procedures.metrics import EVENT_STREAMS
from procedures.roles import BAD_TOKEN, refusal
from rpc import RPCError

log = logging.getLogger(__name__)

# How often streams' access is rechecked when no notification can be trusted to say it changed.
RECHECK_WITHOUT_NOTIFICATIONS_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds an open stream: the session and the project it was opened with, and the scopes it needs."""

    token_hash: bytes
    project_id: str
    user_id: str
    scopes: tuple[str, ...]
    session_expires_at: datetime


class GuardedStream:
    """An open stream's events, until its holder's access goes: then it raises the refusal instead."""

    def __init__(self, registry: OpenStreams, events: AsyncIterator[Any], holder: Holder) -> None:
        self.registry = registry
        self.events = events
        self.holder = holder
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[RPCError] = loop.create_future()
        seconds_left = (holder.session_expires_at - datetime.now(UTC)).total_seconds()
        self._expiry = loop.call_later(max(seconds_left, 0), self.end, RPCError("UNAUTHORIZED", BAD_TOKEN))
        self._pending: asyncio.Future[Any] | None = None

    def end(self, refusal: RPCError) -> None:
        if not self.ended.done():
            self.ended.set_result(refusal)

    def __aiter__(self) -> GuardedStream:
        return self

    async def __anext__(self) -> Any:
        if self.ended.done():
            raise self.ended.result()
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self.events))
        try:
            await asyncio.wait((self._pending, self.ended), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._pending.cancel()
            self._pending = None
            raise
        if not self._pending.done():
            raise self.ended.result()
        pending, self._pending = self._pending, None
        return pending.result()

    async def aclose(self) -> None:
        if self in self.registry.streams:
            self.registry.streams.discard(self)
            self.registry.per_user[self.holder.user_id] -= 1
            EVENT_STREAMS.dec()
        self._expiry.cancel()
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            await asyncio.wait((self._pending,))
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            await aclose()


class OpenStreams:
    def __init__(self, pool: FailFastPool, access_cache: AccessCache[Any], max_per_user: int) -> None:
        self.pool = pool
        self.access_cache = access_cache
        self.max_per_user = max_per_user
        self.streams: set[GuardedStream] = set()
        self.per_user: Counter[str] = Counter()
        self._changed = asyncio.Event()
        access_cache.on_invalidate(self._changed.set)

    def guard(self, events: AsyncIterator[Any], holder: Holder) -> GuardedStream:
        """Registers a stream that is about to open; TOO_MANY_REQUESTS when its user has too many open."""
        if self.per_user[holder.user_id] >= self.max_per_user:
            raise RPCError(
                "TOO_MANY_REQUESTS",
                f"You already have {self.per_user[holder.user_id]} live streams open on this server (the limit is "
                f"{self.max_per_user}): close a tab or a terminal that follows exports.",
            )
        stream = GuardedStream(self, events, holder)
        self.streams.add(stream)
        self.per_user[holder.user_id] += 1
        EVENT_STREAMS.inc()
        return stream

    async def watch(self) -> None:
        """Runs for the app's lifetime: rechecks the open streams' access whenever it may have changed."""
        while True:
            timeout = None if self.access_cache.enabled else RECHECK_WITHOUT_NOTIFICATIONS_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            self._changed.clear()
            if not self.streams:
                continue
            try:
                await self.recheck()
            except Exception as exc:
                # The next change (or tick) tries again; meanwhile the streams keep their last answer.
                log.warning(
                    "could not recheck the access of %d open stream(s) (%s)", len(self.streams), type(exc).__name__
                )
                self._changed.set()
                await asyncio.sleep(1)

    async def recheck(self) -> None:
        """One query for every distinct (session, project) open; ends the streams that lost access."""
        keys = sorted({(stream.holder.token_hash, stream.holder.project_id) for stream in self.streams})
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                access.ACCESS_SQL,
                {"token_hashes": [key[0] for key in keys], "project_ids": [key[1] for key in keys]},
            )
            rows = await cur.fetchall()
        found = {(row["token_hash"], row["project_id"]): row for row in rows}
        for stream in list(self.streams):
            row = found.get((stream.holder.token_hash, stream.holder.project_id))
            if row is None or row["id"] is None:
                stream.end(RPCError("UNAUTHORIZED", BAD_TOKEN))
            elif (refused := refusal(row["role"], row["org_id"], stream.holder.scopes)) is not None:
                stream.end(refused)
