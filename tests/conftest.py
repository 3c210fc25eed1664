"""Real servers for the whole suite: one Postgres and one Redis per test session, on free ports."""

from __future__ import annotations

import contextlib
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
import devstack
from devstack.servers import LocalPostgres, LocalRedis, free_port

# The project ships devstack/fixtures/awkward_values.json for the seed; tests use the same one.
AWKWARD_VALUES = json.loads(
    (Path(devstack.__file__).parent / "fixtures" / "awkward_values.json").read_text(encoding="utf-8")
)


@pytest.fixture(scope="session")
def awkward_values() -> dict:
    return AWKWARD_VALUES


@contextlib.contextmanager
def running_postgres(prefix: str = "bx-test-pg-") -> Iterator[LocalPostgres]:
    """A migrated Postgres of its own, on a free port, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = LocalPostgres(folder / "data", free_port(), fast_unsafe=True)
    server.start()
    try:
        db.migrate(server.url)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(local_postgres: LocalPostgres) -> str:
    return local_postgres.url


@contextlib.contextmanager
def running_redis(prefix: str = "bx-test-redis-") -> Iterator[LocalRedis]:
    """A Redis server of its own, on a free port, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalRedis(folder, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


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

import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from db import access  # noqa: E402
from schemas.settings import Settings, get_settings  # noqa: E402

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The suite's settings, also exported to the environment so jobs and callbacks read the same."""
    values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "EXPORT_STORAGE_URL": tmp_path_factory.mktemp("exports").as_uri(),
        "SECRET_KEY": TEST_SECRET_KEY,
        "OUTBOX_DIR": str(tmp_path_factory.mktemp("outbox")),
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


class ServerThread:
    """A real uvicorn server on a free loopback port, in a thread of the test process."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class RpcClient:
    """JSON-RPC over HTTP the way the frontend calls it; returns the parsed reply."""

    base_url: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _ids: int = 0

    def call(self, method: str, params=None, *, token: str | None = None) -> dict:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            body["params"] = params
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(f"{self.base_url}/rpc", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def result(self, method: str, params=None, *, token: str | None = None):
        reply = self.call(method, params, token=token)
        assert "error" not in reply, reply
        return reply["result"]

    def error(self, method: str, params=None, *, token: str | None = None) -> dict:
        reply = self.call(method, params, token=token)
        assert "error" in reply, reply
        return reply["error"]


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


@dataclass
class Project:
    """A fresh project for one test, with a way to add members and get their tokens."""

    id: str
    org_id: str
    conn: psycopg.Connection

    def member(
        self, role: str | None, *, org_role: str = "NONE", name: str | None = None, ttl=timedelta(hours=1)
    ) -> str:
        import uuid

        user = access.upsert_user(self.conn, f"{uuid.uuid4().hex}@example.com", name or f"{role or org_role} user")
        access.set_org_role(self.conn, self.org_id, user["id"], org_role)
        if role is not None:
            access.set_project_role(self.conn, self.id, user["id"], role)
        return access.create_session(self.conn, user["id"], ttl)


@pytest.fixture
def project(conn: psycopg.Connection) -> Project:
    created = access.create_project(conn, "test project")
    return Project(id=created["id"], org_id=created["org_id"], conn=conn)


@pytest.fixture
def owner_token(project: Project) -> str:
    return project.member("OWNER", name="Olive Owner")
