"""Rolling restarts: SIGTERM on a worker mid-export and on the API mid-request loses nothing and runs nothing twice."""

from __future__ import annotations

import os
import re
import signal
import threading

import httpx
import pytest
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.support.exports import file_sha256 as digest
from tests.support.faults import FaultStack, hold_table
from tests.support.processes import attempts_of, is_alive, overlapping, wait_for
from tests.support.rpc_client import RpcClient, create_params
from tests.support.world import Project
from workers.batch_export import run_batch_export
from workers.queue import WORKER_DIED

pytestmark = pytest.mark.slow

RETRIES = 3
STOPPING = "stopping: the current job has"


def job_of(stack: FaultStack, export_id: str) -> Job:
    with stack.redis_client() as connection:
        return Job.fetch(export_id, connection=connection, serializer=JSONSerializer)


@pytest.mark.parametrize("how", ["grace period over", "second SIGTERM"])
def test_sigterm_hands_a_running_job_back_to_the_queue_and_another_worker_finishes_it(
    stack: FaultStack, big_tenant: Project, conn, how: str
):
    stack.configure(
        BATCH_EXPORT_JOB_RETRIES=RETRIES, WORKER_SHUTDOWN_GRACE_SECONDS=1 if how != "second SIGTERM" else 600
    )
    reference_id = big_tenant.new_export(conn, name="handed back")
    run_batch_export(reference_id)
    reference = stack.load(reference_id)
    assert reference["status"] == "COMPLETED", reference["log"]

    export_id = big_tenant.new_export(conn, name="handed back")
    # The stream is held a few MB in until the test lets go: the job cannot finish within any grace period.
    gate = stack.stream_gate()
    gate.hold()
    leaving = stack.worker("worker-leaving")
    assert stack.enqueue(export_id)
    gate.wait_held(1)

    os.kill(leaving.pid, signal.SIGTERM)
    wait_for(lambda: STOPPING in leaving.log(), 30, "the worker to start stopping", leaving)
    if how == "second SIGTERM":
        os.kill(leaving.pid, signal.SIGTERM)
    assert leaving.process is not None
    assert leaving.process.wait(timeout=60) == 0, leaving.log()

    job = job_of(stack, export_id)
    assert job.get_status() == JobStatus.QUEUED, "the job is back in the queue"
    assert job.retries_left == RETRIES, "handing back uses up no retry"
    row = stack.load(export_id)
    assert row["status"] == "PROCESSING" and WORKER_DIED not in (row["log"] or ""), row["log"]

    gate.release()
    staying = stack.worker("worker-staying")
    done = wait_for(
        lambda: (r := stack.load(export_id))["status"] not in ("QUEUED", "PROCESSING") and r, 120, "the export", staying
    )
    assert done["status"] == "COMPLETED", done["log"]
    assert done["rows_exported"] == reference["rows_exported"]
    assert digest(stack.file(done)) == digest(stack.file(reference))
    runs = attempts_of(export_id, leaving, staying)
    assert [(a.worker, a.ended is not None) for a in runs] == [("worker-leaving", False), ("worker-staying", True)]
    assert overlapping(runs) == []


def test_sigterm_lets_a_job_finish_within_the_grace_period_and_takes_no_more(
    stack: FaultStack, big_tenant: Project, small_tenant: Project, conn
):
    stack.configure(WORKER_SHUTDOWN_GRACE_SECONDS=600)
    export_id = big_tenant.new_export(conn, name="finished before stopping")
    gate = stack.stream_gate()
    gate.hold()
    worker = stack.worker()
    assert stack.enqueue(export_id)
    gate.wait_held(1)

    os.kill(worker.pid, signal.SIGTERM)
    wait_for(lambda: STOPPING in worker.log(), 30, "the worker to start stopping", worker)
    later_id = small_tenant.new_export(conn, name="enqueued while the worker stops")
    assert stack.enqueue(later_id)
    gate.release()
    assert worker.process is not None
    assert worker.process.wait(timeout=120) == 0, worker.log()

    done = stack.load(export_id)
    assert done["status"] == "COMPLETED", done["log"]
    assert [a.ended is not None for a in attempts_of(export_id, worker)] == [True], "one attempt, finished"
    assert stack.load(later_id)["status"] == "QUEUED", "a stopping worker takes no new job"
    assert job_of(stack, later_id).get_status() == JobStatus.QUEUED


def test_sigterm_on_the_api_finishes_the_open_request_and_refuses_new_ones(
    stack: FaultStack, small_tenant: Project, conn
):
    api = stack.api()
    client = RpcClient(api.url)
    # batchExport.create waits on the table lock: the request is open, in the handler, when SIGTERM comes.
    blocker = hold_table(stack.settings.DATABASE_URL, "batch_exports")
    replies: list[dict] = []
    caller = threading.Thread(
        target=lambda: replies.append(
            client.call(
                "batchExport.create", create_params(small_tenant.id, name="in flight"), token=small_tenant.token
            )
        )
    )
    try:
        caller.start()
        waiting = "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%%batch_exports%%'"
        wait_for(lambda: conn.execute(waiting).fetchone()["n"] > 0, 30, "the request to wait on the lock", api)
        os.kill(api.pid, signal.SIGTERM)
        wait_for(lambda: "Shutting down" in api.log(), 30, "the API to start shutting down", api)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{api.url}/healthz", timeout=5)
        assert api.alive(), "the API waits for its open request"
    finally:
        blocker.close()
    caller.join(timeout=60)
    assert api.process is not None
    # uvicorn drains, then ends by the signal it caught (as supervisors expect): a clean stop either way.
    assert api.process.wait(timeout=60) in (0, -signal.SIGTERM), api.log()
    assert "Finished server process" in api.log()

    assert len(replies) == 1 and "result" in replies[0], replies
    created = replies[0]["result"]
    assert stack.load(created["id"])["status"] in ("QUEUED", "PROCESSING", "COMPLETED")


@pytest.mark.parametrize("when", ["idle", "mid-export"])
def test_a_stopping_worker_does_not_wait_forever_for_a_stuck_scheduler(
    stack: FaultStack, big_tenant: Project, conn, when: str
):
    stack.configure(WORKER_SHUTDOWN_GRACE_SECONDS=1)
    gate = stack.stream_gate()  # the worker's database is reached through it
    gate.hold()
    worker = stack.worker()
    started = wait_for(
        lambda: re.search(r"Scheduler for \S+ started with PID (\d+)", worker.log()), 30, "its scheduler", worker
    )
    scheduler = int(started.group(1))
    if when == "mid-export":
        export_id = big_tenant.new_export(conn, name="stopped with a stuck scheduler")
        assert stack.enqueue(export_id)
        gate.wait_held(1)
    # A scheduler that never answers its SIGTERM (stopped here; in life, stuck in a call).
    os.kill(scheduler, signal.SIGSTOP)

    os.kill(worker.pid, signal.SIGTERM)
    assert worker.process is not None
    assert worker.process.wait(timeout=60) == 0, worker.log()
    assert "did not stop within" in worker.log()
    assert not is_alive(scheduler), "the stuck scheduler is gone with its worker"
    gate.release()
    if when == "mid-export":
        assert job_of(stack, export_id).get_status() == JobStatus.QUEUED, "the job is back in the queue"
