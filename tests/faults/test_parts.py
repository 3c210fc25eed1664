"""Large exports across `batch-export worker` processes: parts at once, only the killed part redone, cancel, fairness."""

from __future__ import annotations

import pytest
from rq.job import Job

from db import batch_export_parts, batch_exports
from schemas.settings import get_settings
from tests.support.exports import file_sha256 as digest
from tests.support.faults import BIG_TENANT_TRACES, FaultStack
from tests.support.processes import wait_for
from tests.support.world import Project
from workers.batch_export import run_batch_export
from workers.export_parts import run_export_part
from workers.queue import export_queue, part_job_id

pytestmark = pytest.mark.slow

PART_ROWS = BIG_TENANT_TRACES // 4  # four parts of the big tenant's traces, a few MB each


@pytest.fixture
def parts_stack(stack: FaultStack, monkeypatch) -> FaultStack:
    """The stack, its workers and this process writing exports of the big tenant in four parts."""
    stack.configure(BATCH_EXPORT_PART_ROWS=PART_ROWS, BATCH_EXPORT_JOB_RETRIES=3)
    for name in ("BATCH_EXPORT_PART_ROWS", "BATCH_EXPORT_JOB_RETRIES", "REDIS_URL"):
        monkeypatch.setenv(name, str(getattr(stack.settings, name)))
    get_settings.cache_clear()
    return stack


def one_stream_digest(stack: FaultStack, conn, tenant: Project, monkeypatch) -> str:
    """The same export written as one stream in this process: the bytes every run in parts must equal."""
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", str(BIG_TENANT_TRACES))
    get_settings.cache_clear()
    try:
        reference_id = tenant.new_export(conn, name="in parts")
        run_batch_export(reference_id)
        reference = stack.load(reference_id)
        assert reference["status"] == "COMPLETED" and reference["parts_total"] == 1, reference["log"]
        return digest(stack.file(reference))
    finally:
        monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", str(PART_ROWS))
        get_settings.cache_clear()


def parts_of(stack: FaultStack, export_id: str) -> list[dict]:
    import db

    with db.connect(stack.settings.DATABASE_URL, autocommit=True) as c:
        return batch_export_parts.parts(c, export_id)


def job_status(stack: FaultStack, job_id: str) -> str:
    with stack.redis_client() as redis:
        return Job.fetch(job_id, connection=redis, serializer=export_queue(redis).serializer).get_status()


def finished(stack: FaultStack, export_id: str, *workers, timeout: float = 150) -> dict:
    return wait_for(
        lambda: (row := stack.load(export_id))["status"] not in ("QUEUED", "PROCESSING") and row,
        timeout,
        "the export to end",
        *workers,
    )


def test_two_workers_run_two_parts_of_one_export_at_the_same_time(parts_stack, big_tenant, conn, monkeypatch):
    undisturbed = one_stream_digest(parts_stack, conn, big_tenant, monkeypatch)
    export_id = big_tenant.new_export(conn, name="in parts")
    gate = parts_stack.stream_gate()
    gate.hold(after=1024 * 1024)  # every part's rows stop a megabyte in, until the test lets go
    workers = parts_stack.workers("worker-a", "worker-b")
    assert parts_stack.enqueue(export_id)

    gate.wait_held(2)
    running = wait_for(
        lambda: (
            len(found := [p for p in parts_of(parts_stack, export_id) if p["status"] == "PROCESSING"]) == 2 and found
        ),
        60,
        "two parts running",
        *workers,
    )
    assert running[0]["worker"] != running[1]["worker"]  # two work horses, one part each
    gate.release()
    done = finished(parts_stack, export_id, *workers)

    assert done["status"] == "COMPLETED", done["log"]
    assert done["parts_total"] == done["parts_done"] == 4
    assert digest(parts_stack.file(done)) == undisturbed == done["sha256"]


def test_a_work_horse_killed_mid_part_redoes_that_part_only(parts_stack, big_tenant, conn, monkeypatch):
    undisturbed = one_stream_digest(parts_stack, conn, big_tenant, monkeypatch)
    export_id = big_tenant.new_export(conn, name="in parts")
    run_batch_export(export_id)  # planned, its jobs enqueued; no worker runs yet
    run_export_part(export_id, 0)  # two parts are written before anything goes wrong
    run_export_part(export_id, 1)

    gate = parts_stack.stream_gate()
    gate.hold(after=1024 * 1024)
    workers = parts_stack.workers("worker-a", "worker-b")
    gate.wait_held(2)  # parts 3 and 4 mid-stream, one on each worker
    victim = wait_for(
        lambda: next(
            (p for p in parts_of(parts_stack, export_id) if p["part"] == 2 and p["status"] == "PROCESSING"), None
        ),
        60,
        "part 3 to run",
        *workers,
    )
    horse = int(victim["worker"].rsplit(":", 1)[1])
    runner = next(w for w in workers if w.horse() == horse)
    runner.kill_horse()  # as the kernel's OOM killer would: RQ retries the part at once
    gate.wait_held(3)  # the retry of part 3 is mid-stream too
    gate.release()
    done = finished(parts_stack, export_id, *workers)

    assert done["status"] == "COMPLETED", done["log"]
    assert [p["attempts"] for p in parts_of(parts_stack, export_id)] == [1, 1, 2, 1]
    assert digest(parts_stack.file(done)) == undisturbed == done["sha256"]
    folder = parts_stack.file(done).parent
    assert sorted(p.name for p in folder.iterdir()) == [parts_stack.file(done).name]


