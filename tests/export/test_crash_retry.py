"""A job killed half-way (SIGKILL, no cleanup) and run again writes the same bytes as an undisturbed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from db import batch_exports
from devstack.servers import LocalRedis
from tests.support.exports import BASE_TIME, BIG_TRACES
from tests.support.exports import file_sha256 as digest
from tests.support.servers import running_redis
from workers.batch_export import run_batch_export

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def wait_for(ready, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until `ready()`, failing with the process's output if it ends first (bounded, never a race)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the process ended before {what}: {process.stderr and process.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.02)


def start_job_process(export_id: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    code = f"from workers.batch_export import run_batch_export; run_batch_export({export_id!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("CSV", "none"), ("JSON", "none"), ("JSONL", "zstd"), ("CSV", "gzip"), ("PARQUET", "zstd")],
)
def test_sigkilled_job_rerun_writes_a_byte_identical_file(
    conn, export_settings, gated_export, storage_dir, tmp_path, big_project, fmt, compression
):
    query = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}
    export_id = big_project.new_export(conn, query, fmt, name="crash test", compression=compression)

    # The undisturbed run.
    run_batch_export(export_id)
    first = batch_exports.load(conn, export_id)
    assert first["status"] == "COMPLETED", first["log"]
    path = storage_dir / first["object_key"]
    undisturbed = digest(path)

    # Put the export back in the queue, as RQ's retry finds it, and let the world move on meanwhile.
    path.unlink()
    conn.execute(
        "UPDATE batch_exports SET status = 'QUEUED', object_key = NULL, finished_at = NULL, expires_at = NULL, rows_exported = 0"
        " WHERE id = %s",
        (export_id,),
    )
    conn.execute(
        "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('after-the-export', %s, %s, 'late')",
        (big_project.id, BASE_TIME),
    )

    # An attempt killed mid-stream (held there by the gate): no except, no finally, no cleanup.
    # Parquet's driver reads 8 MiB batches: hold its stream once a few row groups have been written.
    gated_export.hold(after=24 * 1024 * 1024 if fmt == "PARQUET" else 4 * 1024 * 1024)
    process = start_job_process(export_id, {**export_settings, "DATABASE_URL": gated_export.url}, tmp_path)
    gated_export.wait_held()
    wait_for(lambda: batch_exports.load(conn, export_id)["rows_exported"] > 0, "its progress", process)
    # A compressed stream held mid-way may not yet fill the file's first buffer: its partial file can be empty.
    started = (lambda p: p.stat().st_size > 0) if compression == "none" else (lambda p: True)
    wait_for(lambda: any(started(p) for p in path.parent.glob("*.partial")), "its partial file", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    gated_export.release()
    killed = batch_exports.load(conn, export_id)
    assert killed["status"] == "PROCESSING" and 0 < killed["rows_exported"] < BIG_TRACES
    assert not path.exists()

    # The retry takes the PROCESSING export over and produces the very same bytes.
    run_batch_export(export_id)
    retried = batch_exports.load(conn, export_id)
    assert retried["status"] == "COMPLETED"
    assert retried["rows_exported"] == first["rows_exported"]
    assert digest(path) == undisturbed == retried["sha256"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    conn.execute("DELETE FROM traces WHERE project_id = %s AND id = 'after-the-export'", (big_project.id,))


def start_rq_worker(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """The operators' worker (workers.queue.build_worker, with the scheduler), in its own process group."""
    code = (
        "import os, redis; from workers.queue import build_worker\n"
        "worker = build_worker(redis.Redis.from_url(os.environ['REDIS_URL']))\n"
        "worker.work(with_scheduler=True, logging_level='INFO')\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=cwd,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_an_idle_export_worker_looks_for_abandoned_jobs_within_half_a_minute(redis_client):
    from workers.queue import build_worker

    # Only maintenance notices an abandoned job, and an idle worker runs it between blocking waits.
    assert build_worker(redis_client).dequeue_timeout <= 30


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False


def stop(process: subprocess.Popen, sig: int, log: Path) -> None:
    """Signals the worker and its children (RQ's work horse runs in a session of its own); a worker still
    running 30 s later is killed, with everything it started, and the test fails with its log."""
    if process.poll() is None:
        for child in children(process.pid):
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in [*children(process.pid), process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=30)
        raise AssertionError(f"the worker outlived its signal {sig} by 30 s:\n{log.read_text()[-3000:]}") from None


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    """A Redis of this test's own: a worker it failed to stop can never take another test's jobs."""
    with running_redis("bx-crash-redis-") as server:
        yield server


def test_sigkilled_rq_worker_export_is_retried_to_the_same_bytes(
    conn, export_settings, gated_export, storage_dir, tmp_path, big_project, private_redis
):
    from schemas.settings import get_settings
    from workers.queue import enqueue_export

    redis_url = private_redis.url
    redis_client = redis.Redis.from_url(redis_url)
    env = {**export_settings, "REDIS_URL": redis_url}
    query = {
        "tableName": "traces",
        "filter": [{"column": "environment", "type": "stringOptions", "operator": "any of", "value": ["default"]}],
    }
    reference_id = big_project.new_export(conn, query, "CSV", name="rq crash")
    run_batch_export(reference_id)
    reference = batch_exports.load(conn, reference_id)
    undisturbed = (storage_dir / reference["object_key"]).read_bytes()

    # Same rows, same order: the export under test differs only in id (and so its key).
    export_id = big_project.new_export(conn, query, "CSV", name="rq crash")
    # Put back whatever REDIS_URL was: the session's `settings` fixture exports one that every
    # later subprocess inherits (deleting it sent them to the demo's Redis port).
    previous = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = redis_url
    try:
        get_settings.cache_clear()
        assert enqueue_export(redis_client, export_id, get_settings())
    finally:
        if previous is None:
            del os.environ["REDIS_URL"]
        else:
            os.environ["REDIS_URL"] = previous
        get_settings.cache_clear()
    log = tmp_path / "workers.log"
    gated_export.hold()
    first = start_rq_worker({**env, "DATABASE_URL": gated_export.url}, tmp_path, log)
    gated_export.wait_held()  # the work horse is mid-stream, and stays there
    wait_for(lambda: batch_exports.load(conn, export_id)["rows_exported"] > 0, "its progress", first)
    horses = children(first.pid)
    stop(first, signal.SIGKILL, log)  # the worker and its work horse, mid-export
    gated_export.release()
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in horses):
        assert time.monotonic() < deadline, "the work horse outlived its worker"
        time.sleep(0.05)
    assert horses
    killed = batch_exports.load(conn, export_id)
    assert killed["status"] == "PROCESSING" and 0 < killed["rows_exported"] < BIG_TRACES

    second = start_rq_worker(env, tmp_path, log)
    try:
        deadline = time.monotonic() + 150
        while (row := batch_exports.load(conn, export_id))["status"] == "PROCESSING":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert second.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        stop(second, signal.SIGTERM, log)
    assert row["status"] == "COMPLETED", row["log"]
    assert (storage_dir / row["object_key"]).read_bytes() == undisturbed
    assert not list((storage_dir / row["object_key"]).parent.glob("*.partial"))
