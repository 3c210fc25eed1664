"""What a worker counts about the exports it runs, recorded when a job's work horse has ended, and its /metrics.

Jobs run in a forked work horse, whose counters would die with it. So the worker's own process
records each job once the horse has ended (`record_job_end`, called by ExportWorker.execute_job), from
what the job left in Redis (its RQ status) and in Postgres (the export row): nothing depends on the
horse having lived to the end of its job.

An export is counted once, when it finishes, by the job that ends it: its own job for an export written
in one stream, the assembly job for one written in parts (part jobs count as jobs only), and only on the
job's last attempt (an attempt RQ retries is not the end). CANCELLED is counted by the API, where
the cancel happens (a queued export's job is deleted then, so no worker would see it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.registry import Collector
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus

import db
from db import batch_export_parts, batch_exports

log = logging.getLogger(__name__)

# Seconds from create to finish, as a user waits: a small export takes seconds, a huge one hours.
DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
# A worker waits this long for Postgres to record a job (between two jobs: never long).
RECORD_CONNECT_TIMEOUT = 5
ROWS_PER_SECOND_BUCKETS = (100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)

# The jobs of an export, by the function RQ runs (workers/queue.py enqueues them by these names).
JOB_KINDS = {
    "workers.batch_export.run_batch_export": "export",
    "workers.export_parts.run_export_part": "part",
    "workers.export_parts.assemble_export": "assembly",
}
# An attempt's end as RQ recorded it: `retried` when RQ will run the job again.
_OUTCOMES = {
    JobStatus.FINISHED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "stopped",
    JobStatus.CANCELED: "cancelled",
    JobStatus.SCHEDULED: "retried",
    JobStatus.QUEUED: "retried",
}
_LAST_ATTEMPT = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def exports_finished_counter(registry: CollectorRegistry | None) -> Counter:
    """batch_export_exports_finished_total: the one definition the workers (COMPLETED, FAILED) and the API
    (CANCELLED) both count into."""
    return Counter(
        "batch_export_exports_finished",
        "Exports that reached a final status (COMPLETED and FAILED counted by workers, CANCELLED by the API)",
        ["status", "table", "format"],
        registry=registry,
    )


# The worker's metrics live in a registry of their own: the API imports this module (for the counter
# above) and must not serve worker metrics that never move there.
WORKER_REGISTRY = CollectorRegistry()
EXPORTS_FINISHED = exports_finished_counter(WORKER_REGISTRY)
EXPORT_DURATION = Histogram(
    "batch_export_export_duration_seconds",
    "Seconds from an export's create to its completion (COMPLETED exports only)",
    ["table", "format"],
    buckets=DURATION_BUCKETS,
    registry=WORKER_REGISTRY,
)
EXPORT_ROWS_PER_SECOND = Histogram(
    "batch_export_export_rows_per_second",
    "Rows written per second while a COMPLETED export was being written (its last attempt; in parts: from its first part's start)",
    ["table", "format"],
    buckets=ROWS_PER_SECOND_BUCKETS,
    registry=WORKER_REGISTRY,
)
ROWS_EXPORTED = Counter(
    "batch_export_exported_rows",
    "Rows in the files of COMPLETED exports",
    ["table", "format"],
    registry=WORKER_REGISTRY,
)
BYTES_EXPORTED = Counter(
    "batch_export_exported_bytes",
    "Bytes of the files of COMPLETED exports, as stored (compressed when compressed)",
    ["table", "format"],
    registry=WORKER_REGISTRY,
)
JOBS = Counter(
    "batch_export_worker_jobs",
    "Attempts at jobs this worker ran, by kind (export, part, assembly) and how RQ recorded their end",
    ["kind", "outcome"],
    registry=WORKER_REGISTRY,
)


def record_job_end(job: Job, seconds: float, database_url: str) -> None:
    """Counts the attempt at `job` that just ended (after `seconds`), and the export if this ended it.

    Reads Redis and Postgres; raises what they raise (the caller logs it: a metric is never worth
    failing a job or stopping a worker for)."""
    kind = JOB_KINDS.get(job.func_name or "")
    if kind is None:
        return
    try:
        status = job.get_status(refresh=True)
    except InvalidJobOperation:  # gone from Redis already (deleted, or it kept no result)
        return
    JOBS.labels(kind, _OUTCOMES.get(status, str(status))).inc()
    if kind == "part" or status not in _LAST_ATTEMPT:
        return
    export_id = job.args[0]
    with db.connect(database_url, autocommit=True, connect_timeout=RECORD_CONNECT_TIMEOUT) as conn:
        export = batch_exports.load(conn, export_id)
        if export is None or export["status"] not in ("COMPLETED", "FAILED"):
            return
        # The export's own job ends an export written in one stream; the assembly job one written in parts.
        if (export["plan"] is not None) != (kind == "assembly"):
            return
        writing_seconds = seconds
        if kind == "assembly" and export["status"] == "COMPLETED":
            first_start = batch_export_parts.first_started_at(conn, export_id)
            writing_seconds = (export["finished_at"] - first_start).total_seconds() if first_start else 0.0
    count_finished_export(export, writing_seconds)


def count_finished_export(export: dict[str, Any], writing_seconds: float) -> None:
    table, fmt = export["query"]["tableName"], export["format"]
    EXPORTS_FINISHED.labels(export["status"], table, fmt).inc()
    if export["status"] != "COMPLETED":
        return
    EXPORT_DURATION.labels(table, fmt).observe((export["finished_at"] - export["created_at"]).total_seconds())
    rows = export["rows_exported"]
    if writing_seconds > 0:
        EXPORT_ROWS_PER_SECOND.labels(table, fmt).observe(rows / writing_seconds)
    ROWS_EXPORTED.labels(table, fmt).inc(rows)
    BYTES_EXPORTED.labels(table, fmt).inc(export["file_bytes"] or 0)


class Collectors(Collector):
    """Several collectors served as one (what prometheus_client's exposition needs is `collect()`)."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Any]:
        for collector in self.collectors:
            yield from collector.collect()


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> None:
    """GET /metrics on `port`, from a thread of the worker's own process: the process's own metrics
    (CPU, memory, file descriptors) and the worker's. Raises OSError when the port is taken."""
    start_http_server(port, addr=host, registry=Collectors(REGISTRY, WORKER_REGISTRY))