def test_cancel_stops_every_part_and_deletes_everything_written(parts_stack, big_tenant, conn):
    export_id = big_tenant.new_export(conn, name="in parts")
    run_batch_export(export_id)
    run_export_part(export_id, 0)  # one part stored already
    folder = parts_stack.storage / big_tenant.id / export_id
    assert any(folder.joinpath(".parts").iterdir())

    gate = parts_stack.stream_gate()
    gate.hold(after=1024 * 1024)
    workers = parts_stack.workers("worker-a", "worker-b")
    gate.wait_held(2)  # two more parts mid-stream, their temporary files open
    conn.execute(batch_exports.CANCEL_SQL, {"id": export_id, "project_id": big_tenant.id})
    gate.wait_cancel_request()
    gate.release()

    wait_for(lambda: not folder.exists(), 30, "every object of the export to be deleted", *workers)
    wait_for(
        lambda: all(
            job_status(parts_stack, job_id) in ("finished", "failed")
            for job_id in [part_job_id(export_id, n) for n in range(4)]
        ),
        60,
        "every part's job to end",
        *workers,
    )
    row = parts_stack.load(export_id)
    assert row["status"] == "CANCELLED" and row["object_key"] is None
    assert not folder.exists()
    assert all(p["status"] != "DONE" or p["object_key"] is None for p in parts_of(parts_stack, export_id))


def test_one_project_runs_at_most_its_share_of_parts_while_another_exports(parts_stack, big_tenant, small_tenant, conn):
    parts_stack.configure(BATCH_EXPORT_MAX_PARALLEL_PARTS_PER_PROJECT=1)
    big_id = big_tenant.new_export(conn, name="in parts")
    gate = parts_stack.stream_gate()
    gate.hold(after=1024 * 1024)
    workers = parts_stack.workers("worker-a", "worker-b")
    assert parts_stack.enqueue(big_id)
    gate.wait_held(1)  # one part of the big export runs (held) ...

    # ... and the other worker stays free for the other project: its export runs to the end at once.
    small_id = small_tenant.new_export(conn, name="small")
    assert parts_stack.enqueue(small_id)
    small = finished(parts_stack, small_id, *workers, timeout=60)
    assert small["status"] == "COMPLETED", small["log"]
    waiting = [job_status(parts_stack, part_job_id(big_id, n)) for n in range(4)]
    assert sorted(waiting) == ["rate_limited"] * 3 + ["started"]
    assert [p["status"] for p in parts_of(parts_stack, big_id)].count("PROCESSING") == 1

    gate.release()
    done = finished(parts_stack, big_id, *workers)
    assert done["status"] == "COMPLETED", done["log"]
    runs = sorted((p["started_at"], p["finished_at"]) for p in parts_of(parts_stack, big_id))
    assert all(earlier[1] <= later[0] for earlier, later in zip(runs, runs[1:])), "two parts ran at once"


def test_a_postgres_restart_mid_export_redoes_only_the_parts_not_written(
    restartable_stack: FaultStack, own_postgres, monkeypatch
):
    import db
    from tests.support.exports import insert_big_traces
    from tests.support.faults import make_tenant

    stack = restartable_stack
    with db.connect(stack.settings.DATABASE_URL, autocommit=True) as c:
        tenant = make_tenant(c, "parts restart", traces=None)
        insert_big_traces(c, tenant.id, 20_000)
    stack.configure(BATCH_EXPORT_PART_ROWS=5_000, BATCH_EXPORT_JOB_RETRIES=3, BATCH_EXPORT_JOB_RETRY_DELAYS=(5,))
    for name in ("BATCH_EXPORT_PART_ROWS", "REDIS_URL"):
        monkeypatch.setenv(name, str(getattr(stack.settings, name)))
    get_settings.cache_clear()
    with db.connect(stack.settings.DATABASE_URL, autocommit=True) as conn:
        monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "20000")
        get_settings.cache_clear()
        reference_id = tenant.new_export(conn, name="restart")
        run_batch_export(reference_id)
        undisturbed = digest(stack.file(stack.load(reference_id)))
        monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "5000")
        get_settings.cache_clear()
        export_id = tenant.new_export(conn, name="restart")
        run_batch_export(export_id)
        run_export_part(export_id, 0)  # one part is written before Postgres goes away

    gate = stack.stream_gate()
    gate.hold(after=256 * 1024)
    workers = stack.workers("worker-a", "worker-b")
    gate.wait_held(2)  # two more parts mid-stream
    own_postgres.stop(mode="fast")
    gate.release()
    own_postgres.start()
    done = finished(stack, export_id, *workers)

    assert done["status"] == "COMPLETED", done["log"]
    attempts = [p["attempts"] for p in parts_of(stack, export_id)]
    assert attempts[0] == 1, "a written part is never read again"
    assert sorted(attempts[1:]) == [1, 2, 2], attempts  # the two cut off mid-stream, once more each
    assert digest(stack.file(done)) == undisturbed == done["sha256"]
