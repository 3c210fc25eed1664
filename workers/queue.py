"""The RQ side of an export: the queue, enqueueing one job per export, the worker, and the sweep.

Postgres is the source of truth (an export row is written before any job exists, like an outbox);
Redis only carries the work. So a lost enqueue is repaired by the sweep, and a duplicate enqueue is
refused by RQ itself because the job id is the export id.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import redis
from rq import Callback, Queue, RateLimit, Retry, Worker, worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import AbandonedJobError, DuplicateJobError, NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

import db
from db import batch_export_parts, batch_exports
from schemas.settings import Settings, get_settings
from workers.logs import log_context
from workers.maintenance import delete_expired, prune_changes
from workers.metrics import record_job_end

log = logging.getLogger(__name__)
T = TypeVar("T")

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
# While Redis cannot be reached a worker tries again after 0.5 s, then twice as long each time up to this:
# an outage of any length costs a ping every few seconds, and the worker resumes within them.
REDIS_RETRY_MAX_DELAY = 5.0
# How long a stopping worker waits for its scheduler process before killing it.
SCHEDULER_STOP_SECONDS = 5.0
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def export_queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def enqueue_export(
    connection: redis.Redis, export_id: str, settings: Settings, *, project_id: str | None = None
) -> bool:
    """Enqueues the export's job; True if enqueued now, False if a job with its id already existed.
    `project_id`, when the caller knows it, goes on the log lines of the worker running the job.

    Raises redis.RedisError when Redis cannot be reached: the caller decides whether that is fatal.
    """
    try:
        export_queue(connection).enqueue(
            "workers.batch_export.run_batch_export",
            export_id,
            job_id=export_id,
            unique=True,
            description=f"batch export {export_id}",
            meta=_job_meta(project_id),
            **_job_options(settings),
        )
    except DuplicateJobError:
        return False
    return True


def part_job_id(export_id: str, part: int) -> str:
    return f"{export_id}-part-{part:05d}"


def assembly_job_id(export_id: str) -> str:
    return f"{export_id}-assemble"


def enqueue_parts(
    connection: redis.Redis, export: dict[str, Any], pending: list[int], parts_total: int, settings: Settings
) -> list[int]:
    """Fans a planned export out: one job per pending part that has none, each waiting for a slot of
    its project's RateLimit, and the assembly job, which RQ starts once every part job has ended
    (failed ones too: the assembly then deletes what the parts wrote). Returns the parts enqueued now.

    RQ refuses `unique` for rate-limited jobs, so a part's job is looked up first; a duplicate that
    slipped through would find the part DONE, or wait for its lock, and do nothing twice.
    """
    queue = export_queue(connection)
    export_id = export["id"]
    limit = RateLimit(f"batch-exports:{export['project_id']}", settings.BATCH_EXPORT_MAX_PARALLEL_PARTS_PER_PROJECT)
    common = _job_options(settings)
    enqueued = []
    for part in pending:
        job_id = part_job_id(export_id, part)
        if Job.exists(job_id, connection=connection):
            continue
        queue.enqueue(
            "workers.export_parts.run_export_part",
            export_id,
            part,
            job_id=job_id,
            description=f"batch export {export_id} part {part + 1} of {parts_total}",
            rate_limit=limit,
            meta=_job_meta(export["project_id"]),
            **common,
        )
        enqueued.append(part)
    assembly = assembly_job_id(export_id)
    if not Job.exists(assembly, connection=connection):
        parts = [part_job_id(export_id, p) for p in range(parts_total)]
        waits_for = [job_id for job_id in parts if Job.exists(job_id, connection=connection)]
        queue.enqueue(
            "workers.export_parts.assemble_export",
            export_id,
            job_id=assembly,
            description=f"batch export {export_id}: joining its {parts_total} parts",
            depends_on=Dependency(jobs=waits_for, allow_failure=True) if waits_for else None,
            meta=_job_meta(export["project_id"]),
            **common,
        )
    return enqueued


def resume_parts(connection: redis.Redis, conn: db.Connection, export: dict[str, Any], settings: Settings) -> list[int]:
    """Enqueues the job of every part of a planned export that is not DONE and has none (and the
    assembly job); returns those parts. Finished parts are never run again."""
    parts = batch_export_parts.parts(conn, export["id"])
    pending = [p["part"] for p in parts if p["status"] != "DONE"]
    return enqueue_parts(connection, export, pending, len(parts), settings)


def _job_meta(project_id: str | None) -> dict[str, Any] | None:
    return {"projectId": project_id} if project_id is not None else None


def job_log_fields(job: Job) -> dict[str, Any]:
    """The ids on every line logged while the job runs: every job of an export takes the export's id
    first, a part's job its part second; the project is in the job's meta when the enqueuer knew it."""
    meta = job.meta or {}
    if (job.func_name or "").startswith("workers.scheduled."):  # a scheduled export's run, or the scheduler's tick
        run = {"scheduledExportRunId": job.args[0]} if job.args else {}
        return {**run, "scheduledExportId": meta.get("scheduledExportId"), "projectId": meta.get("projectId")}
    fields: dict[str, Any] = {"exportId": job.args[0] if job.args else None}
    if job.func_name == "workers.export_parts.run_export_part" and len(job.args) > 1:
        fields["part"] = job.args[1]
    fields["projectId"] = (job.meta or {}).get("projectId")
    return fields


def _job_options(settings: Settings) -> dict[str, Any]:
    """What every job of an export gets: retries with backoff, a timeout, how long RQ keeps it, the failure hook."""
    return job_options(settings, on_failure=on_export_job_failure)


def job_options(settings: Settings, *, on_failure: Callable[..., Any]) -> dict[str, Any]:
    """What every job of the service gets: retries with backoff, a timeout, how long RQ keeps it, `on_failure`."""
    return {
        "retry": Retry(max=settings.BATCH_EXPORT_JOB_RETRIES, interval=retry_delays(settings))
        if settings.BATCH_EXPORT_JOB_RETRIES
        else None,
        "job_timeout": settings.BATCH_EXPORT_JOB_TIMEOUT_SECONDS,
        "result_ttl": int(timedelta(days=1).total_seconds()),
        "failure_ttl": int(timedelta(days=7).total_seconds()),
        "on_failure": Callback(on_failure),
    }


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
    """The attempt's end in the export row: a retry note while RQ retries, FAILED after the last attempt.

    Every job of an export (the export's, a part's, the assembly's) takes the export's id first."""
    export_id = job.args[0]
    with db.connect(get_settings().DATABASE_URL, autocommit=True) as conn:
        if job.retries_left:
            batch_exports.note_retry(
                conn, export_id, f"{message} Retrying automatically ({job.retries_left} attempts left)."
            )
        else:
            batch_exports.mark_failed(conn, export_id, message)


def wait_for_redis(connection: redis.Redis, on_unreachable: Callable[[Exception], None]) -> None:
    """Returns once Redis answers; calls `on_unreachable` once, with the first error, if it does not at first."""
    delay = 0.5
    reported = False
    while True:
        try:
            connection.ping()
            return
        except REDIS_DOWN as exc:
            if not reported:
                on_unreachable(exc)
                reported = True
        time.sleep(delay)
        delay = min(delay * 2, REDIS_RETRY_MAX_DELAY)


def redis_address(connection: redis.Redis) -> str:
    """Where the connection points, without its password: for messages to operators."""
    kwargs = connection.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class ExportScheduler(RQScheduler):
    """RQ's scheduler (it runs the delayed retries), which ends with the worker that started it.

    It runs in a process forked from the worker; when the worker is SIGKILLed nothing would stop it,
    and the orphan would hold the scheduler lock and keep enqueueing for a worker that is gone.
    """

    _redis_down = False

    def work(self) -> None:
        # Linux sends SIGTERM (the scheduler's own "stop" signal) to this process when its parent dies.
        parent = os.getppid()
        _exit_with_parent(signal.SIGTERM)
        if os.getppid() != parent:  # the worker died before the request was in place
            self.request_stop()
        super().work()

    def stop(self) -> None:
        try:
            super().stop()
        except REDIS_DOWN:
            self._status = self.Status.STOPPED
            self.log.warning("scheduler: stopping without releasing its lock, which expires on its own: Redis is down")

    # Each step of the scheduler's loop (it runs once a second) skips its turn while Redis is unreachable,
    # instead of ending the scheduler with a traceback for its worker to restart.
    def register_birth(self) -> None:
        self._unless_redis_is_down(super().register_birth)

    def acquire_locks(self, auto_start: bool = False) -> Any:
        return self._unless_redis_is_down(lambda: super(ExportScheduler, self).acquire_locks(auto_start))

    def heartbeat(self) -> None:
        self._unless_redis_is_down(super().heartbeat)

    def enqueue_scheduled_jobs(self) -> None:
        self._unless_redis_is_down(super().enqueue_scheduled_jobs)

    def _unless_redis_is_down(self, step: Callable[[], T]) -> T | None:
        try:
            result = step()
        except REDIS_DOWN as exc:
            if not self._redis_down:
                self._redis_down = True
                self.log.warning("scheduler: Redis is unreachable (%s); skipping its rounds until it answers", exc)
            return None
        if self._redis_down:
            self._redis_down = False
            self.log.warning("scheduler: Redis answers again; resuming")
        return result


_PR_SET_PDEATHSIG = 1


def _exit_with_parent(sig: signal.Signals) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("the scheduler cannot ask to end with its worker: prctl failed (errno %d)", ctypes.get_errno())
    except (OSError, AttributeError):
        log.warning("the scheduler cannot ask to end with its worker: prctl is not available on this system")


class ExportWorker(Worker):
    """RQ's worker, with a short heartbeat lease so a dead worker's export is noticed and retried quickly.

    It also rides out Redis outages of any length. RQ's own loop retries only its blocking dequeue and
    quits on any other Redis error: the heartbeat between jobs, the work horse's heartbeats while a job
    runs, the horse's bookkeeping at the end of a job. Each of those steps is safe to repeat, so each
    waits here for Redis (logging the outage once, and its end) and runs again. An export created
    meanwhile was refused a job by Redis; the sweep in the maintenance tasks enqueues it afterwards.
    """

    _redis_down_since: float | None = None
    # Graceful shutdown (SIGTERM, as a rolling restart sends): the job a stop is handing back to the
    # queue, and the timer that hands it back once the grace period is over.
    _handing_back: str | None = None
    _hand_back_timer: threading.Timer | None = None

    def _through_redis_outages(self, step: Callable[[], T]) -> T:
        """Runs `step`; while Redis cannot be reached, waits for it (with backoff) and runs `step` again."""
        delay = 0.5
        while True:
            try:
                result = step()
            except REDIS_DOWN as exc:
                if self._redis_down_since is None:
                    self._redis_down_since = time.monotonic()
                    self.log.warning(
                        "Redis at %s is unreachable (%s): waiting for it, trying again every %.0f s at most",
                        redis_address(self.connection),
                        exc,
                        REDIS_RETRY_MAX_DELAY,
                    )
                time.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_MAX_DELAY)
                continue
            if self._redis_down_since is not None:
                self.log.warning(
                    "Redis answers again after %.0f s unreachable: resuming", time.monotonic() - self._redis_down_since
                )
                self._redis_down_since = None
                self._register_again()
            return result

    def _register_again(self) -> None:
        """A Redis that restarted without its data has forgotten this worker: it is listed again."""
        if self.is_horse:
            return
        try:
            if not self.connection.sismember(self.redis_workers_keys, self.key):
                with self.connection.pipeline() as pipeline:
                    pipeline.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, pipeline)
                    pipeline.execute()
        except REDIS_DOWN:
            pass  # gone again: the next step waits for it

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # queued on the caller's pipeline: no Redis call yet
            return super().heartbeat(timeout, pipeline)
        self._through_redis_outages(lambda: super(ExportWorker, self).heartbeat(timeout))

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline)
        self._through_redis_outages(lambda: super(ExportWorker, self).set_state(state))

    def check_for_suspension(self, burst: bool) -> None:
        self._through_redis_outages(lambda: super(ExportWorker, self).check_for_suspension(burst))

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        return self._through_redis_outages(
            lambda: super(ExportWorker, self).dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        )

    def prepare_execution(self, job: Job) -> Any:
        return self._through_redis_outages(lambda: super(ExportWorker, self).prepare_execution(job))

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        # The work horse goes on exporting meanwhile; only its lease waits for Redis.
        self._through_redis_outages(lambda: super(ExportWorker, self).maintain_heartbeats(job, execution))

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Around the whole run: the worker's own lines about the job, and (forked with this context)
        # every line of the work horse, RQ's included, carry the export's ids.
        with log_context(**job_log_fields(job)):
            self._execute_through_outages(job, queue)

    def _execute_through_outages(self, job: Job, queue: Queue) -> None:
        started = time.monotonic()
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN:
            # Redis went away just as the horse ended (and ended badly): the job stays in RQ's started
            # registry, its lease runs out, and RQ's abandoned-job clean-up retries or fails it.
            self.log.warning("could not record the end of job %s: Redis is unreachable", job.id, exc_info=True)
            return
        finally:
            handed_back = self._handing_back == job.id
            if self._hand_back_timer is not None:
                self._hand_back_timer.cancel()
            self._handing_back = None
        if handed_back:
            return  # not an end: the job runs again elsewhere
        # Here, in the worker's own process, once the work horse has ended: its counters would die with it.
        try:
            record_job_end(job, time.monotonic() - started, get_settings().DATABASE_URL)
        except Exception as exc:
            self.log.warning("job %s is left out of the metrics: %s", job.id, exc)

    # --- graceful shutdown ------------------------------------------------------------------------------
    #
    # SIGTERM: the worker takes no more jobs (RQ's warm shutdown) and gives the running one
    # WORKER_SHUTDOWN_GRACE_SECONDS to finish. A job still running then is handed back: its work horse
    # is stopped and the job goes back to the front of the queue at once, with no retry used up and no
    # retry delay, for another worker (or this one, restarted) to run from its start; a part of a
    # large export is one part, so finished parts stay finished. A second SIGTERM hands back at once.

    def request_stop(self, signum: int, frame: Any) -> None:
        # The timer first: this handler interrupts the job's monitoring, whose own SIGALRM may cut it short.
        if self._hand_back_timer is None and self.get_state() == WorkerStatus.BUSY and self.horse_pid:
            grace = get_settings().WORKER_SHUTDOWN_GRACE_SECONDS
            self._hand_back_timer = threading.Timer(grace, self._hand_back)
            self._hand_back_timer.daemon = True
            self._hand_back_timer.start()
            self.log.warning("stopping: the current job has %.0f s to finish, then goes back to the queue", grace)
        # Then RQ's own (when idle it ends the worker here); it also makes the next signal a force stop.
        super().request_stop(signum, frame)

    def stop_scheduler(self) -> None:
        # RQ's own waits for the scheduler process without a bound, even inside the SIGTERM handler while
        # a job runs: a scheduler that never ends (stopped, or stuck in a call) kept the worker from ever
        # stopping. Mid-job it is only asked to stop (the worker's teardown waits for it); the wait is
        # SCHEDULER_STOP_SECONDS, then SIGKILL: the scheduler lock it may hold expires on its own and
        # another worker's scheduler takes it.
        process = self.scheduler._process if self.scheduler else None
        if process is None or not process.pid:
            return
        try:
            os.kill(process.pid, signal.SIGTERM)
        except OSError:
            pass
        if self.get_state() == WorkerStatus.BUSY:
            return
        process.join(SCHEDULER_STOP_SECONDS)
        if process.is_alive():
            self.log.warning(
                "the scheduler (PID %d) did not stop within %.0f s: killing it", process.pid, SCHEDULER_STOP_SECONDS
            )
            process.kill()
            process.join(SCHEDULER_STOP_SECONDS)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        if self.get_state() == WorkerStatus.BUSY and self.horse_pid:
            self._hand_back()  # the job ends in monitor_work_horse, which then ends the worker
            return
        super().request_force_stop(signum, frame)

    def _hand_back(self) -> None:
        job_id = self.get_current_job_id()
        if job_id is None or not self.horse_pid:
            return  # the job ended meanwhile
        self.log.warning("handing job %s back to the queue: stopping its work horse", job_id)
        self._handing_back = job_id
        self.kill_horse()

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
        if self._handing_back == job.id:
            return  # stopped on purpose: not a failed attempt
        # The work horse died under a live worker (the OOM killer's usual victim). RQ retries or fails
        # the job next, but without the job's failure callback, so the export row is updated here.
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            _record_attempt_failure(job, WORKER_DIED)
        except Exception:
            self.log.exception("could not record the death of export %s's work horse", job.id)

    def _requeue_handed_back(self, job: Job, queue: Queue, execution: Any) -> None:
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            # As RQ's own immediate retry does: a rate-limited job keeps the slot it holds.
            queue._enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        self.log.warning("job %s is back at the front of the queue", job.id)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # In the work horse, after the export itself is done: its outcome waits for Redis, not lost.
        self._through_redis_outages(lambda: super(ExportWorker, self).handle_execution_ended(job, queue, heartbeat_ttl))

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        self._through_redis_outages(
            lambda: super(ExportWorker, self).handle_job_success(job, queue, started_job_registry, execution)
        )

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: Any = "",
        execution: Any = None,
    ) -> Any:
        if self._handing_back == job.id:
            return self._through_redis_outages(lambda: self._requeue_handed_back(job, queue, execution))
        return self._through_redis_outages(
            lambda: super(ExportWorker, self).handle_job_failure(
                job, queue, started_job_registry, exc_string, execution
            )
        )

    def register_death(self) -> None:
        try:
            super().register_death()
        except REDIS_DOWN:
            # Stopping during an outage: the worker's record in Redis expires on its own.
            self.log.warning("stopping without unregistering from Redis, which is unreachable")

    def unsubscribe(self) -> None:
        # RQ's own, except for a bounded wait for the listening thread: once unsubscribed, it sleeps in
        # redis-py for up to RQ's 60 s before it sees the stop, and RQ waits for it without a bound, so a
        # stopping worker took up to a minute to exit (past a supervisor's kill timeout). It is a daemon.
        if not self.pubsub_thread:
            return
        try:
            self.pubsub.unsubscribe()
        except REDIS_DOWN:
            pass  # stopping during an outage: Redis drops the subscription with the connection
        self.pubsub_thread.stop(timeout=1)
        if not self.pubsub_thread.is_alive():
            self.pubsub.close()

    def set_shutdown_requested_date(self) -> None:
        # Called from the SIGTERM handler: an outage must not turn the request to stop into an error.
        try:
            super().set_shutdown_requested_date()
        except REDIS_DOWN:
            self.log.warning("stopping after the current job; Redis is unreachable, so it is not told")

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        if isinstance(exc, redis.exceptions.ConnectionError):
            # redis-py resubscribes once Redis is back; the outage is logged once, by the main loop.
            time.sleep(2.0)
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ's own, with ExportScheduler instead of RQScheduler (RQ has no option to choose the class).
        self.scheduler = ExportScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_monitoring_interval + HEARTBEAT_GRACE_SECONDS

    def run_maintenance_tasks(self) -> None:
        self._through_redis_outages(super().run_maintenance_tasks)
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
        try:
            prune_changes(get_settings())
        except Exception:
            self.log.exception("pruning old export changes failed; will retry at the next maintenance cycle")


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
            export = batch_exports.load(conn, export_id)
            if export is not None and export["plan"] is not None:
                # Written in parts: the export's own job only planned them. Lost part jobs (and the
                # assembly after them) are enqueued again; finished parts stay finished.
                again = resume_parts(connection, conn, export, settings)
                if again:
                    log.warning("sweep: export %s had lost the jobs of parts %s; enqueued again", export_id, again)
                elif _job_status(connection, assembly_job_id(export_id)) in GIVEN_UP:
                    batch_exports.mark_failed(conn, export_id, UNRECORDED_END)
                    log.warning(
                        "sweep: export %s was PROCESSING although its parts were joined; marked FAILED", export_id
                    )
                continue
            status = _job_status(connection, export_id)
            if status is None:
                orphaned.append(export_id)
            elif status in GIVEN_UP:
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
GIVEN_UP = (JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED)


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
