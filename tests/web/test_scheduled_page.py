"""The "Scheduled exports" section of the page, used the way an owner uses it: in Debian's chromium, against the
real API, worker and scheduler, writing into a bucket on moto that checks its credentials."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Locator, Page, Request, expect

from tests.support.destinations import Destination, s3_destination
from tests.support.scheduled import SETTLE, ScheduledWorld, insert_traces, scheduled_world
from tests.support.web import browser_page, sign_in_with_link

NEEDS_ADMIN = "Scheduled exports need an owner or admin role in this project."
STORED_SECRET = "stored — leave empty to keep"


@pytest.fixture
def world(conn, database_url, local_s3, tmp_path):
    """Its own API, worker and `batch-export scheduler`, with windows of seconds (tests.support.scheduled)."""
    with scheduled_world(conn, database_url, s3_destination(local_s3, prefix="lake/langfuse"), tmp_path) as world:
        yield world


@pytest.fixture
def world_page(browser, world: ScheduledWorld):
    with browser_page(browser, world.api.url) as page:
        yield page


@pytest.fixture
def bucket(local_s3) -> Destination:
    return s3_destination(local_s3, prefix="page/exports")


def section(page: Page) -> Locator:
    return page.locator("#scheduled")


def form(page: Page) -> Locator:
    return page.locator("#scheduled-form")


def scheduled_row(page: Page, name: str) -> Locator:
    return page.locator("#scheduled-body tr[data-scheduled-export-id]", has_text=name)


def fill_s3(page: Page, target: Destination, secret: str | None = None) -> None:
    s3 = page.locator("#scheduled-s3")
    model = target.model
    page.locator("#scheduled-type").select_option("s3")
    s3.get_by_label("Bucket").fill(model.bucket)
    s3.get_by_label("Prefix").fill(model.prefix)
    s3.get_by_label("Endpoint").fill(model.endpoint or "")
    s3.get_by_label("Path-style addressing").set_checked(model.forcePathStyle)
    s3.get_by_label("Access key id").fill(model.accessKeyId)
    s3.get_by_label("Secret access key").fill(target.secret if secret is None else secret)


def fill_form(page: Page, name: str, target: Destination, tables: tuple[str, ...] = ("Traces", "Scores")) -> None:
    """A new S3 schedule, weekly from the full history: the scheduler plans nothing for a week, only Run now runs."""
    form(page).get_by_label("Name", exact=True).fill(name)
    fill_s3(page, target)
    picked = page.locator("#scheduled-tables")
    for box in picked.get_by_role("checkbox").all():
        box.uncheck()
    for table in tables:
        picked.get_by_label(table, exact=True).check()
    page.locator("#scheduled-schedule").select_option("weekly")


def record_calls(page: Page, method: str) -> list[dict]:
    """The params of every call of `method` the page sends from now on, exactly as it sends them."""
    sent: list[dict] = []

    def record(request: Request) -> None:
        if request.method != "POST" or not request.url.endswith("/rpc"):
            return
        body = request.post_data_json
        for call in body if isinstance(body, list) else [body]:
            if call.get("method") == method:
                sent.append(call["params"])

    page.on("request", record)
    return sent


def create_on_page(page: Page, name: str, target: Destination, **fill) -> Locator:
    fill_form(page, name, target, **fill)
    page.click("#scheduled-submit")
    expect(page.locator("#scheduled-status")).to_have_text(f"Created “{name}”: it appears in the list above.")
    row = scheduled_row(page, name)
    expect(row).to_be_visible()
    return row


def schedules_of(conn, project_id: str) -> int:
    return conn.execute("SELECT count(*) AS n FROM scheduled_exports WHERE project_id = %s", (project_id,)).fetchone()[
        "n"
    ]


def stored(conn, schedule_id: str) -> dict:
    return conn.execute("SELECT * FROM scheduled_exports WHERE id = %s", (schedule_id,)).fetchone()


def test_an_owner_creates_validates_and_runs_an_s3_export_and_sees_the_run_complete_with_its_files(
    world: ScheduledWorld, world_page: Page
):
    page = world_page
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    traces = insert_traces(world.conn, world.project.id, [start + timedelta(minutes=m) for m in (5, 10, 20)])
    sign_in_with_link(page, world.project.id, world.token)
    expect(page.locator("#scheduled-empty")).to_be_visible()
    # Parquet with zstd unless the owner picks otherwise.
    expect(page.locator("#scheduled-format")).to_have_value("PARQUET")
    expect(page.locator("#scheduled-compression")).to_have_value("zstd")
    creates = record_calls(page, "scheduledExport.create")

    fill_form(page, "Lake", world.target)
    form(page).get_by_label("A date and time (UTC)", exact=True).check()
    page.locator("#scheduled-start-date").fill(start.strftime("%Y-%m-%dT%H:%M:%S"))
    page.click("#scheduled-validate")
    expect(page.locator("#scheduled-validation")).to_have_class(re.compile(r"\bvalidation-ok\b"))
    expect(page.locator("#scheduled-validation")).to_contain_text("Valid:")
    page.click("#scheduled-submit")
    expect(page.locator("#scheduled-status")).to_have_text("Created “Lake”: it appears in the list above.")
    row = scheduled_row(page, "Lake")
    bucket = world.target.model.bucket
    expect(row.locator(".destination")).to_have_text(f"s3://{bucket}/lake/langfuse")
    expect(row.locator(".export-detail")).to_have_text("Traces, Scores · Parquet · zstd")
    expect(row.locator(".schedule")).to_have_text("Weekly")
    expect(row).to_have_attribute("data-state", "enabled")
    expect(row.locator(".last-sync")).to_have_text("nothing yet")
    assert creates[0]["startFrom"] == {"mode": "from_date", "date": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert creates[0]["format"] == "PARQUET" and creates[0]["compression"] == "zstd"

    row.get_by_role("button", name="Validate").click()
    expect(row.locator(".row-message")).to_contain_text("Valid:")

    row.get_by_role("button", name="Run now").click()
    expect(row.locator(".row-message")).to_contain_text(re.compile(r"^Run (queued|processing): the rows ingested from"))
    runs = page.locator(f"tr[data-runs-of='{row.get_attribute('data-scheduled-export-id')}']")
    done = runs.locator("tr[data-status=COMPLETED]")
    expect(done).to_have_count(1, timeout=SETTLE * 1000)

    schedule_id = row.get_attribute("data-scheduled-export-id")
    assert schedule_id is not None
    (run,) = world.runs(schedule_id)
    keys = [f["key"] for f in run["files"]]
    assert sorted(k.split("/")[2] for k in keys) == ["scores", "traces"]
    expect(done.locator(".run-files li")).to_have_count(2)
    for key in keys:
        expect(done.locator(".run-files")).to_contain_text(key)
        assert world.read(key), f"{key} is in the bucket"
    expect(done.locator(".run-rows")).to_have_text(str(run["rows_exported"]))
    assert run["rows_exported"] == 2 * len(traces)
    expect(done.locator(".run-tables")).to_have_text("2 / 2")
    expect(done.locator(".run-attempts")).to_have_text("1")
    expect(runs.locator(".runs-summary")).to_have_text("1 run, newest first.")
    # The list moved on with the run: exported up to the window's end.
    expect(row.locator(".last-sync")).not_to_have_text("nothing yet")
    assert world.target.secret not in page.content()


def test_a_wrong_secret_validated_in_the_form_shows_the_servers_own_words(page, project, bucket, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    fill_form(page, "Wrong key", bucket)
    page.locator("#scheduled-s3").get_by_label("Secret access key").fill(bucket.wrong_secret)
    page.click("#scheduled-validate")
    validation = page.locator("#scheduled-validation")
    expect(validation).to_have_class(re.compile(r"\bvalidation-bad\b"))
    expect(validation).to_contain_text("Not valid:")
    expect(validation).to_contain_text(bucket.bad_secret_code)
    assert schedules_of(conn, project.id) == 0


def test_editing_without_a_secret_keeps_the_stored_one(page, project, bucket, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    row = create_on_page(page, "Keeps its key", bucket)
    assert bucket.secret not in page.content()
    updates = record_calls(page, "scheduledExport.update")

    row.get_by_role("button", name="Edit").click()
    secret = page.locator("#scheduled-s3").get_by_label("Secret access key")
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_value("")
    expect(secret).to_have_attribute("placeholder", STORED_SECRET)
    expect(form(page).get_by_label("Name", exact=True)).to_have_value("Keeps its key")
    expect(page.locator("#scheduled-s3").get_by_label("Bucket")).to_have_value(bucket.model.bucket)
    # Validate while editing, the secret left empty: the stored destination with its stored secret.
    page.click("#scheduled-validate")
    expect(page.locator("#scheduled-validation")).to_contain_text("Valid:")
    form(page).get_by_label("Name", exact=True).fill("Kept its key")
    page.locator("#scheduled-schedule").select_option("daily")
    page.click("#scheduled-submit")
    expect(page.locator("#scheduled-status")).to_have_text("Saved “Kept its key”.")
    row = scheduled_row(page, "Kept its key")
    expect(row.locator(".schedule")).to_have_text("Daily")

    (sent,) = updates
    assert "secretAccessKey" not in sent["destination"] and "startFrom" not in sent
    row.get_by_role("button", name="Validate").click()
    expect(row.locator(".row-message")).to_contain_text("Valid:")
    assert bucket.secret not in page.content()


def test_a_scheduled_export_is_disabled_and_enabled_again_from_its_row(page, project, bucket, conn):
    sign_in_with_link(page, project.id, project.member("ADMIN"))
    row = create_on_page(page, "On and off", bucket)
    schedule_id = row.get_attribute("data-scheduled-export-id")

    row.get_by_role("button", name="Disable").click()
    expect(row).to_have_attribute("data-state", "disabled")
    expect(row.locator(".status")).to_have_text("Disabled")
    assert stored(conn, schedule_id)["enabled"] is False
    # A disabled schedule does not run: the API's words say so in the row.
    row.get_by_role("button", name="Run now").click()
    expect(row.locator(".row-message")).to_contain_text("Not possible right now.")
    expect(row.locator(".row-message")).to_contain_text("disabled")

    row.get_by_role("button", name="Enable").click()
    expect(row).to_have_attribute("data-state", "enabled")
    expect(row.get_by_role("button", name="Disable")).to_be_visible()
    assert stored(conn, schedule_id)["enabled"] is True


def test_a_scheduled_export_is_deleted_only_once_the_owner_confirms(page, project, bucket, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    row = create_on_page(page, "Short-lived", bucket)
    schedule_id = row.get_attribute("data-scheduled-export-id")

    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Delete").click()
    expect(row.get_by_role("button", name="Delete")).to_be_enabled()
    assert stored(conn, schedule_id) is not None

    questions: list[str] = []

    def accept(dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    row.get_by_role("button", name="Delete").click()
    expect(scheduled_row(page, "Short-lived")).to_have_count(0)
    expect(page.locator("#scheduled-empty")).to_be_visible()
    assert stored(conn, schedule_id) is None
    assert "Short-lived" in questions[0]


def test_a_field_the_server_refuses_is_named_beside_the_form(page, project, bucket, conn):
    sign_in_with_link(page, project.id, project.member("OWNER"))
    fill_form(page, "Bad bucket", bucket)
    bucket_input = page.locator("#scheduled-s3").get_by_label("Bucket")
    bucket_input.fill("Not_A_Bucket")
    page.click("#scheduled-submit")
    expect(page.locator("#scheduled-error")).to_contain_text("Could not create the scheduled export.")
    expect(page.locator("#scheduled-error")).to_contain_text("bucket")
    expect(bucket_input).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#scheduled-s3 .field-error")).to_have_count(1)
    assert schedules_of(conn, project.id) == 0


def test_a_member_is_told_in_one_sentence_that_scheduled_exports_need_an_owner_or_admin(page, project):
    sign_in_with_link(page, project.id, project.member("MEMBER"))
    expect(page.locator("#scheduled-notice")).to_have_text(NEEDS_ADMIN)
    expect(form(page)).to_be_hidden()
    expect(page.locator("#scheduled-list-error")).to_be_hidden()
    expect(section(page).locator(".error:visible")).to_have_count(0)
