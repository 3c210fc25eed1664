"""Races between callers, and between workers: every outcome is one a caller was told, and every export runs once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.support.faults import FaultStack, hold_table, lease_expired
from tests.support.processes import attempts, attempts_of, overlapping, wait_for
from tests.support.rpc_client import RpcClient
from tests.support.world import Project
from workers.batch_export import run_batch_export
from workers.queue import enqueue_export, export_queue, sweep

pytestmark = pytest.mark.slow

QUERY = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "DESC"}}


def create_params(tenant: Project, name: str) -> dict:
    return {"projectId": tenant.id, "name": name, "format": "CSV", "query": QUERY}


def job_done(stack: FaultStack, export_id: str) -> bool:
    """RQ is finished with the export's job: it ran to its end, failed, or was taken off the queue."""
    with stack.redis_client() as connection:
        try:
            status = Job.fetch(export_id, connection=connection, serializer=JSONSerializer).get_status()
        except NoSuchJobError:
            return True
    return status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)


def finished(stack: FaultStack, export_id: str) -> dict | None:
    row = stack.load(export_id)
    return row if row["status"] not in ("QUEUED", "PROCESSING") else None


def all_completed(stack: FaultStack, ids: list[str]) -> list[dict] | None:
    rows = [stack.load(export_id) for export_id in ids]
    return rows if all(row["status"] == "COMPLETED" for row in rows) else None


def waiting_for_a_lock(stack: FaultStack, query_hint: str) -> bool:
    """Some session waits inside Postgres for a lock, running a statement containing `query_hint`."""
    with psycopg.connect(stack.settings.DATABASE_URL, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position(%s in query) > 0",
            (query_hint,),
        ).fetchone()
    return row[0] > 0


def check_outcome(stack: FaultStack, client: RpcClient, tenant: Project, export_id: str, reply: dict) -> str:
    """The export ended as the canceller was told, everywhere a user can look; returns what they were told."""
    ref = {"projectId": tenant.id, "batchExportId": export_id}
    row = stack.load(export_id)
    folder = stack.storage / tenant.id / export_id
    page = client.result("batchExport.all", {"projectId": tenant.id, "limit": 50}, token=tenant.token)
    listed = {e["id"]: e for e in page["exports"]}[export_id]
    link = client.call("batchExport.downloadUrl", ref, token=tenant.token)
    if "result" in reply:
        assert reply["result"]["status"] == "CANCELLED"
        assert row["status"] == "CANCELLED" and row["object_key"] is None, row
        assert listed["status"] == "CANCELLED" and not listed["isDownloadable"]
        assert link["error"]["data"]["code"] == "PRECONDITION_FAILED"
        assert not folder.exists() or list(folder.iterdir()) == [], "a cancelled export keeps no file"
        return "CANCELLED"
    assert reply["error"]["data"]["code"] == "PRECONDITION_FAILED", reply
    assert "COMPLETED" in reply["error"]["message"]
    assert row["status"] == "COMPLETED", row
    assert listed["isDownloadable"]
    download = httpx.get(link["result"]["url"], timeout=30)
    assert download.status_code == 200 and download.content == stack.file(row).read_bytes()
    return "COMPLETED"


