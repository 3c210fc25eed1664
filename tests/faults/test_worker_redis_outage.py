"""`batch-export worker` and Redis outages: it waits for Redis at start, rides out an outage mid-export, and its
scheduler child never outlives it."""

from __future__ import annotations

import os
import re
import signal

import pytest
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.support.faults import FaultStack, hold_table
from tests.support.processes import TcpProxy, WorkerProcess, attempts_of, is_alive, wait_for
from tests.support.rpc_client import RpcClient
from tests.support.world import Project

pytestmark = pytest.mark.slow

UNREACHABLE = "is unreachable"
# The worker's own lines (its scheduler child logs the outage in other words).
WORKER_WAITS = "waiting for it"
WORKER_RESUMES = "Redis answers again after"
QUERY = {"tableName": "traces", "filter": None, "orderBy": None}


def test_worker_rides_out_a_redis_outage_while_its_work_horse_exports(stack: FaultStack, small_tenant: Project, conn):
    stack.configure(BATCH_EXPORT_SWEEP_GRACE_SECONDS=0)
    client = RpcClient(stack.api_in_thread().url)
    worker = stack.worker()
    running = small_tenant.new_export(conn, QUERY, name="exporting when Redis goes")
    blocker = hold_table(stack.settings.DATABASE_URL, "observations")  # the traces export joins it
    try:
        stack.enqueue(running)  # unless the worker's own sweep got there first
        wait_for(lambda: attempts_of(running, worker), 30, "the attempt to start", worker)
        stack.redis.stop()
        # Its next heartbeat of the job (within the job monitoring interval) finds Redis gone; the work
        # horse cannot be the one saying so, it is still waiting for the table.
        wait_for(lambda: WORKER_WAITS in worker.log() or not worker.alive(), 60, "the worker to notice", worker)
        assert worker.alive(), worker.log()[-3000:]
        created = client.result(
            "batchExport.create",
            {
                "projectId": small_tenant.id,
                "name": "created while Redis is down",
                "format": "CSV",
                "query": QUERY,
            },
            token=small_tenant.token,
        )
    finally:
        blocker.close()  # the work horse exports while Redis is still down
    wait_for(lambda: stack.load(running)["status"] == "COMPLETED", 60, "the running export to finish", worker)
    assert worker.alive(), worker.log()[-3000:]

    stack.redis.start()
    wait_for(lambda: stack.load(created["id"])["status"] == "COMPLETED", 90, "the export created meanwhile", worker)

    assert worker.alive(), worker.log()[-3000:]
    assert stack.load(running)["status"] == "COMPLETED", stack.load(running)["log"]
    assert len(attempts_of(running, worker)) == 1 and len(attempts_of(created["id"], worker)) == 1
    assert stack.file(stack.load(created["id"])).read_bytes() == stack.file(stack.load(running)).read_bytes()
    assert "found an unhandled exception" not in worker.log()


def test_worker_cut_off_from_a_redis_that_keeps_its_data_records_the_job_once_back(
    stack: FaultStack, small_tenant: Project, conn
):
    # Redis itself stays up (the API enqueues as usual); only the worker's path to it is cut.
    proxy = TcpProxy(stack.redis.port).start()
    worker = stack.worker(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0")
    running = small_tenant.new_export(conn, QUERY, name="exporting when the network goes")
    blocker = hold_table(stack.settings.DATABASE_URL, "observations")
    try:
        assert stack.enqueue(running)
        wait_for(lambda: attempts_of(running, worker), 30, "the attempt to start", worker)
        proxy.cut()
        wait_for(lambda: WORKER_WAITS in worker.log() or not worker.alive(), 60, "the worker to notice", worker)
        queued = small_tenant.new_export(conn, QUERY, name="enqueued while the worker is cut off")
        assert stack.enqueue(queued)
    finally:
        blocker.close()
    wait_for(lambda: stack.load(running)["status"] == "COMPLETED", 60, "the running export to finish", worker)
    proxy.restore()
    wait_for(lambda: stack.load(queued)["status"] == "COMPLETED", 60, "the queued export", worker)

    assert worker.alive(), worker.log()[-3000:]

    def statuses() -> list[JobStatus]:
        with stack.redis_client() as connection:
            return [
                Job.fetch(i, connection=connection, serializer=JSONSerializer).get_status() for i in (running, queued)
            ]

    # RQ records a job's end in Redis just after the job has written COMPLETED to Postgres.
    wait_for(lambda: statuses() == [JobStatus.FINISHED, JobStatus.FINISHED], 30, "RQ to record both jobs", worker)
    assert len(attempts_of(running, worker)) == 1 and len(attempts_of(queued, worker)) == 1


def test_worker_resumes_after_an_outage_while_idle_and_logs_it_once(stack: FaultStack, small_tenant: Project, conn):
    worker = stack.worker()
    stack.redis.stop()
    wait_for(lambda: WORKER_WAITS in worker.log() or not worker.alive(), 60, "the worker to notice", worker)
    stack.redis.start()
    wait_for(lambda: WORKER_RESUMES in worker.log(), 60, "the worker to resume", worker)

    export_id = small_tenant.new_export(conn, name="after the outage")
    assert stack.enqueue(export_id)
    wait_for(lambda: stack.load(export_id)["status"] == "COMPLETED", 60, "the export to finish", worker)
    assert worker.alive()
    # Logged once (and once by the scheduler child), not once per retry; no traceback.
    assert worker.log().count(WORKER_WAITS) == 1, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]


def test_worker_stopped_during_an_outage_exits_cleanly(stack: FaultStack):
    worker = stack.worker()
    stack.redis.stop()
    wait_for(lambda: WORKER_WAITS in worker.log() or not worker.alive(), 60, "the worker to notice", worker)
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]


def test_worker_started_while_redis_is_down_says_so_in_one_line_and_waits(
    stack: FaultStack, small_tenant: Project, conn
):
    stack.redis.stop()
    worker = WorkerProcess("worker-early", stack.env(), stack.folder).start(wait=False)
    stack.processes.append(worker)
    wait_for(lambda: UNREACHABLE in worker.log() or not worker.alive(), 30, "the worker to report Redis", worker)
    assert worker.alive(), worker.log()
    [line] = [line for line in worker.log().splitlines() if UNREACHABLE in line]
    assert line.startswith("batch-export worker: Redis at 127.0.0.1:") and "waiting for it" in line
    assert "Traceback" not in worker.log()

    stack.redis.start()
    worker.wait_ready()
    export_id = small_tenant.new_export(conn, name="once Redis is up")
    assert stack.enqueue(export_id)
    wait_for(lambda: stack.load(export_id)["status"] == "COMPLETED", 60, "the export to finish", worker)


def test_scheduler_child_ends_when_its_worker_is_sigkilled(stack: FaultStack):
    worker = stack.worker()
    found = wait_for(
        lambda: re.search(r"Scheduler for \S+ started with PID (\d+)", worker.log()), 30, "the scheduler", worker
    )
    scheduler = int(found[1])
    assert is_alive(scheduler)

    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)
    wait_for(lambda: not is_alive(scheduler), 15, "the scheduler to end with its worker", worker, interval=0.1)
