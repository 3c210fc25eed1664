"""Deploying by hand, as an operator would: `batch-export serve` on a port of its choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.servers import free_port
from tests.support.processes import ApiProcess
from tests.support.rpc_client import RpcClient
from tests.support.world import Project
from workers.batch_export import run_batch_export


@pytest.fixture
def api_on_its_own_port(settings, tmp_path: Path, monkeypatch) -> Iterator[ApiProcess]:
    """`serve --port N` with PUBLIC_BASE_URL unset, as an operator who only chose a port starts it."""
    monkeypatch.delenv("PUBLIC_BASE_URL")  # the process's environment is this one's
    api = ApiProcess("api", {}, tmp_path, free_port()).start()
    yield api
    api.stop()


def test_serve_on_another_port_signs_download_links_for_that_port(
    api_on_its_own_port: ApiProcess, project: Project, tmp_path: Path, monkeypatch
):
    token = project.member("OWNER")
    client = RpcClient(api_on_its_own_port.url)
    query = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "ASC"}}
    created = client.result(
        "batchExport.create",
        {"projectId": project.id, "name": "links", "format": "CSV", "query": query},
        token=token,
    )
    monkeypatch.chdir(tmp_path)
    run_batch_export(created["id"])  # as a worker would; the link is signed by the API when asked

    link = client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": created["id"]}, token=token
    )
    assert link["url"].startswith(f"{api_on_its_own_port.url}/exports/download?"), link
    assert client.http.get(link["url"]).status_code == 200


def run_serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", "serve", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://localhost"])
def test_serve_refuses_a_public_base_url_on_another_port_of_this_machine(settings, base_url):
    port = free_port()
    result = run_serve("--port", str(port), env={**os.environ, "PUBLIC_BASE_URL": base_url})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("batch-export: PUBLIC_BASE_URL ") and f"listens on port {port}" in lines[0]


# --- where files and configuration are found --------------------------------------------------------


def run_cli_in(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=120,
    )


def test_a_worker_started_elsewhere_writes_emails_into_the_configured_outbox(
    settings, client: RpcClient, project: Project, redis_client, tmp_path: Path
):
    token = project.member("OWNER")
    query = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "ASC"}}
    client.result(
        "batchExport.create",
        {"projectId": project.id, "name": "mailed from elsewhere", "format": "CSV", "query": query},
        token=token,
    )
    elsewhere = tmp_path / "some" / "other" / "folder"
    elsewhere.mkdir(parents=True)
    outbox = tmp_path / "mail" / "outbox"

    result = run_cli_in(elsewhere, "worker", "--burst", OUTBOX_DIR=str(outbox))
    assert result.returncode == 0, result.stderr

    subjects = [p.read_text() for p in outbox.glob("*.eml")]
    assert any("Subject: Export ready: mailed from elsewhere" in s for s in subjects), subjects
    assert list(elsewhere.rglob("*")) == [], "nothing is written under the working folder"


def test_a_relative_outbox_is_refused_with_one_line(settings, tmp_path: Path):
    result = run_cli_in(tmp_path, "migrate", OUTBOX_DIR="mail/outbox")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "OUTBOX_DIR" in lines[0] and "absolute" in lines[0], result.stderr


def test_a_dot_env_in_the_working_folder_is_not_read(settings, tmp_path: Path):
    """`.env` is looked up in the checkout's root only: a stray one where a command runs changes nothing."""
    (tmp_path / ".env").write_text("BATCH_EXPORT_ROW_LIMIT=not-a-number\n")
    result = run_cli_in(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
