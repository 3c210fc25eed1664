"""A deployment of its own for each fault test: database, Redis, storage and settings it may break, and real processes.

Each test gets a fresh database copied from a template holding two seeded projects (on the suite's
Postgres; tests that restart Postgres start their own server) and a Redis of its own. So the sweep
its workers run sees only this test's exports, and stopping Redis, flushing it or leaving a killed
worker's keys behind never touches another test.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from rq.registry import StartedJobRegistry

import db
from db import access, batch_exports
from devstack.seed import seed
from devstack.servers import LocalPostgres, LocalRedis, free_port
from schemas.settings import Settings, get_settings
from tests.conftest import ServerThread, running_postgres, running_redis
from tests.faults.processes import ApiProcess, CliProcess, WorkerProcess
from workers.queue import enqueue_export, export_queue

# What the subprocesses are told, from the stack's Settings.
_ENV_FIELDS = (
    "DATABASE_URL",
    "REDIS_URL",
    "EXPORT_STORAGE_URL",
    "S3_ENDPOINT_URL",
    "PUBLIC_BASE_URL",
    "SECRET_KEY",
    "BATCH_EXPORT_ROW_LIMIT",
    "BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT",
    "BATCH_EXPORT_JOB_TIMEOUT_SECONDS",
    "BATCH_EXPORT_JOB_RETRIES",
    "BATCH_EXPORT_JOB_RETRY_DELAYS",
    "BATCH_EXPORT_SWEEP_GRACE_SECONDS",
    "SMTP_URL",
    "EMAIL_FROM",
    "OUTBOX_DIR",
)
TRACES_BY_TIME = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}
BIG_TRACES = 60_000


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for name in _ENV_FIELDS:
        value = getattr(settings, name)
        env[name] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return env


@dataclass
class Tenant:
    """A project with data to export and an owner who may call the API."""

    project_id: str
    user_id: str
    token: str

    def new_export(
        self,
        conn: psycopg.Connection,
        query: dict[str, Any] = TRACES_BY_TIME,
        fmt: str = "CSV",
        name: str = "fault test",
    ) -> str:
        """An export row as `create` writes it (the test enqueues it, or not, itself)."""
        row = conn.execute(
            batch_exports.INSERT_SQL,
            batch_exports.insert_params(
                project_id=self.project_id, user_id=self.user_id, name=name, format=fmt, query=query
            ),
        ).fetchone()
        return row["id"]


def make_tenant(conn: psycopg.Connection, name: str, traces: int | None = 300) -> Tenant:
    project = access.create_project(conn, name)
    user = access.upsert_user(conn, f"{uuid.uuid4().hex[:12]}@example.com", f"{name} owner")
    access.set_org_role(conn, project["org_id"], user["id"], "NONE")
    access.set_project_role(conn, project["id"], user["id"], "OWNER")
    token = access.create_session(conn, user["id"], timedelta(hours=2))
    if traces:
        seed(conn, project["id"], traces=traces)
    return Tenant(project["id"], user["id"], token)


def insert_big_traces(conn: psycopg.Connection, project_id: str, count: int) -> None:
    """Traces enough that an export streams for seconds (tens of MB), inserted inside Postgres."""
    conn.execute(
        """INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, tags, input, output, metadata)
           SELECT 'big-' || lpad(g::text, 7, '0'), %s, '2025-01-01'::timestamptz + (g / 3) * interval '1 second',
                  'trace ' || g, 'user-' || (g %% 100), 'session-' || (g %% 1000), ARRAY['a', 'b'],
                  jsonb_build_object('prompt', repeat('x', 400), 'g', g, 'quote', 'he said "hi", then left'),
                  '"=1+2"', jsonb_build_object('k', g %% 7)
           FROM generate_series(1, %s) g""",
        (project_id, count),
    )
    conn.execute("ANALYZE traces")


@dataclass(frozen=True)
class Template:
    """A migrated database each test copies; the tenants exist, with the same ids, in every copy."""

    server: LocalPostgres
    name: str
    small: Tenant  # a seeded project whose exports take a fraction of a second
    big: Tenant  # its traces export streams for seconds: long enough to kill it half-way


def postgres_url(server: LocalPostgres, name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


@pytest.fixture(scope="session")
def fault_template(local_postgres: LocalPostgres) -> Template:
    name = "faults_template"
    with psycopg.connect(local_postgres.admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres_url(local_postgres, name)
    db.migrate(url)
    with db.connect(url, autocommit=True) as conn:
        small = make_tenant(conn, "faults: small")
        big = make_tenant(conn, "faults: big", traces=None)
        insert_big_traces(conn, big.project_id, BIG_TRACES)
    return Template(local_postgres, name, small, big)


@pytest.fixture
def small_tenant(fault_template: Template) -> Tenant:
    return fault_template.small


@pytest.fixture
def big_tenant(fault_template: Template) -> Tenant:
    return fault_template.big


@pytest.fixture
def fault_database(fault_template: Template) -> Iterator[str]:
    """A fresh copy of the template for one test, dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    server = fault_template.server
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {fault_template.name} STRATEGY FILE_COPY")
    try:
        yield postgres_url(server, name)
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def conn(fault_database: str) -> Iterator[psycopg.Connection]:
    """A connection to this test's database (the suite's `conn` is another one)."""
    with db.connect(fault_database, autocommit=True) as connection:
        yield connection