def test_a_cancel_that_lands_after_the_file_is_written_but_before_completion_wins(
    stack: FaultStack, small_tenant: Project, conn
):
    """The narrowest window: the file is in place, the job is about to record COMPLETED, a cancel commits first."""
    client = RpcClient(stack.api_in_thread().url)
    worker = stack.worker()
    export = client.result("batchExport.create", create_params(small_tenant, "cancel first"), token=small_tenant.token)
    ref = {"projectId": small_tenant.id, "batchExportId": export["id"]}
    query_blocker = hold_table(stack.settings.DATABASE_URL, "traces")
    row_lock = psycopg.connect(stack.settings.DATABASE_URL)
    try:
        # The job's first statement on traces (its count of whether the export needs parts, then its COPY).
        wait_for(lambda: waiting_for_a_lock(stack, "FROM traces t") or None, 30, "the job's query", worker)
        # Hold the export's row: the cancel waits for it first in line, then the job, whatever it does next.
        row_lock.execute("SELECT 1 FROM batch_exports WHERE id = %s FOR UPDATE", (export["id"],))
        with ThreadPoolExecutor(1) as pool:
            cancelling = pool.submit(client.call, "batchExport.cancel", ref, token=small_tenant.token)
            wait_for(lambda: waiting_for_a_lock(stack, "FOR UPDATE OF e"), 30, "the cancel to queue", worker)
            query_blocker.close()  # the job streams its rows and moves its file into place
            final = stack.storage / small_tenant.id / export["id"]
            wait_for(lambda: any(not p.name.endswith(".partial") for p in final.glob("*")), 30, "the file", worker)
            row_lock.rollback()  # the cancel commits, then the job learns it may not complete
            reply = cancelling.result(timeout=60)
    finally:
        query_blocker.close()
        row_lock.close()
    wait_for(lambda: job_done(stack, export["id"]), 30, "the job to be over", worker)
    assert check_outcome(stack, client, small_tenant, export["id"], reply) == "CANCELLED"
    assert len(attempts_of(export["id"], worker)) == 1


def test_a_cancel_that_comes_once_the_export_completed_is_refused_and_the_file_stays(
    stack: FaultStack, small_tenant: Project
):
    client = RpcClient(stack.api_in_thread().url)
    worker = stack.worker()
    export = client.result("batchExport.create", create_params(small_tenant, "done first"), token=small_tenant.token)
    wait_for(lambda: stack.load(export["id"])["status"] == "COMPLETED", 60, "the export", worker)
    reply = client.call(
        "batchExport.cancel",
        {"projectId": small_tenant.id, "batchExportId": export["id"]},
        token=small_tenant.token,
    )
    assert check_outcome(stack, client, small_tenant, export["id"], reply) == "COMPLETED"


def test_cancels_at_random_moments_each_end_as_the_canceller_was_told(stack: FaultStack, small_tenant: Project):
    """Whatever moment a cancel lands at (queued, running, finishing, done), the export ends as its caller was told."""
    client = RpcClient(stack.api_in_thread().url)
    worker = stack.worker()
    token = small_tenant.token
    rng = random.Random(6)
    for i in range(12):
        export = client.result("batchExport.create", create_params(small_tenant, f"race {i}"), token=token)
        time.sleep(rng.uniform(0, 0.3))
        reply = client.call(
            "batchExport.cancel", {"projectId": small_tenant.id, "batchExportId": export["id"]}, token=token
        )
        wait_for(lambda export=export: job_done(stack, export["id"]), 30, "the job to be over", worker, interval=0.02)
        check_outcome(stack, client, small_tenant, export["id"], reply)
        assert len(attempts_of(export["id"], worker)) <= 1


