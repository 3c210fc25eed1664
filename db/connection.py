"""Connections: a pooled async one for the API, plain sync ones for workers and the CLI."""

from __future__ import annotations

import select

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=autocommit, row_factory=dict_row)


async def _check(conn: psycopg.AsyncConnection) -> None:
    """Run on every checkout: a connection that died with a Postgres restart is replaced, not handed out.

    An idle connection has nothing to read. When Postgres stops or kills a backend it writes a
    termination notice and closes the socket, which makes it readable; only then is the
    connection asked (and found dead). A healthy connection costs one poll(2), not a round trip.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        await conn.execute("SELECT 1")


def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    """An unopened pool; the app opens it at start-up and closes it at shutdown."""
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        check=_check,
        timeout=10,
        open=False,
    )
