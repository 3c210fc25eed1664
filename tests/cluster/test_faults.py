"""Faults between hosts: a worker host unplugged, the API hosts cut from Redis, Postgres cut from a worker, a rolling restart.

Each export is caught mid-export by a lock on `traces` (held from this machine over the bridge): its
attempt has started, and its first statement on the table waits, for as long as the test needs. Every
export must end COMPLETED exactly once, with the bytes of an undisturbed export, never run by two hosts
at once (the attempts in the workers' logs), and nothing stays PROCESSING (every wait is bounded).
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from devstack.cluster import API_HOSTS, DATA, POSTGRES_PORT, REDIS_PORT, WORKER_HOSTS, Cluster, Host
from tests.support.cluster import SETTLE, ClusterWorld, LockWatch
from tests.support.faults import hold_table
from tests.support.metrics import Scrape, parse
from tests.support.processes import overlapping, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]


def other(host: Host) -> Host:
    return next(h for h in WORKER_HOSTS if h != host)


def assert_completed_once(world: ClusterWorld, export_id: str, reference_sha256: str, watch: LockWatch) -> None:
    """COMPLETED by one attempt, with the bytes of an undisturbed export, one file; never two lock holders at once."""
    row = world.final(export_id)
    assert row["status"] == "COMPLETED", row["log"]
    assert row["sha256"] == reference_sha256, "the same bytes as an undisturbed export"
    assert row["log"].startswith("Exported 2,000 rows"), "no late attempt wrote over the outcome"
    assert world.downloaded_sha256(export_id) == reference_sha256
    assert [key for key in world.objects() if export_id in key] == [f"cluster/{row['object_key']}"]
    assert len(world.completions(export_id)) == 1, world.completions(export_id)
    assert watch.most_at_once <= 1, f"two sessions held the attempt lock at once: {watch.holders}"


def test_a_worker_host_unplugged_mid_export_loses_its_export_to_the_other_host_and_nothing_runs_twice(
    world: ClusterWorld, reference_sha256: str
):
    blocker = hold_table(world.cluster.database_url, "traces")
    try:
        export = world.create(0, "unplugged worker")
        first = world.running_on(export["id"])
        with LockWatch(world, export["id"]) as watch:
            assert world.lock_holders(export["id"]) == [first.address]
            world.cluster.cut(first)
            # Its lease in Redis runs out, the other host's maintenance retries the job, and that attempt
            # waits for the lock until Postgres's keepalive drops the unplugged host's session.
            second = world.running_on(export["id"], timeout=SETTLE, exclude=first)
            assert second == other(first)
            assert world.lock_holders(export["id"]) == [second.address]
            blocker.close()
            row = world.final(export["id"])
            assert row["status"] == "COMPLETED", row["log"]
            world.cluster.heal(first)
            # The unplugged host's attempt lives on, partitioned; it finds out once its cable is back.
            stale = world.worker(first).name
            wait_for(
                lambda: all(a.ended is not None for a in world.attempts(export["id"]) if a.worker == stale),
                SETTLE,
                "the unplugged host's attempt to end",
                *world.workers,
            )
    finally:
        blocker.close()
    assert_completed_once(world, export["id"], reference_sha256, watch)
    assert watch.holders[:3] == [first.address, "", second.address], watch.holders
    assert world.completions(export["id"]) == [world.worker(second).name]
    # Its process outlived the other host's whole attempt (the logs overlap), but without the lock: the
    # lock session is the one that records the outcome, so it could neither complete nor fail the export.
    runs = world.attempts(export["id"])
    assert [(a.worker, a.ended is not None) for a in runs] == [(stale, True), (world.worker(second).name, True)]
    assert overlapping(runs) == [(runs[0], runs[1])]


def test_exports_created_while_the_api_hosts_are_cut_from_redis_run_once_redis_is_back(
    world: ClusterWorld, reference_sha256: str
):
    for host in API_HOSTS:
        world.cluster.block(host, DATA, REDIS_PORT)
    try:
        created = [world.create(n, f"created without Redis {n}") for n in (0, 1, 0, 1)]
        for export in created:
            assert export["status"] == "QUEUED"
            assert not world.job_in_redis(export["id"]), "Redis was out of the API hosts' reach"
    finally:
        for host in API_HOSTS:
            world.cluster.unblock(host)
    # The workers' sweep enqueues them (BATCH_EXPORT_SWEEP_GRACE_SECONDS after their creation).
    for export in created:
        with LockWatch(world, export["id"]) as watch:
            world.final(export["id"])
        assert_completed_once(world, export["id"], reference_sha256, watch)
        assert len(world.attempts(export["id"])) == 1


def test_postgres_drops_the_attempt_lock_of_a_worker_cut_off_past_its_keepalive_and_the_export_completes_once(
    world: ClusterWorld, reference_sha256: str
):
    blocker = hold_table(world.cluster.database_url, "traces")
    try:
        export = world.create(1, "worker cut from Postgres")
        host = world.running_on(export["id"])
        with LockWatch(world, export["id"]) as watch:
            assert world.lock_holders(export["id"]) == [host.address]
            world.cluster.block(host, DATA, POSTGRES_PORT)
            # tcp_keepalives 10/5/3: Postgres gives up on the silent session within about 25 s.
            wait_for(lambda: world.lock_holders(export["id"]) == [], 120, "Postgres to drop the lock", *world.workers)
            world.cluster.unblock(host)
            blocker.close()
            world.final(export["id"])
    finally:
        blocker.close()
    assert_completed_once(world, export["id"], reference_sha256, watch)
    runs = world.attempts(export["id"])
    assert len(runs) >= 2 and overlapping(runs) == [], runs


def test_a_worker_host_stopped_as_a_rolling_restart_does_hands_its_export_back_and_it_completes_once(
    world: ClusterWorld, reference_sha256: str
):
    blocker = hold_table(world.cluster.database_url, "traces")
    try:
        export = world.create(0, "rolling restart")
        host = world.running_on(export["id"])
        leaving = world.worker(host)
        with LockWatch(world, export["id"]) as watch:
            os.kill(leaving.pid, signal.SIGTERM)  # to the worker only, as a supervisor does
            assert leaving.process is not None
            assert leaving.process.wait(timeout=60) == 0, leaving.log()[-3000:]
            assert "back at the front of the queue" in leaving.log()
            lives = leaving.log().count("*** Listening on")
            world.cluster.wait_worker_ready(world.cluster.start_worker(host), lives + 1)
            blocker.close()
            world.final(export["id"])
    finally:
        blocker.close()
    assert_completed_once(world, export["id"], reference_sha256, watch)
    runs = world.attempts(export["id"])
    assert len(runs) == 2 and runs[0].ended is None and runs[1].ended is not None, runs
    assert overlapping(runs) == []


def test_an_export_cancelled_while_its_worker_host_is_unplugged_ends_cancelled_and_keeps_no_file(
    world: ClusterWorld,
):
    blocker = hold_table(world.cluster.database_url, "traces")
    try:
        export = world.create(0, "cancelled while unplugged")
        host = world.running_on(export["id"])
        world.cluster.cut(host)
        reply = world.cancel(1, export["id"])
        assert reply["result"]["status"] == "CANCELLED", reply
    finally:
        blocker.close()
    world.cluster.heal(host)
    wait_for(
        lambda: all(a.ended is not None for a in world.attempts(export["id"])), SETTLE, "the attempt", *world.workers
    )
    row = world.load(export["id"])
    assert row["status"] == "CANCELLED" and row["object_key"] is None, row
    assert [key for key in world.objects() if export["id"] in key] == []
    assert overlapping(world.attempts(export["id"])) == []


def scraped(world: ClusterWorld, host: Host) -> Scrape:
    """The host's /metrics, parsed; the text is kept beside the processes' logs (read after the suite)."""
    response = httpx.get(Cluster.metrics_url(host), timeout=15)
    assert response.status_code == 200, response.text[:500]
    (world.cluster.folder / "logs" / f"{host.name}.metrics.txt").write_text(response.text, encoding="utf-8")
    return parse(response.text)


def test_after_the_faults_the_hosts_metrics_count_each_export_once(world: ClusterWorld):
    """Last in the module: whatever the faults above did, the metrics agree with the exports' rows."""
    statuses = world.statuses()
    apis = [scraped(world, host) for host in API_HOSTS]
    workers = [scraped(world, host) for host in WORKER_HOSTS]
    labels = {"table": "traces", "format": "CSV"}

    # The API hosts were never restarted: between them they counted every create, and every cancel.
    created = sum(api.value("batch_export_exports_created_total", **labels) for api in apis)
    assert created == sum(statuses.values()), (created, statuses)
    calls = sum(api.value("batch_export_rpc_calls_total", method="batchExport.create", code="OK") for api in apis)
    assert calls == created
    cancelled = sum(api.value("batch_export_exports_finished_total", status="CANCELLED", **labels) for api in apis)
    assert cancelled == statuses.get("CANCELLED", 0), (cancelled, statuses)
    # What either API host reads from Postgres and Redis at scrape time: nothing left running or queued.
    for api in apis:
        assert api.labelled("batch_export_exports_active", "status") == {"QUEUED": 0, "PROCESSING": 0}
        assert api.value("batch_export_queue_jobs", state="queued") == 0
        assert sum(api.labelled("batch_export_workers", "state").values()) == len(WORKER_HOSTS)

    # A worker counts in its own memory, so a restarted worker host starts again from zero; but no
    # completion is ever counted twice (the partitioned host's late attempt completes nothing).
    completed = sum(w.value("batch_export_exports_finished_total", status="COMPLETED", **labels) for w in workers)
    assert 0 < completed <= statuses["COMPLETED"], (completed, statuses)
    rows = sum(w.value("batch_export_exported_rows_total", **labels) for w in workers)
    assert rows == 2000 * completed
