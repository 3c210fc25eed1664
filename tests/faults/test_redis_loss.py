"""Redis down at `create`, or restarted with its data lost: every accepted export still runs, exactly once."""

from __future__ import annotations

import pytest
from rq.job import Job

from tests.support.faults import FaultStack
from tests.support.processes import attempts_of, overlapping, wait_for
from tests.support.rpc_client import RpcClient
from tests.support.world import Project
from workers.queue import HEARTBEAT_GRACE_SECONDS, JOB_MONITORING_INTERVAL, export_queue

pytestmark = pytest.mark.slow

STALLED_AFTER = JOB_MONITORING_INTERVAL + HEARTBEAT_GRACE_SECONDS  # with BATCH_EXPORT_SWEEP_GRACE_SECONDS=0


def final(stack: FaultStack, export_ids: list[str]) -> list[dict] | None:
    rows = [stack.load(export_id) for export_id in export_ids]
    return rows if all(row["status"] not in ("QUEUED", "PROCESSING") for row in rows) else None


def test_exports_accepted_while_redis_is_down_each_run_once(stack: FaultStack, small_tenant: Project):
    stack.configure(BATCH_EXPORT_SWEEP_GRACE_SECONDS=0)
    client = RpcClient(stack.api_in_thread().url)
    stack.redis.stop()
    accepted = [
        client.result(
            "batchExport.create",
            {
                "projectId": small_tenant.id,
                "name": f"while Redis is down {i}",
                "format": "CSV",
                "query": {"tableName": "traces", "filter": None, "orderBy": None},
            },
            token=small_tenant.token,
        )
        for i in range(3)
    ]
    assert [e["status"] for e in accepted] == ["QUEUED"] * 3

    stack.redis.start()  # empty: nothing was ever enqueued
    workers = stack.workers("worker-a", "worker-b")
    stack.cli("sweep")  # the operators' cron, racing the workers' own sweeps
    stack.cli("sweep")
    ids = [e["id"] for e in accepted]
    rows = wait_for(lambda: final(stack, ids), 60, "the exports to finish", *workers)

    assert [row["status"] for row in rows] == ["COMPLETED"] * 3, [row["log"] for row in rows]
    runs = [attempts_of(export_id, *workers) for export_id in ids]
    assert [len(r) for r in runs] == [1, 1, 1], runs
    contents = {stack.file(row).read_bytes() for row in rows}
    assert len(contents) == 1 and next(iter(contents)).startswith(b"id,")


def test_exports_queued_when_redis_loses_its_data_each_run_once(stack: FaultStack, small_tenant: Project, conn):
    # One export has failed an attempt and waits ten minutes for its retry, scheduled in Redis.
    stack.configure(BATCH_EXPORT_JOB_RETRIES=2, BATCH_EXPORT_JOB_RETRY_DELAYS=(600,))
    not_a_folder = stack.folder / "broken-storage"
    not_a_folder.write_text("a file where the export folder should be")
    broken = stack.worker("worker-broken-storage", EXPORT_STORAGE_URL=(not_a_folder / "exports").as_uri())
    retrying = small_tenant.new_export(conn, name="waiting for its retry")
    assert stack.enqueue(retrying)
    wait_for(
        lambda: "Retrying automatically" in (stack.load(retrying)["log"] or ""), 30, "the first attempt to fail", broken
    )
    broken.stop()

    # More exports wait in the queue, with no worker running.
    queued = [small_tenant.new_export(conn, name=f"queued {i}") for i in range(4)]
    for export_id in queued:
        assert stack.enqueue(export_id)
    with stack.redis_client() as connection:
        assert sorted(export_queue(connection).get_job_ids()) == sorted(queued)

    stack.redis.stop()
    stack.redis.start()  # no persistence: every job, queued or scheduled, is gone
    with stack.redis_client() as connection:
        assert connection.dbsize() == 0 and not Job.exists(retrying, connection)

    stack.configure(BATCH_EXPORT_SWEEP_GRACE_SECONDS=0)
    workers = stack.workers("worker-a", "worker-b")  # their first sweep enqueues the QUEUED exports
    # The export waiting for its retry is PROCESSING; once it has been still for a heartbeat lease the
    # sweep (the operators' cron here; the workers run the same one) enqueues it again.
    wait_for(
        lambda: stack.idle_seconds(retrying) > STALLED_AFTER, 60, "the export to be still for a lease", interval=0.5
    )
    stack.cli("sweep")
    rows = wait_for(lambda: final(stack, [retrying, *queued]), 60, "every export to finish", broken, *workers)

    assert [row["status"] for row in rows] == ["COMPLETED"] * 5, [row["log"] for row in rows]
    for export_id in queued:
        assert len(attempts_of(export_id, broken, *workers)) == 1, attempts_of(export_id, broken, *workers)
    runs = attempts_of(retrying, broken, *workers)
    assert [a.worker for a in runs][0] == "worker-broken-storage" and len(runs) == 2
    assert overlapping(attempts_of(retrying, broken, *workers)) == []
    assert all(stack.file(row).is_file() for row in rows)
