"""Large exports written in parts by RQ workers: the same file as one stream, resumed part by part, fair."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from db import batch_export_parts, batch_exports
from schemas.settings import get_settings
from tests.support.exports import run_export
from workers.queue import build_worker, enqueue_export

TRACES = {"tableName": "traces"}


@pytest.fixture
def parts_settings(export_settings, redis_url, redis_client, monkeypatch):
    """Exports of more than 7 rows are written in parts of 7, by RQ workers reading this Redis."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "7")
    get_settings.cache_clear()
    return get_settings()


def single_stream(conn, monkeypatch, project, query, fmt, compression=None, columns=None) -> bytes:
    """The export as one stream (parts larger than any table here), run in this process."""
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "1000000")
    get_settings.cache_clear()
    try:
        export_id = project.new_export(conn, query, fmt, compression=compression, columns=columns)
        row = run_export(conn, export_id)
        assert row["status"] == "COMPLETED", row["log"]
        assert row["parts_total"] == 1
        return stored(row)
    finally:
        monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "7")
        get_settings.cache_clear()


def stored(row: dict[str, Any]) -> bytes:
    root = Path(get_settings().EXPORT_STORAGE_URL.removeprefix("file://"))
    return (root / row["object_key"]).read_bytes()


def in_parts(conn, redis_client, project, query, fmt, compression=None, columns=None) -> dict[str, Any]:
    """The export enqueued as the API does, run to its end by one burst RQ worker (parts, then the assembly)."""
    export_id = project.new_export(conn, query, fmt, compression=compression, columns=columns)
    enqueue_export(redis_client, export_id, get_settings())
    build_worker(redis_client).work(burst=True)
    return batch_exports.load(conn, export_id)


def decompressed(data: bytes, compression: str) -> bytes:
    """What the standard tools make of the file: several gzip members or zstd frames are one stream to them."""
    if compression == "none":
        return data
    tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"]}[compression]
    return subprocess.run(tool, input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("fmt", ["CSV", "JSON", "JSONL"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_an_export_in_parts_is_the_file_one_stream_writes(
    conn, parts_settings, redis_client, monkeypatch, seeded, fmt, compression
):
    expected = single_stream(conn, monkeypatch, seeded, TRACES, fmt, compression)
    row = in_parts(conn, redis_client, seeded, TRACES, fmt, compression)
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] == row["parts_done"] == -(-len(seeded.traces) // 7) > 2
    data = stored(row)
    assert decompressed(data, compression) == decompressed(expected, compression)
    if compression == "none":
        assert data == expected
    assert row["rows_exported"] == len(seeded.traces)
    assert row["file_bytes"] == len(data)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert f"in {row['parts_total']} parts" in row["log"]


def test_a_parquet_export_in_parts_is_one_file_with_the_rows_of_one_stream(
    conn, parts_settings, redis_client, monkeypatch, seeded, tmp_path
):
    expected = single_stream(conn, monkeypatch, seeded, TRACES, "PARQUET")
    row = in_parts(conn, redis_client, seeded, TRACES, "PARQUET")
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] > 2
    data = stored(row)
    joined = pq.ParquetFile(io.BytesIO(data))
    assert joined.metadata.num_row_groups == row["parts_total"]
    assert pq.read_table(io.BytesIO(data)).equals(pq.read_table(io.BytesIO(expected)))


def test_parts_are_deleted_once_joined(conn, parts_settings, redis_client, seeded):
    row = in_parts(conn, redis_client, seeded, TRACES, "CSV")
    assert row["status"] == "COMPLETED", row["log"]
    root = Path(get_settings().EXPORT_STORAGE_URL.removeprefix("file://"))
    export_folder = (root / row["object_key"]).parent
    assert [p.name for p in export_folder.iterdir()] == [Path(row["object_key"]).name]
    assert all(p["object_key"] is None and p["attempts"] == 1 for p in batch_export_parts.parts(conn, row["id"]))


@pytest.mark.parametrize(
    "query",
    [
        {"tableName": "traces", "orderBy": {"column": "name", "order": "ASC"}},
        {"tableName": "traces", "orderBy": {"column": "userId", "order": "DESC"}},
        {"tableName": "traces", "orderBy": {"column": "latency", "order": "ASC"}},
        {"tableName": "traces", "orderBy": {"column": "id", "order": "DESC"}},
        {"tableName": "observations", "orderBy": {"column": "startTime", "order": "ASC"}},
        {"tableName": "observations", "orderBy": {"column": "totalCost", "order": "DESC"}},
        {"tableName": "scores", "orderBy": {"column": "value", "order": "ASC"}},
        {"tableName": "sessions"},
        {"tableName": "dataset_items"},
        {"tableName": "audit_logs"},
    ],
    ids=lambda q: f"{q['tableName']}-{q.get('orderBy', {}).get('column', 'default')}",
)
def test_parts_cut_any_order_without_losing_or_repeating_a_row(
    conn, parts_settings, redis_client, monkeypatch, seeded, query
):
    # Ranges start among ties, NULLs (last in both directions) and computed values alike.
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "3")
    get_settings.cache_clear()
    expected = single_stream(conn, monkeypatch, seeded, query, "JSONL")
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "3")
    get_settings.cache_clear()
    row = in_parts(conn, redis_client, seeded, query, "JSONL")
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] > 1
    assert stored(row) == expected


