"""Postgres restarted while an export's query runs: RQ retries the job and the file is the same bytes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
import redis

import db
from db import access, batch_exports
from devstack.seed import seed
from schemas import default_compression
from tests.support.processes import CliProcess
from tests.support.servers import running_postgres
from workers.queue import enqueue_export, export_queue

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_postgres():
    """A Postgres of this test's own: restarting the suite's shared one would disturb other tests."""
    with running_postgres("bx-test-pg-restart-") as server:
        yield server


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    return value


def export_query_waits_for_a_lock(database_url: str) -> bool:
    # The text formats' COPY, or the SELECT the Parquet driver prepares before its binary COPY.
    with psycopg.connect(database_url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND (query LIKE 'COPY%%' OR query LIKE 'SELECT%%')"
        ).fetchone()
    return row[0] > 0


@pytest.mark.parametrize("fmt", ["CSV", "PARQUET"])
def test_export_survives_a_postgres_restart_mid_query(own_postgres, redis_client, redis_url, tmp_path, settings, fmt):
    storage = tmp_path / "exports"
    env = {
        **os.environ,
        "DATABASE_URL": own_postgres.url,
        "REDIS_URL": redis_url,
        "EXPORT_STORAGE_URL": storage.as_uri(),
        "PYTHONPATH": str(REPO),
    }
    job_settings = settings.model_copy(
        update={"DATABASE_URL": own_postgres.url, "EXPORT_STORAGE_URL": storage.as_uri()}
    )
    with db.connect(own_postgres.url, autocommit=True) as conn:
        project = access.create_project(conn, "restart")
        seed(conn, project["id"], traces=300)

    def new_export(name: str) -> str:
        with db.connect(own_postgres.url, autocommit=True) as conn:
            query = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}
            row = conn.execute(
                batch_exports.INSERT_SQL,
                batch_exports.insert_params(
                    project_id=project["id"],
                    user_id=None,
                    name=name,
                    format=fmt,
                    query=query,
                    compression=default_compression(fmt),
                ),
            ).fetchone()
        assert enqueue_export(redis_client, row["id"], job_settings)
        return row["id"]

    def load(export_id: str) -> dict:
        with db.connect(own_postgres.url, autocommit=True) as conn:
            return batch_exports.load(conn, export_id)

    log = tmp_path / "worker.log"
    worker = CliProcess("worker", ["worker"], env, tmp_path).start()
    try:
        reference_id = new_export("reference")
        reference = _wait(
            lambda: (r := load(reference_id))["status"] == "COMPLETED" and r, 60, "the reference export", log
        )
        undisturbed = (storage / reference["object_key"]).read_bytes()

        # Hold the export's query inside Postgres (its trace rows join observations), then restart
        # Postgres under it: the job's connection dies mid-query, as in a real restart or failover.
        blocker = psycopg.connect(own_postgres.url)
        blocker.execute("LOCK TABLE observations IN ACCESS EXCLUSIVE MODE")
        export_id = new_export("restarted")
        _wait(lambda: load(export_id)["status"] == "PROCESSING", 30, "the job to start", log)
        _wait(lambda: export_query_waits_for_a_lock(own_postgres.url), 30, "the job's query to wait for the lock", log)
        own_postgres.stop(mode="fast")
        blocker.close()
        own_postgres.start()

        _wait(
            lambda: (
                "Retrying automatically" in (load(export_id)["log"] or "") or load(export_id)["status"] != "PROCESSING"
            ),
            60,
            "the failed attempt to be noted",
            log,
        )
        done = _wait(lambda: (r := load(export_id))["status"] in ("COMPLETED", "FAILED") and r, 120, "the retry", log)
    finally:
        worker.stop(timeout=30)  # SIGKILL after that: a worker left behind would take other tests' jobs

    assert "attempt failed, RQ will retry" in log.read_text(), "the restart should have failed one attempt"
    assert done["status"] == "COMPLETED", done["log"]
    assert (storage / done["object_key"]).read_bytes() == undisturbed
    assert not list((storage / done["object_key"]).parent.glob("*.partial"))
    assert export_queue(redis.Redis.from_url(redis_url)).get_job_ids() == []
