"""Storage failing under a real worker: S3 unreachable, the export folder unwritable.

Each attempt that fails says what is wrong with the storage, the export is retried, and what a
failed attempt was writing never becomes visible: no partial file, no half-uploaded object.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from devstack.servers import free_port
from tests.support.faults import FaultStack
from tests.support.processes import TcpProxy, attempts_of, overlapping, wait_for
from tests.support.world import Project
from workers.batch_export import run_batch_export

pytestmark = pytest.mark.slow

AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
# About 30,000 traces of the big project: a ~20 MB CSV, so three parts of a multipart upload.
FIRST_HOURS = {
    "tableName": "traces",
    "filter": [{"column": "timestamp", "type": "datetime", "operator": "<", "value": "2025-01-01T02:46:40Z"}],
    "orderBy": {"column": "timestamp", "order": "ASC"},
}


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture
def s3(moto_port: int, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket; the client talks to moto directly, never through the test's proxy."""
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}")
    bucket = f"exports-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


def uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])


def objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket).get("Contents", [])]


def finished(stack: FaultStack, export_id: str) -> dict | None:
    row = stack.load(export_id)
    return row if row["status"] not in ("QUEUED", "PROCESSING") else None


def status_after_attempt(stack: FaultStack, export_id: str) -> dict | None:
    row = stack.load(export_id)
    return row if row["status"] == "FAILED" or "Retrying automatically" in (row["log"] or "") else None


def test_s3_cut_off_mid_upload_fails_the_attempt_and_the_retry_leaves_one_complete_object(
    stack: FaultStack, big_tenant: Project, conn, s3, moto_port
):
    reference_id = big_tenant.new_export(conn, FIRST_HOURS, name="to s3")
    run_batch_export(reference_id)  # to the local folder: the bytes an undisturbed export holds
    reference = stack.load(reference_id)
    undisturbed = stack.file(reference).read_bytes()
    assert len(undisturbed) > 16 * 1024 * 1024

    proxy = TcpProxy(moto_port).start()
    stack.configure(
        EXPORT_STORAGE_URL=f"s3://{s3.bucket}/exports",
        S3_ENDPOINT_URL=proxy.url,
        BATCH_EXPORT_JOB_RETRIES=2,
        BATCH_EXPORT_JOB_RETRY_DELAYS=(2,),
    )
    # The attempt's row stream is held once its first part is uploaded, so S3 goes away mid-upload
    # however fast the machine is.
    gate = stack.stream_gate()
    gate.hold(after=12 * 1024 * 1024)
    worker = stack.worker(**AWS)
    export_id = big_tenant.new_export(conn, FIRST_HOURS, name="to s3")
    assert stack.enqueue(export_id)
    try:
        gate.wait_held()
        wait_for(lambda: uploads(s3), 60, "the multipart upload to begin", worker, interval=0.05)
        proxy.cut()  # S3 is gone: the next part's connection is refused
        gate.release()
        failed_once = wait_for(lambda: status_after_attempt(stack, export_id), 60, "the attempt to fail", worker)
        assert failed_once["status"] == "PROCESSING"
        assert failed_once["log"].startswith(f"The S3 storage could not be reached at {proxy.url}"), failed_once["log"]
        assert objects(s3) == [], "a failed attempt makes no object visible"
        assert len(uploads(s3)) == 1, "S3 was down, so the attempt could not abort its upload either"
    finally:
        proxy.restore()

    done = wait_for(lambda: finished(stack, export_id), 60, "the retry", worker)
    assert done["status"] == "COMPLETED", done["log"]
    assert objects(s3) == [f"exports/{done['object_key']}"]
    assert s3.get_object(Bucket=s3.bucket, Key=f"exports/{done['object_key']}")["Body"].read() == undisturbed
    assert uploads(s3) == [], "the retry aborted the upload the failed attempt left behind"
    runs = attempts_of(export_id, worker)
    assert len(runs) == 2 and overlapping(runs) == []


def test_s3_down_on_every_attempt_ends_failed_naming_the_endpoint(stack: FaultStack, small_tenant: Project, conn, s3):
    unreachable = f"http://127.0.0.1:{free_port()}"
    stack.configure(
        EXPORT_STORAGE_URL=f"s3://{s3.bucket}/exports",
        S3_ENDPOINT_URL=unreachable,
        BATCH_EXPORT_JOB_RETRIES=1,
        BATCH_EXPORT_JOB_RETRY_DELAYS=(1,),
    )
    worker = stack.worker(**AWS)
    export_id = small_tenant.new_export(conn)
    assert stack.enqueue(export_id)
    failed = wait_for(lambda: finished(stack, export_id), 90, "both attempts to fail", worker)
    assert failed["status"] == "FAILED"
    assert failed["log"].startswith(f"The S3 storage could not be reached at {unreachable}"), failed["log"]
    assert "S3_ENDPOINT_URL" in failed["log"]
    assert len(attempts_of(export_id, worker)) == 2
    assert objects(s3) == [] and uploads(s3) == []


def not_a_folder(stack: FaultStack) -> Path:
    """Where the export folder should be, a regular file: no one can write below it, root included."""
    path = stack.folder / "export-disk"
    path.write_text("a file, not a folder")
    return path


def test_unwritable_export_folder_fails_the_attempt_clearly_and_the_retry_writes_the_file(
    stack: FaultStack, small_tenant: Project, conn
):
    blocked = not_a_folder(stack)
    stack.configure(EXPORT_STORAGE_URL=blocked.as_uri(), BATCH_EXPORT_JOB_RETRIES=1, BATCH_EXPORT_JOB_RETRY_DELAYS=(5,))
    worker = stack.worker()
    export_id = small_tenant.new_export(conn)
    assert stack.enqueue(export_id)
    failed_once = wait_for(lambda: status_after_attempt(stack, export_id), 60, "the attempt to fail", worker)
    assert failed_once["status"] == "PROCESSING"
    assert failed_once["log"].startswith("Writing the export file to storage failed"), failed_once["log"]
    assert f"the export folder {blocked} is missing, is not a folder, or may not be written" in failed_once["log"]
    assert "EXPORT_STORAGE_URL" in failed_once["log"]

    # The operator fixes the disk before the retry.
    blocked.unlink()
    blocked.mkdir()
    done = wait_for(lambda: finished(stack, export_id), 60, "the retry", worker)
    assert done["status"] == "COMPLETED", done["log"]
    files = [p.relative_to(blocked).as_posix() for p in blocked.rglob("*") if p.is_file()]
    assert files == [done["object_key"]], "no temporary file is left beside the export"
    assert len(attempts_of(export_id, worker)) == 2


def test_export_folder_unwritable_on_every_attempt_ends_failed_with_the_reason(
    stack: FaultStack, small_tenant: Project, conn
):
    blocked = not_a_folder(stack)
    stack.configure(EXPORT_STORAGE_URL=blocked.as_uri(), BATCH_EXPORT_JOB_RETRIES=1)
    worker = stack.worker()
    export_id = small_tenant.new_export(conn)
    assert stack.enqueue(export_id)
    failed = wait_for(lambda: finished(stack, export_id), 60, "both attempts to fail", worker)
    assert failed["status"] == "FAILED"
    assert failed["log"].startswith("Writing the export file to storage failed"), failed["log"]
    assert f"the export folder {blocked} is missing" in failed["log"] and "Retrying" not in failed["log"]
    assert failed["object_key"] is None and blocked.is_file()
    assert len(attempts_of(export_id, worker)) == 2
