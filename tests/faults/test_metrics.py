"""GET /metrics on real `batch-export worker`s (WORKER_METRICS_PORT) and on `batch-export serve --workers 2`.

A worker counts an export once it has finished, from its own process after the work horse ended, by
reading the export's row: so its figures are the row's, an export written in parts counts once (its
parts count as jobs), and an export retried counts once, at its last attempt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.servers import free_port
from tests.support.faults import FaultStack
from tests.support.metrics import Scrape, scrape
from tests.support.processes import ApiProcess, CliProcess, WorkerProcess, wait_for
from tests.support.rpc_client import RpcClient
from tests.support.world import Project

pytestmark = pytest.mark.slow


def metrics_worker(stack: FaultStack, name: str = "worker") -> tuple[WorkerProcess, str]:
    port = free_port()
    worker = stack.worker(name, WORKER_METRICS_PORT=port)
    return worker, f"http://127.0.0.1:{port}"


def finished(stack: FaultStack, export_id: str) -> dict | None:
    row = stack.load(export_id)
    return row if row["status"] not in ("QUEUED", "PROCESSING") else None


def counted(url: str, status: str, table: str, fmt: str, worker: CliProcess) -> Scrape:
    """The worker's scrape once it shows the export finished (it records the job after the horse ends)."""

    def shown() -> Scrape | None:
        found = scrape(url)
        labels = {"status": status, "table": table, "format": fmt}
        return found if found.value("batch_export_exports_finished_total", **labels) else None

    return wait_for(shown, 60, f"the worker's metrics to show a {status} {table} {fmt} export", worker)


def test_a_worker_serves_the_export_it_completed_with_the_rows_and_bytes_of_its_row(
    stack: FaultStack, small_tenant: Project, conn
):
    worker, url = metrics_worker(stack)
    before = scrape(url)
    assert before.value("batch_export_exports_finished_total", status="COMPLETED", table="traces", format="JSONL") == 0
    assert before.samples("process_resident_memory_bytes")  # the worker process's own metrics too
    export_id = small_tenant.new_export(conn, fmt="JSONL")
    assert stack.enqueue(export_id)
    row = wait_for(lambda: finished(stack, export_id), 60, "the export", worker)
    assert row["status"] == "COMPLETED", row["log"]

    after = counted(url, "COMPLETED", "traces", "JSONL", worker)
    labels = {"table": "traces", "format": "JSONL"}
    assert after.value("batch_export_exports_finished_total", status="COMPLETED", **labels) == 1
    assert row["rows_exported"] > 0
    assert after.value("batch_export_exported_rows_total", **labels) == row["rows_exported"]
    assert after.value("batch_export_exported_bytes_total", **labels) == row["file_bytes"]
    assert after.value("batch_export_export_duration_seconds_count", **labels) == 1
    assert after.value("batch_export_export_duration_seconds_sum", **labels) == pytest.approx(
        (row["finished_at"] - row["created_at"]).total_seconds()
    )
    assert after.value("batch_export_export_rows_per_second_count", **labels) == 1
    assert after.value("batch_export_worker_jobs_total", kind="export", outcome="succeeded") == 1
    # Not counted for any other table or format.
    assert sum(s.value for s in after.samples("batch_export_exports_finished_total")) == 1


def test_an_export_in_parts_counts_once_with_the_rows_and_bytes_of_the_joined_file(
    stack: FaultStack, small_tenant: Project, conn
):
    stack.configure(BATCH_EXPORT_PART_ROWS=100)  # the small tenant's 300 traces: three parts
    worker, url = metrics_worker(stack)
    export_id = small_tenant.new_export(conn, fmt="CSV")
    assert stack.enqueue(export_id)
    row = wait_for(lambda: finished(stack, export_id), 90, "the export in parts", worker)
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] == 3

    after = counted(url, "COMPLETED", "traces", "CSV", worker)
    labels = {"table": "traces", "format": "CSV"}
    assert after.value("batch_export_exports_finished_total", status="COMPLETED", **labels) == 1
    assert after.value("batch_export_exported_rows_total", **labels) == row["rows_exported"] == 300
    assert after.value("batch_export_exported_bytes_total", **labels) == row["file_bytes"]
    assert after.value("batch_export_export_duration_seconds_count", **labels) == 1
    assert after.value("batch_export_worker_jobs_total", kind="export", outcome="succeeded") == 1
    assert after.value("batch_export_worker_jobs_total", kind="part", outcome="succeeded") == 3
    assert after.value("batch_export_worker_jobs_total", kind="assembly", outcome="succeeded") == 1


def test_an_export_that_fails_every_attempt_counts_once_as_failed(stack: FaultStack, small_tenant: Project, conn):
    blocked = stack.folder / "export-disk"
    blocked.write_text("a file, not a folder")  # nothing can be written below it, root included
    stack.configure(EXPORT_STORAGE_URL=blocked.as_uri(), BATCH_EXPORT_JOB_RETRIES=1, BATCH_EXPORT_JOB_RETRY_DELAYS=(1,))
    worker, url = metrics_worker(stack)
    export_id = small_tenant.new_export(conn, fmt="CSV")
    assert stack.enqueue(export_id)
    row = wait_for(lambda: finished(stack, export_id), 90, "the export to fail", worker)
    assert row["status"] == "FAILED", row["log"]

    after = counted(url, "FAILED", "traces", "CSV", worker)
    assert after.value("batch_export_exports_finished_total", status="FAILED", table="traces", format="CSV") == 1
    assert after.value("batch_export_worker_jobs_total", kind="export", outcome="retried") == 1
    assert after.value("batch_export_worker_jobs_total", kind="export", outcome="failed") == 1
    # A failed export wrote no file: nothing is counted as exported.
    assert not after.samples("batch_export_exported_rows_total")
    assert not after.samples("batch_export_export_duration_seconds_count")


def test_a_worker_whose_metrics_port_is_taken_says_so_in_one_line(stack: FaultStack):
    port = free_port()
    first = stack.worker("first", WORKER_METRICS_PORT=port)
    second = CliProcess("second", ["worker"], stack.env(WORKER_METRICS_PORT=port), stack.folder).start()
    assert second.process.wait(timeout=60) == 2
    assert f"cannot serve metrics on WORKER_METRICS_PORT={port}" in second.log()
    assert "Traceback" not in second.log()
    assert first.alive()


def test_the_api_under_several_processes_serves_the_calls_of_all_of_them(
    stack: FaultStack, small_tenant: Project, tmp_path: Path
):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left over from a previous run")  # serve starts afresh
    port = int(stack.settings.PUBLIC_BASE_URL.rsplit(":", 1)[1])
    api = ApiProcess("api", stack.env(PROMETHEUS_MULTIPROC_DIR=folder), stack.folder, port, workers=2)
    stack.processes.append(api)
    api.start()
    url = api.url
    assert not (folder / "counter_1.db").exists()

    def processes_counted() -> set[str]:
        return {path.stem.rsplit("_", 1)[1] for path in folder.glob("counter_*.db")}

    made = 0
    # Each call on a connection of its own, which either process may accept; until both have answered.
    while len(processes_counted()) < 2:
        assert made < 400, f"one process answered all {made} calls"
        client = RpcClient(url)
        client.result("batchExport.all", {"projectId": small_tenant.id}, token=small_tenant.token)
        client.http.close()
        made += 1
    for _ in range(3):  # whichever process answers the scrape, it sums every process's counts
        found = scrape(url)
        assert found.value("batch_export_rpc_calls_total", method="batchExport.all", code="OK") == made
        assert found.value("batch_export_rpc_duration_seconds_count", method="batchExport.all") == made