def test_an_export_in_parts_keeps_to_the_row_limit_and_says_so(conn, parts_settings, redis_client, monkeypatch, seeded):
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", "17")
    get_settings.cache_clear()
    row = in_parts(conn, redis_client, seeded, TRACES, "JSON")
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] == 3 and row["rows_exported"] == 17
    assert "more matching rows than the export limit of 17" in row["log"]
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "1000000")
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, TRACES, "JSON")
    assert stored(row) == stored(run_export(conn, export_id))


def test_rows_written_while_parts_run_obey_the_stated_guarantee(conn, parts_settings, redis_client, project):
    """Rows created after the export never appear; every other row appears once, as its part read it."""
    from tests.support.exports import insert_big_traces
    from workers.export_parts import run_export_part

    insert_big_traces(conn, project.id, 40)  # big-0000001 .. big-0000040, in timestamp order by id
    query = {"tableName": "traces", "orderBy": {"column": "id", "order": "ASC"}}
    export_id = project.new_export(conn, query, "JSONL")
    from workers.batch_export import run_batch_export

    run_batch_export(export_id)  # plans 6 parts of 7 and enqueues them; no worker runs yet
    run_export_part(export_id, 0)  # the first part is read now ...
    # ... then the world moves on, before the other parts are read.
    conn.execute(
        "UPDATE traces SET name = 'renamed' WHERE project_id = %s AND id IN ('big-0000002', 'big-0000030')",
        (project.id,),
    )
    conn.execute(
        "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('big-0000020a', %s, now(), 'late')", (project.id,)
    )
    build_worker(redis_client).work(burst=True)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] == 6
    rows = [json.loads(line) for line in stored(row).decode().splitlines()]
    assert [r["id"] for r in rows] == [f"big-{n:07d}" for n in range(1, 41)]
    names = {r["id"]: r["name"] for r in rows}
    assert names["big-0000002"] == "trace 2"  # its part was read before the update
    assert names["big-0000030"] == "renamed"  # its part was read after it
    parts = batch_export_parts.parts(conn, export_id)
    assert [p["attempts"] for p in parts] == [1] * 6


def test_an_export_in_parts_on_s3_is_one_object_copied_from_its_parts(
    conn, s3_settings, redis_url, redis_client, monkeypatch, big_project, s3_endpoint, s3_bucket
):
    """Parts of tens of MB are copied inside S3 (UploadPartCopy), the small header and footer ride along."""
    import boto3

    from tests.support.s3 import S3_PREFIX, stored_object

    query = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}
    reference = run_export(conn, big_project.new_export(conn, query, "JSON"))
    assert reference["status"] == "COMPLETED", reference["log"]
    _, expected = stored_object(s3_endpoint, s3_bucket, reference["object_key"])
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "120000")
    get_settings.cache_clear()
    row = in_parts(conn, redis_client, big_project, query, "JSON")
    assert row["status"] == "COMPLETED", row["log"]
    assert row["parts_total"] == 3
    content_type, data = stored_object(s3_endpoint, s3_bucket, row["object_key"])
    assert content_type == "application/json"
    assert data == expected and row["sha256"] == hashlib.sha256(data).hexdigest()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=S3_PREFIX).get("Contents", [])]
    assert sorted(keys) == sorted(f"{S3_PREFIX}/{r['object_key']}" for r in (reference, row))
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_a_cancelled_export_in_parts_on_s3_leaves_no_object_and_no_upload(
    conn, s3_settings, redis_url, redis_client, monkeypatch, seeded, s3_endpoint, s3_bucket
):
    import boto3

    from tests.support.s3 import S3_PREFIX
    from workers.batch_export import run_batch_export
    from workers.export_parts import run_export_part

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCH_EXPORT_PART_ROWS", "7")
    get_settings.cache_clear()
    export_id = seeded.new_export(conn, TRACES, "CSV", compression="gzip")
    run_batch_export(export_id)  # planned; the parts' jobs wait in Redis
    run_export_part(export_id, 0)
    run_export_part(export_id, 1)  # two parts stored in the bucket ...
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def stored_keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=S3_PREFIX).get("Contents", [])]

    assert len(stored_keys()) == 2
    conn.execute(batch_exports.CANCEL_SQL, {"id": export_id, "project_id": seeded.id})  # ... when it is cancelled
    build_worker(redis_client).work(burst=True)

    row = batch_exports.load(conn, export_id)
    assert row["status"] == "CANCELLED" and row["object_key"] is None
    assert stored_keys() == []
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert [p["status"] for p in batch_export_parts.parts(conn, export_id)][:2] == ["DONE", "DONE"]
