"""`batch-export export` / `exports …` as a person runs them: real subprocesses calling the real API over HTTP."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import threading
import time
from datetime import timedelta

import httpx
import pyarrow.parquet as pq
import pytest
import zstandard
from psycopg.types.json import Jsonb

from cli.progress import progress_line
from devstack.servers import free_port
from tests.support.exports import BASE_TIME
from tests.support.rpc_client import RpcClient
from tests.support.servers import ServerThread
from tests.support.terminal import Terminal, connection, finish
from workers.batch_export import run_batch_export
from workers.tables import TABLES


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


@pytest.fixture
def traces(project, awkward_values) -> list[dict]:
    """The project's traces, one per awkward string: the names, tags and metadata exporters choke on."""
    rows = []
    for i, text in enumerate(awkward_values["strings"]):
        row = {
            "id": f"trace-{i:03d}",
            # Pairs share a timestamp, so the id tie-breaker decides their order.
            "timestamp": BASE_TIME + timedelta(minutes=i // 2),
            "name": text,
            "release": f"v{i % 3}",
            "version": f"{i % 4}.0",
            "environment": "production" if i % 2 else "staging",
            "tags": [text, "even" if i % 2 == 0 else "odd"],
            "metadata": Jsonb({"customer": text, "rank": i}),
        }
        project.conn.execute(
            "INSERT INTO traces (project_id, id, timestamp, name, release, version, environment, tags, metadata)"
            " VALUES (%(project_id)s, %(id)s, %(timestamp)s, %(name)s, %(release)s, %(version)s, %(environment)s,"
            " %(tags)s, %(metadata)s)",
            {"project_id": project.id, **row},
        )
        rows.append(row)
    return rows


# --- waiting, progress, downloads ---------------------------------------------------------------------


def test_export_wait_output_downloads_a_csv_whose_rows_match_the_database(
    api, client, conn, redis_client, terminal, project, owner_token, traces, tmp_path
):
    target = tmp_path / "out" / "traces.csv"
    target.parent.mkdir()
    process = terminal.start(
        "export",
        *connection(api.url, owner_token, project.id),
        "--table",
        "traces",
        "--format",
        "csv",
        "--filter",
        "environment any of production",
        "--order-by",
        "timestamp:ASC",
        "--wait",
        "--output",
        str(target),
        "--interval",
        "0.2",
    )
    the_export(client, project.id, owner_token, process)
    terminal.worker()
    code, out, err = finish(process)

    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(target)
    expected = conn.execute(
        "SELECT id, release, version FROM traces WHERE project_id = %s AND environment = 'production'"
        " ORDER BY timestamp ASC, id ASC",
        (project.id,),
    ).fetchall()
    with open(target, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    # The table's keys, then one column per score name of the project (in code point order).
    names = sorted(
        r["name"] for r in conn.execute("SELECT DISTINCT name FROM scores WHERE project_id = %s", (project.id,))
    )
    assert header == TABLES["traces"].keys + names
    assert [(r["id"], r["release"], r["version"]) for r in rows] == [
        (e["id"], e["release"], e["version"]) for e in expected
    ]
    assert len(rows) > 10
    # Not a terminal: plain progress lines, ending at 100 %, and no half-written file left beside the result.
    assert "\r" not in err
    assert f"COMPLETED   [{'#' * 24}] 100.0%  {len(rows):,} / {len(rows):,} rows" in err
    assert sorted(p.name for p in target.parent.iterdir()) == ["traces.csv"]


def test_export_with_compression_and_columns_downloads_a_checked_zstd_file(
    api, client, conn, terminal, project, owner_token, traces, tmp_path
):
    target = tmp_path / "traces.jsonl.zst"
    process = terminal.start(
        "export",
        *connection(api.url, owner_token, project.id),
        "--table",
        "traces",
        "--format",
        "jsonl",
        "--compression",
        "zstd",
        "--columns",
        "id, Name",
        "--wait",
        "--output",
        str(target),
        "--interval",
        "0.2",
    )
    the_export(client, project.id, owner_token, process)
    terminal.worker()
    code, out, err = finish(process)

    assert code == 0, err
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(target.read_bytes()).decode().split("\n")[:-1]
    rows = [json.loads(line) for line in lines]
    assert {r["id"]: r["name"] for r in rows} == {t["id"]: t["name"] for t in traces}
    assert all(list(r) == ["id", "name"] for r in rows)
    assert f"SHA-256 {hashlib.sha256(target.read_bytes()).hexdigest()} (checked)" in err


def test_export_as_parquet_downloads_a_zstd_parquet_file_with_the_chosen_columns(
    api, client, conn, terminal, project, owner_token, traces, tmp_path
):
    target = tmp_path / "traces.parquet"
    process = terminal.start(
        "export",
        *connection(api.url, owner_token, project.id),
        "--table",
        "traces",
        "--format",
        "parquet",
        "--columns",
        "id,name,timestamp",
        "--wait",
        "--output",
        str(target),
        "--interval",
        "0.2",
    )
    export = the_export(client, project.id, owner_token, process)
    terminal.worker()
    code, out, err = finish(process)

    assert code == 0, err
    assert export["format"] == "PARQUET" and export["compression"] == "zstd"  # Parquet's default codec
    table = pq.read_table(target)
    assert table.schema.names == ["id", "name", "timestamp"]
    assert {r["id"]: r["name"] for r in table.to_pylist()} == {t["id"]: t["name"] for t in traces}
    metadata = pq.ParquetFile(target).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert f"SHA-256 {hashlib.sha256(target.read_bytes()).hexdigest()} (checked)" in err


def test_a_finished_export_is_fetched_later_with_exports_wait_and_download(
    api, client, owner_token, project, terminal, tmp_path
):
    created = client.result(
        "batchExport.create",
        {"projectId": project.id, "name": "later", "format": "JSONL", "query": {"tableName": "sessions"}},
        token=owner_token,
    )
    run_batch_export(created["id"])
    args = [*connection(api.url, owner_token, project.id), created["id"]]

    waited = terminal.run("exports", "wait", *args)
    assert waited.returncode == 0, waited.stderr
    link = waited.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{api.url}/exports/download?")

    downloaded = terminal.run("exports", "download", *args, "--output", "sessions.jsonl")
    assert downloaded.returncode == 0, downloaded.stderr
    assert downloaded.stdout.strip().splitlines()[-1] == str(tmp_path / "sessions.jsonl")
    assert (tmp_path / "sessions.jsonl").read_bytes() == httpx.get(link).content


def test_progress_line_shows_percentage_rows_rate_and_eta():
    line = progress_line("PROCESSING", 12_345, 29_000, 1_000.0, 12)
    assert "[##########..............]  42.6%" in line
    assert "12,345 / 29,000 rows" in line and "1,000 rows/s" in line and "ETA 0:17" in line
    assert progress_line("PROCESSING", 500, None, None, 3) == "PROCESSING  500 rows  elapsed 0:03"
    assert progress_line("QUEUED", 0, None, None, 65) == "QUEUED      waiting for a worker  1:05"


# --- exports written in parts ------------------------------------------------------------------------


def running_export(client: RpcClient, conn, project_id: str, token: str, *, parts_done: int, parts_total: int) -> str:
    """An export mid-way, 1,200 of 5,000 rows: the progress a worker writes, put straight into its row."""
    export = client.result(
        "batchExport.create",
        {"projectId": project_id, "name": "mid-way", "format": "CSV", "query": {"tableName": "traces"}},
        token=token,
    )
    conn.execute(
        "UPDATE batch_exports SET status = 'PROCESSING', rows_exported = 1200, rows_total = 5000,"
        " parts_done = %s, parts_total = %s, updated_at = now() WHERE id = %s",
        (parts_done, parts_total, export["id"]),
    )
    return export["id"]


def listed_progress(terminal: Terminal, api_url: str, token: str, project_id: str, export_id: str) -> str:
    """The export's line of `exports list`."""
    listed = terminal.run("exports", "list", *connection(api_url, token, project_id))
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(export_id)]
    return line


def followed_until_cancelled(terminal: Terminal, api_url: str, token: str, project_id: str, export_id: str) -> str:
    """What `exports wait` prints on stderr: it draws the running export, the user cancels it, it draws that."""
    process = terminal.start("exports", "wait", *connection(api_url, token, project_id), export_id, "--interval", "0.2")
    stderr = process.stderr
    assert stderr is not None
    lines: list[str] = []

    def drain() -> None:
        for line in stderr:
            lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("PROCESSING") for line in lines):
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        time.sleep(0.05)
    cancelled = terminal.run("exports", "cancel", *connection(api_url, token, project_id), export_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert process.wait(timeout=90) == 3  # the documented exit code of a cancelled export
    reader.join(timeout=10)
    return "".join(lines)


def test_an_export_in_parts_shows_how_many_parts_are_written_in_the_list_and_while_waiting(
    api, client, conn, owner_token, project, terminal
):
    export_id = running_export(client, conn, project.id, owner_token, parts_done=3, parts_total=10)

    assert "  1,200/5,000 24% parts 3/10  " in listed_progress(terminal, api.url, owner_token, project.id, export_id)
    shown = followed_until_cancelled(terminal, api.url, owner_token, project.id, export_id)
    assert f"PROCESSING  [{'#' * 5}{'.' * 19}]  24.0%  1,200 / 5,000 rows  parts 3/10  elapsed " in shown
    assert f"CANCELLED   [{'#' * 5}{'.' * 19}]  24.0%  1,200 / 5,000 rows  parts 3/10  in " in shown


def test_a_one_part_export_shows_no_parts(api, client, conn, owner_token, project, terminal):
    export_id = running_export(client, conn, project.id, owner_token, parts_done=0, parts_total=1)

    listed = listed_progress(terminal, api.url, owner_token, project.id, export_id)
    assert "  1,200/5,000 24%  " in listed and "part" not in listed
    shown = followed_until_cancelled(terminal, api.url, owner_token, project.id, export_id)
    assert f"PROCESSING  [{'#' * 5}{'.' * 19}]  24.0%  1,200 / 5,000 rows  elapsed " in shown
    assert f"CANCELLED   [{'#' * 5}{'.' * 19}]  24.0%  1,200 / 5,000 rows  in " in shown
    assert "part" not in shown


# --- how a wait ends ----------------------------------------------------------------------------------


def test_an_export_cancelled_while_waiting_exits_3(api, client, owner_token, project, terminal):
    process = terminal.start(
        "export",
        *connection(api.url, owner_token, project.id),
        "--table",
        "traces",
        "--format",
        "JSON",
        "--wait",
        "--interval",
        "0.2",
    )
    export = the_export(client, project.id, owner_token, process)
    cancelled = terminal.run("exports", "cancel", *connection(api.url, owner_token, project.id), export["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip().splitlines()[-1] == f"export {export['id']} is CANCELLED"

    code, out, err = finish(process)
    assert code == 3, err
    assert f"export {export['id']} was CANCELLED" in err
    assert out == ""


def test_a_failing_export_exits_1_with_the_reason(
    settings, conn, redis_client, project, owner_token, terminal, tmp_path
):
    from procedures.app import create_app

    # An API whose jobs get no retries, so the worker's first failure is final.
    no_retries = settings.model_copy(update={"BATCH_EXPORT_JOB_RETRIES": 0})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("storage cannot live here")
    with ServerThread(create_app(no_retries), free_port()) as other_api:
        rpc = RpcClient(other_api.url)
        process = terminal.start(
            "export",
            *connection(other_api.url, owner_token, project.id),
            "--table",
            "scores",
            "--format",
            "CSV",
            "--wait",
            "--output",
            "scores.csv",
            "--interval",
            "0.2",
        )
        the_export(rpc, project.id, owner_token, process)
        terminal.worker(EXPORT_STORAGE_URL=blocker.as_uri())
        code, out, err = finish(process)
        rpc.http.close()

    assert code == 1, err
    assert "FAILED: Writing the export file to storage failed" in err
    assert not (tmp_path / "scores.csv").exists()
    assert out == ""


def test_ctrl_c_while_waiting_on_a_terminal_stops_waiting_and_says_how_to_cancel(
    api, client, owner_token, project, terminal
):
    master, slave = pty.openpty()
    process = terminal.start(
        "export",
        *connection(api.url, owner_token, project.id),
        "--table",
        "events",
        "--format",
        "JSONL",
        "--wait",
        "--interval",
        "0.2",
        stderr=slave,
    )
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
    assert (
        client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["exports"][0]["status"]
        == "QUEUED"
    )


# --- what is sent, and what is refused before sending --------------------------------------------------


def test_filters_search_and_order_are_sent_as_the_filter_model(api, client, owner_token, project, terminal):
    env = {"BATCH_EXPORT_API_URL": api.url, "BATCH_EXPORT_TOKEN": owner_token, "BATCH_EXPORT_PROJECT": project.id}
    result = terminal.run(
        "export",
        "--table",
        "traces",
        "--format",
        "JSONL",
        "--name",
        "filtered",
        "--filter",
        "timestamp >= 2026-01-01",
        "--filter",
        'tags any of a, "b,c"',
        "--filter",
        "metadata.customer = acme corp",
        "--filter",
        "metadata.rank > 3",
        "--filter",
        "Latency (s) <= 2.5",
        "--filter",
        "bookmarked != false",
        "--filter",
        "User ID does not contain bob",
        "--filter",
        "release is null",
        "--filter",
        "scores_avg.accuracy >= 0.5",
        "--filter",
        "Scores (boolean).is_correct = false",
        "--filter",
        "score_categories.tone any of polite",
        "--filter",
        "metadata.customer is set",
        "--filter",
        "name is not empty",
        "--search",
        "needle",
        "--search-in",
        "content",
        "--order-by",
        "latency:DESC",
        **env,
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
        {"column": "scores_avg", "type": "numberObject", "key": "accuracy", "operator": ">=", "value": 0.5},
        {"column": "score_booleans", "type": "booleanObject", "key": "is_correct", "operator": "=", "value": False},
        {
            "column": "score_categories",
            "type": "categoryOptions",
            "key": "tone",
            "operator": "any of",
            "value": ["polite"],
        },
        {"column": "metadata", "type": "stringObject", "key": "customer", "operator": "is set", "value": ""},
        {"column": "name", "type": "string", "operator": "is not empty", "value": ""},
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
        (["--filter", "scores_avg > 0.5"], ["scores_avg holds values by name: name the one to test"]),
        (["--filter", "name.first = x"], ["name is not a JSON object or score column", "scores_avg"]),
        (["--filter", "name is not empty now"], ["'is not empty' takes no value, got 'now'"]),
    ],
)
def test_a_bad_filter_or_order_exits_2_naming_what_is_valid_and_creates_nothing(
    api, client, owner_token, project, terminal, bad, words
):
    result = terminal.run(
        "export", *connection(api.url, owner_token, project.id), "--table", "traces", "--format", "CSV", *bad, "--wait"
    )
    assert result.returncode == 2
    for text in words:
        assert text in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["totalCount"] == 0


def test_no_token_is_a_usage_error(api, project, terminal):
    result = terminal.run("exports", "list", "--api", api.url, "--project", project.id)
    assert result.returncode == 2
    assert "no session token: pass --token or set BATCH_EXPORT_TOKEN" in result.stderr


# --- what the API refuses -----------------------------------------------------------------------------


def test_a_viewer_gets_exit_4_with_forbidden_in_words(api, project, terminal):
    viewer = project.member("VIEWER")
    result = terminal.run(
        "export", *connection(api.url, viewer, project.id), "--table", "traces", "--format", "CSV", "--wait"
    )
    assert result.returncode == 4
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("batch-export: batchExport.create: ") and line.endswith("(FORBIDDEN)")
    assert result.stdout == ""


def test_an_unknown_token_gets_exit_4_with_unauthorized(api, project, terminal):
    result = terminal.run("exports", "list", *connection(api.url, "bx_not-a-real-token", project.id))
    assert result.returncode == 4
    assert "(UNAUTHORIZED)" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_api_gets_exit_4_naming_the_address(project, terminal):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = terminal.run("exports", "list", *connection(nowhere, "bx_token", project.id))
    assert result.returncode == 4
    assert f"cannot reach the API at {nowhere}" in result.stderr and "Traceback" not in result.stderr


# --- listing -----------------------------------------------------------------------------------------


def test_exports_list_prints_the_projects_exports_as_an_aligned_table(api, client, owner_token, project, terminal):
    def create(name: str, table: str, fmt: str) -> dict:
        query = {"tableName": table}
        return client.result(
            "batchExport.create",
            {"projectId": project.id, "name": name, "format": fmt, "query": query},
            token=owner_token,
        )

    first = create("first one", "traces", "CSV")
    second = create("second\nline", "scores", "JSONL")
    client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": first["id"]}, token=owner_token)

    result = terminal.run("exports", "list", *connection(api.url, owner_token, project.id))
    assert result.returncode == 0, result.stderr
    header, newest, oldest = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "TABLE",
        "FORMAT",
        "STATUS",
        "PROGRESS",
        "CREATED",
        "BY",
        "CREATED",
        "AT",
        "(UTC)",
        "EXPIRES",
        "(UTC)",
    ]
    assert newest.startswith(second["id"]) and "second line" in newest and "scores" in newest and "QUEUED" in newest
    assert oldest.startswith(first["id"]) and "first one" in oldest and "CANCELLED" in oldest
    assert "Olive Owner" in newest and "Olive Owner" in oldest
    # Aligned: every column starts at the same place on every line.
    for column in ("TABLE", "STATUS", "CREATED BY"):
        at = header.index(column)
        assert newest[at - 2 : at] == "  " and oldest[at - 2 : at] == "  " and newest[at] != " " and oldest[at] != " "
    assert "exports 1-2 of 2, newest first" in result.stderr


@pytest.mark.parametrize(
    "text,wire",
    [
        ("positionInTrace = root", {"key": "root"}),
        ("Position in Trace = nthFromEnd:2", {"key": "nthFromEnd", "value": 2}),
    ],
)
def test_a_trace_position_is_sent_as_langfuse_sends_it(text, wire):
    from cli.filter_text import parse_filter

    filter_ = parse_filter(TABLES["observations"], text)
    assert filter_ == {"column": "positionInTrace", "type": "positionInTrace", "operator": "=", **wire}


@pytest.mark.parametrize(
    "text,words",
    [
        ("positionInTrace = nthFromStart", "nthFromStart needs a position of 1 or more, e.g. nthFromStart:2"),
        ("positionInTrace = middle", "'middle' is not a position; write root, first, last"),
        ("positionInTrace = root:3", "'root' takes no number"),
    ],
)
def test_a_bad_trace_position_names_the_valid_ones(text, words):
    from cli.errors import UsageError
    from cli.filter_text import parse_filter

    with pytest.raises(UsageError, match=re.escape(words)):
        parse_filter(TABLES["observations"], text)
