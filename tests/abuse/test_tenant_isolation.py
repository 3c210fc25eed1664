"""Tenant isolation: whoever calls, with whatever ids, gets DESIGN.md's error and nothing of another project.

Every procedure of the served OpenRPC document is covered (a new one fails
`test_every_documented_procedure_is_covered` until it is added here), and so is the download route.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from db import access
from tests.support.abuse import CANARY, Arena, ServedApi, assert_error_object
from tests.support.rpc_client import RpcClient


def params_for(method: str, project_id: str, export_id: str) -> dict:
    return {
        "batchExport.create": {
            "projectId": project_id,
            "name": "grab",
            "format": "CSV",
            "query": {"tableName": "traces"},
        },
        "batchExport.cancel": {"projectId": project_id, "batchExportId": export_id},
        "batchExport.all": {"projectId": project_id},
        "batchExport.downloadUrl": {"projectId": project_id, "batchExportId": export_id},
        "batchExport.onChange": {"projectId": project_id, "batchExportId": export_id},
        # Authorization comes before any lookup: the export's id stands in for a scheduled export's.
        "scheduledExport.create": {
            "projectId": project_id,
            "name": "grab",
            "destination": {"type": "s3", "bucket": "attacker-bucket", "accessKeyId": "a", "secretAccessKey": "b"},
            "tables": ["traces"],
            "schedule": "hourly",
            "startFrom": {"mode": "full_history"},
        },
        "scheduledExport.update": {"projectId": project_id, "scheduledExportId": export_id, "enabled": True},
        "scheduledExport.delete": {"projectId": project_id, "scheduledExportId": export_id},
        "scheduledExport.all": {"projectId": project_id},
        "scheduledExport.validate": {"projectId": project_id, "scheduledExportId": export_id},
        "scheduledExport.runNow": {"projectId": project_id, "scheduledExportId": export_id},
        "scheduledExport.runs": {"projectId": project_id, "scheduledExportId": export_id},
    }[method]


BATCH_EXPORT_PROCEDURES = [
    "batchExport.create",
    "batchExport.cancel",
    "batchExport.all",
    "batchExport.downloadUrl",
    "batchExport.onChange",
]
# Served as event streams: their refusal is the stream's one event.
SUBSCRIPTIONS = {"batchExport.onChange"}
SCHEDULED_EXPORT_PROCEDURES = [
    f"scheduledExport.{name}" for name in ("create", "update", "delete", "all", "validate", "runNow", "runs")
]
PROCEDURES = BATCH_EXPORT_PROCEDURES + SCHEDULED_EXPORT_PROCEDURES


@pytest.fixture(autouse=True)
def finish_grabbed_exports(conn, arena):
    # A call that legitimately wins a race with a revocation creates an export; keep the victim under its limit.
    yield
    conn.execute(
        "UPDATE batch_exports SET status = 'CANCELLED' WHERE project_id = %s AND name = 'grab'", (arena.victim.id,)
    )


def test_every_documented_procedure_is_covered(abuse_api: ServedApi):
    document = abuse_api.http.get(f"{abuse_api.url}/rpc/openrpc.json").json()
    assert sorted(m["name"] for m in document["methods"]) == sorted(PROCEDURES)


def secrets_of(arena: Arena) -> list[str]:
    """What a reply to anyone but the victim must never contain."""
    return [CANARY, arena.victim.id, arena.victim_export["id"], arena.victim_export["object_key"]]


def call(client: RpcClient, method: str, params: dict, token: str | None) -> dict:
    """The reply to a call, or a subscription's first event (its refusal, where it is refused)."""
    if method in SUBSCRIPTIONS:
        return client.first_event(method, params, token=token)
    return client.call(method, params, token=token)


def call_as(client: RpcClient, arena: Arena, token: str | None, method: str, params: dict) -> dict:
    reply = call(client, method, params, token)
    text = json.dumps(reply, ensure_ascii=False)
    # Not even the ids the caller sent are echoed back: errors say what is wrong, not whose it is.
    for secret in secrets_of(arena):
        assert secret not in text, (method, reply)
    return reply


def expect(reply: dict, code: str) -> None:
    assert "error" in reply, reply
    assert_error_object(reply["error"])
    assert reply["error"]["data"]["code"] == code, reply


