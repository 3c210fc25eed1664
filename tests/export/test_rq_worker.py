"""The job through a real RQ worker: enqueued as the API does it, run in a forked work horse."""

from __future__ import annotations

import pytest
from rq.registry import ScheduledJobRegistry

from db import batch_exports
from schemas.settings import get_settings
from workers.queue import build_worker, enqueue_export, export_queue


@pytest.fixture
def rq_settings(export_settings, redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    return get_settings()


def test_enqueued_export_is_run_by_an_rq_worker(conn, rq_settings, redis_client, storage_dir, seeded):
    export_id = seeded.new_export(conn, {"tableName": "events"}, "JSONL")
    assert enqueue_export(redis_client, export_id, rq_settings) is True
    assert enqueue_export(redis_client, export_id, rq_settings) is False  # one job per export
    build_worker(redis_client).work(burst=True)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    assert (storage_dir / row["object_key"]).read_bytes().count(b"\n") == len(seeded.observations)


def test_failed_attempt_with_retries_left_stays_active_for_rqs_retry(
    conn, rq_settings, redis_client, tmp_path, monkeypatch, seeded
):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EXPORT_STORAGE_URL", blocker.as_uri())
    monkeypatch.setenv("BATCH_EXPORT_JOB_RETRIES", "2")
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "CSV")
    enqueue_export(redis_client, export_id, get_settings())
    build_worker(redis_client).work(burst=True)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "PROCESSING"
    assert row["log"].startswith("Writing the export file to storage failed") and "Retrying automatically" in row["log"]
    assert export_id in ScheduledJobRegistry(queue=export_queue(redis_client)).get_job_ids()


def test_last_attempt_failure_is_failed_with_the_actionable_message(
    conn, rq_settings, redis_client, tmp_path, monkeypatch, seeded
):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EXPORT_STORAGE_URL", blocker.as_uri())
    monkeypatch.setenv("BATCH_EXPORT_JOB_RETRIES", "0")
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "CSV")
    enqueue_export(redis_client, export_id, get_settings())
    build_worker(redis_client).work(burst=True)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "FAILED"
    assert row["log"].startswith("Writing the export file to storage failed")
