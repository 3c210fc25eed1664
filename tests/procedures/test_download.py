"""batchExport.downloadUrl and the signed local download route, end to end through a real worker."""

import csv
import io
import os
import subprocess
import sys
import time
from datetime import UTC
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from devstack.seed import seed
from tests.support.rpc_client import create_params


def run_worker_until_idle(env_overrides: dict | None = None) -> None:
    """`batch-export worker --burst`: a real RQ worker process that exits when the queue is empty."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", "worker", "--burst"],
        env={**os.environ, **(env_overrides or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def wait_for_status(client, project_id, token, export_id, statuses=("COMPLETED", "FAILED", "CANCELLED"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for export in client.result("batchExport.all", {"projectId": project_id, "limit": 100}, token=token)["exports"]:
            if export["id"] == export_id and export["status"] in statuses:
                return export
        time.sleep(0.2)
    raise AssertionError(f"export {export_id} did not reach {statuses}")


@pytest.fixture
def completed_csv_export(client, project, owner_token, redis_client):
    counts = seed(project.conn, project.id, traces=40)
    export = client.result("batchExport.create", create_params(project.id, name="all traces"), token=owner_token)
    run_worker_until_idle()
    finished = wait_for_status(client, project.id, owner_token, export["id"])
    assert finished["status"] == "COMPLETED", finished["log"]
    return finished, counts


def test_a_created_export_is_run_by_the_worker_and_downloadable(client, project, owner_token, completed_csv_export):
    export, counts = completed_csv_export
    assert export["isDownloadable"] is True
    assert export["progress"]["rowsExported"] == counts["traces"]
    assert (export["progress"]["partsDone"], export["progress"]["partsTotal"]) == (1, 1)  # one stream, one part
    link = client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    response = httpx.get(link["url"], timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    assert rows[0][0] == "id" and len(rows) - 1 == counts["traces"]


@pytest.mark.parametrize(
    ("fmt", "compression", "content_type", "suffix"),
    [
        ("PARQUET", None, "application/vnd.apache.parquet", ".parquet"),
        ("JSONL", "gzip", "application/gzip", ".jsonl.gz"),
    ],
)
def test_a_parquet_or_compressed_export_run_by_the_worker_downloads_with_its_content_type(
    client, project, owner_token, redis_client, fmt, compression, content_type, suffix
):
    import gzip

    import pyarrow.parquet as pq

    counts = seed(project.conn, project.id, traces=30)
    params = {**create_params(project.id, name="typed"), "format": fmt}
    if compression:
        params["compression"] = compression
    export = client.result("batchExport.create", params, token=owner_token)
    run_worker_until_idle()  # RQ's work horse loads pyarrow itself, for this job only
    finished = wait_for_status(client, project.id, owner_token, export["id"])
    assert finished["status"] == "COMPLETED", finished["log"]
    link = client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    response = httpx.get(link["url"], timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert f'filename="typed{suffix}"' in response.headers["content-disposition"]
    if fmt == "PARQUET":
        assert pq.read_table(io.BytesIO(response.content)).num_rows == counts["traces"]
    else:
        assert gzip.decompress(response.content).count(b"\n") == counts["traces"]


def test_download_link_expires_within_ten_minutes(client, project, owner_token, completed_csv_export):
    export, _ = completed_csv_export
    link = client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    from datetime import datetime

    remaining = datetime.fromisoformat(link["expiresAt"]) - datetime.now(UTC)
    assert 0 < remaining.total_seconds() <= 600


def test_download_writes_an_audit_entry(client, project, owner_token, completed_csv_export, conn):
    export, _ = completed_csv_export
    client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    actions = [
        r["action"]
        for r in conn.execute(
            "SELECT action FROM audit_logs WHERE resource_id = %s ORDER BY created_at", (export["id"],)
        )
    ]
    assert actions == ["create", "download"]


def test_a_forged_or_altered_link_is_refused(client, project, owner_token, completed_csv_export):
    export, _ = completed_csv_export
    url = client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )["url"]
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
    forged = [
        {**query, "sig": "0" * 64},
        {**query, "expires": str(int(query["expires"]) + 3600)},
        {**query, "key": query["key"].replace(".csv", ".json")},
        {"key": query["key"], "expires": query["expires"]},
    ]
    for params in forged:
        response = httpx.get(f"{base}?{urlencode(params)}", timeout=10)
        assert response.status_code == 403, params
        assert response.json()["error"]["code"] == "FORBIDDEN"


def test_an_expired_link_is_refused(client, project, owner_token, completed_csv_export, settings):
    from datetime import datetime, timedelta

    from workers.storage import open_storage

    export, _ = completed_csv_export
    key = project.conn.execute("SELECT object_key FROM batch_exports WHERE id = %s", (export["id"],)).fetchone()[
        "object_key"
    ]
    stale = open_storage(settings).download_url(key, datetime.now(UTC) - timedelta(seconds=1), settings)
    assert httpx.get(stale, timeout=10).status_code == 403


def test_download_url_for_an_unfinished_export_is_precondition_failed(client, project, owner_token):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    error = client.error(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    assert error["data"]["code"] == "PRECONDITION_FAILED" and "QUEUED" in error["message"]


def test_download_url_for_an_expired_export_is_precondition_failed(
    client, project, owner_token, completed_csv_export, conn
):
    export, _ = completed_csv_export
    conn.execute("UPDATE batch_exports SET expires_at = now() - interval '1 second' WHERE id = %s", (export["id"],))
    error = client.error(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    assert error["data"]["code"] == "PRECONDITION_FAILED" and "expired" in error["message"]


def test_download_url_needs_read_scope(client, project, owner_token, completed_csv_export):
    export, _ = completed_csv_export
    viewer = project.member("VIEWER")
    error = client.error(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=viewer
    )
    assert error["data"]["code"] == "FORBIDDEN"
    member = project.member("MEMBER")
    assert client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=member
    )["url"]


def test_download_url_of_another_projects_export_is_not_found(client, project, owner_token, completed_csv_export, conn):
    from tests.support.world import new_project

    export, _ = completed_csv_export
    intruder = new_project(conn, "intruder's project")
    error = client.error(
        "batchExport.downloadUrl",
        {"projectId": intruder.id, "batchExportId": export["id"]},
        token=intruder.member("OWNER"),
    )
    assert error["data"]["code"] == "NOT_FOUND"
