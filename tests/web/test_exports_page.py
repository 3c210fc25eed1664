"""The exports page at `/`, used the way a person uses it: in Debian's chromium, against the real API and worker."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from devstack.seed import seed
from tests.support.rpc_client import create_params
from tests.support.web import RunningWorker
from workers.tables import AUDIT_LOGS, SCORES, TRACES

# Long enough for a busy two-core machine to run a small export through a real worker.
COMPLETION_TIMEOUT_S = 90


def sign_in_with_link(page: Page, project_id: str, token: str) -> None:
    page.goto(f"/#token={token}&project={project_id}")
    expect(page.locator("#account-project")).to_have_text(project_id)


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
    """The row shows `status` as the list polls; a worker that died fails the test at once."""
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while True:
        worker.assert_alive()
        try:
            expect(row).to_have_attribute("data-status", status, timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def create_from_page(page: Page, name: str, table: str, fmt: str, compression: str = "none") -> None:
    page.fill("#create-name", name)
    page.check(f"input[name=format][value={fmt}]")
    page.check(f"input[name=compression][value={compression}]")
    page.click("#create-submit")


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
    names = sorted(
        r["name"] for r in conn.execute("SELECT DISTINCT name FROM scores WHERE project_id = %s", (project.id,))
    )
    assert rows[0] == TRACES.keys + names
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
