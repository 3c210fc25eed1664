"""Postgres access: connections, migrations, and the queries that procedures and workers share."""

from db.connection import connect, create_pool
from db.migrate import migrate

__all__ = ["connect", "create_pool", "migrate"]
