"""Postgres access: connections, migrations, and the queries that procedures and workers share."""

from db.connection import AsyncConnection, Connection, Row, connect, create_pool, one
from db.migrate import migrate

__all__ = ["AsyncConnection", "Connection", "Row", "connect", "create_pool", "migrate", "one"]
