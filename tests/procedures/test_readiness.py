"""GET /readyz says whether the API can serve (Postgres, Redis, export storage, migrations) and which
check failed; GET /healthz only that the process lives, whatever its dependencies do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg import sql

import db
from devstack.servers import LocalPostgres, free_port
from schemas.settings import Settings
from tests.support.servers import ServerThread, running_redis

ALL_READY = {"ok": True, "postgres": True, "redis": True, "storage": True, "migrations": True}


def _served(settings: Settings, **changes: str) -> ServerThread:
    from procedures.app import create_app

    return ServerThread(create_app(settings.model_copy(update=changes)))


def _get(server: ServerThread, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=30)


@pytest.fixture
def new_database(local_postgres: LocalPostgres) -> Iterator[str]:
    """An empty database of its own in the suite's Postgres; its URL."""
    name = f"bx_readyz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(local_postgres.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield local_postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(local_postgres.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_readyz_is_200_when_postgres_redis_storage_and_migrations_are_all_there(api):
    ready = _get(api, "/readyz")
    assert ready.status_code == 200 and ready.json() == ALL_READY


def test_readyz_is_503_naming_redis_while_redis_is_down_and_healthz_stays_200(settings):
    with running_redis("bx-test-readyz-redis-") as own_redis, _served(settings, REDIS_URL=own_redis.url) as server:
        assert _get(server, "/readyz").json() == ALL_READY
        own_redis.stop()
        sick = _get(server, "/readyz")
        assert sick.status_code == 503 and sick.json() == {**ALL_READY, "ok": False, "redis": False}
        assert _get(server, "/healthz").status_code == 200
        own_redis.start()
        assert _get(server, "/readyz").status_code == 200


def test_readyz_is_503_naming_postgres_when_it_cannot_be_reached_and_healthz_stays_200(settings):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/batch_export"
    with _served(settings, DATABASE_URL=dead) as server:
        sick = _get(server, "/readyz")
        # Without a database its migrations cannot be known either.
        assert sick.status_code == 503
        assert sick.json() == {**ALL_READY, "ok": False, "postgres": False, "migrations": False}
        assert _get(server, "/healthz").status_code == 200


def test_readyz_is_503_naming_migrations_on_a_database_never_migrated(settings, new_database):
    with _served(settings, DATABASE_URL=new_database) as server:
        sick = _get(server, "/readyz")
        assert sick.status_code == 503 and sick.json() == {**ALL_READY, "ok": False, "migrations": False}


def test_readyz_is_503_naming_migrations_when_the_last_migration_is_not_applied(settings, new_database):
    db.migrate(new_database)
    with _served(settings, DATABASE_URL=new_database) as server:
        assert _get(server, "/readyz").status_code == 200
        with db.connect(new_database, autocommit=True) as conn:
            last = conn.execute("SELECT max(version) AS v FROM schema_migrations").fetchone()["v"]
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last,))
            sick = _get(server, "/readyz")
            assert sick.status_code == 503 and sick.json() == {**ALL_READY, "ok": False, "migrations": False}
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (last,))
        assert _get(server, "/readyz").status_code == 200


def test_readyz_is_503_naming_storage_when_the_export_folder_cannot_be_written(settings, tmp_path):
    # Under a regular file no folder can be made, not even by root (whom permission bits do not stop).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with _served(settings, EXPORT_STORAGE_URL=(blocker / "exports").as_uri()) as server:
        sick = _get(server, "/readyz")
        assert sick.status_code == 503 and sick.json() == {**ALL_READY, "ok": False, "storage": False}


def test_readyz_makes_a_missing_export_folder_as_the_first_export_would(settings, tmp_path):
    folder = tmp_path / "exports" / "not-yet"
    with _served(settings, EXPORT_STORAGE_URL=folder.as_uri()) as server:
        assert _get(server, "/readyz").json() == ALL_READY
    assert folder.is_dir() and not list(folder.iterdir())  # its probe file is gone


def test_readyz_on_s3_is_200_with_the_bucket_and_503_naming_storage_without_it(settings, s3_endpoint, s3_bucket):
    with _served(settings, EXPORT_STORAGE_URL=f"s3://{s3_bucket}/exports", S3_ENDPOINT_URL=s3_endpoint) as server:
        assert _get(server, "/readyz").json() == ALL_READY
    with _served(settings, EXPORT_STORAGE_URL="s3://no-such-bucket/exports", S3_ENDPOINT_URL=s3_endpoint) as server:
        sick = _get(server, "/readyz")
        assert sick.status_code == 503 and sick.json() == {**ALL_READY, "ok": False, "storage": False}