@pytest.mark.parametrize("method", PROCEDURES)
def test_a_project_the_caller_has_no_role_in_is_forbidden(abuse_client, arena, method):
    reply = call_as(
        abuse_client,
        arena,
        arena.attacker_owner,
        method,
        params_for(method, arena.victim.id, arena.victim_export["id"]),
    )
    expect(reply, "FORBIDDEN")


def test_owning_another_organization_grants_nothing_in_this_one(abuse_client, arena):
    org_owner = arena.attacker.member(None, org_role="OWNER")
    assert "result" in abuse_client.call("batchExport.all", {"projectId": arena.attacker.id}, token=org_owner)
    for method in PROCEDURES:
        reply = call_as(
            abuse_client, arena, org_owner, method, params_for(method, arena.victim.id, arena.victim_export["id"])
        )
        expect(reply, "FORBIDDEN")


@pytest.mark.parametrize("method", PROCEDURES)
def test_a_project_that_does_not_exist_is_forbidden_like_one_without_a_role(abuse_client, arena, method):
    reply = call_as(
        abuse_client,
        arena,
        arena.attacker_owner,
        method,
        params_for(method, str(uuid.uuid4()), arena.victim_export["id"]),
    )
    expect(reply, "FORBIDDEN")
    assert (
        reply["error"]["message"]
        == call_as(abuse_client, arena, arena.attacker_owner, method, params_for(method, arena.victim.id, "x"))[
            "error"
        ]["message"]
    )


@pytest.mark.parametrize("method", ["batchExport.cancel", "batchExport.downloadUrl"])
def test_another_projects_export_id_in_the_callers_own_project_is_not_found(abuse_client, arena, conn, method):
    reply = call_as(
        abuse_client,
        arena,
        arena.attacker_owner,
        method,
        params_for(method, arena.attacker.id, arena.victim_export["id"]),
    )
    expect(reply, "NOT_FOUND")
    victim = conn.execute(
        "SELECT status, log FROM batch_exports WHERE id = %s", (arena.victim_export["id"],)
    ).fetchone()
    assert victim["status"] == "COMPLETED"


def test_listing_the_callers_project_shows_none_of_another_projects_exports(abuse_client, arena):
    listed = call_as(
        abuse_client, arena, arena.attacker_owner, "batchExport.all", {"projectId": arena.attacker.id, "limit": 100}
    )
    assert all(e["projectId"] == arena.attacker.id for e in listed["result"]["exports"])


@pytest.mark.parametrize("role", ["VIEWER", "NONE"])
@pytest.mark.parametrize("method", PROCEDURES)
def test_a_role_without_the_scope_is_forbidden(abuse_client, arena, role, method):
    token = arena.victim.member(role)
    reply = call(abuse_client, method, params_for(method, arena.victim.id, arena.victim_export["id"]), token)
    expect(reply, "FORBIDDEN")
    assert CANARY not in json.dumps(reply)


def _token_kinds(arena: Arena) -> dict[str, str | None]:
    expired = arena.victim.member("OWNER", ttl=timedelta(seconds=-1))
    return {"none": None, "unknown": "bx_" + uuid.uuid4().hex, "expired": expired, "empty-ish": "bx_"}


@pytest.mark.parametrize("kind", ["none", "unknown", "expired", "empty-ish"])
@pytest.mark.parametrize("method", PROCEDURES)
def test_no_unknown_or_expired_token_is_unauthorized(abuse_client, arena, method, kind):
    token = _token_kinds(arena)[kind]
    reply = call(abuse_client, method, params_for(method, arena.victim.id, arena.victim_export["id"]), token)
    expect(reply, "UNAUTHORIZED")
    assert CANARY not in json.dumps(reply)


def refused_from_now_on(call, code: str, *, within: float = 2.0) -> int:
    """Polls `call` until it answers `code`, then checks it keeps doing so; returns how many calls still got through.

    The API caches sessions and roles and drops that cache on Postgres's NOTIFY, which arrives
    asynchronously: a call racing the change by a few milliseconds may still be served.
    """
    deadline = time.monotonic() + within
    served = 0
    while True:
        reply = call()
        if "error" in reply and reply["error"]["data"]["code"] == code:
            break
        served += 1
        assert time.monotonic() < deadline, f"still not {code} {within} s after the change: {reply}"
        time.sleep(0.02)
    for _ in range(5):
        expect(call(), code)
    return served


