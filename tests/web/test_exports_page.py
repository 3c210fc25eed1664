"""The exports page at `/`, used the way a person uses it: in Debian's chromium, against the real API and worker."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from playwright.sync_api import Locator, Page, Request, expect

from db import access
from devstack.seed import seed
from tests.support.rpc_client import create_params
from tests.support.web import RunningWorker, allow_console_errors, sign_in_with_link, wait_until_live
from workers.tables import AUDIT_LOGS, OBSERVATIONS, SCORES, TRACES

# Long enough for a busy two-core machine to run a small export through a real worker.
COMPLETION_TIMEOUT_S = 90


def add_filter(page: Page, column: str, operator: str, value: str | None = None, key: str | None = None) -> None:
    page.click("#add-filter")
    row = page.locator("#create-filters li").last
    row.get_by_label("Filter column").select_option(column)
    row.get_by_label("Filter operator").select_option(label=operator)
    if key is not None:
        row.get_by_label("Filter key").fill(key)
    if value is not None:
        row.get_by_label("Filter value").fill(value)


def wait_for_status(row, status: str, worker: RunningWorker) -> None:
    """The row shows `status` as the events come; a worker that died fails the test at once."""
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while True:
        worker.assert_alive()
        try:
            expect(row).to_have_attribute("data-status", status, timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def create_from_page(page: Page, name: str, table: str, fmt: str, compression: str | None = None) -> None:
    """Fills in and submits the form; no `compression` leaves the page's own (the format's default)."""
    page.fill("#create-name", name)
    page.check(f"input[name=format][value={fmt}]")
    if compression is not None:
        page.check(f"input[name=compression][value={compression}]")
    page.click("#create-submit")


def on_calls(page: Page, handle: Callable[[dict], None]) -> None:
    """Hands `handle` every JSON-RPC call the page sends from now on (a batch's one by one, event streams
    included), exactly as it sends them."""

    def record(request: Request) -> None:
        if request.method != "POST" or not request.url.endswith("/rpc"):
            return
        body = request.post_data_json
        for call in body if isinstance(body, list) else [body]:
            handle(call)

    page.on("request", record)


def record_creates(page: Page) -> list[dict]:
    """The params of every `batchExport.create` the page sends from now on."""
    sent: list[dict] = []
    on_calls(page, lambda call: sent.append(call["params"]) if call.get("method") == "batchExport.create" else None)
    return sent


def record_calls(page: Page, method: str | None = None) -> list[str]:
    """The method of every call the page sends from now on (only `method`'s, if given)."""
    sent: list[str] = []
    on_calls(page, lambda call: sent.append(call["method"]) if method in (None, call.get("method")) else None)
    return sent


def is_list_read(response) -> bool:
    body = response.request.post_data_json if response.request.method == "POST" else None
    return isinstance(body, dict) and body.get("method") == "batchExport.all"


def column_picker(page: Page):
    return page.get_by_role("group", name="Columns")


def checked_radio(page: Page, name: str):
    return page.locator(f"input[name={name}]:checked")


def score_names(conn, project_id: str) -> list[str]:
    return sorted(
        r["name"] for r in conn.execute("SELECT DISTINCT name FROM scores WHERE project_id = %s", (project_id,))
    )


def export_row(page: Page, name: str):
    return page.locator("#exports-body tr", has_text=name)


def option_texts(select) -> list[str]:
    return select.evaluate("element => [...element.options].map(o => o.textContent)")


def option_values(select) -> list[str]:
    return select.evaluate("element => [...element.options].map(o => o.value)")


def download_from(page: Page, row) -> tuple[str, bytes]:
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_an_export_created_on_the_page_completes_and_its_file_downloads_with_the_matching_rows(
    page, project, conn, export_worker
):
    seed(conn, project.id, traces=40)
    token = project.member("OWNER", name="Olive Owner")
    sent_urls: list[str] = []
    page.on("request", lambda request: sent_urls.append(request.url))
    sign_in_with_link(page, project.id, token)
    assert "token" not in page.url  # the sign-in link's fragment is gone from the address bar

    page.select_option("#create-table", "traces")
    add_filter(page, "environment", "any of", "staging")
    create_from_page(page, "Staging traces", "traces", "CSV")
    expect(page.locator("#create-status")).to_contain_text("Created “Staging traces”")
    page.select_option("#create-table", "observations")
    add_filter(page, "type", "any of", "GENERATION")
    create_from_page(page, "Generations", "observations", "JSONL", "gzip")
    expect(page.locator("#create-status")).to_contain_text("Created “Generations”")

    traces_row, generations_row = export_row(page, "Staging traces"), export_row(page, "Generations")
    wait_for_status(traces_row, "COMPLETED", export_worker)
    wait_for_status(generations_row, "COMPLETED", export_worker)

    staging_ids = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM traces WHERE project_id = %s AND lower(environment) = 'staging' ORDER BY timestamp DESC, id DESC",
            (project.id,),
        )
    ]
    assert staging_ids, "the seed should give some traces the staging environment"
    expect(traces_row.locator(".status")).to_have_text("Completed")
    expect(traces_row.locator(".progress-text")).to_have_text(f"{len(staging_ids)} / {len(staging_ids)} rows")
    assert traces_row.locator("progress").evaluate("bar => bar.value === bar.max")
    expect(traces_row.locator(".creator")).to_have_text("Olive Owner")
    expect(traces_row.locator(".expires")).to_have_text(re.compile(r"^in 2[34] hours$"))
    expect(traces_row.locator(".export-detail")).to_have_text(
        re.compile(r"^Traces · CSV · \d+\.\d KiB · environment any of staging$")
    )
    expect(generations_row.locator(".export-detail")).to_have_text(re.compile(r"^Observations · JSONL, gzip · "))
    expect(traces_row.get_by_role("button", name="Cancel")).to_be_hidden()

    filename, body = download_from(page, traces_row)
    assert filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    # The table's keys, then one column per score name of the project.
    assert rows[0] == TRACES.keys + score_names(conn, project.id)
    environment = TRACES.keys.index("environment")
    assert [r[0] for r in rows[1:]] == staging_ids
    assert {r[environment] for r in rows[1:]} == {"staging"}

    filename, body = download_from(page, generations_row)
    assert filename.endswith(".jsonl.gz")  # the compressed bytes, as stored
    generations = [json.loads(line) for line in gzip.decompress(body).decode("utf-8").splitlines()]
    expected = {
        r["id"]
        for r in conn.execute(
            "SELECT id FROM observations WHERE project_id = %s AND type = 'GENERATION'", (project.id,)
        )
    }
    assert expected and {g["id"] for g in generations} == expected and len(generations) == len(expected)
    assert {g["type"] for g in generations} == {"GENERATION"}

    # The token travelled only in Authorization headers, never in a URL the server saw.
    assert not [url for url in sent_urls if token in url]
    if os.environ.get("EXPORTS_PAGE_SCREENSHOT"):
        page.locator("#create-status").evaluate("notice => notice.hidden = true")
        page.set_viewport_size({"width": 1280, "height": 720})
        page.screenshot(path=os.environ["EXPORTS_PAGE_SCREENSHOT"], full_page=True)


