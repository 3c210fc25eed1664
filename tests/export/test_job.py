"""The job's lifecycle through `run_batch_export`: cut-off, row limit, cancel, atomic files, failures, email."""

from __future__ import annotations

import email
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from db import batch_exports
from schemas.settings import get_settings
from tests.support.exports import BASE_TIME, BIG_TRACES
from tests.support.world import Project, new_project
from workers.batch_export import ExportFailed, run_batch_export
from workers.storage import verify_download_signature


def small_project(conn, names: list[str]) -> Project:
    project = new_project(conn, "small", user_name="Small")
    for i, name in enumerate(names):
        conn.execute(
            "INSERT INTO traces (id, project_id, timestamp, name) VALUES (%s, %s, %s, %s)",
            (f"t{i:02d}", project.id, BASE_TIME, name),
        )
    return project


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def outbox(tmp_path: Path) -> list[email.message.EmailMessage]:
    folder = tmp_path / ".data" / "outbox"
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(folder.glob("*.eml"))]


def wait_for(predicate, timeout: float = 30, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


# --- consistent cut-off ---------------------------------------------------------------------------------


def test_rows_created_after_the_export_was_requested_are_not_exported(
    conn, export_settings, storage_dir, awkward_values
):
    project = small_project(conn, awkward_values["strings"][:5])
    export_id = project.new_export(conn, {"tableName": "traces"}, "JSONL")
    # Written after the export was requested, before its job runs (a queue backlog, or a retry later).
    conn.execute(
        "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('late', %s, %s, 'late')",
        (project.id, BASE_TIME),
    )
    conn.execute(
        "INSERT INTO observations (id, project_id, trace_id, start_time, end_time, total_cost)"
        " VALUES ('late-obs', %s, 't00', %s, %s, 99)",
        (project.id, BASE_TIME, BASE_TIME),
    )
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    lines = (storage_dir / row["object_key"]).read_text().split("\n")[:-1]
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == ["t04", "t03", "t02", "t01", "t00"]
    assert rows[-1]["totalCost"] is None and rows[-1]["observationCount"] == 0


# --- row limit ------------------------------------------------------------------------------------------


def test_row_limit_cuts_the_file_and_says_so_in_log_and_email(
    conn, export_settings, storage_dir, tmp_path, monkeypatch, caplog
):
    project = small_project(conn, [f"n{i}" for i in range(8)])
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", "5")
    get_settings.cache_clear()
    export_id = project.new_export(conn, {"tableName": "traces"}, "CSV")
    with caplog.at_level(logging.WARNING, logger="workers.batch_export"):
        run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED" and row["rows_exported"] == 5
    assert "limit of 5" in row["log"] and "BATCH_EXPORT_ROW_LIMIT" in row["log"]
    assert any("row limit" in r.getMessage() for r in caplog.records)
    assert (storage_dir / row["object_key"]).read_text().count("\n") == 1 + 5
    [message] = outbox(tmp_path)
    assert "export limit of 5" in message.get_content()


def test_exactly_the_limit_is_not_reported_as_cut(conn, export_settings, monkeypatch):
    project = small_project(conn, [f"n{i}" for i in range(5)])
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", "5")
    get_settings.cache_clear()
    export_id = project.new_export(conn, {"tableName": "traces"}, "JSON")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["rows_exported"] == 5 and "limit" not in row["log"]


@pytest.mark.parametrize("unset", ["none", "", "Unlimited"])
def test_the_row_limit_can_be_turned_off(unset, monkeypatch):
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", unset)
    get_settings.cache_clear()
    assert get_settings().BATCH_EXPORT_ROW_LIMIT is None
    monkeypatch.delenv("BATCH_EXPORT_ROW_LIMIT")
    get_settings.cache_clear()
    assert get_settings().BATCH_EXPORT_ROW_LIMIT == 1_500_000  # left out: the compatible default
    get_settings.cache_clear()


def test_a_zero_or_negative_row_limit_is_refused(monkeypatch):
    from pydantic import ValidationError

    from schemas.settings import Settings

    for bad in ("0", "-5", "many"):
        monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", bad)
        with pytest.raises(ValidationError, match="BATCH_EXPORT_ROW_LIMIT"):
            Settings()


@pytest.mark.parametrize("fmt", ["CSV", "PARQUET"])
def test_without_a_row_limit_every_row_is_exported_and_nothing_is_cut(conn, export_settings, monkeypatch, fmt):
    from schemas import BatchExportQuery
    from workers.filters import compile_query
    from workers.formats import FORMATS, count_rows, one_more

    project = small_project(conn, [f"n{i}" for i in range(8)])
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", "none")
    get_settings.cache_clear()
    export_id = project.new_export(conn, {"tableName": "traces"}, fmt)
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    assert row["rows_exported"] == row["rows_total"] == 8 and "limit" not in row["log"]
    # No ceiling at all in what Postgres is asked, not merely a large one.
    compiled = compile_query(BatchExportQuery.model_validate({"tableName": "traces"}))
    for statement in (FORMATS["CSV"].copy_statement(compiled, one_more(None)), count_rows(compiled, None)):
        assert "LIMIT" not in statement.as_string(conn)


# --- lifecycle ------------------------------------------------------------------------------------------


def test_missing_export_ends_quietly(export_settings):
    run_batch_export("no-such-export")


def test_cancelled_export_is_not_started(conn, export_settings, storage_dir, seeded):
    export_id = seeded.new_export(conn, {"tableName": "traces"})
    conn.execute(batch_exports.CANCEL_SQL, {"id": export_id, "project_id": seeded.id})
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "CANCELLED" and row["object_key"] is None
    assert files_under(storage_dir) == []


def test_completed_export_records_key_expiry_and_emails_a_working_link(
    conn, export_settings, storage_dir, tmp_path, seeded
):
    export_id = seeded.new_export(conn, {"tableName": "scores"}, "CSV", name="Q1 scores / ../../etc")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED" and row["finished_at"] is not None
    assert row["object_key"] == f"{seeded.id}/{export_id}/Q1_scores_etc.csv"
    hours = (row["expires_at"] - row["finished_at"]).total_seconds() / 3600
    assert hours == pytest.approx(24)
    assert row["rows_exported"] == row["rows_total"] == len(seeded.scores)
    [message] = outbox(tmp_path)
    assert message["To"] == seeded.user_email and "Q1 scores" in message["Subject"]
    body = message.get_content()
    assert f"Rows: {len(seeded.scores)}" in body
    [url] = [line for line in body.splitlines() if line.startswith("http://exports.test/exports/download?")]
    from urllib.parse import parse_qs, urlparse

    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    assert query["key"] == row["object_key"]
    assert verify_download_signature(query["key"], query["expires"], query["sig"], get_settings())
    assert int(query["expires"]) == int(row["expires_at"].timestamp())


def test_invalid_stored_query_fails_without_retry(conn, export_settings, seeded, tmp_path):
    export_id = seeded.new_export(
        conn,
        {"tableName": "traces", "filter": [{"column": "secret", "type": "string", "operator": "=", "value": "x"}]},
    )
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "FAILED" and 'Unknown filter column "secret"' in row["log"]
    [message] = outbox(tmp_path)
    assert "failed" in message["Subject"] and "secret" in message.get_content()


def test_storage_failure_sets_failed_with_an_actionable_message(conn, export_settings, seeded, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    monkeypatch.setenv("EXPORT_STORAGE_URL", blocker.as_uri())
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, {"tableName": "traces"})
    with pytest.raises(ExportFailed) as caught:
        run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "FAILED"
    assert row["log"] == str(caught.value)
    assert row["log"].startswith("Writing the export file to storage failed") and "internal" not in row["log"].lower()


# --- cancel, progress and atomic files on a big export ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["JSON", "PARQUET"])
def test_cancel_mid_export_stops_the_stream_and_leaves_no_file(conn, gated_export, storage_dir, big_project, fmt):
    export_id = big_project.new_export(conn, {"tableName": "traces"}, fmt)
    # Parquet's driver reads 8 MiB batches: hold its stream once a few have been written.
    gated_export.hold(after=4 * 1024 * 1024 if fmt == "JSON" else 24 * 1024 * 1024)
    worker = threading.Thread(target=run_batch_export, args=(export_id,))
    worker.start()
    # Held mid-stream: progress was recorded, and no final object is visible yet.
    gated_export.wait_held()
    row = wait_for(lambda: (r := batch_exports.load(conn, export_id)) and r["rows_exported"] > 0 and r)
    assert row["status"] == "PROCESSING"
    assert all(p.name.endswith(".partial") for p in files_under(storage_dir))
    conn.execute(batch_exports.CANCEL_SQL, {"id": export_id, "project_id": big_project.id})
    # The job's progress thread notices and cancels the query; only then may the stream go on.
    gated_export.wait_cancel_request()
    gated_export.release()
    worker.join(timeout=60)
    assert not worker.is_alive()
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "CANCELLED" and row["object_key"] is None
    assert row["rows_exported"] < BIG_TRACES
    assert files_under(storage_dir) == []


def test_progress_reports_rows_and_total_while_the_object_stays_invisible(conn, gated_export, storage_dir, big_project):
    export_id = big_project.new_export(conn, {"tableName": "traces"}, "CSV")
    gated_export.hold()
    worker = threading.Thread(target=run_batch_export, args=(export_id,))
    worker.start()
    gated_export.wait_held()
    # Held mid-stream: the rows written so far and the table's total are recorded, the file is not visible.
    row = wait_for(
        lambda: (r := batch_exports.load(conn, export_id)) and r["rows_exported"] > 0 and r["rows_total"] and r
    )
    assert row["status"] == "PROCESSING"
    assert 0 < row["rows_exported"] < BIG_TRACES
    assert row["rows_total"] == BIG_TRACES
    [partial] = wait_for(lambda: [p for p in files_under(storage_dir) if p.stat().st_size > 0])
    assert partial.name.endswith(".partial"), "part of the file is written, under a temporary name"
    gated_export.release()
    worker.join(timeout=120)
    assert not worker.is_alive()
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED" and row["rows_exported"] == BIG_TRACES
    assert [p.name for p in files_under(storage_dir)] == ["my_export.csv"]
