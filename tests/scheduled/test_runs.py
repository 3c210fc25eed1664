"""Scheduled runs for real: RQ's cron scheduler, a worker, the API and a bucket on moto.

Each run exports the rows ingested in its window; the union of every run's files must be exactly the
table's rows, none twice, however the runs are crashed, repeated or raced.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.destinations import s3_destination
from tests.support.faults import hold_table
from tests.support.processes import wait_for
from tests.support.scheduled import SETTLE, ScheduledWorld, insert_traces, scheduled_world

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def world(conn, database_url, local_s3, tmp_path):
    with scheduled_world(conn, database_url, s3_destination(local_s3, prefix="lake/langfuse"), tmp_path) as world:
        yield world


def backlog(world: ScheduledWorld, count: int = 30, minutes: float = 149) -> list[str]:
    """Rows ingested over the last `minutes`: a from_date schedule starting before them holds them all."""
    now = datetime.now(UTC)
    spread = [now - timedelta(minutes=minutes * (i + 1) / count) for i in range(count)]
    return insert_traces(world.conn, world.project.id, spread)


def assert_every_row_once(world: ScheduledWorld) -> None:
    for table in ("traces", "scores"):
        seen = world.exported_ids(table)
        doubled = {row_id: n for row_id, n in seen.items() if n > 1}
        assert doubled == {}, f"{table}: rows exported twice"
        assert set(seen) == world.table_ids(table), f"{table}: the files' rows are not the table's"


def assert_windows_follow_each_other(world: ScheduledWorld, runs: list[dict]) -> None:
    for before, after in zip(runs, runs[1:]):
        assert after["window_start"] == before["window_end"], "no gap and no overlap between windows"
    manifests = {datetime.fromisoformat(m["windowStart"]): m for m in world.manifests()}
    assert sorted(manifests) == [r["window_start"] for r in runs], "one manifest per run"
    for run in runs:
        manifest = manifests[run["window_start"]]
        assert datetime.fromisoformat(manifest["windowEnd"]) == run["window_end"]
        assert manifest["files"] == run["files"], "the manifest lists the run's files"
        for listed in manifest["files"]:
            body = world.read(listed["key"])
            assert (len(body), hashlib.sha256(body).hexdigest()) == (listed["bytes"], listed["sha256"])


def catch_up(world: ScheduledWorld, scheduled_export_id: str) -> list[dict]:
    """Runs windows on demand until one ends after the last row was ingested; returns every run."""
    last = world.conn.execute("SELECT max(created_at) AS at FROM traces WHERE project_id = %s", (world.project.id,))
    latest = last.fetchone()["at"]
    for _ in range(20):
        runs = world.wait_runs(scheduled_export_id, 1)
        if runs[-1]["window_end"] > latest:
            return runs
        time.sleep(1)  # a window ends a whole second at least after the lag
        reply = world.call("scheduledExport.runNow", {"scheduledExportId": scheduled_export_id})
        assert "result" in reply or reply["error"]["data"]["code"] == "PRECONDITION_FAILED", reply
    raise AssertionError(f"no window reached the last row ingested at {latest}")


def test_three_windows_while_rows_keep_arriving_export_every_row_exactly_once(world: ScheduledWorld):
    backlog(world)
    stop = threading.Event()
    arrived: list[str] = []

    def arrivals() -> None:
        import db

        with db.connect(world.env["DATABASE_URL"], autocommit=True) as conn:
            while not stop.is_set():
                arrived.extend(insert_traces(conn, world.project.id, [None]))
                time.sleep(0.05)

    feeder = threading.Thread(target=arrivals, daemon=True)
    feeder.start()
    try:
        schedule = world.create()
        # 2.5 hours of backlog in windows of at most an hour: three runs, one after the other.
        first = world.wait_runs(schedule["id"], 3)
        assert len(first) == 3 and all(r["status"] == "COMPLETED" for r in first)
        # Caught up: more windows on demand while rows go on arriving.
        for n in (4, 5):
            time.sleep(1.5)
            world.result("scheduledExport.runNow", {"scheduledExportId": schedule["id"]})
            world.wait_runs(schedule["id"], n)
    finally:
        stop.set()
        feeder.join(timeout=30)
    assert len(arrived) > 10, "rows arrived while the runs ran"
    runs = catch_up(world, schedule["id"])
    assert_windows_follow_each_other(world, runs)
    assert_every_row_once(world)
    listed = world.result("scheduledExport.runs", {"scheduledExportId": schedule["id"]})
    assert listed["totalCount"] == len(runs)
    assert [datetime.fromisoformat(r["windowStart"]) for r in listed["runs"]] == [
        r["window_start"] for r in reversed(runs)
    ]
    assert all(r["tablesDone"] == r["tablesTotal"] == 2 for r in listed["runs"])
    shown = world.result("scheduledExport.all", {})["scheduledExports"][0]
    assert datetime.fromisoformat(shown["lastSyncAt"]) == runs[-1]["window_end"]


def test_a_worker_killed_mid_run_redoes_its_window_and_leaves_no_gap_and_no_duplicate(world: ScheduledWorld):
    backlog(world, 10, minutes=45)
    blocker = hold_table(world.env["DATABASE_URL"], "traces")
    try:
        schedule = world.create(
            startFrom={"mode": "from_date", "date": (datetime.now(UTC) - timedelta(minutes=50)).isoformat()}
        )
        # The run's query waits on the lock: its work horse is killed there, mid-run.
        wait_for(
            lambda: (runs := world.runs(schedule["id"])) and runs[0]["status"] == "PROCESSING",
            SETTLE,
            "the run to start",
            *world.processes,
        )
        world.worker.kill_horse()
    finally:
        blocker.close()
    runs = world.wait_runs(schedule["id"], 1)
    assert len(runs) == 1 and runs[0]["attempts"] == 2, runs
    assert_windows_follow_each_other(world, runs)
    assert_every_row_once(world)


def test_runs_lost_by_a_redis_restart_are_run_again_and_nothing_is_doubled(world: ScheduledWorld):
    backlog(world, 10, minutes=45)
    world.worker.stop()  # nothing runs: neither the scheduler's ticks nor the run
    schedule = world.create(
        startFrom={"mode": "from_date", "date": (datetime.now(UTC) - timedelta(minutes=50)).isoformat()}
    )
    planned = world.result("scheduledExport.runNow", {"scheduledExportId": schedule["id"]})
    assert planned["status"] == "QUEUED"
    # Redis restarts and loses everything: the run's job and the queued ticks are gone.
    import redis as redis_lib

    redis_lib.Redis.from_url(world.redis_url).flushall()
    world.start_worker()
    runs = world.wait_runs(schedule["id"], 1)
    assert [(r["id"], r["status"], r["attempts"]) for r in runs] == [(planned["id"], "COMPLETED", 1)]
    assert_windows_follow_each_other(world, runs)
    assert_every_row_once(world)


def test_two_schedulers_ticking_at_once_plan_each_window_once(world: ScheduledWorld):
    backlog(world)
    world.start("scheduler-2", ["scheduler"])
    world.start("scheduler-3", ["scheduler"])
    schedule = world.create()
    runs = world.wait_runs(schedule["id"], 3)
    assert len(runs) == 3, "three windows of backlog, each planned once by three schedulers"
    assert all(r["attempts"] == 1 for r in runs), runs
    assert_windows_follow_each_other(world, runs)
    assert_every_row_once(world)
