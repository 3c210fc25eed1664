"""Scheduled exports' runs: RQ's CronScheduler ticks `plan_due_runs`, which plans each due schedule's next
window; `run_scheduled_export` writes one window of every table into the customer's bucket, manifest last.

Windows of ingestion time (`created_at`) are [start, end): each starts where the previous one ended
and ends at most SCHEDULED_EXPORT_MAX_WINDOW_HOURS later and SCHEDULED_EXPORT_LAG_SECONDS before
now, floored to a whole second. A window is planned only once the one before it has COMPLETED; a
FAILED window is tried again at the next due time, so no later window ever leaves a gap behind it.
A retried or repeated run writes the same keys again, and its manifest is written last: a window
whose manifest exists is complete.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import rq
from rq.cron import (
    DEFAULT_CRON_JOB_HISTORY_LIMIT,
    DEFAULT_CRON_JOB_HISTORY_TTL,
    CronJob,
    CronScheduler,
    cron_job_registry,
)
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job

import db
from db import scheduled_exports as schedules
from schemas import BatchExportQuery
from schemas.scheduled_exports import AzureDestination, S3Destination
from schemas.settings import Settings, get_settings
from workers import notifications
from workers.compression import COMPRESSIONS
from workers.destinations import DestinationError, Store, connect
from workers.filters import compile_query
from workers.formats import FORMATS
from workers.outcome import describe_failure, one_attempt_at_a_time
from workers.queue import GIVEN_UP, QUEUE_NAME, export_queue, job_options
from workers.secret_box import SecretBox
from workers.storage import FileStorage
from workers.stream import Stream, export_params, write_stream

log = logging.getLogger(__name__)

PERIODS = {
    "every_20_minutes": timedelta(minutes=20),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}
# The tables whose rows a `full_history` schedule starts from: where each table's ingestion time lives.
BASE_TABLES = {
    "traces": "traces",
    "observations": "observations",
    "events": "observations",
    "scores": "scores",
    "dataset_run_items": "dataset_run_items",
    "dataset_items": "dataset_items",
    "audit_logs": "audit_logs",
}
_MICROSECOND = timedelta(microseconds=1)
# A run's job is enqueued a moment after its row is written: a QUEUED or PROCESSING run this old without
# a job in Redis lost it (a Redis restart, or Redis down at planning) and is enqueued again. A run
# whose job exists is left alone, however long it runs.
LOST_RUN_GRACE_SECONDS = 30


def stamp(moment: datetime) -> str:
    """A window boundary in object keys: ISO 8601's basic form in UTC, which sorts as time does."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def window_folder(window_start: datetime, window_end: datetime) -> str:
    return f"{stamp(window_start)}_{stamp(window_end)}"


def file_key(schedule: dict[str, Any], table: str, window_start: datetime, window_end: datetime, n: int = 0) -> str:
    """A table's file of a window, relative to the destination's prefix."""
    fmt = FORMATS[schedule["format"]]
    compression = COMPRESSIONS[schedule["compression"] if fmt.text else "none"]
    return f"{table}/{window_folder(window_start, window_end)}/part-{n}.{compression.extension(fmt.extension)}"


def manifest_key(window_start: datetime, window_end: datetime) -> str:
    return f"manifests/{window_folder(window_start, window_end)}.json"


def destination_of(schedule: dict[str, Any]) -> S3Destination | AzureDestination:
    stored = schedule["destination"]
    return S3Destination(**stored) if stored["type"] == "s3" else AzureDestination(**stored)


def open_destination(settings: Settings, schedule: dict[str, Any]) -> Store:
    """The schedule's destination, connected with its unsealed secret."""
    secret = SecretBox.from_settings(settings).open(schedule["secret"], schedule["id"])
    return connect(destination_of(schedule), secret)


# --- planning ------------------------------------------------------------------------------------------


def run_job_id(run_id: str) -> str:
    return f"scheduled-run-{run_id}"


