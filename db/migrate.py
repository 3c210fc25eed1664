"""Applies the versioned SQL files in db/migrations once each, in order, under an advisory lock."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

from db.connection import open_connection

# Any constant works; it only has to be the same for every process that migrates this database.
_MIGRATION_LOCK = 0x6261_7463_6865_7870


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("db") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


# The versions a database has applied (the table is missing from a database never migrated).
APPLIED_SQL = "SELECT version FROM schema_migrations"


def missing_migrations(applied: Iterable[str]) -> list[str]:
    """The code's migrations that are not among `applied`, in order.

    A database ahead of the code misses nothing: an upgrade migrates first and then restarts the
    services, and calling the old processes unready meanwhile would take every one out at once.
    """
    done = set(applied)
    return [version for version, _ in migration_files() if version not in done]


def migrate(database_url: str) -> list[str]:
    """Applies pending migrations; returns the versions applied now (empty when up to date).

    Raises db.connection.CannotConnect when Postgres is unreachable or the database is missing.
    """
    applied_now: list[str] = []
    with open_connection(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql_text in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql_text)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
