"""The suite's fixtures: one Postgres and one Redis per test session, the API served over HTTP, a fresh project.

What the fixtures are built from lives in tests/support/; conftest files hold fixtures only."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
import redis as redis_lib

import db
from devstack.servers import LocalPostgres, LocalRedis, free_port
from schemas.settings import Settings, get_settings
from tests.support.rpc_client import RpcClient
from tests.support.servers import ServerThread, running_postgres, running_redis
from tests.support.terminal import REPO, Terminal
from tests.support.world import AWKWARD_VALUES, TEST_SECRET_KEY, Project, new_project

# Fixtures kept in tests/support/ and offered to every suite.
pytest_plugins = ["tests.support.s3", "tests.support.destination_servers"]


@pytest.fixture(scope="session")
def awkward_values() -> dict:
    return AWKWARD_VALUES


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(local_postgres: LocalPostgres) -> str:
    return local_postgres.url


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    with running_redis() as server:
        yield server


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


# --- the application, served over real HTTP ---------------------------------------------------


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The suite's settings, also exported to the environment so jobs and callbacks read the same."""
    values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "EXPORT_STORAGE_URL": tmp_path_factory.mktemp("exports").as_uri(),
        "SECRET_KEY": TEST_SECRET_KEY,
        "OUTBOX_DIR": str(tmp_path_factory.mktemp("outbox")),
        # Idle event streams carry a comment every second: a test's reader never waits long on a read.
        "SUBSCRIPTION_HEARTBEAT_SECONDS": "1",
        # The api fixture serves on this port, so links the service signs point at it.
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    yield get_settings()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[ServerThread]:
    from procedures.app import create_app

    port = int(settings.PUBLIC_BASE_URL.rsplit(":", 1)[1])
    with ServerThread(create_app(settings), port) as server:
        yield server


@pytest.fixture
def client(api: ServerThread) -> Iterator[RpcClient]:
    rpc_client = RpcClient(api.url)
    yield rpc_client
    rpc_client.http.close()


@pytest.fixture
def project(conn: psycopg.Connection) -> Project:
    return new_project(conn)


@pytest.fixture
def owner_token(project: Project) -> str:
    return project.member("OWNER", name="Olive Owner")


@pytest.fixture
def terminal(settings: Settings, tmp_path) -> Terminal:
    """`batch-export` for the tests of the terminal client, configured for the suite's services."""
    # Told explicitly, from the suite's Settings: what another test left in os.environ must not matter.
    client_variables = ("BATCH_EXPORT_API_URL", "BATCH_EXPORT_TOKEN", "BATCH_EXPORT_PROJECT")
    env = {k: v for k, v in os.environ.items() if k not in client_variables}
    service = {
        name: str(getattr(settings, name))
        for name in ("DATABASE_URL", "REDIS_URL", "EXPORT_STORAGE_URL", "PUBLIC_BASE_URL", "SECRET_KEY")
    }
    return Terminal(tmp_path, {**env, **service, "PYTHONPATH": str(REPO)})
