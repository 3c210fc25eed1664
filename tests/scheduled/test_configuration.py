"""scheduledExport.create / update / delete / all over HTTP: validation, roles, audit entries, and secrets that never leave."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.settings import get_settings
from workers.secret_box import SecretBox, SecretBoxError

SECRET = "s3cr3t-Acc3ss-K3y/never+shown"
AZURE_KEY = "YXp1cmUta2V5LW5ldmVyLXNob3du"


def s3(**overrides) -> dict:
    return {
        "type": "s3",
        "bucket": "customer-bucket",
        "prefix": "langfuse/exports",
        "region": "eu-west-1",
        "endpoint": "http://127.0.0.1:9",
        "forcePathStyle": True,
        "accessKeyId": "AKIAEXAMPLE",
        "secretAccessKey": SECRET,
        **overrides,
    }


def create_params(project_id: str, **overrides) -> dict:
    return {
        "projectId": project_id,
        "name": "nightly to our bucket",
        "destination": s3(),
        "tables": ["traces", "observations"],
        "schedule": "daily",
        "startFrom": {"mode": "full_history"},
        **overrides,
    }


def stored_secret(conn, scheduled_export_id: str) -> str:
    row = conn.execute("SELECT secret FROM scheduled_exports WHERE id = %s", (scheduled_export_id,)).fetchone()
    return SecretBox.from_settings(get_settings()).open(row["secret"], scheduled_export_id)


def test_create_answers_the_schedule_with_secret_set_and_never_the_secret(client, project, owner_token, conn):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    assert created["destination"] == {
        "type": "s3",
        "bucket": "customer-bucket",
        "prefix": "langfuse/exports",
        "region": "eu-west-1",
        "endpoint": "http://127.0.0.1:9",
        "forcePathStyle": True,
        "accessKeyId": "AKIAEXAMPLE",
        "secretSet": True,
    }
    assert created["format"] == "PARQUET" and created["compression"] == "zstd", "Parquet + zstd by default"
    assert created["enabled"] is True and created["nextSyncAt"] is not None and created["lastSyncAt"] is None
    assert SECRET not in json.dumps(created)
    # Sealed at rest: the column holds no trace of the plaintext, and opens to it with the key.
    raw = bytes(
        conn.execute("SELECT secret FROM scheduled_exports WHERE id = %s", (created["id"],)).fetchone()["secret"]
    )
    assert SECRET.encode() not in raw
    assert stored_secret(conn, created["id"]) == SECRET
    listed = client.result("scheduledExport.all", {"projectId": project.id}, token=owner_token)
    assert [s["id"] for s in listed["scheduledExports"]] == [created["id"]]
    assert SECRET not in json.dumps(listed)


def test_every_change_writes_an_audit_entry_without_the_secret(client, project, owner_token, conn):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    client.result(
        "scheduledExport.update",
        {**ref, "name": "renamed", "destination": s3(secretAccessKey="new-" + SECRET)},
        token=owner_token,
    )
    client.result("scheduledExport.delete", ref, token=owner_token)
    entries = conn.execute(
        "SELECT action, before, after FROM audit_logs WHERE resource_type = 'scheduledExport' AND resource_id = %s"
        " ORDER BY created_at",
        (created["id"],),
    ).fetchall()
    assert [e["action"] for e in entries] == ["create", "update", "delete"]
    assert entries[1]["before"]["name"] == "nightly to our bucket" and entries[1]["after"]["name"] == "renamed"
    assert entries[2]["after"] is None
    assert SECRET not in json.dumps([dict(e) for e in entries])


def test_an_update_without_a_secret_keeps_the_stored_one(client, project, owner_token, conn):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    without_secret = {k: v for k, v in s3(bucket="another-bucket").items() if k != "secretAccessKey"}
    updated = client.result("scheduledExport.update", {**ref, "destination": without_secret}, token=owner_token)
    assert updated["destination"]["bucket"] == "another-bucket" and updated["destination"]["secretSet"] is True
    assert stored_secret(conn, created["id"]) == SECRET
    client.result("scheduledExport.update", {**ref, "destination": s3(secretAccessKey="rotated")}, token=owner_token)
    assert stored_secret(conn, created["id"]) == "rotated"


def test_switching_to_azure_needs_the_account_key(client, project, owner_token):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    azure = {"type": "azure", "container": "exports", "accountName": "devstoreaccount1", "prefix": ""}
    error = client.error("scheduledExport.update", {**ref, "destination": azure}, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST" and "accountKey" in error["message"], error
    updated = client.result(
        "scheduledExport.update", {**ref, "destination": {**azure, "accountKey": AZURE_KEY}}, token=owner_token
    )
    assert updated["destination"] == {
        "type": "azure",
        "container": "exports",
        "prefix": "",
        "accountName": "devstoreaccount1",
        "endpoint": None,
        "secretSet": True,
    }


def test_only_the_fields_given_change(client, project, owner_token):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    updated = client.result(
        "scheduledExport.update", {**ref, "schedule": "hourly", "format": "CSV", "enabled": False}, token=owner_token
    )
    assert updated["schedule"] == "hourly" and updated["format"] == "CSV" and updated["compression"] == "none"
    assert updated["enabled"] is False and updated["nextSyncAt"] is None, "a disabled schedule is not due"
    assert updated["tables"] == created["tables"] and updated["destination"] == created["destination"]
    enabled = client.result("scheduledExport.update", {**ref, "enabled": True}, token=owner_token)
    assert enabled["nextSyncAt"] is not None


BAD_INPUTS = [
    ({"destination": s3(bucket="Not_A_Bucket")}, "bucket"),
    ({"destination": s3(prefix="a/../b")}, "prefix"),
    ({"destination": s3(endpoint="ftp://example.com")}, "endpoint"),
    ({"destination": {**s3(), "secretAccessKey": None}}, "secretAccessKey"),
    ({"destination": {**s3(), "type": "gcs"}}, "destination"),
    ({"destination": {**s3(), "sessionToken": "x"}}, "sessionToken"),
    ({"tables": []}, "tables"),
    ({"tables": ["traces", "traces"]}, "each table once"),
    ({"tables": ["spans"]}, "tables"),
    ({"tables": ["sessions"]}, "sessions"),
    ({"schedule": "every_5_minutes"}, "schedule"),
    ({"startFrom": {"mode": "from_date"}}, "startFrom.date is required"),
    ({"startFrom": {"mode": "from_date", "date": "2026-01-01T00:00:00"}}, "time zone"),
    ({"startFrom": {"mode": "from_date", "date": (datetime.now(UTC) + timedelta(days=2)).isoformat()}}, "future"),
    ({"startFrom": {"mode": "full_history", "date": "2026-01-01T00:00:00Z"}}, "only for mode from_date"),
    ({"columns": {"scores": ["id"]}}, "scores"),
    ({"columns": {"traces": ["noSuchColumn"]}}, "noSuchColumn"),
    ({"format": "XLSX"}, "format"),
    ({"name": "  "}, "name"),
]


@pytest.mark.parametrize("overrides,named", BAD_INPUTS, ids=[named for _, named in BAD_INPUTS])
def test_a_bad_field_is_a_bad_request_naming_it_and_creates_nothing(
    client, project, owner_token, conn, overrides, named
):
    error = client.error("scheduledExport.create", create_params(project.id, **overrides), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST", error
    assert named in json.dumps(error), error
    assert SECRET not in json.dumps(error), "an error never echoes the secret"
    count = conn.execute("SELECT count(*) AS n FROM scheduled_exports WHERE project_id = %s", (project.id,)).fetchone()
    assert count["n"] == 0


def test_start_from_cannot_move_once_a_window_was_planned(client, project, owner_token, conn):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    moved = {**ref, "startFrom": {"mode": "from_today"}}
    assert client.result("scheduledExport.update", moved, token=owner_token)["startFrom"]["mode"] == "from_today"
    conn.execute(
        "INSERT INTO scheduled_export_runs (scheduled_export_id, window_start, window_end, tables_total)"
        " VALUES (%s, now() - interval '2 hours', now() - interval '1 hour', 2)",
        (created["id"],),
    )
    error = client.error("scheduledExport.update", {**ref, "startFrom": {"mode": "full_history"}}, token=owner_token)
    assert error["data"]["code"] == "PRECONDITION_FAILED" and "before the first run" in error["message"]


METHODS = ["create", "update", "delete", "all", "validate", "runNow", "runs"]


def _params(method: str, project_id: str, scheduled_export_id: str) -> dict:
    ref = {"projectId": project_id, "scheduledExportId": scheduled_export_id}
    return {
        "create": create_params(project_id),
        "update": {**ref, "name": "renamed"},
        "delete": ref,
        "all": {"projectId": project_id},
        "validate": ref,
        "runNow": ref,
        "runs": ref,
    }[method]


@pytest.mark.parametrize("role", ["MEMBER", "VIEWER", "NONE", None], ids=lambda r: r or "no-membership")
@pytest.mark.parametrize("method", METHODS)
def test_only_owners_and_admins_may_see_or_change_scheduled_exports(client, project, owner_token, method, role):
    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    error = client.error(
        f"scheduledExport.{method}", _params(method, project.id, created["id"]), token=project.member(role)
    )
    assert error["data"]["code"] == "FORBIDDEN", error
    assert "nightly" not in json.dumps(error)


@pytest.mark.parametrize("role", ["OWNER", "ADMIN"])
def test_owners_and_admins_manage_them(client, project, role):
    token = project.member(role)
    created = client.result("scheduledExport.create", create_params(project.id), token=token)
    ref = {"projectId": project.id, "scheduledExportId": created["id"]}
    assert client.result("scheduledExport.update", {**ref, "name": "mine"}, token=token)["name"] == "mine"
    assert client.result("scheduledExport.runs", ref, token=token) == {"runs": [], "totalCount": 0}
    assert client.result("scheduledExport.delete", ref, token=token) == {"deleted": True}
    assert client.result("scheduledExport.all", {"projectId": project.id}, token=token) == {"scheduledExports": []}


def test_a_user_of_another_project_neither_sees_nor_changes_them(client, project, owner_token, conn):
    from tests.support.world import new_project

    created = client.result("scheduledExport.create", create_params(project.id), token=owner_token)
    other = new_project(conn, "other project", role="OWNER")
    assert other.token is not None
    mine = client.result("scheduledExport.all", {"projectId": other.id}, token=other.token)
    assert mine == {"scheduledExports": []}
    # Their own project id with our schedule's id: not found, as if it did not exist.
    ref = {"projectId": other.id, "scheduledExportId": created["id"]}
    for method in ("update", "delete", "runNow", "runs", "validate"):
        params = {**ref, "name": "x"} if method == "update" else ref
        assert client.error(f"scheduledExport.{method}", params, token=other.token)["data"]["code"] == "NOT_FOUND"
    assert (
        client.result("scheduledExport.all", {"projectId": project.id}, token=owner_token)["scheduledExports"][0][
            "name"
        ]
        == "nightly to our bucket"
    )


# --- the secret box ----------------------------------------------------------------------------------

KEY_A, KEY_B = "a1" * 32, "b2" * 32


def test_a_sealed_secret_opens_only_on_its_own_row():
    box = SecretBox(KEY_A)
    sealed = box.seal(SECRET, "row-1")
    assert box.open(sealed, "row-1") == SECRET
    with pytest.raises(SecretBoxError, match="another row"):
        box.open(sealed, "row-2")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecretBoxError, match="altered"):
        box.open(tampered, "row-1")


def test_a_rotated_key_still_opens_what_the_old_one_sealed():
    old = SecretBox(KEY_A).seal(SECRET, "row-1")
    rotated = SecretBox(KEY_B, (KEY_A,))
    assert rotated.open(old, "row-1") == SECRET and not rotated.is_current(old)
    assert rotated.is_current(rotated.seal(SECRET, "row-1"))
    with pytest.raises(SecretBoxError, match="SECRETS_ENCRYPTION_OLD_KEYS"):
        SecretBox(KEY_B).open(old, "row-1")
