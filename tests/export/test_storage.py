"""Storage: keys that never escape the prefix, atomic objects, signed links, the expiry sweep, and S3 for real."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from db import batch_exports
from schemas.settings import Settings, get_settings
from tests.support.s3 import S3_PREFIX, stored_object
from workers.batch_export import run_batch_export
from workers.maintenance import delete_expired_exports
from workers.storage import (
    FileStorage,
    S3Storage,
    StorageError,
    object_key,
    open_storage,
    safe_name,
    verify_download_signature,
)

HOSTILE_NAMES = [
    "../../etc/passwd",
    "..\\..\\windows",
    "name/with/slashes",
    "/abs/olute",
    "..",
    ".",
    "",
    "   ",
    "\x00\x01\x1f\x7f ctrl",
    "line\nbreak\r",
    "CON",
    "aux.txt",
    "a" * 500,
    "日本語のテキスト",
    "emoji 🚀🔥",
    ".hidden",
    "~user",
    "%2e%2e%2f",
    "C:\\Windows\\system32",
]


# --- keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_export_names_stay_one_segment_under_the_prefix(tmp_path, name):
    key = object_key("project-1", "export-1", name, "csv")
    project, export, filename = key.split("/")
    assert (project, export) == ("project-1", "export-1")
    assert filename.endswith(".csv") and not filename.startswith(".")
    assert ".." not in filename and "\\" not in filename and len(filename) <= 104
    assert all(ord(ch) >= 32 and ch != "\x7f" for ch in filename)
    storage = FileStorage(tmp_path)
    assert storage.path(key).parent == (tmp_path / "project-1" / "export-1").resolve()


def test_every_awkward_string_makes_a_safe_name(awkward_values, tmp_path):
    storage = FileStorage(tmp_path)
    for text in awkward_values["strings"]:
        key = object_key("p", "e", text, "json")
        assert key.count("/") == 2 and storage.path(key).is_relative_to(tmp_path.resolve())
    assert safe_name("Q1 report: traces (EU)") == "Q1_report_traces_EU"
    assert safe_name("CON") == "_CON"


def test_project_and_export_ids_are_sanitized_too(tmp_path):
    key = object_key("../..", "../x", "n", "csv")
    assert key == "project/x/n.csv"


@pytest.mark.parametrize("key", ["../x.csv", "a/../../x.csv", "/etc/passwd", "a//b.csv", "a/./b.csv", ""])
def test_keys_that_would_escape_are_refused(tmp_path, key):
    with pytest.raises(StorageError):
        FileStorage(tmp_path).path(key)


# --- file storage ----------------------------------------------------------------------------------------


def test_file_object_appears_only_when_complete(tmp_path):
    storage = FileStorage(tmp_path)
    key = "p/e/out.csv"
    with storage.writer(key, "text/csv") as out:
        out.write(b"a,b\n" * 100_000)
        assert not storage.exists(key)
        assert [p.name for p in (tmp_path / "p" / "e").iterdir()][0].endswith(".partial")
    assert storage.exists(key)
    assert storage.open_read(key).read() == b"a,b\n" * 100_000
    assert [p.name for p in (tmp_path / "p" / "e").iterdir()] == ["out.csv"]


def test_failed_write_leaves_nothing_and_keeps_the_previous_object(tmp_path):
    storage = FileStorage(tmp_path)
    key = "p/e/out.csv"
    with storage.writer(key, "text/csv") as out:
        out.write(b"complete\n")
    with pytest.raises(RuntimeError), storage.writer(key, "text/csv") as out:
        out.write(b"partial")
        raise RuntimeError("crash")
    assert storage.open_read(key).read() == b"complete\n"
    assert [p.name for p in (tmp_path / "p" / "e").iterdir()] == ["out.csv"]


def test_partials_of_a_crashed_attempt_are_discarded(tmp_path):
    storage = FileStorage(tmp_path)
    folder = tmp_path / "p" / "e"
    folder.mkdir(parents=True)
    (folder / ".out.csv.deadbeef.partial").write_bytes(b"half")
    (folder / "other.csv").write_bytes(b"keep")
    storage.discard_partials("p/e/out.csv")
    assert [p.name for p in folder.iterdir()] == ["other.csv"]


def test_delete_removes_the_object_and_its_empty_folders(tmp_path):
    storage = FileStorage(tmp_path)
    with storage.writer("p/e/out.csv", "text/csv") as out:
        out.write(b"x")
    storage.delete("p/e/out.csv")
    assert list(tmp_path.iterdir()) == []
    storage.delete("p/e/out.csv")  # idempotent


# --- signed links ----------------------------------------------------------------------------------------


def settings_for(**overrides) -> Settings:
    values = {"SECRET_KEY": "a-secret-for-signing-links", "PUBLIC_BASE_URL": "http://app.test", **overrides}
    return Settings(_env_file=None, **values)


def signed(url: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlparse

    assert url.startswith("http://app.test/exports/download?")
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_file_links_are_signed_and_expire(tmp_path):
    settings = settings_for()
    storage = FileStorage(tmp_path)
    key = "p/e/report é.csv"
    link = signed(storage.download_url(key, datetime.now(UTC) + timedelta(minutes=10), settings))
    assert link["key"] == key
    assert verify_download_signature(link["key"], link["expires"], link["sig"], settings)
    assert not verify_download_signature("p/e/other.csv", link["expires"], link["sig"], settings)
    assert not verify_download_signature(key, str(int(link["expires"]) + 60), link["sig"], settings)
    assert not verify_download_signature(
        key, link["expires"], link["sig"][:-1] + ("1" if link["sig"][-1] == "0" else "0"), settings
    )
    assert not verify_download_signature(key, "soon", link["sig"], settings)
    assert not verify_download_signature(
        key, link["expires"], link["sig"], settings_for(SECRET_KEY="another-secret-key-123")
    )
    expired = signed(storage.download_url(key, datetime.now(UTC) - timedelta(seconds=1), settings))
    assert not verify_download_signature(expired["key"], expired["expires"], expired["sig"], settings)


# --- the expiry sweep ------------------------------------------------------------------------------------


def test_expired_export_objects_are_deleted_and_forgotten(conn, export_settings, storage_dir, seeded):
    expired_id = seeded.new_export(conn, {"tableName": "audit_logs"}, "CSV", name="old")
    fresh_id = seeded.new_export(conn, {"tableName": "audit_logs"}, "CSV", name="new")
    run_batch_export(expired_id)
    run_batch_export(fresh_id)
    conn.execute("UPDATE batch_exports SET expires_at = now() - interval '1 minute' WHERE id = %s", (expired_id,))
    storage = open_storage(get_settings())
    expired_key = batch_exports.load(conn, expired_id)["object_key"]
    assert storage.exists(expired_key)
    assert delete_expired_exports(conn, storage) >= 1
    assert not storage.exists(expired_key)
    assert batch_exports.load(conn, expired_id)["object_key"] is None
    fresh = batch_exports.load(conn, fresh_id)
    assert fresh["object_key"] and storage.exists(fresh["object_key"])
    assert delete_expired_exports(conn, storage) == 0


# --- S3, against moto's standalone server on loopback ------------------------------------------------


def test_export_to_s3_completes_with_a_presigned_attachment_link(conn, s3_settings, s3_bucket, s3_endpoint, seeded):
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "CSV", name="traces: ../all")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    content_type, data = stored_object(s3_endpoint, s3_bucket, row["object_key"])
    assert content_type.startswith("text/csv")
    assert data.decode().startswith("id,timestamp,name,") and row["object_key"].endswith("/traces_all.csv")
    storage = open_storage(s3_settings)
    assert isinstance(storage, S3Storage) and storage.exists(row["object_key"])
    assert storage.open_read(row["object_key"]).read() == data
    url = storage.download_url(row["object_key"], datetime.now(UTC) + timedelta(minutes=10), s3_settings)
    with urllib.request.urlopen(url) as response:
        assert response.read() == data
        assert response.headers["Content-Disposition"].startswith('attachment; filename="traces_all.csv"')


def test_large_s3_export_is_a_multipart_upload(conn, s3_settings, s3_bucket, s3_endpoint, big_project):
    cut = "2025-01-01T08:20:00Z"  # about 90,000 traces: well over two 8 MiB parts
    query = {
        "tableName": "traces",
        "filter": [{"column": "timestamp", "type": "datetime", "operator": "<", "value": cut}],
    }
    export_id = big_project.new_export(conn, query, "JSONL")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    head = client.head_object(Bucket=s3_bucket, Key=f"{S3_PREFIX}/{row['object_key']}")
    assert head["ContentLength"] > 10 * 1024 * 1024
    assert head["ETag"].strip('"').rsplit("-", 1)[1].isdigit()  # multipart ETags end in -<parts>
    _, body = stored_object(s3_endpoint, s3_bucket, row["object_key"])
    assert body.count(b"\n") == row["rows_exported"] > 80_000


def test_failed_s3_write_aborts_the_upload_and_leaves_no_object(s3_settings, s3_bucket, s3_endpoint):
    storage = open_storage(s3_settings)
    key = "p/e/broken.csv"
    with pytest.raises(RuntimeError), storage.writer(key, "text/csv") as out:
        out.write(b"x" * (9 * 1024 * 1024))  # one part already uploaded
        raise RuntimeError("crash mid-export")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert not storage.exists(key)


def test_s3_partials_of_a_crashed_attempt_are_discarded(s3_settings, s3_bucket, s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_multipart_upload(Bucket=s3_bucket, Key=f"{S3_PREFIX}/p/e/out.csv")
    open_storage(s3_settings).discard_partials("p/e/out.csv")
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
