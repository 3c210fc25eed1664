"""Connections: a pooled async one for the API, plain sync ones for workers and the CLI."""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class CannotConnect(psycopg.OperationalError):
    """Postgres could not be reached, or the database is missing: one line an operator can act on.

    A subclass of OperationalError, so code that treats any lost database alike keeps doing so.
    """


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    return open_connection(database_url, autocommit=autocommit, row_factory=dict_row)


def open_connection(database_url: str, **kwargs: Any) -> psycopg.Connection:
    """psycopg.connect, with a failure to connect explained as CannotConnect."""
    try:
        return psycopg.connect(database_url, **kwargs)
    except psycopg.OperationalError as exc:
        raise CannotConnect(explain_connection_failure(database_url, exc)) from exc


def explain_connection_failure(database_url: str, exc: BaseException) -> str:
    """ "cannot connect to Postgres at host:port: reason", or what to do about a missing database."""
    params = conninfo_to_dict(database_url)
    dbname = params.get("dbname") or params.get("user") or "postgres"
    # libpq names every host it tried; the last line of each attempt is the reason ("Connection refused").
    text = str(exc).strip()
    if f'database "{dbname}" does not exist' in text:
        return (
            f"database {dbname} does not exist: create it with"
            f" `createdb --encoding=UTF8 --template=template0 {dbname}` (or CREATE DATABASE {dbname}"
            " ENCODING 'UTF8' TEMPLATE template0), then run `batch-export migrate`"
        )
    where = f"{params.get('host') or 'the local socket'}:{params.get('port') or 5432}"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    reason = first_line.rsplit("failed: ", 1)[-1].strip()
    return f"cannot connect to Postgres at {where}: {reason}"


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