def test_concurrent_creates_and_duplicate_enqueues_run_each_export_once_on_one_worker_at_a_time(
    stack: FaultStack, small_tenant: Project
):
    stack.configure(BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT=100, BATCH_EXPORT_SWEEP_GRACE_SECONDS=0)
    api = stack.api_in_thread()
    workers = stack.workers("worker-a", "worker-b")

    # Redis's view while it all runs: a job started twice at once would hold two executions.
    doubled: list[list[str]] = []
    watching = threading.Event()

    def watch() -> None:
        with stack.redis_client() as connection:
            registry = StartedJobRegistry(queue=export_queue(connection))
            while not watching.is_set():
                running = [job_id for job_id, _ in registry.get_job_and_execution_ids(cleanup=False)]
                if len(running) != len(set(running)):
                    doubled.append(running)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    duplicates = ThreadPoolExecutor(max_workers=8)
    again: list = []

    def enqueue_again(export_id: str) -> bool:
        with stack.redis_client() as connection:
            return enqueue_export(connection, export_id, stack.settings)

    async def create_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:

            async def create(i: int) -> dict:
                response = await http.post(
                    "/rpc",
                    json={
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "batchExport.create",
                        "params": create_params(small_tenant, f"concurrent {i}"),
                    },
                    headers={"Authorization": f"Bearer {small_tenant.token}"},
                )
                export = response.json()["result"]
                # Whoever else might enqueue it too: a retried request, a second API process, the sweep.
                again.extend(duplicates.submit(enqueue_again, export["id"]) for _ in range(3))
                again.append(duplicates.submit(sweep, stack.settings))
                return export

            return await asyncio.gather(*(create(i) for i in range(50)))

    created = asyncio.run(create_all())
    duplicates.shutdown(wait=True)
    ids = [e["id"] for e in created]
    assert len(set(ids)) == 50
    try:
        rows = wait_for(lambda: all_completed(stack, ids), 120, "all 50 exports to complete", *workers)
    finally:
        watching.set()
        watcher.join()

    enqueued_again = [f.result() for f in again]
    assert not any(r for r in enqueued_again if r is True), "a duplicate enqueue made a second job"
    assert all(stack.file(row).is_file() for row in rows)
    runs = attempts(*workers)
    assert Counter(a.export_id for a in runs) == Counter(ids), "each export ran exactly once"
    assert overlapping(runs) == [] and doubled == []
    assert {a.worker for a in runs} == {"worker-a", "worker-b"}, "both workers took part"

    def results() -> list[int]:
        with stack.redis_client() as connection:
            return [len(Job.fetch(i, connection=connection, serializer=JSONSerializer).results()) for i in ids]

    # RQ records a job's result just after the job has written COMPLETED to Postgres: wait for the
    # last ones, then there must be exactly one result per job.
    wait_for(lambda: all(results()), 30, "RQ to record every job's result", *workers)
    assert results() == [1] * len(ids)


def test_a_worker_frozen_past_its_lease_never_runs_an_export_alongside_the_retry(
    stack: FaultStack, big_tenant: Project, conn
):
    stack.configure(BATCH_EXPORT_JOB_RETRIES=2)
    reference_id = big_tenant.new_export(conn, name="frozen")
    run_batch_export(reference_id)
    undisturbed = stack.file(stack.load(reference_id)).read_bytes()

    workers = stack.workers("worker-a", "worker-b")
    export_id = big_tenant.new_export(conn, name="frozen")
    blocker = hold_table(stack.settings.DATABASE_URL, "observations")  # the traces export joins it
    try:
        assert stack.enqueue(export_id)
        wait_for(lambda: attempts_of(export_id, *workers), 30, "the first attempt", *workers)
        frozen = next(w for w in workers if w.horse())
        other = next(w for w in workers if w is not frozen)
        # The worker stops (a paused VM, a partition from Redis): no more heartbeats, while its work
        # horse goes on with the export. Once the lease is over, RQ hands the job to the other worker.
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: lease_expired(stack, export_id), 60, "the frozen worker's lease to run out", interval=0.5)
            stack.cli("sweep")  # or the other worker's own maintenance, a little later
            wait_for(
                lambda: f"batch export {export_id}" in other.log(),
                60,
                "the other worker to take the job over",
                *workers,
                interval=0.5,
            )
            wait_for(
                lambda: "an earlier attempt is still running; waiting for it to end" in other.log(),
                60,
                "the other worker's attempt to wait for the frozen one",
                *workers,
                interval=0.2,
            )
            blocker.close()
            done = wait_for(lambda: finished(stack, export_id), 60, "the export to finish", *workers)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    finally:
        blocker.close()

    runs = attempts_of(export_id, *workers)
    assert overlapping(runs) == [], runs
    assert "an earlier attempt is still running; waiting for it to end" in other.log()
    assert [a.worker for a in runs] == [frozen.name], "the retry found the export COMPLETED when its turn came"
    assert done["status"] == "COMPLETED", done["log"]
    assert stack.file(done).read_bytes() == undisturbed
    folder = stack.storage / big_tenant.id / export_id
    assert sorted(p.name for p in folder.iterdir()) == [stack.file(done).name]
