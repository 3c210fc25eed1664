"""A deployment of its own for each fault test: its database, Redis, storage and settings, and the processes started from it."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from psycopg import sql
from rq.registry import StartedJobRegistry

import db
from db import batch_exports
from devstack.seed import seed
from devstack.servers import LocalPostgres, LocalRedis, free_port
from schemas.settings import Settings, get_settings
from tests.support.processes import ApiProcess, CliProcess, WorkerProcess
from tests.support.servers import ServerThread
from tests.support.stream_gate import StreamGate
from tests.support.world import Project, new_project
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
    "BATCH_EXPORT_PART_ROWS",
    "BATCH_EXPORT_MAX_PARALLEL_PARTS_PER_PROJECT",
    "WORKER_SHUTDOWN_GRACE_SECONDS",
    "API_SHUTDOWN_GRACE_SECONDS",
    "SUBSCRIPTION_HEARTBEAT_SECONDS",
    "SUBSCRIPTION_MAX_STREAMS_PER_USER",
    "SMTP_URL",
    "EMAIL_FROM",
    "OUTBOX_DIR",
    "WORKER_METRICS_PORT",
)


# The big tenant's traces: an export of them streams tens of MB.
BIG_TENANT_TRACES = 60_000


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for name in _ENV_FIELDS:
        value = getattr(settings, name)
        env[name] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return env


def make_tenant(conn: psycopg.Connection, name: str, traces: int | None = 300) -> Project:
    """A project with data to export (devstack's seed) and an owner who may call the API."""
    tenant = new_project(conn, name, user_name=f"{name} owner", role="OWNER")
    if traces:
        seed(conn, tenant.id, traces=traces)
    return tenant


@dataclass(frozen=True)
class Template:
    """A migrated database each test copies; the tenants exist, with the same ids, in every copy."""

    server: LocalPostgres
    name: str
    small: Project  # a seeded project whose exports take a fraction of a second
    big: Project  # its traces export streams for seconds: long enough to kill it half-way


def postgres_url(server: LocalPostgres, name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


@dataclass
class FaultStack:
    """One deployment's configuration, the processes started from it, and the test's handles on its servers."""

    folder: Path
    redis: LocalRedis
    settings: Settings
    processes: list[CliProcess] = field(default_factory=list)
    servers: list[ServerThread] = field(default_factory=list)
    gates: list[StreamGate] = field(default_factory=list)

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

    def stream_gate(self) -> StreamGate:
        """Puts a StreamGate between Postgres and the processes started from now on (see tests/support)."""
        gate = StreamGate(self.settings.DATABASE_URL)
        self.gates.append(gate)
        self.configure(DATABASE_URL=gate.url)
        return gate

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
    blocker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
    return blocker


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
        for gate in stack.gates:
            gate.close()
        get_settings.cache_clear()
        shutil.rmtree(storage, ignore_errors=True)
