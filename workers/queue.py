"""The RQ side of an export: the queue, enqueueing one job per export, the worker, and the sweep.

Postgres is the source of truth (an export row is written before any job exists, like an outbox);
Redis only carries the work. So a lost enqueue is repaired by the sweep, and a duplicate enqueue is
refused by RQ itself because the job id is the export id.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from rq import Callback, Queue, Retry, Worker
from rq.exceptions import AbandonedJobError, DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

import db
from db import batch_exports
from schemas.settings import Settings, get_settings
from workers.batch_export import run_batch_export
from workers.maintenance import delete_expired

log = logging.getLogger(__name__)

QUEUE_NAME = "batch-exports"
# A worker reports a heartbeat this often while a job runs ...
JOB_MONITORING_INTERVAL = 5
# ... and its job counts as abandoned this long after the last one, so a SIGKILLed worker's export is
# retried within a minute instead of RQ's default of ninety seconds plus a ten-minute cleanup cycle.
HEARTBEAT_GRACE_SECONDS = 20
MAINTENANCE_INTERVAL = 15
# An idle worker blocks on the queue for worker_ttl - 15 s between maintenance checks; RQ's default
# (420 s) would leave a dead worker's job unnoticed for minutes.
WORKER_TTL = 35


def export_queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def enqueue_export(connection: redis.Redis, export_id: str, settings: Settings) -> bool:
    """Enqueues the export's job; True if enqueued now, False if a job with its id already existed.

    Raises redis.RedisError when Redis cannot be reached: the caller decides whether that is fatal.
    """
    try:
        export_queue(connection).enqueue(
            run_batch_export,
            export_id,
            job_id=export_id,
            unique=True,
            description=f"batch export {export_id}",
            retry=Retry(max=settings.BATCH_EXPORT_JOB_RETRIES, interval=retry_delays(settings))
            if settings.BATCH_EXPORT_JOB_RETRIES
            else None,
            job_timeout=settings.BATCH_EXPORT_JOB_TIMEOUT_SECONDS,
            result_ttl=int(timedelta(days=1).total_seconds()),
            failure_ttl=int(timedelta(days=7).total_seconds()),
            on_failure=Callback(on_export_job_failure),
        )
    except DuplicateJobError:
        return False
    return True


def retry_delays(settings: Settings) -> list[int]:
    """One delay per retry, the configured ones first and the last repeated.

    RQ picks the delay of the retry with `retries_left` to go as `intervals[len - retries_left]`, so a
    list shorter or longer than the number of retries would start at the wrong end of the backoff.
    """
    configured = settings.BATCH_EXPORT_JOB_RETRY_DELAYS
    return [configured[min(i, len(configured) - 1)] for i in range(settings.BATCH_EXPORT_JOB_RETRIES)]


def on_export_job_failure(job: Job, connection: redis.Redis, exc_type: type, exc: BaseException, tb: Any) -> None:
    """RQ's failure hook, also run for a job whose worker died: the export row must not stay PROCESSING.

    RQ calls it before deciding on a retry, so `retries_left` still counts the coming attempt.
    """
    if isinstance(exc, AbandonedJobError):
        _record_attempt_failure(job, WORKER_DIED)
    else:
        _record_attempt_failure(job, str(exc) or exc_type.__name__)


WORKER_DIED = "The worker running this export stopped unexpectedly (it was killed, restarted or ran out of memory)."


def _record_attempt_failure(job: Job, message: str) -> None:
    """The attempt's end in the export row: a retry note while RQ retries, FAILED after the last attempt."""
    with db.connect(get_settings().DATABASE_URL, autocommit=True) as conn:
        if job.retries_left:
            batch_exports.note_retry(
                conn, job.id, f"{message} Retrying automatically ({job.retries_left} attempts left)."
            )
        else:
            batch_exports.mark_failed(conn, job.id, message)


