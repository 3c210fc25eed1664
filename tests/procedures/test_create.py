"""batchExport.create: the export row, its audit entry, and exactly one RQ job."""

import csv
import io
from pathlib import Path

import pytest
from rq.job import Job

from tests.support.rpc_client import TRACES_QUERY, create_params
from workers.queue import QUEUE_NAME, enqueue_export, export_queue


def test_create_returns_the_queued_export(client, project, owner_token):
    params = create_params(project.id, name="  weekly traces  ", format="JSONL")
    export = client.result("batchExport.create", params, token=owner_token)
    assert export["status"] == "QUEUED"
    assert export["projectId"] == project.id
    assert export["name"] == "weekly traces"
    assert export["format"] == "JSONL"
    assert export["query"]["tableName"] == "traces"
    assert export["progress"] == {"rowsExported": 0, "rowsTotal": None, "partsDone": 0, "partsTotal": 1}
    assert export["isDownloadable"] is False and export["isExpired"] is False
    assert export["finishedAt"] is None and export["expiresAt"] is None
    assert export["user"]["name"] == "Olive Owner"


def test_create_stores_the_export_and_its_audit_entry(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    row = conn.execute("SELECT * FROM batch_exports WHERE id = %s", (export["id"],)).fetchone()
    assert row["status"] == "QUEUED" and row["project_id"] == project.id
    audit = conn.execute(
        "SELECT * FROM audit_logs WHERE resource_type = 'batchExport' AND resource_id = %s", (export["id"],)
    ).fetchall()
    assert len(audit) == 1
    assert audit[0]["action"] == "create"
    assert audit[0]["project_id"] == project.id and audit[0]["org_id"] == project.org_id
    assert audit[0]["user_project_role"] == "OWNER"
    assert audit[0]["before"] is None
    assert audit[0]["after"]["id"] == export["id"] and audit[0]["after"]["status"] == "QUEUED"


def test_create_enqueues_one_job_whose_id_is_the_export_id(client, project, owner_token, redis_client):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    queue = export_queue(redis_client)
    assert queue.name == QUEUE_NAME
    assert queue.get_job_ids() == [export["id"]]
    job = Job.fetch(export["id"], connection=redis_client, serializer=queue.serializer)
    assert job.func_name == "workers.batch_export.run_batch_export"
    assert job.args == [export["id"]]
    assert job.retries_left and job.retries_left > 0
    assert job.timeout and job.timeout > 0


def test_enqueueing_the_same_export_twice_leaves_one_job(client, project, owner_token, redis_client, settings):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    assert enqueue_export(redis_client, export["id"], settings) is False
    assert enqueue_export(redis_client, export["id"], settings) is False
    assert export_queue(redis_client).get_job_ids() == [export["id"]]


def test_jobs_are_stored_as_json_not_pickle(client, project, owner_token, redis_client):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    import json
    import zlib

    payload = zlib.decompress(redis_client.hget(f"rq:job:{export['id']}", "data"))
    # JSON, readable by any language; a pickle would start with b"\x80" and fail to parse here.
    assert json.loads(payload)[2] == [export["id"]]


def test_query_naming_an_unknown_column_is_bad_request_listing_valid_ones(client, project, owner_token, conn):
    bad = {"tableName": "traces", "filter": [{"column": "colour", "type": "string", "operator": "=", "value": "red"}]}
    error = client.error("batchExport.create", create_params(project.id, query=bad), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST" and error["code"] == -32602
    assert "colour" in error["message"] and "timestamp" in error["message"]
    assert (
        conn.execute("SELECT count(*) AS n FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["n"]
        == 0
    )


def test_filter_operator_not_allowed_for_its_type_is_bad_request(client, project, owner_token):
    bad = {"tableName": "traces", "filter": [{"column": "name", "type": "string", "operator": "any of", "value": "x"}]}
    error = client.error("batchExport.create", create_params(project.id, query=bad), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert any("operator" in issue["loc"] for issue in error["data"]["issues"])


def test_unknown_table_is_bad_request(client, project, owner_token):
    error = client.error(
        "batchExport.create", create_params(project.id, query={"tableName": "users"}), token=owner_token
    )
    assert error["data"]["code"] == "BAD_REQUEST"


def test_empty_name_is_bad_request(client, project, owner_token):
    error = client.error("batchExport.create", create_params(project.id, name="   "), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"


def test_unknown_field_is_bad_request(client, project, owner_token):
    error = client.error("batchExport.create", create_params(project.id, formt="CSV"), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"


def test_awkward_names_are_stored_verbatim(client, project, owner_token, awkward_values):
    for name in [s for s in awkward_values["strings"] if s.strip() and len(s) <= 255][:40]:
        export = client.result("batchExport.create", create_params(project.id, name=name), token=owner_token)
        assert export["name"] == name.strip()
        client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token)


def test_too_many_active_exports_is_too_many_requests(client, project, owner_token, settings):
    for _ in range(settings.BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT):
        client.result("batchExport.create", create_params(project.id), token=owner_token)
    error = client.error("batchExport.create", create_params(project.id), token=owner_token)
    assert error["code"] == -32029 and error["data"]["code"] == "TOO_MANY_REQUESTS"
    assert str(settings.BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT) in error["message"]


def test_search_type_longer_than_its_choices_is_bad_request(client, project, owner_token):
    query = {**TRACES_QUERY, "searchQuery": "x", "searchType": ["id", "content"] * 50_000}
    error = client.error("batchExport.create", create_params(project.id, query=query), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert any("searchType" in issue["loc"] for issue in error["data"]["issues"])


def test_search_type_with_both_choices_is_accepted(client, project, owner_token):
    query = {**TRACES_QUERY, "searchQuery": "x", "searchType": ["id", "content"]}
    export = client.result("batchExport.create", create_params(project.id, query=query), token=owner_token)
    assert export["query"]["searchType"] == ["id", "content"]


def _after(value: str) -> dict:
    return {
        "tableName": "traces",
        "filter": [{"column": "timestamp", "type": "datetime", "operator": ">", "value": value}],
        "orderBy": {"column": "timestamp", "order": "ASC"},
    }


@pytest.mark.parametrize(
    "sent, in_utc",
    [
        ("2026-01-01T00:00:00+23:59", "2025-12-31T00:01:00Z"),
        ("2026-01-01T00:00:00-16:00", "2026-01-01T16:00:00Z"),
        ("2026-01-01T00:00:00", "2026-01-01T00:00:00Z"),
    ],
)
def test_datetime_filters_are_stored_in_utc(client, project, owner_token, sent, in_utc):
    export = client.result("batchExport.create", create_params(project.id, query=_after(sent)), token=owner_token)
    assert export["query"]["filter"][0]["value"] == in_utc


@pytest.mark.parametrize("sent", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_datetime_filter_outside_the_years_postgres_takes_in_utc_is_bad_request(client, project, owner_token, sent):
    error = client.error("batchExport.create", create_params(project.id, query=_after(sent)), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert "out of range" in error["message"] or any("out of range" in i["msg"] for i in error["data"]["issues"])


def test_datetime_filter_with_an_offset_postgres_refuses_exports_the_rows_after_that_instant(
    client, project, owner_token, conn, settings, tmp_path, monkeypatch
):
    from db import batch_exports
    from workers.batch_export import run_batch_export

    for trace_id, at in (("before", "2025-12-31T00:00:00Z"), ("after", "2025-12-31T00:02:00Z")):
        conn.execute(
            "INSERT INTO traces (id, project_id, timestamp, name) VALUES (%s, %s, %s, %s)",
            (trace_id, project.id, at, trace_id),
        )
    query = _after("2026-01-01T00:00:00+23:59")  # 2025-12-31T00:01:00Z
    export = client.result("batchExport.create", create_params(project.id, query=query), token=owner_token)
    monkeypatch.chdir(tmp_path)  # the job's email outbox
    run_batch_export(export["id"])

    row = batch_exports.load(conn, export["id"])
    assert row["status"] == "COMPLETED", row["log"]
    storage = Path(settings.EXPORT_STORAGE_URL.removeprefix("file://"))
    rows = list(csv.DictReader(io.StringIO((storage / row["object_key"]).read_text(), newline="")))
    assert [r["id"] for r in rows] == ["after"]