def enqueue_run(connection: redis.Redis, run: dict[str, Any], settings: Settings, project_id: str) -> bool:
    """Enqueues the run's job (unique by the run's id); False when it is queued or running already.

    A FAILED run's old job is dropped first, so the window is tried again under the same job id."""
    queue = export_queue(connection)
    if run["status"] == "QUEUED":
        try:
            old = Job.fetch(run_job_id(run["id"]), connection=connection, serializer=queue.serializer)
        except NoSuchJobError:
            old = None
        if old is not None and old.get_status() in GIVEN_UP:
            old.delete()
    try:
        queue.enqueue(
            "workers.scheduled.run_scheduled_export",
            run["id"],
            job_id=run_job_id(run["id"]),
            unique=True,
            description=f"scheduled export run {run['id']}",
            meta={"projectId": project_id, "scheduledExportId": run["scheduled_export_id"]},
            **job_options(settings, on_failure=on_run_job_failure),
        )
    except DuplicateJobError:
        return False
    return True


def origin(conn: db.Connection, schedule: dict[str, Any]) -> datetime:
    """Where the first window starts."""
    if schedule["start_mode"] == "from_date":
        return schedule["start_date"]
    created_day = schedule["created_at"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if schedule["start_mode"] == "from_today":
        return created_day
    earliest = []
    for table in sorted({BASE_TABLES[t] for t in schedule["tables"]}):
        sql = f"SELECT min(created_at) AS first FROM {table} WHERE project_id = %s"  # a fixed table name
        first = db.one(conn.execute(sql, (schedule["project_id"],)).fetchone())["first"]
        if first is not None:
            earliest.append(first)
    if not earliest:
        return created_day
    return min(earliest).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_window(settings: Settings, start: datetime, now: datetime, period: timedelta) -> datetime | None:
    """The end of the window that starts at `start`, or None when no whole second of it is over yet.

    At most SCHEDULED_EXPORT_MAX_WINDOW_HOURS long (or one period, if that is longer)."""
    longest = max(timedelta(hours=settings.SCHEDULED_EXPORT_MAX_WINDOW_HOURS), period)
    end = min(start + longest, now - lag(settings))
    end = end.replace(microsecond=0)
    return end if end > start else None


def lag(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.SCHEDULED_EXPORT_LAG_SECONDS)


def plan_next(
    settings: Settings, conn: db.Connection, schedule: dict[str, Any], now: datetime, *, at_once: bool = False
) -> dict[str, Any] | None:
    """The run that should be running for `schedule` now (to enqueue), planning the next window if due.

    Inside the caller's transaction, with the schedule's row locked. `at_once` (runNow): the next
    window ends now (less the lag), whatever the schedule says."""
    latest = schedules.latest_run(conn, schedule["id"])
    if latest is not None and latest["status"] in ("QUEUED", "PROCESSING"):
        return latest
    if latest is not None and latest["status"] == "FAILED":
        schedules.requeue_run(conn, latest["id"])
        return {**latest, "status": "QUEUED"}
    start = latest["window_end"] if latest is not None else origin(conn, schedule)
    period = PERIODS[schedule["schedule"]]
    end = next_window(settings, start, now, period)
    if end is None:
        schedules.set_next_sync(conn, schedule["id"], start + lag(settings) + (timedelta(0) if at_once else period))
        return None
    if not at_once and end - start < period:
        # Caught up: the next window waits until a whole period of rows is in.
        schedules.set_next_sync(conn, schedule["id"], start + period + lag(settings))
        return None
    run = schedules.insert_run(conn, schedule["id"], start, end, len(schedule["tables"]))
    schedules.set_next_sync(conn, schedule["id"], end + period + lag(settings))
    return run


def plan_due_runs() -> int:
    """RQ's CronScheduler job: plans and enqueues the runs of every due schedule; returns how many it enqueued.

    Any number of schedulers may tick at once: each due schedule is locked by one of them (SKIP LOCKED),
    and a window already planned is not planned again."""
    settings = get_settings()
    job = rq.get_current_job()
    connection = job.connection if job is not None else redis.Redis.from_url(settings.REDIS_URL)
    enqueued = 0
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        now = datetime.now(UTC)
        with conn.transaction():
            planned = [(s, plan_next(settings, conn, s, now)) for s in schedules.due(conn, now)]
        for schedule, run in planned:
            if run is not None and enqueue_run(connection, run, settings, schedule["project_id"]):
                log.info("scheduled export %s: run %s of its window enqueued", schedule["id"], run["id"])
                enqueued += 1
        # Runs whose job Redis lost (it restarted, or was down when the run was planned): enqueued again.
        # The job id is the run's, so a job that still exists is never doubled.
        for run in schedules.unfinished_runs(conn, LOST_RUN_GRACE_SECONDS):
            missing = not Job.exists(run_job_id(run["id"]), connection=connection)
            if missing and enqueue_run(connection, run, settings, run["project_id"]):
                log.warning("scheduled export run %s had no job; enqueued again", run["id"])
                enqueued += 1
    return enqueued


def run_now(settings: Settings, connection: redis.Redis, scheduled_export_id: str) -> dict[str, Any] | None:
    """scheduledExport.runNow: the run in progress, or a new one of the window up to now; None if none is due."""
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        with conn.transaction():
            schedule = schedules.load(conn, scheduled_export_id, lock=True)
            if schedule is None:
                return None
            run = plan_next(settings, conn, schedule, datetime.now(UTC), at_once=True)
        if run is not None:
            enqueue_run(connection, run, settings, schedule["project_id"])
            run = schedules.load_run(conn, run["id"])
    return run


# --- a run ---------------------------------------------------------------------------------------------


def run_scheduled_export(run_id: str) -> None:
    """The RQ job: every table's rows of the run's window into its objects, then the manifest."""
    settings = get_settings()
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        one_attempt_at_a_time(conn, f"scheduled-run/{run_id}")
        planned = schedules.load_run(conn, run_id)
        schedule = schedules.load(conn, planned["scheduled_export_id"]) if planned is not None else None
        if schedule is not None and not schedule["enabled"]:
            # Disabled meanwhile: nothing is written; the run waits, QUEUED, until the schedule is enabled again.
            log.info("scheduled export %s is disabled: run %s waits", schedule["id"], run_id)
            return
        run = schedules.start_run(conn, run_id) if schedule is not None else None
        if run is None or schedule is None:
            log.info("scheduled export run %s has ended or its schedule is gone: nothing to do", run_id)
            return
        schedules.reset_files(conn, run_id)
        try:
            store = open_destination(settings, schedule)
            files = [_write_table(settings, conn, schedule, run, table, store) for table in schedule["tables"]]
            _write_manifest(schedule, run, files, store)
        except DestinationError as exc:
            if exc.refused:
                _disable(settings, conn, schedule, run, exc.message)
                return
            _attempt_failed(settings, conn, schedule, run, exc.message, exc)
        except Exception as exc:
            _attempt_failed(settings, conn, schedule, run, describe_failure(exc, settings), exc)
        schedules.complete_run(conn, run_id)
        schedules.note_schedule_error(conn, schedule["id"], None)
        log.info(
            "scheduled export %s: window %s exported (%d files)",
            schedule["id"],
            window_folder(run["window_start"], run["window_end"]),
            len(files),
        )
        # A schedule behind (a backfill, or after downtime) goes on with its next window at once.
        with conn.transaction():
            locked = schedules.load(conn, schedule["id"], lock=True)
            following = plan_next(settings, conn, locked, datetime.now(UTC)) if locked and locked["enabled"] else None
        job = rq.get_current_job()
        if following is not None and job is not None:
            enqueue_run(job.connection, following, settings, schedule["project_id"])


def _write_table(
    settings: Settings, conn: db.Connection, schedule: dict[str, Any], run: dict[str, Any], table: str, store: Store
) -> dict[str, Any]:
    """One table's rows of the window, written to a local file and uploaded under its key."""
    columns = (schedule["columns"] or {}).get(table)
    query = BatchExportQuery(tableName=table, filter=None, orderBy=None)  # type: ignore[arg-type]
    compiled = compile_query(query, columns).in_window(run["window_start"])
    fmt = FORMATS[schedule["format"]]
    compression = COMPRESSIONS[schedule["compression"] if fmt.text else "none"]
    # The window's end is the cut-off every source applies (created_at <= cutoff): the last microsecond before it.
    export = {
        "id": run["id"],
        "project_id": schedule["project_id"],
        "created_at": run["window_end"] - _MICROSECOND,
        "compression": schedule["compression"],
        "format": schedule["format"],
    }
    params = export_params(export, compiled)

    def still_running(progress: db.Connection, rows: int, total: int | None) -> bool:
        found = progress.execute("SELECT status FROM scheduled_export_runs WHERE id = %s", (run["id"],)).fetchone()
        return found is not None and found["status"] == "PROCESSING"

    stream = Stream(compiled, params, limit=None, framed=True, scores=None, record_progress=still_running, count=False)
    key = file_key(schedule, table, run["window_start"], run["window_end"])
    with tempfile.TemporaryDirectory(prefix="bx-scheduled-") as folder:
        local = FileStorage(Path(folder))
        written = write_stream(settings, export, stream, fmt, compression, local, key)
        store.upload(key, local.path(key))
    file = {
        "table": table,
        "key": store.full_key(key),
        "rows": written.rows,
        "bytes": written.file_bytes,
        "sha256": written.sha256,
    }
    schedules.record_file(conn, run["id"], file)
    return file


def _write_manifest(schedule: dict[str, Any], run: dict[str, Any], files: list[dict[str, Any]], store: Store) -> None:
    """The run's commit point: a window whose manifest exists has every file the manifest lists."""
    manifest = {
        "scheduledExportId": schedule["id"],
        "windowStart": run["window_start"].astimezone(UTC).isoformat(),
        "windowEnd": run["window_end"].astimezone(UTC).isoformat(),
        "format": schedule["format"],
        "compression": schedule["compression"],
        "files": files,
    }
    body = json.dumps(manifest, indent=2).encode() + b"\n"
    with tempfile.NamedTemporaryFile(prefix="bx-manifest-") as handle:
        handle.write(body)
        handle.flush()
        store.upload(manifest_key(run["window_start"], run["window_end"]), Path(handle.name))


def _attempt_failed(
    settings: Settings,
    conn: db.Connection,
    schedule: dict[str, Any],
    run: dict[str, Any],
    message: str,
    exc: Exception,
) -> None:
    """A retry note while RQ retries; after the last attempt FAILED, and the creator emailed (once per cooldown)."""
    job = rq.get_current_job()
    final = job is None or not job.retries_left
    log.warning(
        "scheduled export %s run %s failed%s: %s",
        schedule["id"],
        run["id"],
        "" if final else ", RQ will retry",
        message,
    )
    schedules.note_run_error(conn, run["id"], message, final=final)
    schedules.note_schedule_error(conn, schedule["id"], message)
    if final:
        _email_failure(settings, conn, schedule, run, message)
    raise ScheduledRunFailed(message) from exc


class ScheduledRunFailed(Exception):
    """An attempt at a run failed; the message is the one the runs list shows."""


def _email_failure(
    settings: Settings, conn: db.Connection, schedule: dict[str, Any], run: dict[str, Any], message: str
) -> None:
    user = _creator(conn, schedule)
    cooldown = settings.SCHEDULED_EXPORT_FAILURE_EMAIL_COOLDOWN_HOURS
    if user is None or not schedules.claim_failure_email(conn, schedule["id"], cooldown):
        return
    window = window_folder(run["window_start"], run["window_end"])
    notifications.send(
        notifications.scheduled_failed_message(
            to=user["email"], schedule=schedule, window=window, reason=message, settings=settings
        ),
        settings,
    )


def _disable(
    settings: Settings, conn: db.Connection, schedule: dict[str, Any], run: dict[str, Any], message: str
) -> None:
    """The destination refused the credentials: retrying cannot help, so the schedule stops until a user fixes it."""
    reason = f"The destination refused the credentials: {message}"
    log.warning("scheduled export %s disabled: %s", schedule["id"], reason)
    schedules.note_run_error(conn, run["id"], reason, final=True)
    if schedules.disable(conn, schedule["id"], reason):
        user = _creator(conn, schedule)
        if user is not None:
            notifications.send(
                notifications.scheduled_disabled_message(
                    to=user["email"], schedule=schedule, reason=reason, settings=settings
                ),
                settings,
            )


def _creator(conn: db.Connection, schedule: dict[str, Any]) -> dict[str, Any] | None:
    if schedule["user_id"] is None:
        return None
    user = conn.execute("SELECT email FROM users WHERE id = %s", (schedule["user_id"],)).fetchone()
    return user if user and user["email"] else None


def on_run_job_failure(job: Job, connection: redis.Redis, exc_type: type, exc: BaseException, tb: Any) -> None:
    """RQ's failure hook, also for a job whose work horse was killed or whose worker died: the run must not
    stay PROCESSING, and its error says what happened. RQ calls it before it decides on a retry."""
    if isinstance(exc, ScheduledRunFailed):
        return  # the attempt recorded its own failure
    message = WORKER_DIED if not str(exc) or "Work-horse" in str(exc) else str(exc)
    with db.connect(get_settings().DATABASE_URL, autocommit=True) as conn:
        schedules.note_run_error(conn, job.args[0], message, final=not job.retries_left)


WORKER_DIED = "The worker running this run stopped unexpectedly (it was killed, restarted or ran out of memory)."


# --- the tick: RQ's CronScheduler ---------------------------------------------------------------------


class ExportCronJob(CronJob):
    """RQ's cron job, enqueued on this service's queue: RQ's own enqueues through a Queue with RQ's default
    (pickle) serializer, which the workers, reading JSON jobs, could not load. The rest is RQ's: the job
    history and the cron registry that `rq cron` monitoring reads."""

    def enqueue(self, connection: redis.Redis) -> Job:
        assert self.func is not None, "registered with a function"
        with connection.pipeline() as pipeline:
            job = export_queue(connection).enqueue(
                self.func, args=self.args, kwargs=self.kwargs, **self.job_options, pipeline=pipeline
            )
            assert job.enqueued_at is not None
            pipeline.zadd(self.job_history_key, {job.id: job.enqueued_at.timestamp()})
            pipeline.zremrangebyrank(self.job_history_key, 0, -(DEFAULT_CRON_JOB_HISTORY_LIMIT + 1))
            pipeline.expire(self.job_history_key, DEFAULT_CRON_JOB_HISTORY_TTL)
            cron_job_registry.add(self.name, pipeline, enqueue_timestamp=job.enqueued_at.timestamp())
            pipeline.execute()
        return job


def build_cron_scheduler(connection: redis.Redis, settings: Settings) -> CronScheduler:
    """`batch-export scheduler`: RQ's CronScheduler enqueuing plan_due_runs every SCHEDULED_EXPORT_TICK_SECONDS.

    Run one or several (for availability): every tick is safe to run twice at once."""
    scheduler = CronScheduler(connection=connection, logging_level="INFO")
    registered = scheduler.register(
        plan_due_runs,
        QUEUE_NAME,
        interval=settings.SCHEDULED_EXPORT_TICK_SECONDS,
        job_timeout=max(60, settings.SCHEDULED_EXPORT_TICK_SECONDS * 5),
        # A tick that waited longer than its interval in the queue is superseded by the next one.
        ttl=max(60, settings.SCHEDULED_EXPORT_TICK_SECONDS * 2),
        result_ttl=settings.SCHEDULED_EXPORT_TICK_SECONDS * 10,
    )
    registered.__class__ = ExportCronJob  # the same job, enqueued on the service's JSON queue
    return scheduler