class ExportWorker(Worker):
    """RQ's worker, with a short heartbeat lease so a dead worker's export is noticed and retried quickly."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_monitoring_interval + HEARTBEAT_GRACE_SECONDS

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
        # The work horse died under a live worker (the OOM killer's usual victim). RQ retries or fails
        # the job next, but without the job's failure callback, so the export row is updated here.
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            _record_attempt_failure(job, WORKER_DIED)
        except Exception:
            self.log.exception("could not record the death of export %s's work horse", job.id)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        # The worker is the one process that always runs, so it also repairs lost enqueues.
        # A failing sweep is logged and tried again next cycle; it must never stop the worker.
        try:
            sweep(get_settings(), self.connection)
        except Exception:
            self.log.exception("batch-export sweep failed; will retry at the next maintenance cycle")
        try:
            delete_expired(get_settings())
        except Exception:
            self.log.exception("deleting expired export files failed; will retry at the next maintenance cycle")


def build_worker(connection: redis.Redis, *, name: str | None = None) -> ExportWorker:
    return ExportWorker(
        [export_queue(connection)],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )


def sweep(settings: Settings, connection: redis.Redis | None = None) -> list[str]:
    """Repairs what Redis lost or a dead worker left behind; returns the ids of the exports enqueued now.

    1. Jobs whose worker died (its heartbeat lease ran out) are retried or failed, as a worker's own
       maintenance would do: so `batch-export sweep` alone bounds how long an export stays PROCESSING,
       even when no worker is left running.
    2. Exports still QUEUED after the grace period whose job is missing from Redis (Redis was down
       during `create`, or restarted and lost its data) are enqueued.
    3. Exports PROCESSING whose row has not moved for a heartbeat lease past the grace period (a
       running attempt writes its progress every second) are looked at in Redis: without a job (Redis
       lost it, with a dead attempt or a retry waiting for its turn) they are enqueued, and the new
       attempt takes the export over from zero; with a job RQ has already given up on (its last
       attempt could not record its end, say because Postgres was down) they are marked FAILED.

    Safe to run anywhere, any number of times: the enqueue is unique per export.
    """
    connection = connection or redis.Redis.from_url(settings.REDIS_URL)
    recover_abandoned_jobs(connection)
    grace = settings.BATCH_EXPORT_SWEEP_GRACE_SECONDS
    orphaned = []
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        queued = batch_exports.queued_without_recent_activity(conn, grace)
        stalled = batch_exports.processing_without_recent_activity(
            conn, grace + JOB_MONITORING_INTERVAL + HEARTBEAT_GRACE_SECONDS
        )
        for export_id in stalled:
            status = _job_status(connection, export_id)
            if status is None:
                orphaned.append(export_id)
            elif status in _GIVEN_UP:
                batch_exports.mark_failed(conn, export_id, UNRECORDED_END)
                log.warning(
                    "sweep: export %s was PROCESSING although its job is %s; marked FAILED", export_id, status.value
                )
    enqueued = [export_id for export_id in queued + orphaned if enqueue_export(connection, export_id, settings)]
    if enqueued:
        log.warning("sweep re-enqueued %d export(s) that had no job: %s", len(enqueued), ", ".join(enqueued))
    return enqueued


UNRECORDED_END = (
    "The export's last attempt ended without recording its outcome (the database may have been unreachable)."
    " Create the export again."
)
_GIVEN_UP = (JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED)


def _job_status(connection: redis.Redis, export_id: str) -> JobStatus | None:
    try:
        return Job.fetch(export_id, connection=connection, serializer=JSONSerializer).get_status()
    except NoSuchJobError:
        return None


def recover_abandoned_jobs(connection: redis.Redis) -> None:
    """RQ's own clean-up of jobs whose worker died: each is retried, or failed through its failure callback."""
    queue = export_queue(connection)
    # The lock every RQ worker takes for the same clean-up, so one abandoned job is never retried twice.
    if not queue.acquire_maintenance_lock():
        return
    try:
        StartedJobRegistry(queue=queue).cleanup()
    finally:
        queue.release_maintenance_lock()