@pytest.mark.parametrize("method", PROCEDURES)
def test_a_token_revoked_after_use_is_unauthorized_from_then_on(abuse_client, arena, conn, method):
    token = arena.victim.member("OWNER")
    # Used once, so any cache of the session is warm.
    assert "result" in abuse_client.call("batchExport.all", {"projectId": arena.victim.id}, token=token)
    access.revoke_session(conn, token)
    params = params_for(method, arena.victim.id, arena.victim_export["id"])
    assert refused_from_now_on(lambda: call(abuse_client, method, params, token), "UNAUTHORIZED") <= 1


@pytest.mark.parametrize("change", ["downgraded to VIEWER", "membership deleted"])
def test_a_role_taken_away_after_use_is_forbidden_from_then_on(abuse_client, arena, conn, change):
    token = arena.victim.member("OWNER")
    user_id = conn.execute(
        "SELECT user_id FROM auth_sessions WHERE token_hash = %s", (access.hash_token(token),)
    ).fetchone()["user_id"]
    params = params_for("batchExport.create", arena.victim.id, "")
    assert "result" in abuse_client.call("batchExport.all", {"projectId": arena.victim.id}, token=token)
    if change == "downgraded to VIEWER":
        access.set_project_role(conn, arena.victim.id, user_id, "VIEWER")
    else:
        conn.execute(
            "DELETE FROM project_memberships WHERE project_id = %s AND user_id = %s", (arena.victim.id, user_id)
        )
    served = refused_from_now_on(lambda: abuse_client.call("batchExport.create", params, token=token), "FORBIDDEN")
    assert served <= 1


def test_a_filter_cannot_name_the_project_column(abuse_client, arena):
    for column in ("projectId", "project_id", "o.project_id", "t.project_id"):
        reply = call_as(
            abuse_client,
            arena,
            arena.attacker_owner,
            "batchExport.create",
            {
                "projectId": arena.attacker.id,
                "name": "x",
                "format": "CSV",
                "query": {
                    "tableName": "observations",
                    "filter": [{"column": column, "type": "string", "operator": "=", "value": arena.victim.id}],
                },
            },
        )
        expect(reply, "BAD_REQUEST")


# --- the download route ------------------------------------------------------------------------------


@pytest.fixture
def attacker_link(abuse_client, arena, conn, tmp_path) -> dict:
    """A real link to a finished export of the attacker's own project."""
    from tests.support.exports import run_export

    created = abuse_client.result(
        "batchExport.create",
        {"projectId": arena.attacker.id, "name": "mine", "format": "CSV", "query": {"tableName": "traces"}},
        token=arena.attacker_owner,
    )
    assert run_export(conn, created["id"], tmp_path)["status"] == "COMPLETED"
    link = abuse_client.result(
        "batchExport.downloadUrl",
        {"projectId": arena.attacker.id, "batchExportId": created["id"]},
        token=arena.attacker_owner,
    )
    parsed = urlparse(link["url"])
    return {
        "base": f"{parsed.scheme}://{parsed.netloc}{parsed.path}",
        "query": {k: v[0] for k, v in parse_qs(parsed.query).items()},
        "url": link["url"],
    }


def test_the_attackers_own_link_serves_only_the_attackers_rows(attacker_link, arena):
    response = httpx.get(attacker_link["url"], timeout=30)
    assert response.status_code == 200
    assert CANARY.encode() not in response.content and arena.victim.id.encode() not in response.content
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert sorted(r["id"] for r in rows) == sorted(arena.attacker_trace_ids)


def test_a_valid_signature_does_not_open_another_projects_key(attacker_link, arena):
    query = {**attacker_link["query"], "key": arena.victim_export["object_key"]}
    response = httpx.get(f"{attacker_link['base']}?{urlencode(query)}", timeout=10)
    assert response.status_code == 403
    assert CANARY.encode() not in response.content and arena.victim.id.encode() not in response.content