def test_a_queued_export_is_cancelled_from_the_page(page, project, conn, redis_client):
    # No worker runs in this test: the export stays QUEUED until the user cancels it.
    sign_in_with_link(page, project.id, project.member("MEMBER", name="Max Member"))
    create_from_page(page, "Never mind", "traces", "JSONL")
    row = export_row(page, "Never mind")
    expect(row).to_have_attribute("data-status", "QUEUED")
    expect(row.get_by_role("button", name="Download")).to_be_hidden()

    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "CANCELLED")
    expect(row.locator(".status")).to_have_text("Cancelled")
    expect(row.get_by_role("button", name="Cancel")).to_be_hidden()
    export_id = row.get_attribute("data-export-id")
    assert (
        conn.execute("SELECT status FROM batch_exports WHERE id = %s", (export_id,)).fetchone()["status"] == "CANCELLED"
    )


def write_progress(conn, export_id: str, *, rows: int, total: int, parts_done: int, parts_total: int) -> None:
    """The progress a worker writes as it runs the export, put straight into the export's row."""
    conn.execute(
        "UPDATE batch_exports SET status = 'PROCESSING', rows_exported = %s, rows_total = %s,"
        " parts_done = %s, parts_total = %s, updated_at = now() WHERE id = %s",
        (rows, total, parts_done, parts_total, export_id),
    )


