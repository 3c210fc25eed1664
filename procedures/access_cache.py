"""A short-lived cache of "this token, in this project": the user and their role, dropped the
moment access changes anywhere.

Every protected call needs the caller's session and project role; asking Postgres each time is a
round trip per call. Answers are kept for `SESSION_CACHE_SECONDS` (and never past the session's
own expiry). Migration 003 makes Postgres send `NOTIFY access_changed` on any change that could
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from procedures.context import User

log = logging.getLogger(__name__)

CHANNEL = "access_changed"
_RECONNECT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """Who a token belongs to and what they are in one project (`role` None: nothing)."""

    user: User
    org_id: str | None
    role: str | None
    org_role: str | None
    project_role: str | None
    session_expires_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ProjectAccess:
        return cls(
            user=User(id=row["id"], email=row["email"], name=row["name"], image=row["image"]),
            org_id=row["org_id"],
            role=row["role"],
            org_role=row["org_role"],
            project_role=row["project_role"],
            session_expires_at=row["session_expires_at"],
        )


Key = tuple[bytes, str]  # (token hash, project id)


class AccessCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.enabled = False  # only while `listen` is connected
        # Bumped by every invalidation: an answer read from Postgres before a change is not stored after it.
        self.generation = 0
        self._entries: dict[Key, tuple[float, ProjectAccess]] = {}
        # The listening connection's application_name, to find it in pg_stat_activity.
        self.connection_name = f"batch-export access cache {os.getpid()}-{id(self):x}"
        self._poller = select.poll()  # watches the listening connection's socket while it is up

    def get(self, key: Key) -> ProjectAccess | None:
        if not self.enabled or self._notification_waiting():
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        valid_until, access = hit
        if time.monotonic() >= valid_until:
            del self._entries[key]
            return None
        return access

    def put(self, key: Key, access: ProjectAccess, generation: int) -> None:
        """Store an answer read while `self.generation` was `generation` (else it may be stale)."""
        if not self.enabled or generation != self.generation:
            return
        session_left = (access.session_expires_at - datetime.now(UTC)).total_seconds()
        lifetime = min(self.ttl_seconds, session_left)
        if lifetime <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; a full cache is refilled in one TTL
        self._entries[key] = (time.monotonic() + lifetime, access)

    def _notification_waiting(self) -> bool:
        """Whether a notification has reached the listening socket but not yet the listener task:
        then the cache may be stale, and Postgres is asked (one poll(2), no round trip)."""
        return bool(self._poller.poll(0))

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()

    async def listen(self, database_url: str) -> None:
        """Runs for the app's lifetime: keeps a LISTEN connection and drops the cache on each change."""
        if self.ttl_seconds <= 0:
            return
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True, application_name=self.connection_name
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
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
