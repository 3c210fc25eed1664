"""A job killed half-way (SIGKILL, no cleanup) and run again writes the same bytes as an undisturbed run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import batch_exports
from tests.export.conftest import BASE_TIME, create_export
from workers.batch_export import run_batch_export

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def start_job_process(export_id: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    code = f"from workers.batch_export import run_batch_export; run_batch_export({export_id!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("fmt", ["CSV", "JSON"])
def test_sigkilled_job_rerun_writes_a_byte_identical_file(conn, export_settings, storage_dir, tmp_path, big_project, fmt):
    query = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}
    export_id = create_export(conn, big_project, query, fmt, name="crash test")

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
        (big_project.project_id, BASE_TIME),
    )

    # An attempt killed mid-stream: no except, no finally, no cleanup.
    process = start_job_process(export_id, export_settings, tmp_path)
    deadline = time.monotonic() + 60
    while batch_exports.load(conn, export_id)["rows_exported"] == 0:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    killed = batch_exports.load(conn, export_id)
    assert killed["status"] == "PROCESSING" and 0 < killed["rows_exported"]
    assert not path.exists()
    leftovers = list(path.parent.glob("*.partial"))
    assert leftovers, "the killed attempt should have left its partial file behind"

    # The retry takes the PROCESSING export over and produces the very same bytes.
    run_batch_export(export_id)
    retried = batch_exports.load(conn, export_id)
    assert retried["status"] == "COMPLETED"
    assert retried["rows_exported"] == first["rows_exported"]
    assert digest(path) == undisturbed
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    conn.execute("DELETE FROM traces WHERE project_id = %s AND id = 'after-the-export'", (big_project.project_id,))
