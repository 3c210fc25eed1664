"""What the scheduled-export tests run: a project, its own Redis, the API, a worker and RQ's cron scheduler as
processes, an S3 bucket on moto, and readers of the objects and manifests the runs wrote there."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from devstack.servers import free_port
from tests.support.destinations import Destination
from tests.support.processes import ApiProcess, CliProcess, WorkerProcess, wait_for
from tests.support.rpc_client import RpcClient
from tests.support.servers import running_redis
from tests.support.world import TEST_SECRET_KEY, Project, new_project
from workers.destinations import Store, connect

# Seconds, so that a window can end just after the rows a test inserts: the runs export rows ingested
# up to 1 s before they start, one window holds at most an hour, and the scheduler ticks every second.
PROCESS_SETTINGS = {
    "SCHEDULED_EXPORT_LAG_SECONDS": "1",
    "SCHEDULED_EXPORT_MAX_WINDOW_HOURS": "1",
    "SCHEDULED_EXPORT_TICK_SECONDS": "1",
    "BATCH_EXPORT_JOB_RETRY_DELAYS": "1",
    # The suite shares one database: a short grace would make this world's worker sweep up the
    # exports other tests left QUEUED, run them and email about them. A run whose job is lost is
    # enqueued again by the planner as soon as its schedule is due.
    "BATCH_EXPORT_SWEEP_GRACE_SECONDS": "1000000000",
}
SETTLE = 120


@dataclass
class ScheduledWorld:
    conn: psycopg.Connection
    project: Project
    token: str
    api: ApiProcess
    worker: WorkerProcess
    env: dict[str, str]
    folder: Path
    target: Destination
    redis_url: str
    processes: list[CliProcess] = field(default_factory=list)

    @property
    def client(self) -> RpcClient:
        return RpcClient(self.api.url)

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(method, {"projectId": self.project.id, **params}, token=self.token)

    def result(self, method: str, params: dict[str, Any]) -> Any:
        reply = self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    def destination(self, **overrides: Any) -> dict[str, Any]:
        """The target as scheduledExport.create takes it, its secret included."""
        model = self.target.model
        secret_field = "secretAccessKey" if model.type == "s3" else "accountKey"
        return {**model.model_dump(mode="json", exclude_none=True), secret_field: self.target.secret, **overrides}

    def create(self, **overrides: Any) -> dict[str, Any]:
        params = {
            "name": "hourly lake",
            "destination": self.destination(),
            "tables": ["traces", "scores"],
            "format": "JSONL",
            "compression": "gzip",
            "schedule": "every_20_minutes",
            "startFrom": {"mode": "from_date", "date": (datetime.now(UTC) - timedelta(minutes=150)).isoformat()},
            **overrides,
        }
        return self.result("scheduledExport.create", params)

    def start(self, name: str, argv: list[str]) -> CliProcess:
        process = CliProcess(name, argv, self.env, self.folder).start()
        self.processes.append(process)
        return process

    def start_worker(self, name: str = "worker-2") -> WorkerProcess:
        worker = WorkerProcess(name, self.env, self.folder).start()
        self.processes.append(worker)
        return worker

    # --- what the runs did --------------------------------------------------------------------------

    def runs(self, scheduled_export_id: str) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT * FROM scheduled_export_runs WHERE scheduled_export_id = %s ORDER BY window_start",
            (scheduled_export_id,),
        ).fetchall()

    def wait_runs(self, scheduled_export_id: str, completed: int, timeout: float = SETTLE) -> list[dict[str, Any]]:
        """The runs, once at least `completed` of them have COMPLETED and none is active."""

        def done() -> list[dict[str, Any]] | None:
            runs = self.runs(scheduled_export_id)
            finished = [r for r in runs if r["status"] == "COMPLETED"]
            active = [r for r in runs if r["status"] in ("QUEUED", "PROCESSING")]
            return runs if len(finished) >= completed and not active else None

        return wait_for(done, timeout, f"{completed} completed runs", *self.processes)

    @property
    def store(self) -> Store:
        return connect(self.target.model, self.target.secret)

    def keys(self, under: str = "") -> list[str]:
        """The keys the runs wrote, relative to the destination's prefix."""
        return self.store.keys(under)

    def read(self, key: str) -> bytes:
        """An object by its key relative to the prefix, or by its full key (as manifests list them)."""
        prefix = self.target.model.prefix
        return self.store.read(key.removeprefix(f"{prefix}/") if prefix else key)

    def manifests(self) -> list[dict[str, Any]]:
        return [json.loads(self.read(k)) for k in self.keys("manifests/")]

    def exported_ids(self, table: str) -> Counter[str]:
        """How often each row id appears across every file of `table` the runs wrote."""
        seen: Counter[str] = Counter()
        for key in self.keys(f"{table}/"):
            for line in gzip.decompress(self.read(key)).splitlines():
                seen[json.loads(line)["id"]] += 1
        return seen

    def table_ids(self, table: str) -> set[str]:
        rows = self.conn.execute(f"SELECT id FROM {table} WHERE project_id = %s", (self.project.id,)).fetchall()
        return {r["id"] for r in rows}


def insert_traces(conn: psycopg.Connection, project_id: str, created: list[datetime | None]) -> list[str]:
    """Traces ingested at these times (None: now(), as ingestion writes them), each with one score."""
    ids = []
    for at in created:
        trace_id = f"trace-{uuid.uuid4().hex[:12]}"
        conn.execute(
            "INSERT INTO traces (id, project_id, timestamp, name, created_at) VALUES (%s, %s, now(), 'arrived',"
            " coalesce(%s, now()))",
            (trace_id, project_id, at),
        )
        conn.execute(
            "INSERT INTO scores (id, project_id, trace_id, name, value, data_type, source, timestamp, created_at)"
            " VALUES (%s, %s, %s, 'quality', 1, 'NUMERIC', 'API', now(), coalesce(%s, now()))",
            (f"score-{uuid.uuid4().hex[:12]}", project_id, trace_id, at),
        )
        ids.append(trace_id)
    return ids


@contextmanager
def scheduled_world(
    conn: psycopg.Connection, database_url: str, target: Destination, folder: Path, **env: str
) -> Iterator[ScheduledWorld]:
    """The processes a scheduled export needs, on a Redis of their own; all stopped at the end, even on failure.

    `target`: the customer's bucket or container the schedules write into; `env`: settings for the processes."""
    # The suite shares one database: a schedule another test left enabled would be planned by this
    # world's scheduler and take its worker. Only this world's schedules run here.
    conn.execute("UPDATE scheduled_exports SET enabled = false, next_sync_at = NULL WHERE enabled")
    project = new_project(conn, "scheduled exports")
    token = project.member("OWNER", name="Sam Scheduler")
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis("bx-scheduled-redis-"))
        port = free_port()
        settings = {
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "EXPORT_STORAGE_URL": (folder / "exports").as_uri(),
            "SECRET_KEY": TEST_SECRET_KEY,
            "SMTP_URL": "",
            "OUTBOX_DIR": str(folder / "outbox"),
            **PROCESS_SETTINGS,
            **env,
        }
        api = ApiProcess("api", settings, folder, port)
        worker = WorkerProcess("worker", settings, folder)
        scheduler = CliProcess("scheduler", ["scheduler"], settings, folder)
        world = ScheduledWorld(conn, project, token, api, worker, settings, folder, target, redis.url)
        world.processes += [api, worker, scheduler]

        def stop_all() -> None:
            for process in reversed(world.processes):
                process.stop(timeout=30)

        stack.callback(stop_all)
        api.start()
        worker.start()
        scheduler.start()
        yield world
