"""`batch-export export` / `exports …` as a person runs them: real subprocesses calling the real API over HTTP."""

from __future__ import annotations

import csv
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from db import access
from procedures.client_cli import progress_line
from procedures.local_services import free_port
from tests.conftest import RpcClient, ServerThread
from tests.export.conftest import seed_project
from workers.batch_export import run_batch_export
from workers.tables import TABLES

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "procedures.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    # The suite's settings are in os.environ (the settings fixture); the client's own variables are not.
    client_variables = ("BATCH_EXPORT_API_URL", "BATCH_EXPORT_TOKEN", "BATCH_EXPORT_PROJECT")
    env = {k: v for k, v in os.environ.items() if k not in client_variables}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env or cli_env(), cwd=cwd, timeout=90)


def start_cli(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*CLI, *args], env=cli_env(), cwd=cwd, text=True, **popen)


def connection(api_url: str, token: str, project_id: str) -> list[str]:
    return ["--api", api_url, "--token", token, "--project", project_id]


def run_worker(cwd: Path, **env: str) -> None:
    """`batch-export worker --burst`, as operators run it: it takes what is queued, runs it, exits."""
    # The worker's sweep would also pick up the QUEUED exports other tests left without a job; a long
    # grace period keeps this worker to the export of the test at hand.
    env = {"BATCH_EXPORT_SWEEP_GRACE_SECONDS": "1000000000", **env}
    result = subprocess.run([*CLI, "worker", "--burst"], capture_output=True, text=True, env=cli_env(**env), cwd=cwd,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def the_export(client: RpcClient, project_id: str, token: str, process: subprocess.Popen, timeout: float = 30) -> dict:
    """The project's one export, once the waiting CLI `process` has created it."""
    deadline = time.monotonic() + timeout
    while True:
        exports = client.result("batchExport.all", {"projectId": project_id}, token=token)["exports"]
        if exports:
            assert len(exports) == 1, exports
            return exports[0]
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the CLI exited {process.returncode} before creating an export:\n{out}{err or ''}")
        assert time.monotonic() < deadline, "the CLI did not create an export"
        time.sleep(0.1)


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the CLI did not finish:\nstdout: {out}\nstderr: {err}")
    return process.returncode, out, err


@pytest.fixture
def seeded(conn, awkward_values):
    """A project full of awkward values, with an OWNER's token."""
    project = seed_project(conn, awkward_values, "client cli")
    user = access.upsert_user(conn, f"cli-owner-{project.project_id}@example.com", "Cli Owner")
    access.set_org_role(conn, access.project_org_id(conn, project.project_id), user["id"], "NONE")
    access.set_project_role(conn, project.project_id, user["id"], "OWNER")
    return project, access.create_session(conn, user["id"], timedelta(hours=1))


# --- waiting, progress, downloads ---------------------------------------------------------------------


def test_export_wait_output_downloads_a_csv_whose_rows_match_the_database(api, client, conn, redis_client, seeded, tmp_path):
    project, token = seeded
    target = tmp_path / "out" / "traces.csv"
    target.parent.mkdir()
    process = start_cli(
        "export", *connection(api.url, token, project.project_id), "--table", "traces", "--format", "csv",
        "--filter", "environment any of production", "--order-by", "timestamp:ASC",
        "--wait", "--output", str(target), "--interval", "0.2", cwd=tmp_path,
    )
    the_export(client, project.project_id, token, process)
    run_worker(tmp_path)
    code, out, err = finish(process)

    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(target)
    expected = conn.execute(
        "SELECT id, release, version FROM traces WHERE project_id = %s AND environment = 'production'"
        " ORDER BY timestamp ASC, id ASC",
        (project.project_id,),
    ).fetchall()
    with open(target, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert header == TABLES["traces"].keys
    assert [(r["id"], r["release"], r["version"]) for r in rows] == [(e["id"], e["release"], e["version"]) for e in expected]
    assert len(rows) > 10
    # Not a terminal: plain progress lines, ending at 100 %, and no half-written file left beside the result.
    assert "\r" not in err
    assert f"COMPLETED   [{'#' * 24}] 100.0%  {len(rows):,} / {len(rows):,} rows" in err
    assert sorted(p.name for p in target.parent.iterdir()) == ["traces.csv"]


def test_a_finished_export_is_fetched_later_with_exports_wait_and_download(api, client, owner_token, project, tmp_path):
    created = client.result(
        "batchExport.create",
        {"projectId": project.id, "name": "later", "format": "JSONL", "query": {"tableName": "sessions"}},
        token=owner_token,
    )
    run_batch_export(created["id"])
    args = [*connection(api.url, owner_token, project.id), created["id"]]

    waited = run_cli("exports", "wait", *args, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    link = waited.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{api.url}/exports/download?")

    downloaded = run_cli("exports", "download", *args, "--output", "sessions.jsonl", cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    assert downloaded.stdout.strip().splitlines()[-1] == str(tmp_path / "sessions.jsonl")
    assert (tmp_path / "sessions.jsonl").read_bytes() == httpx.get(link).content


def test_progress_line_shows_percentage_rows_rate_and_eta():
    line = progress_line("PROCESSING", 12_345, 29_000, 1_000.0, 12)
    assert "[##########..............]  42.6%" in line
    assert "12,345 / 29,000 rows" in line and "1,000 rows/s" in line and "ETA 0:17" in line
    assert progress_line("PROCESSING", 500, None, None, 3) == "PROCESSING  500 rows  elapsed 0:03"
    assert progress_line("QUEUED", 0, None, None, 65) == "QUEUED      waiting for a worker  1:05"


# --- how a wait ends ----------------------------------------------------------------------------------


def test_an_export_cancelled_while_waiting_exits_3(api, client, owner_token, project, tmp_path):
    process = start_cli("export", *connection(api.url, owner_token, project.id), "--table", "traces", "--format", "JSON",
                        "--wait", "--interval", "0.2", cwd=tmp_path)
    export = the_export(client, project.id, owner_token, process)
    cancelled = run_cli("exports", "cancel", *connection(api.url, owner_token, project.id), export["id"], cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip().splitlines()[-1] == f"export {export['id']} is CANCELLED"

    code, out, err = finish(process)
    assert code == 3, err
    assert f"export {export['id']} was CANCELLED" in err
    assert out == ""


def test_a_failing_export_exits_1_with_the_reason(settings, conn, redis_client, project, owner_token, tmp_path):
    from procedures.app import create_app

    # An API whose jobs get no retries, so the worker's first failure is final.
    no_retries = settings.model_copy(update={"BATCH_EXPORT_JOB_RETRIES": 0})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("storage cannot live here")
    with ServerThread(create_app(no_retries), free_port()) as other_api:
        rpc = RpcClient(other_api.url)
        process = start_cli("export", *connection(other_api.url, owner_token, project.id), "--table", "scores",
                            "--format", "CSV", "--wait", "--output", "scores.csv", "--interval", "0.2", cwd=tmp_path)
        the_export(rpc, project.id, owner_token, process)
        run_worker(tmp_path, EXPORT_STORAGE_URL=blocker.as_uri())
        code, out, err = finish(process)
        rpc.http.close()

    assert code == 1, err
    assert "FAILED: Writing the export file to storage failed" in err
    assert not (tmp_path / "scores.csv").exists()
    assert out == ""


def test_ctrl_c_while_waiting_on_a_terminal_stops_waiting_and_says_how_to_cancel(api, client, owner_token, project, tmp_path):
    master, slave = pty.openpty()
    process = start_cli("export", *connection(api.url, owner_token, project.id), "--table", "events", "--format", "JSONL",
                        "--wait", "--interval", "0.2", cwd=tmp_path, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    export = the_export(client, project.id, owner_token, process)
    deadline = time.monotonic() + 30
    while b"".join(chunks).count(b"\rQUEUED") < 2:  # the bar has been redrawn in place
        assert time.monotonic() < deadline and process.poll() is None, b"".join(chunks)
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, out, _ = finish(process)
    reader.join(timeout=10)
    os.close(master)
    screen = b"".join(chunks).decode()

    assert code == 130
    assert f"stopped waiting; export {export['id']} is still QUEUED" in screen
    assert f"batch-export exports cancel --api {api.url} --project {project.id} {export['id']}" in screen
    assert "Traceback" not in screen
    # Stopping the wait does not stop the export.
    assert client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["exports"][0]["status"] == "QUEUED"


# --- what is sent, and what is refused before sending --------------------------------------------------


def test_filters_search_and_order_are_sent_as_the_filter_model(api, client, owner_token, project, tmp_path):
    env = cli_env(BATCH_EXPORT_API_URL=api.url, BATCH_EXPORT_TOKEN=owner_token, BATCH_EXPORT_PROJECT=project.id)
    result = run_cli(
        "export", "--table", "traces", "--format", "JSONL", "--name", "filtered",
        "--filter", "timestamp >= 2026-01-01",
        "--filter", "tags any of a, \"b,c\"",
        "--filter", "metadata.customer = acme corp",
        "--filter", "metadata.rank > 3",
        "--filter", "Latency (s) <= 2.5",
        "--filter", "bookmarked != false",
        "--filter", "User ID does not contain bob",
        "--filter", "release is null",
        "--search", "needle", "--search-in", "content",
        "--order-by", "latency:DESC",
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr
    export_id = result.stdout.strip().splitlines()[-1]
    [export] = client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["exports"]
    assert export["id"] == export_id and export["name"] == "filtered" and export["format"] == "JSONL"
    query = export["query"]
    assert query["filter"] == [
        {"column": "timestamp", "type": "datetime", "operator": ">=", "value": "2026-01-01T00:00:00Z"},
        {"column": "tags", "type": "arrayOptions", "operator": "any of", "value": ["a", "b,c"]},
        {"column": "metadata", "type": "stringObject", "key": "customer", "operator": "=", "value": "acme corp"},
        {"column": "metadata", "type": "numberObject", "key": "rank", "operator": ">", "value": 3.0},
        {"column": "latency", "type": "number", "operator": "<=", "value": 2.5},
        {"column": "bookmarked", "type": "boolean", "operator": "<>", "value": False},
        {"column": "userId", "type": "string", "operator": "does not contain", "value": "bob"},
        {"column": "release", "type": "null", "operator": "is null", "value": ""},
    ]
    assert (query["searchQuery"], query["searchType"]) == ("needle", ["content"])
    assert query["orderBy"] == {"column": "latency", "order": "DESC"}


@pytest.mark.parametrize(
    "bad,words",
    [
        (["--filter", "nme contains x"], ["unknown filter column 'nme' for table traces", 'userId "User ID" (string)']),
        (["--filter", "latency contains 3"], ["latency is a number column of traces: it takes =, >, <, >=, <="]),
        (["--filter", "timestamp > last tuesday"], ["'last tuesday' is not a date or time"]),
        (["--order-by", "input:DESC"], ["cannot order traces by 'input'. Sortable columns: id, timestamp"]),
    ],
)
def test_a_bad_filter_or_order_exits_2_naming_what_is_valid_and_creates_nothing(api, client, owner_token, project, tmp_path,
                                                                               bad, words):
    result = run_cli("export", *connection(api.url, owner_token, project.id), "--table", "traces", "--format", "CSV",
                     *bad, "--wait", cwd=tmp_path)
    assert result.returncode == 2
    for text in words:
        assert text in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["totalCount"] == 0


def test_no_token_is_a_usage_error(api, project, tmp_path):
    result = run_cli("exports", "list", "--api", api.url, "--project", project.id, cwd=tmp_path)
    assert result.returncode == 2
    assert "no session token: pass --token or set BATCH_EXPORT_TOKEN" in result.stderr


# --- what the API refuses -----------------------------------------------------------------------------


def test_a_viewer_gets_exit_4_with_forbidden_in_words(api, client, project, tmp_path):
    viewer = project.member("VIEWER")
    result = run_cli("export", *connection(api.url, viewer, project.id), "--table", "traces", "--format", "CSV",
                     "--wait", cwd=tmp_path)
    assert result.returncode == 4
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("batch-export: batchExport.create: ") and line.endswith("(FORBIDDEN)")
    assert result.stdout == ""


def test_an_unknown_token_gets_exit_4_with_unauthorized(api, project, tmp_path):
    result = run_cli("exports", "list", *connection(api.url, "bx_not-a-real-token", project.id), cwd=tmp_path)
    assert result.returncode == 4
    assert "(UNAUTHORIZED)" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_api_gets_exit_4_naming_the_address(project, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_cli("exports", "list", *connection(nowhere, "bx_token", project.id), cwd=tmp_path)
    assert result.returncode == 4
    assert f"cannot reach the API at {nowhere}" in result.stderr and "Traceback" not in result.stderr


# --- listing -----------------------------------------------------------------------------------------


def test_exports_list_prints_the_projects_exports_as_an_aligned_table(api, client, owner_token, project, tmp_path):
    def create(name: str, table: str, fmt: str) -> dict:
        query = {"tableName": table}
        return client.result("batchExport.create", {"projectId": project.id, "name": name, "format": fmt, "query": query},
                             token=owner_token)

    first = create("first one", "traces", "CSV")
    second = create("second\nline", "scores", "JSONL")
    client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": first["id"]}, token=owner_token)

    result = run_cli("exports", "list", *connection(api.url, owner_token, project.id), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, newest, oldest = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TABLE", "FORMAT", "STATUS", "PROGRESS", "CREATED", "BY", "CREATED", "AT",
                              "(UTC)", "EXPIRES", "(UTC)"]
    assert newest.startswith(second["id"]) and "second line" in newest and "scores" in newest and "QUEUED" in newest
    assert oldest.startswith(first["id"]) and "first one" in oldest and "CANCELLED" in oldest
    assert "Olive Owner" in newest and "Olive Owner" in oldest
    # Aligned: every column starts at the same place on every line.
    for column in ("TABLE", "STATUS", "CREATED BY"):
        at = header.index(column)
        assert newest[at - 2:at] == "  " and oldest[at - 2:at] == "  " and newest[at] != " " and oldest[at] != " "
    assert "exports 1-2 of 2, newest first" in result.stderr