def created_and_waiting(page: Page, api, project, name: str) -> tuple[Locator, str]:
    """An export created on the page, its row, and its id; no worker runs, so the test writes its progress
    (once the page follows the project's changes: they reach it as events)."""
    sign_in_with_link(page, project.id, project.member("OWNER"))
    wait_until_live(page, api, project.id)
    create_from_page(page, name, "traces", "CSV")
    row = export_row(page, name)
    expect(row).to_have_attribute("data-status", "QUEUED")
    export_id = row.get_attribute("data-export-id")
    assert export_id is not None
    return row, export_id


def test_an_export_in_parts_shows_how_many_of_its_parts_are_written(page, api, project, conn):
    row, export_id = created_and_waiting(page, api, project, "In parts")
    progress = row.locator(".progress-text")

    write_progress(conn, export_id, rows=250, total=900, parts_done=3, parts_total=10)
    expect(progress).to_have_text("250 / 900 rows · 3 of 10 parts written")
    write_progress(conn, export_id, rows=400, total=900, parts_done=4, parts_total=10)
    expect(progress).to_have_text("400 / 900 rows · 4 of 10 parts written")

    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "CANCELLED")
    expect(progress).to_have_text("400 / 900 rows · 4 of 10 parts written")


def test_a_one_part_export_shows_its_rows_and_no_parts(page, api, project, conn):
    row, export_id = created_and_waiting(page, api, project, "In one part")

    write_progress(conn, export_id, rows=250, total=900, parts_done=0, parts_total=1)
    expect(row.locator(".progress-text")).to_have_text("250 / 900 rows")
    expect(row.locator(".progress-cell")).not_to_contain_text("part")

    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "CANCELLED")


