"""Real servers for the whole suite: one Postgres and one Redis per test session, on free ports."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

import db
from procedures.local_services import LocalPostgres, LocalRedis, free_port

# The project ships a copy of ../shared/fixtures/awkward_values.json for the seed; tests use the same one.
AWKWARD_VALUES = json.loads((Path(db.__file__).parent / "fixtures" / "awkward_values.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def awkward_values() -> dict:
    return AWKWARD_VALUES


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="bx-test-pg-"))
    server = LocalPostgres(folder / "data", free_port(), fast_unsafe=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server.start()
    db.migrate(server.url)
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(local_postgres: LocalPostgres) -> str:
    return local_postgres.url


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    folder = Path(tempfile.mkdtemp(prefix="bx-test-redis-"))
    server = LocalRedis(folder, free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(local_redis: LocalRedis) -> str:
    return local_redis.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with db.connect(database_url, autocommit=True) as connection:
        yield connection