@dataclass
class FaultStack:
    """One deployment's configuration, the processes started from it, and the test's handles on its servers."""

    folder: Path
    redis: LocalRedis
    settings: Settings
    processes: list[CliProcess] = field(default_factory=list)
    servers: list[ServerThread] = field(default_factory=list)

    @property
    def storage(self) -> Path:
        return Path(self.settings.EXPORT_STORAGE_URL.removeprefix("file://"))

    def env(self, **overrides: Any) -> dict[str, str]:
        return {**settings_env(self.settings), **{k: str(v) for k, v in overrides.items()}}

    def configure(self, **changes: Any) -> None:
        """Changes the deployment's settings for processes started from now on (and the test's own calls)."""
        self.settings = self.settings.model_copy(update=changes)

    def worker(self, name: str = "worker", **env: Any) -> WorkerProcess:
        return self.workers(name, **env)[0]

    def workers(self, *names: str, **env: Any) -> list[WorkerProcess]:
        """`batch-export worker` processes, started together; returns once all of them listen."""
        started = [WorkerProcess(name, self.env(**env), self.folder).start(wait=False) for name in names]
        self.processes.extend(started)
        return [process.wait_ready() for process in started]

    def api(self, name: str = "api", **env: Any) -> ApiProcess:
        """`batch-export serve` on PUBLIC_BASE_URL's port, so the links it signs point at it."""
        port = int(self.settings.PUBLIC_BASE_URL.rsplit(":", 1)[1])
        process = ApiProcess(name, self.env(**env), self.folder, port)
        self.processes.append(process)
        return process.start()

    def api_in_thread(self) -> ServerThread:
        """The app served by uvicorn in a thread of the test process, configured like the processes."""
        from procedures.app import create_app

        port = int(self.settings.PUBLIC_BASE_URL.rsplit(":", 1)[1])  # so the links it signs point at it
        server = ServerThread(create_app(self.settings), port).__enter__()
        self.servers.append(server)
        return server

    def cli(self, *argv: str, **env: Any) -> CliProcess:
        """A one-off command (`batch-export sweep`, ...), run to its end."""
        process = CliProcess(f"cli-{argv[0]}-{len(self.processes)}", list(argv), self.env(**env), self.folder)
        self.processes.append(process)
        process.start()
        assert process.process.wait(timeout=120) == 0, process.log()
        return process

    def redis_client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.settings.REDIS_URL)

    def enqueue(self, export_id: str) -> bool:
        with self.redis_client() as connection:
            return enqueue_export(connection, export_id, self.settings)

    def load(self, export_id: str) -> dict[str, Any]:
        with db.connect(self.settings.DATABASE_URL, autocommit=True) as conn:
            return batch_exports.load(conn, export_id)

    def idle_seconds(self, export_id: str) -> float:
        """How long ago the export's row last changed (a running attempt writes its progress every second)."""
        with db.connect(self.settings.DATABASE_URL, autocommit=True) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM now() - updated_at) AS s FROM batch_exports WHERE id = %s", (export_id,)
            ).fetchone()
        return float(row["s"])

    def file(self, row: dict[str, Any]) -> Path:
        return self.storage / row["object_key"]


def lease_expired(stack: FaultStack, export_id: str) -> bool:
    """RQ counts the export's running job as abandoned: its worker has sent no heartbeat for a lease."""
    with stack.redis_client() as connection:
        return export_id in StartedJobRegistry(queue=export_queue(connection)).get_expired_job_ids()


def hold_table(database_url: str, table: str) -> psycopg.Connection:
    """Keeps every query on `table` waiting, so an export is stuck in its query until the lock goes."""
    blocker = psycopg.connect(database_url)
    blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return blocker


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    with running_redis("bx-faults-redis-") as server:
        yield server


@contextlib.contextmanager
def fault_stack(
    database_url: str, redis: LocalRedis, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    storage = folder / "exports"
    storage.mkdir()
    settings = Settings(
        _env_file=None,
        DATABASE_URL=database_url,
        REDIS_URL=redis.url,
        EXPORT_STORAGE_URL=storage.as_uri(),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{free_port()}",
        SECRET_KEY="fault-tests-secret-key-0123456789",
        SMTP_URL="",
        OUTBOX_DIR=folder / "outbox",
        # Seconds, not minutes, between attempts: the tests wait for every retry.
        BATCH_EXPORT_JOB_RETRY_DELAYS=(1,),
        # The test enqueues its exports itself; tests of the sweep shorten this.
        BATCH_EXPORT_SWEEP_GRACE_SECONDS=3600,
    )
    monkeypatch.chdir(folder)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    stack = FaultStack(folder, redis, settings)
    try:
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.kill()
        for server in reversed(stack.servers):
            server.__exit__(None, None, None)
        get_settings.cache_clear()
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture
def stack(
    fault_database: str, own_redis: LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    with fault_stack(fault_database, own_redis, tmp_path, monkeypatch) as deployed:
        yield deployed


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A Postgres server of the test's own, for tests that stop and restart it."""
    with running_postgres("bx-faults-pg-") as server:
        yield server


@pytest.fixture
def restartable_stack(
    own_postgres: LocalPostgres, own_redis: LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    with fault_stack(own_postgres.url, own_redis, tmp_path, monkeypatch) as deployed:
        yield deployed
