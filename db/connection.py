"""Connections: a pooled async one for the API, plain sync ones for workers and the CLI."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

# Rows are dicts everywhere: what the queries in db/ return and what their callers index by name.
Row = DictRow
Connection = psycopg.Connection[DictRow]
AsyncConnection = psycopg.AsyncConnection[DictRow]


def one(row: Row | None) -> Row:
    """The row of a statement that always returns one (INSERT … RETURNING, an aggregate)."""
    if row is None:
        raise LookupError("the statement returned no row")
    return row


class CannotConnect(psycopg.OperationalError):
    """Postgres could not be reached, or the database is missing: one line an operator can act on.

    A subclass of OperationalError, so code that treats any lost database alike keeps doing so.
    """


def connect(database_url: str, *, autocommit: bool = False, connect_timeout: int | None = None) -> Connection:
    """A connection with dict rows; `connect_timeout` (seconds, at least 2 for libpq) bounds the wait for a
    server that does not answer, which is otherwise the operating system's TCP timeout."""
    options: dict[str, Any] = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    try:
        return psycopg.connect(database_url, autocommit=autocommit, row_factory=dict_row, **options)
    except psycopg.OperationalError as exc:
        raise CannotConnect(explain_connection_failure(database_url, exc)) from exc


def open_connection(database_url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """psycopg.connect with tuple rows (what migrations use), a failure to connect explained as CannotConnect."""
    try:
        return psycopg.connect(database_url, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise CannotConnect(explain_connection_failure(database_url, exc)) from exc


def explain_connection_failure(database_url: str, exc: BaseException) -> str:
    """One line for an operator: where Postgres was tried and why it failed, or how to create the database."""
    params = conninfo_to_dict(database_url)
    dbname = params.get("dbname") or params.get("user") or "postgres"
    # libpq's first line reads 'connection to server at "host", port 5432 failed: <reason>'; hints follow.
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


async def _check(conn: AsyncConnection) -> None:
    """Run on every checkout: a connection that died with a Postgres restart is replaced, not handed out.

    An idle connection has nothing to read. When Postgres stops or kills a backend it writes a
    termination notice and closes the socket, which makes it readable; only then is the
    connection asked (and found dead). A healthy connection costs one poll(2), not a round trip.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        await conn.execute("SELECT 1")


class FailFastPool(AsyncConnectionPool[AsyncConnection]):
    """A pool that stops making callers wait for a connection once it knows the database is gone.

    psycopg_pool waits the full `timeout` for a connection even when its every attempt to connect
    is refused. Here the pool remembers whether its last attempt to open a connection failed;
    while it did, a caller gets PoolTimeout within `unavailable_timeout` seconds (one fresh
    connection attempt, whose success ends the outage) instead of waiting out `timeout`.
    """

    def __init__(self, *args: Any, unavailable_timeout: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unavailable_timeout = unavailable_timeout
        self.database_unreachable = False

    async def _connect(self, timeout: float | None = None) -> Any:
        # Every connection the pool opens (start-up, replacements, growth) goes through here.
        try:
            conn = await super()._connect(timeout)
        except Exception:
            self.database_unreachable = True
            raise
        self.database_unreachable = False
        return conn

    async def getconn(self, timeout: float | None = None) -> Any:
        total = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        # Wait in slices, so that a caller already waiting when the database goes away learns it too
        # (each slice queues the caller again: a fair price, as a healthy pool serves in milliseconds).
        while True:
            if self.database_unreachable:
                await self._probe()
            remaining = deadline - time.monotonic()
            try:
                return await super().getconn(max(min(remaining, self.unavailable_timeout), 0.001))
            except PoolTimeout:
                if self.database_unreachable:
                    raise PoolTimeout(DATABASE_UNREACHABLE) from None
                if deadline - time.monotonic() <= 0:
                    raise PoolTimeout(f"couldn't get a connection after {total:.2f} sec") from None

    async def _probe(self) -> None:
        """One connection attempt of our own: refused means fail now, accepted means the outage is over."""
        try:
            probe = await psycopg.AsyncConnection.connect(
                str(self.conninfo), connect_timeout=max(round(self.unavailable_timeout), 1)
            )
        except psycopg.OperationalError:
            raise PoolTimeout(DATABASE_UNREACHABLE) from None
        await probe.close()
        self.database_unreachable = False
        # The pool's own reconnection may be backing off for many seconds: have it try again now.
        await self.check()


DATABASE_UNREACHABLE = "the database is unreachable: the pool's last attempt to connect failed"


def create_pool(
    database_url: str, *, min_size: int = 2, max_size: int = 10, timeout: float = 10, unavailable_timeout: float = 1
) -> FailFastPool:
    """An unopened pool; the app opens it at start-up and closes it at shutdown.

    `timeout` bounds the wait for a connection while Postgres is up but every connection is busy;
    once a connection attempt has failed, callers fail within about `unavailable_timeout`.
    """
    return FailFastPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        connection_class=AsyncConnection,
        kwargs={"row_factory": dict_row, "autocommit": True},
        check=_check,
        timeout=timeout,
        unavailable_timeout=unavailable_timeout,
        open=False,
    )