def test_the_page_follows_an_exports_progress_from_the_stream_without_polling(page, api, project, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    wait_until_live(page, api, project.id)
    reads = record_calls(page, "batchExport.all")
    with page.expect_response(is_list_read):  # after its own create, the page reads the list once
        create_from_page(page, "Followed live", "traces", "CSV")
    row = export_row(page, "Followed live")
    expect(row).to_have_attribute("data-status", "QUEUED")
    export_id = row.get_attribute("data-export-id")
    assert export_id is not None and reads == ["batchExport.all"]

    progress = row.locator(".progress-text")
    for rows in (120, 450, 800):
        write_progress(conn, export_id, rows=rows, total=900, parts_done=0, parts_total=1)
        expect(progress).to_have_text(f"{rows} / 900 rows")
    expect(row.locator(".status")).to_have_text("Processing")
    # An export made elsewhere (another tab, the CLI) appears at the top, and the count goes up.
    project.new_export(conn, name="Made elsewhere")
    expect(page.locator("#exports-body tr").first).to_contain_text("Made elsewhere")
    expect(page.locator("#exports-summary")).to_have_text("2 exports · live")

    assert reads == ["batchExport.all"]  # every change came as an event: nothing was polled


def test_a_revoked_session_signs_the_page_out_without_another_call(page, api, project, conn, client):
    token = project.member("MEMBER")
    sign_in_with_link(page, project.id, token)
    # A member may not see scheduled exports: that section has stopped asking by now.
    expect(page.locator("#scheduled-notice")).to_be_visible()
    wait_until_live(page, api, project.id)
    calls = record_calls(page)

    access.revoke_session(conn, token)

    expect(page.locator("#sign-in")).to_be_visible()
    refusal = client.error("batchExport.all", {"projectId": project.id}, token=token)
    expect(page.locator("#sign-in-error")).to_have_text(f"Signed out. Not signed in. {refusal['message']}")
    assert page.evaluate("sessionStorage.length") == 0
    assert calls == []  # the open stream said so: the page asked nothing


def test_without_the_stream_the_page_polls_and_goes_back_to_the_stream_when_it_opens(page, api, project, conn):
    def fail_event_streams(route) -> None:
        if "text/event-stream" in route.request.headers.get("accept", ""):
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/rpc", fail_event_streams)
    allow_console_errors(page, r"Failed to load resource: net::ERR_CONNECTION_REFUSED")
    reads = record_calls(page, "batchExport.all")
    sign_in_with_link(page, project.id, project.member("OWNER"))
    create_from_page(page, "Polled", "traces", "CSV")
    row = export_row(page, "Polled")
    expect(row).to_have_attribute("data-status", "QUEUED")
    export_id = row.get_attribute("data-export-id")
    assert export_id is not None
    summary = page.locator("#exports-summary")
    expect(summary).to_contain_text("· updated ")

    write_progress(conn, export_id, rows=300, total=900, parts_done=0, parts_total=1)
    expect(row.locator(".progress-text")).to_have_text("300 / 900 rows")
    polled = len(reads)
    write_progress(conn, export_id, rows=500, total=900, parts_done=0, parts_total=1)
    expect(row.locator(".progress-text")).to_have_text("500 / 900 rows")
    assert len(reads) > polled  # it came by polling

    # The stream can open again: the client's next try (its backoff stays under 30 s) takes over.
    page.unroute("**/rpc", fail_event_streams)
    wait_until_live(page, api, project.id, timeout_ms=60_000)  # "live" once it has read the list since
    polled = len(reads)
    write_progress(conn, export_id, rows=700, total=900, parts_done=0, parts_total=1)
    expect(row.locator(".progress-text")).to_have_text("700 / 900 rows")
    assert len(reads) == polled


def test_a_viewer_is_told_in_words_that_they_may_not_list_or_create(page, project, conn, client):
    token = project.member("VIEWER", name="Vera Viewer")
    # The page shows the API's own words, after a lead saying what kind of refusal it is.
    list_refusal = client.error("batchExport.all", {"projectId": project.id}, token=token)
    create_refusal = client.error("batchExport.create", create_params(project.id), token=token)
    assert list_refusal["data"]["code"] == create_refusal["data"]["code"] == "FORBIDDEN"
    assert "VIEWER" in create_refusal["message"] and "batchExports:create" in create_refusal["message"]

    sign_in_with_link(page, project.id, token)
    expect(page.locator("#exports-error")).to_have_text(
        f"Could not load the exports. Not allowed. {list_refusal['message']}"
    )
    create_from_page(page, "Viewer export", "traces", "CSV")
    expect(page.locator("#create-error")).to_have_text(
        f"Could not create the export. Not allowed. {create_refusal['message']}"
    )
    assert (
        conn.execute("SELECT count(*) AS n FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["n"]
        == 0
    )


def test_a_bad_token_shows_a_sign_in_error_and_the_right_one_signs_in(page, project, client):
    refusal = client.error("batchExport.all", {"projectId": project.id}, token="bx_not-a-real-token")
    assert refusal["data"]["code"] == "UNAUTHORIZED"
    page.goto(f"/#token=bx_not-a-real-token&project={project.id}")
    expect(page.locator("#sign-in-error")).to_have_text(f"Sign-in failed. Not signed in. {refusal['message']}")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0  # the bad token is not kept
    expect(page.locator("#sign-in-project")).to_have_value(project.id)

    page.fill("#sign-in-token", project.member("OWNER"))
    page.click("#sign-in-submit")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#exports-empty")).to_be_visible()
    expect(page.locator("#sign-in-error")).to_be_hidden()


def test_the_filter_builder_offers_only_what_the_table_definition_allows(page, project, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    page.select_option("#create-table", "scores")
    page.click("#add-filter")
    row = page.locator("#create-filters li").last
    assert option_values(row.get_by_label("Filter column")) == [c.key for c in SCORES.filterable_columns]
    row.get_by_label("Filter column").select_option("value")
    assert option_texts(row.get_by_label("Filter operator")) == ["=", ">", "<", ">=", "<=", "is null", "is not null"]
    expect(row.get_by_label("Filter value")).to_have_attribute("type", "number")
    row.get_by_label("Filter operator").select_option(label="is null")
    expect(row.get_by_label("Filter value")).to_have_count(0)
    row.get_by_label("Filter column").select_option("metadata")
    expect(row.get_by_label("Filter key")).to_be_visible()
    assert "is set" in option_texts(row.get_by_label("Filter operator"))

    # Langfuse's filters: a score by name takes a typed key, a trace position one of five.
    page.select_option("#create-table", "observations")
    page.click("#add-filter")
    row = page.locator("#create-filters li").last
    row.get_by_label("Filter column").select_option("scores_avg")
    expect(row.get_by_label("Filter key")).to_be_visible()
    row.get_by_label("Filter column").select_option("traceTags")
    # arrayOptions' own operators, each once, then `null`: stringOptions' duplicates are not offered twice.
    assert option_texts(row.get_by_label("Filter operator")) == [
        "any of",
        "none of",
        "all of",
        "is null",
        "is not null",
    ]
    row.get_by_label("Filter column").select_option("positionInTrace")
    expect(row.get_by_label("Filter key")).to_be_hidden()
    positions = ["root", "first", "last", "nthFromStart", "nthFromEnd"]
    assert option_values(row.get_by_label("Choose the key")) == positions
    row.get_by_label("Choose the key").select_option("nthFromEnd")
    row.get_by_label("Filter value").fill("2")
    page.click("#add-filter")
    second = page.locator("#create-filters li").last
    second.get_by_label("Filter column").select_option("positionInTrace")
    create_from_page(page, "Second from the end", "observations", "CSV")
    expect(page.locator("#create-status")).to_contain_text("Created “Second from the end”")
    stored = conn.execute("SELECT query FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["query"]
    assert stored["filter"] == [
        {"column": "positionInTrace", "type": "positionInTrace", "operator": "=", "key": "nthFromEnd", "value": 2},
        {"column": "positionInTrace", "type": "positionInTrace", "operator": "=", "key": "root", "value": None},
    ]
    conn.execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE project_id = %s", (project.id,))

    # Another table has other columns; the filters of the previous one are dropped.
    page.select_option("#create-table", "audit_logs")
    expect(page.locator("#create-filters li")).to_have_count(0)
    page.click("#add-filter")
    row = page.locator("#create-filters li").last
    assert option_values(row.get_by_label("Filter column")) == [c.key for c in AUDIT_LOGS.filterable_columns]
    row.get_by_label("Filter column").select_option("createdAt")
    assert option_texts(row.get_by_label("Filter operator")) == [">", "<", ">=", "<=", "is null", "is not null"]
    expect(row.get_by_label("Filter value")).to_have_attribute("type", "datetime-local")
    assert option_values(page.locator("#create-order-column"))[1:] == AUDIT_LOGS.sortable_names()

    # An unfinished filter is named before anything is sent.
    create_from_page(page, "Half a filter", "audit_logs", "CSV")
    expect(page.locator("#create-error")).to_have_text("Filter 1 (Created At): choose a date and time.")
    assert (
        conn.execute("SELECT count(*) AS n FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["n"]
        == 1
    )


def test_a_request_the_server_refuses_is_shown_with_the_field_at_fault(page, project):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    create_from_page(page, "   ", "traces", "CSV")  # passes the browser's `required`, not the server's name rule
    error = page.locator("#create-error")
    expect(error).to_contain_text("Could not create the export. The server refused this request.")
    expect(error).to_contain_text("name: String should have at least 1 character")


def test_a_parquet_export_from_the_page_completes_and_downloads_as_a_zstd_parquet_file(
    page, project, conn, export_worker
):
    seed(conn, project.id, traces=12)
    sent = record_creates(page)
    sign_in_with_link(page, project.id, project.member("OWNER"))
    page.select_option("#create-table", "traces")
    create_from_page(page, "Traces as Parquet", "traces", "PARQUET")
    expect(page.locator("#create-status")).to_contain_text("Created “Traces as Parquet”")
    # The format's default, sent explicitly; every column ticked is `null`, which brings the score columns.
    assert [(p["format"], p["compression"], p["columns"]) for p in sent] == [("PARQUET", "zstd", None)]

    row = export_row(page, "Traces as Parquet")
    wait_for_status(row, "COMPLETED", export_worker)
    expect(row.locator(".export-detail")).to_have_text(re.compile(r"^Traces · PARQUET, zstd · \d+(\.\d)? (KiB|bytes)$"))

    filename, body = download_from(page, row)
    assert filename.endswith(".parquet")  # the codec is inside the file: no .zst suffix
    parquet = pq.ParquetFile(io.BytesIO(body))
    metadata = parquet.metadata
    assert {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    } == {"ZSTD"}
    assert parquet.schema_arrow.names == TRACES.keys + score_names(conn, project.id)
    ids = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM traces WHERE project_id = %s ORDER BY timestamp DESC, id DESC", (project.id,)
        )
    ]
    assert parquet.read(columns=["id"]).column("id").to_pylist() == ids


def test_the_compression_follows_the_format_until_the_user_picks_one(page, project):
    # No worker: what is sent is the point, not the file.
    sent = record_creates(page)
    sign_in_with_link(page, project.id, project.member("OWNER"))
    compression = page.get_by_role("group", name="Compression")
    expect(compression).to_have_accessible_description("For Parquet, the column codec.")
    expect(checked_radio(page, "compression")).to_have_value("none")
    page.get_by_label("Parquet").check()
    expect(checked_radio(page, "compression")).to_have_value("zstd")
    page.get_by_label("JSONL").check()
    expect(checked_radio(page, "compression")).to_have_value("none")
    page.get_by_label("Parquet").check()
    expect(checked_radio(page, "compression")).to_have_value("zstd")

    # Once the user has picked one, the format no longer moves it.
    compression.get_by_label("None").check()
    page.get_by_label("CSV").check()
    page.get_by_label("Parquet").check()
    expect(checked_radio(page, "compression")).to_have_value("none")
    compression.get_by_label("gzip").check()
    page.get_by_label("JSON", exact=True).check()
    expect(checked_radio(page, "compression")).to_have_value("gzip")
    create_from_page(page, "Parquet, gzip columns", "traces", "PARQUET")
    expect(page.locator("#create-status")).to_contain_text("Created “Parquet, gzip columns”")
    expect(export_row(page, "Parquet, gzip columns").locator(".export-detail")).to_have_text(
        re.compile(r"^Traces · PARQUET, gzip$")
    )
    assert [(p["format"], p["compression"]) for p in sent] == [("PARQUET", "gzip")]


def test_the_column_picker_sends_the_ticked_columns_in_table_order_and_null_for_all(page, project, conn, export_worker):
    seed(conn, project.id, traces=8)
    sent = record_creates(page)
    sign_in_with_link(page, project.id, project.member("OWNER"))
    picker = column_picker(page)
    boxes = picker.get_by_role("checkbox")

    # One box per column of the file, in file order, labelled with the display name where there is one.
    page.select_option("#create-table", "observations")
    expect(boxes).to_have_count(len(OBSERVATIONS.exported_columns))
    page.select_option("#create-table", "traces")
    expect(boxes).to_have_count(len(TRACES.exported_columns))
    assert boxes.evaluate_all("boxes => boxes.map(b => b.value)") == TRACES.keys
    labels = boxes.evaluate_all("boxes => boxes.map(b => b.labels[0].textContent.trim())")
    assert labels[:3] == ["ID", "Timestamp", "Name"]
    assert labels[TRACES.keys.index("bookmarked")] == "⭐️ bookmarked"  # a symbol alone says too little
    assert labels[TRACES.keys.index("observationCount")] == "observationCount"  # no display name: the key
    assert boxes.evaluate_all("boxes => boxes.every(b => b.checked)")
    expect(picker).to_contain_text(f"All {len(TRACES.keys)} columns, then one per score name.")

    # Ticked out of order, sent in the table's order.
    picker.get_by_role("button", name="None").click()
    for label in ("Environment", "Name", "ID"):
        picker.get_by_label(label, exact=True).check()
    expect(picker).to_contain_text(f"3 of {len(TRACES.keys)} columns, without the score columns.")
    create_from_page(page, "Three columns", "traces", "CSV")
    expect(page.locator("#create-status")).to_contain_text("Created “Three columns”")
    assert sent[-1]["columns"] == ["id", "name", "environment"]
    row = export_row(page, "Three columns")
    wait_for_status(row, "COMPLETED", export_worker)
    _, body = download_from(page, row)
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert rows[0] == ["id", "name", "environment"]  # and no score columns
    assert (
        len(rows)
        == 1 + conn.execute("SELECT count(*) AS n FROM traces WHERE project_id = %s", (project.id,)).fetchone()["n"]
    )

    # A new table starts with every column ticked; "All" ticks them again after a narrower choice.
    page.select_option("#create-table", "scores")
    expect(boxes).to_have_count(len(SCORES.exported_columns))
    assert boxes.evaluate_all("boxes => boxes.every(b => b.checked)")
    expect(picker).to_contain_text(f"All {len(SCORES.exported_columns)} columns.")
    page.select_option("#create-table", "traces")
    picker.get_by_role("button", name="None").click()
    picker.get_by_label("Name", exact=True).check()
    picker.get_by_role("button", name="All").click()
    create_from_page(page, "Every column", "traces", "JSONL")
    expect(page.locator("#create-status")).to_contain_text("Created “Every column”")
    assert sent[-1]["columns"] is None
    stored = {
        r["name"]: r["columns"]
        for r in conn.execute("SELECT name, columns FROM batch_exports WHERE project_id = %s", (project.id,))
    }
    assert stored == {"Three columns": ["id", "name", "environment"], "Every column": None}


def test_no_columns_ticked_is_refused_on_the_page_and_nothing_is_created(page, project, conn):
    sent = record_creates(page)
    sign_in_with_link(page, project.id, project.member("OWNER"))
    picker = column_picker(page)
    picker.get_by_role("button", name="None").click()
    expect(picker.get_by_role("checkbox", checked=True)).to_have_count(0)
    expect(picker).to_contain_text("No columns ticked.")
    create_from_page(page, "Nothing at all", "traces", "CSV")
    expect(page.locator("#create-error")).to_have_text("Choose at least one column to export, or All for every column.")
    expect(page.locator("#create-status")).to_be_hidden()
    assert sent == []
    assert (
        conn.execute("SELECT count(*) AS n FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["n"]
        == 0
    )

    # One column is enough: the error goes, the export is created.
    picker.get_by_label("ID", exact=True).check()
    page.click("#create-submit")
    expect(page.locator("#create-status")).to_contain_text("Created “Nothing at all”")
    expect(page.locator("#create-error")).to_be_hidden()
    assert [p["columns"] for p in sent] == [["id"]]
