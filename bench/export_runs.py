"""The two ways rows leave Postgres that the export benchmarks compare.

- `WorkerProcess.run_export`: the real thing. An export row is written as `batchExport.create`
  writes it, enqueued with `workers.queue.enqueue_export`, and run by a `batch-export worker`
  process (RQ forks a work horse per job) into file storage. Timed from the enqueue until the
  row says COMPLETED; the work horse's peak RSS (VmHWM) is polled from /proc while it runs.
- `copy_to_file`: the physical baseline. The same COPY statement the job runs (built by
  `workers.formats.FORMATS[fmt].copy_statement` from the same compiled query, limit and cut-off),
  executed by psql, which writes COPY's output into a file: Postgres renders, libpq moves bytes.
- `psycopg_copy_to_file`: the same statement through psycopg's copy with a plain read/write loop,
  to show what Python costs per row before any export logic.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from harness import REPO, Caller, children, peak_rss_kib, stop

from db import batch_exports
from schemas import FINAL_STATUSES, BatchExportQuery, default_compression
from schemas.settings import Settings
from workers.filters import compile_query
from workers.formats import FORMATS
from workers.queue import enqueue_export
from workers.stream import with_score_columns


@dataclass
class JobRun:
    seconds: float
    rows: int
    bytes: int
    peak_rss_kib: int
    log: str


def export_settings(database_url: str, redis_url: str, storage: Path, row_limit: int) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "EXPORT_STORAGE_URL": storage.resolve().as_uri(),
        "BATCH_EXPORT_ROW_LIMIT": str(row_limit),
        # Exports run one after another here; the cap on active exports is not what is measured.
        "BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT": "1000000",
    }


class WorkerProcess:
    """A `batch-export worker` (the operators' command) with the benchmark's settings, cwd in `folder`."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.settings = Settings(**env)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "worker.log"
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "batch-export"), "worker"],
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ready once RQ has registered the worker in Redis.
        deadline = time.monotonic() + 60
        while not self.redis.keys("rq:worker:*"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)
        self.redis.close()

    def run_export(
        self, conn: psycopg.Connection, caller: Caller, table: str, fmt: str, compression: str | None = None
    ) -> tuple[JobRun, dict[str, Any]]:
        """One export through the worker; returns its run and its batch_exports row."""
        assert self.process is not None
        query = {"tableName": table, "filter": [], "orderBy": None}
        export_id = conn.execute(
            batch_exports.INSERT_SQL,
            batch_exports.insert_params(
                project_id=caller.project_id,
                user_id=caller.user_id,
                name=f"bench {table} {fmt}",
                format=fmt,
                query=query,
                compression=compression or default_compression(fmt),  # as `create` does
            ),
        ).fetchone()["id"]
        conn.commit()
        before = set(children(self.process.pid))
        peak = _PeakRss(self.process.pid, before)
        peak.start()
        started = time.monotonic()
        enqueue_export(self.redis, export_id, self.settings)
        try:
            while True:
                status = conn.execute("SELECT status FROM batch_exports WHERE id = %s", (export_id,)).fetchone()[
                    "status"
                ]
                conn.commit()
                if status in FINAL_STATUSES:
                    break
                if self.process.poll() is not None:
                    raise RuntimeError(f"the worker exited; see {self.log_path}")
                time.sleep(0.05)
            seconds = time.monotonic() - started
        finally:
            peak.stop()
        row = batch_exports.load(conn, export_id)
        conn.commit()
        if row["status"] != "COMPLETED":
            raise RuntimeError(f"export {export_id} ended {row['status']}: {row['log']}")
        path = Path(self.env["EXPORT_STORAGE_URL"].removeprefix("file://")) / row["object_key"]
        run = JobRun(seconds, row["rows_exported"], path.stat().st_size, peak.kib, row["log"] or "")
        path.unlink()  # the disk holds one export at a time
        return run, row


class _PeakRss(threading.Thread):
    """Polls the worker's new children (the work horse) for their VmHWM until stopped."""

    def __init__(self, worker_pid: int, known: set[int]) -> None:
        super().__init__(daemon=True)
        self.worker_pid, self.known = worker_pid, known
        self.kib = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            for pid in children(self.worker_pid):
                if pid not in self.known:
                    self.kib = max(self.kib, peak_rss_kib(pid) or 0)
            self._stopping.wait(0.02)

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def copy_statement_sql(conn: psycopg.Connection, export: dict[str, Any], limit: int) -> str:
    """The job's COPY statement for `export` as one SQL text, parameters inlined (what psql runs)."""
    compiled = compile_query(BatchExportQuery.model_validate(export["query"]))
    params = {**compiled.params, "project_id": export["project_id"], "cutoff": export["created_at"]}
    # With the score columns the job adds, so both sides export the same columns.
    compiled = with_score_columns(conn, compiled, params)
    statement = FORMATS[export["format"]].copy_statement(compiled, limit + 1)
    return psycopg.ClientCursor(conn).mogrify(statement, params)


def copy_to_file(database_url: str, statement: str, path: Path) -> tuple[float, int]:
    """psql runs the COPY and writes its output into `path`; (seconds, bytes)."""
    with path.open("wb") as out:
        started = time.monotonic()
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", statement], stdout=out, check=True
        )
        seconds = time.monotonic() - started
    size = path.stat().st_size
    path.unlink()
    return seconds, size


def psycopg_copy_to_file(database_url: str, statement: str, path: Path) -> tuple[float, int]:
    """psycopg runs the COPY; a plain read/write loop writes it into `path`; (seconds, bytes)."""
    started = time.monotonic()
    with psycopg.connect(database_url) as conn, conn.cursor() as cur, path.open("wb") as out:
        with cur.copy(statement) as copy:
            while data := copy.read():
                out.write(data)
    seconds = time.monotonic() - started
    size = path.stat().st_size
    path.unlink()
    return seconds, size
