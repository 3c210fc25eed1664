"""A short-lived cache of "this token, in this project" answers, dropped the moment access changes anywhere.

Every protected call needs the caller's session and project role; asking Postgres each time is a
round trip per call. Answers are kept for `SESSION_CACHE_SECONDS` (and never past the session's
own expiry). The cache stores whatever answer its caller gives it (procedures/auth.py stores the
user and their role) and knows nothing of what is inside. Migration 003 makes Postgres send `NOTIFY access_changed` on any change that could
narrow a cached answer (a revoked session, a changed membership, a deleted user or project), from
whatever process or psql session made it; `listen` drops the whole cache when one arrives. While
the listening connection is down the cache answers nothing, so no change can be missed: every
call then asks Postgres, as if there were no cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

CHANNEL = "access_changed"
_RECONNECT_SECONDS = 1.0


Key = tuple[bytes, str]  # (token hash, project id)
Answer = TypeVar("Answer")


class AccessCache(Generic[Answer]):
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.enabled = False  # only while `listen` is connected
        # Bumped by every invalidation: an answer read from Postgres before a change is not stored after it.
        self.generation = 0
        self._entries: dict[Key, tuple[float, Answer]] = {}
        # The listening connection's application_name, to find it in pg_stat_activity.
        self.connection_name = f"batch-export access cache {os.getpid()}-{id(self):x}"
        self._poller = select.poll()  # watches the listening connection's socket while it is up
        self._on_invalidate: list[Callable[[], None]] = []

    def get(self, key: Key) -> Answer | None:
        if not self.enabled or self._notification_waiting():
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        valid_until, answer = hit
        if time.monotonic() >= valid_until:
            del self._entries[key]
            return None
        return answer

    def put(self, key: Key, answer: Answer, generation: int, valid_until: datetime) -> None:
        """Store an answer read while `self.generation` was `generation` (else it may be stale), never
        past `valid_until` (the session's own expiry)."""
        if not self.enabled or generation != self.generation:
            return
        lifetime = min(self.ttl_seconds, (valid_until - datetime.now(UTC)).total_seconds())
        if lifetime <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; a full cache is refilled in one TTL
        self._entries[key] = (time.monotonic() + lifetime, answer)

    def _notification_waiting(self) -> bool:
        """Whether a notification has reached the listening socket but not yet the listener task:
        then the cache may be stale, and Postgres is asked (one poll(2), no round trip)."""
        return bool(self._poller.poll(0))

    def on_invalidate(self, callback: Callable[[], None]) -> None:
        """`callback()` after each invalidation (access may have changed): it must be cheap and not raise."""
        self._on_invalidate.append(callback)

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()
        for callback in self._on_invalidate:
            callback()

    async def listen(self, database_url: str) -> None:
        """Runs for the app's lifetime: keeps a LISTEN connection and drops the cache on each change.

        It listens even when answers are never kept (a TTL of 0): open streams learn of access
        changes through `on_invalidate`."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True, application_name=self.connection_name
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._poller = select.poll()
                    self._poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
                    self.invalidate()
                    self.enabled = True
                    async for _ in conn.notifies():
                        self.invalidate()
            except psycopg.Error as exc:
                log.warning("access cache off until Postgres answers again (%s)", type(exc).__name__)
            finally:
                # Off before anything else can run: a change made while we are not listening must not be missed.
                self.enabled = False
                self._poller = select.poll()
                self.invalidate()
            await asyncio.sleep(_RECONNECT_SECONDS)
