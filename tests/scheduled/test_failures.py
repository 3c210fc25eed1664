"""When the destination fails: retries and one email, a refused key that disables the schedule, validation in the
destination's own words, and secrets that never reach a log, a reply, an audit entry or an email."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.support.destinations import Destination, azure_destination, s3_destination
from tests.support.processes import wait_for
from tests.support.scheduled import SETTLE, ScheduledWorld, insert_traces, scheduled_world

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def since(minutes: float) -> dict:
    return {"mode": "from_date", "date": (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()}


def backlog(world: ScheduledWorld, count: int = 10) -> None:
    now = datetime.now(UTC)
    insert_traces(world.conn, world.project.id, [now - timedelta(minutes=45 * (i + 1) / count) for i in range(count)])


def emails(world: ScheduledWorld) -> list:
    outbox = world.folder / "outbox"
    return (
        [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(outbox.glob("*.eml"))]
        if outbox.exists()
        else []
    )


def schedule_row(world: ScheduledWorld, scheduled_export_id: str) -> dict:
    return world.conn.execute("SELECT * FROM scheduled_exports WHERE id = %s", (scheduled_export_id,)).fetchone()


def everything_said(world: ScheduledWorld, replies: list) -> str:
    """Every log line of every process, every email, every audit entry of the project and every reply."""
    audit = world.conn.execute(
        "SELECT before, after FROM audit_logs WHERE project_id = %s", (world.project.id,)
    ).fetchall()
    outbox = world.folder / "outbox"
    mails = [p.read_text(errors="replace") for p in outbox.glob("*.eml")] if outbox.exists() else []
    return "\n".join(
        [*(p.log() for p in world.processes), *mails, json.dumps([dict(a) for a in audit]), json.dumps(replies)]
    )


def with_bucket(target: Destination, bucket: str) -> Destination:
    return Destination(**{**target.__dict__, "model": target.model.model_copy(update={"bucket": bucket})})


def test_a_revoked_key_disables_the_schedule_with_one_email_and_a_new_key_resumes_without_a_gap(
    conn, database_url, local_s3, tmp_path: Path
):
    target = s3_destination(local_s3, prefix="lake")
    with scheduled_world(conn, database_url, target, tmp_path, LOG_FORMAT="json") as world:
        replies: list = []
        backlog(world)
        schedule = world.create(startFrom=since(50))
        replies.append(schedule)
        world.wait_runs(schedule["id"], 1)

        local_s3.revoke_key(target.model.accessKeyId)
        insert_traces(world.conn, world.project.id, [None])  # ingested now, so in the next window:
        time.sleep(2.1)  # windows end a second before the run, floored to a whole second
        replies.append(world.result("scheduledExport.runNow", {"scheduledExportId": schedule["id"]}))
        wait_for(lambda: not schedule_row(world, schedule["id"])["enabled"], SETTLE, "the schedule to disable itself")

        shown = world.result("scheduledExport.all", {})["scheduledExports"][0]
        replies.append(shown)
        assert shown["enabled"] is False and shown["nextSyncAt"] is None
        assert "refused the credentials" in shown["disabledReason"] and "InvalidAccessKeyId" in shown["disabledReason"]
        refused = world.call("scheduledExport.runNow", {"scheduledExportId": schedule["id"]})
        replies.append(refused)
        assert refused["error"]["data"]["code"] == "PRECONDITION_FAILED" and "disabled" in refused["error"]["message"]
        runs = world.runs(schedule["id"])
        assert [r["status"] for r in runs] == ["COMPLETED", "FAILED"] and runs[1]["attempts"] == 1, "never retried"
        sent = emails(world)
        assert [m["Subject"] for m in sent] == ["Scheduled export disabled: hourly lake"]
        assert "InvalidAccessKeyId" in sent[0].get_content()

        # A user fixes the key and enables it again: the failed window is exported first, then the rest.
        key_id, secret = local_s3.create_key()
        fixed = world.result(
            "scheduledExport.update",
            {
                "scheduledExportId": schedule["id"],
                "destination": world.destination(accessKeyId=key_id, secretAccessKey=secret),
                "enabled": True,
            },
        )
        replies.append(fixed)
        assert fixed["enabled"] is True and fixed["disabledReason"] is None
        world.target = Destination(
            **{**target.__dict__, "model": target.model.model_copy(update={"accessKeyId": key_id}), "secret": secret}
        )
        runs = world.wait_runs(schedule["id"], 2)
        assert [r["status"] for r in runs] == ["COMPLETED", "COMPLETED"]
        assert runs[1]["window_start"] == runs[0]["window_end"]
        seen = world.exported_ids("traces")
        assert set(seen) == world.table_ids("traces") and max(seen.values()) == 1
        assert len(emails(world)) == 1, "one email for one disabling"

        said = everything_said(world, replies)
        for secret_text in (target.secret, secret):
            assert secret_text not in said
        # The JSON logs carry the schedule's and the run's ids on the run's lines.
        lines = [json.loads(line) for line in world.worker.log().splitlines() if line.startswith("{")]
        assert any(line.get("scheduledExportRunId") == runs[1]["id"] for line in lines)


def test_a_failing_run_is_retried_then_failed_with_one_email_and_its_window_is_exported_once_fixed(
    conn, database_url, local_s3, tmp_path: Path
):
    target = s3_destination(local_s3, prefix="lake")
    missing = with_bucket(target, f"{target.name}-later")
    with scheduled_world(conn, database_url, missing, tmp_path, BATCH_EXPORT_JOB_RETRIES="1") as world:
        backlog(world)
        schedule = world.create(startFrom=since(50))
        failed = wait_for(
            lambda: [r for r in world.runs(schedule["id"]) if r["status"] == "FAILED"],
            SETTLE,
            "the run to fail",
            *world.processes,
        )
        assert failed[0]["attempts"] == 2, "one attempt and one retry"
        assert "does not exist" in failed[0]["error"] and missing.model.bucket in failed[0]["error"]
        shown = world.result("scheduledExport.all", {})["scheduledExports"][0]
        assert shown["enabled"] is True and missing.model.bucket in shown["lastError"], "not a refusal: still enabled"
        assert [m["Subject"] for m in emails(world)] == ["Scheduled export failing: hourly lake"]

        # Tried again, and failing again within the cooldown: no second email.
        world.result("scheduledExport.runNow", {"scheduledExportId": schedule["id"]})
        wait_for(
            lambda: (r := world.runs(schedule["id"])[0])["status"] == "FAILED" and r["attempts"] == 4 and r,
            SETTLE,
            "the second round of attempts",
            *world.processes,
        )
        assert len(emails(world)) == 1

        local_s3.create_bucket(missing.model.bucket)
        world.result("scheduledExport.runNow", {"scheduledExportId": schedule["id"]})
        runs = world.wait_runs(schedule["id"], 1)
        assert [r["id"] for r in runs] == [failed[0]["id"]], "the same window, not a new one past it"
        seen = world.exported_ids("traces")
        assert set(seen) == world.table_ids("traces") and max(seen.values()) == 1
        assert world.result("scheduledExport.all", {})["scheduledExports"][0]["lastError"] is None


def test_a_schedule_into_azure_blob_storage_writes_its_window_and_manifest(
    conn, database_url, local_azurite, tmp_path: Path
):
    target = azure_destination(local_azurite, prefix="langfuse")
    with scheduled_world(conn, database_url, target, tmp_path) as world:
        backlog(world)
        schedule = world.create(startFrom=since(50))
        runs = world.wait_runs(schedule["id"], 1)
        assert runs[0]["status"] == "COMPLETED"
        assert world.keys("manifests/") == [
            f"manifests/{runs[0]['window_start']:%Y%m%dT%H%M%SZ}_{runs[0]['window_end']:%Y%m%dT%H%M%SZ}.json"
        ]
        seen = world.exported_ids("traces")
        assert set(seen) == world.table_ids("traces") and max(seen.values()) == 1


# --- validate, through the API ---------------------------------------------------------------------


def validate(client, project, token, **params) -> dict:
    return client.result("scheduledExport.validate", {"projectId": project.id, **params}, token=token)


def as_input(target: Destination, secret: str | None = None) -> dict:
    model = target.model
    field = "secretAccessKey" if model.type == "s3" else "accountKey"
    return {**model.model_dump(mode="json", exclude_none=True), field: secret or target.secret}


def test_validate_says_in_the_destinations_words_what_is_wrong(client, project, owner_token, local_s3, local_azurite):
    s3 = s3_destination(local_s3, prefix="lake")
    azure = azure_destination(local_azurite, prefix="lake")
    for target in (s3, azure):
        good = validate(client, project, owner_token, destination=as_input(target))
        assert good["ok"] is True and "wrote, read back and deleted" in good["message"], good
        wrong = validate(client, project, owner_token, destination=as_input(target, target.wrong_secret))
        assert wrong["ok"] is False and target.bad_secret_code in wrong["message"], wrong
        gone = {**as_input(target), ("bucket" if target.model.type == "s3" else "container"): "no-such-one"}
        missing = validate(client, project, owner_token, destination=gone)
        assert (
            missing["ok"] is False and "no-such-one" in missing["message"] and target.missing_code in missing["message"]
        )
        for reply in (good, wrong, missing):
            assert target.secret not in json.dumps(reply) and target.wrong_secret not in json.dumps(reply)
    from devstack.servers import free_port

    dead = {**as_input(s3), "endpoint": f"http://127.0.0.1:{free_port()}"}
    unreachable = validate(client, project, owner_token, destination=dead)
    assert unreachable["ok"] is False and "cannot reach" in unreachable["message"], unreachable


def test_validate_a_stored_schedule_uses_its_stored_secret(client, project, owner_token, local_s3):
    target = s3_destination(local_s3)
    created = client.result(
        "scheduledExport.create",
        {
            "projectId": project.id,
            "name": "validated",
            "destination": as_input(target),
            "tables": ["traces"],
            "schedule": "daily",
            "startFrom": {"mode": "from_today"},
            "enabled": False,
        },
        token=owner_token,
    )
    assert validate(client, project, owner_token, scheduledExportId=created["id"])["ok"] is True
    local_s3.revoke_key(target.model.accessKeyId)
    revoked = validate(client, project, owner_token, scheduledExportId=created["id"])
    assert revoked["ok"] is False and "InvalidAccessKeyId" in revoked["message"], revoked
