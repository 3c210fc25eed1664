"""Workers SIGKILLed mid-export: the export still completes with the same bytes, or ends FAILED, never PROCESSING forever."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry

from tests.support.exports import file_sha256 as digest
from tests.support.faults import BIG_TENANT_TRACES, hold_table, lease_expired
from tests.support.processes import attempts_of, overlapping, wait_for
from tests.support.world import Project
from workers.batch_export import run_batch_export
from workers.queue import WORKER_DIED, export_queue

pytestmark = pytest.mark.slow


def partials(folder: Path) -> dict[str, int]:
    """The temporary files of attempts at writing an export, by name, with their sizes."""
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in folder.glob(".*.partial")}


def test_export_killed_twice_mid_stream_completes_with_the_bytes_of_an_undisturbed_run(
    stack, big_tenant: Project, conn
):
    stack.configure(BATCH_EXPORT_JOB_RETRIES=3)
    reference_id = big_tenant.new_export(conn, name="killed twice")
    run_batch_export(reference_id)
    reference = stack.load(reference_id)
    assert reference["status"] == "COMPLETED", reference["log"]
    undisturbed = digest(stack.file(reference))

    export_id = big_tenant.new_export(conn, name="killed twice")
    folder = stack.storage / big_tenant.id / export_id
    # The workers reach Postgres through a gate that stops each attempt's row stream a few MB in, until
    # the test lets go: so every kill below lands mid-stream, however fast the machine is.
    gate = stack.stream_gate()
    gate.hold()
    workers = stack.workers("worker-a", "worker-b")  # two workers on the queue, as deployed
    assert stack.enqueue(export_id)

    def written(skip: set[str]) -> str | None:
        """The name of a current attempt's partly written file, ignoring files of killed attempts."""
        return next((name for name, size in partials(folder).items() if name not in skip and size > 0), None)

    # 1. The kernel's OOM killer takes the work horse half-way through the file; its worker lives on
    #    and RQ retries the export a second later, from zero, on whichever worker is free.
    gate.wait_held(1)
    first_file = wait_for(lambda: written(set()), 60, "the first attempt's file to grow", *workers)
    runner = next(w for w in workers if w.horse())
    runner.kill_horse()
    gate.wait_held(2)
    wait_for(lambda: written({first_file}), 60, "the second attempt's file to grow", *workers)
    assert first_file not in partials(folder), "the new attempt discards what the killed one left"
    assert WORKER_DIED in stack.load(export_id)["log"]

    # 2. The worker running the second attempt goes whole (a lost node): the other one notices once
    #    the job's heartbeat lease is over, and RQ retries it there, with nothing holding it any more.
    runner = next(w for w in workers if w.horse())
    runner.kill()
    assert stack.load(export_id)["status"] == "PROCESSING"
    gate.release()
    done = wait_for(
        lambda: (row := stack.load(export_id))["status"] != "PROCESSING" and row, 150, "the third attempt", *workers
    )

    assert done["status"] == "COMPLETED", done["log"]
    assert done["rows_exported"] == reference["rows_exported"] == BIG_TENANT_TRACES
    assert digest(stack.file(done)) == undisturbed
    assert sorted(p.name for p in folder.iterdir()) == [stack.file(done).name], "no partial file is left behind"
    runs = attempts_of(export_id, *workers)
    assert [a.ended is not None for a in runs] == [False, False, True]
    assert runs[2].worker != runner.name
    assert overlapping(runs) == []


def test_work_horse_killed_on_its_last_attempt_leaves_the_export_failed_with_the_reason(
    stack, small_tenant: Project, conn
):
    stack.configure(BATCH_EXPORT_JOB_RETRIES=0)
    worker = stack.worker()
    export_id = small_tenant.new_export(conn)
    blocker = hold_table(stack.settings.DATABASE_URL, "traces")
    try:
        assert stack.enqueue(export_id)
        wait_for(lambda: attempts_of(export_id, worker), 30, "the attempt to start", worker)
        worker.kill_horse()
        failed = wait_for(
            lambda: (row := stack.load(export_id))["status"] != "PROCESSING" and row, 20, "the export to end", worker
        )
    finally:
        blocker.close()

    assert failed["status"] == "FAILED"
    assert failed["log"] == WORKER_DIED
    assert failed["finished_at"] is not None and failed["object_key"] is None

    def in_failed_registry() -> bool:
        with stack.redis_client() as connection:
            return export_id in FailedJobRegistry(queue=export_queue(connection)).get_job_ids()

    # The worker records the death in Postgres first, then RQ moves the job to its failed registry.
    wait_for(in_failed_registry, 30, "RQ to fail the job", worker)
    assert worker.alive(), "the worker itself survives its work horse"


def test_worker_dead_for_good_is_failed_by_the_sweep_once_its_lease_is_over(stack, small_tenant: Project, conn):
    stack.configure(BATCH_EXPORT_JOB_RETRIES=0)
    worker = stack.worker()
    export_id = small_tenant.new_export(conn)
    blocker = hold_table(stack.settings.DATABASE_URL, "traces")
    try:
        assert stack.enqueue(export_id)
        wait_for(lambda: attempts_of(export_id, worker), 30, "the attempt to start", worker)
        worker.kill()
        killed_at = time.monotonic()
    finally:
        blocker.close()

    # No worker is left; the operators' cron runs `batch-export sweep`. While the lease lasts the
    # job may belong to a worker that is only slow, so the sweep leaves it alone ...
    stack.cli("sweep")
    assert stack.load(export_id)["status"] == "PROCESSING"
    # ... and once the lease is over (at most the heartbeat interval plus its grace), it fails it.
    wait_for(lambda: lease_expired(stack, export_id), 40, "the dead worker's lease to run out", interval=0.5)
    assert time.monotonic() - killed_at < 40
    stack.cli("sweep")
    failed = stack.load(export_id)
    assert failed["status"] == "FAILED", failed["log"]
    assert failed["log"] == WORKER_DIED
    assert attempts_of(export_id, worker)[0].ended is None
