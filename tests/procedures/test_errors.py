"""Every row of DESIGN.md's error table, through HTTP: code, data.code and data.httpStatus."""

import time
from datetime import timedelta

import httpx
import pytest

from tests.support.rpc_client import create_params


def _post_raw(api, body: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{api.url}/rpc", content=body, headers=headers, timeout=10)


def _assert_error(error: dict, code: int, key: str, status: int) -> None:
    assert error["code"] == code
    assert error["data"]["code"] == key
    assert error["data"]["httpStatus"] == status
    assert isinstance(error["message"], str) and error["message"]


def test_body_that_is_not_json_is_a_parse_error(api):
    reply = _post_raw(api, b'{"jsonrpc": "2.0", "method": "batchExport.all", "params": ')
    assert reply.status_code == 200
    assert reply.json()["id"] is None
    _assert_error(reply.json()["error"], -32700, "PARSE_ERROR", 400)


def test_request_that_is_not_a_request_object_is_bad_request(api):
    reply = _post_raw(api, b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    _assert_error(reply.json()["error"], -32600, "BAD_REQUEST", 400)


def test_unknown_method_is_not_found(client, owner_token):
    error = client.error("batchExport.delete", {"projectId": "x"}, token=owner_token)
    _assert_error(error, -32601, "NOT_FOUND", 404)


def test_params_failing_the_input_model_are_bad_request_with_pydantic_issues(client, project, owner_token):
    error = client.error("batchExport.create", create_params(project.id, format="XLSX"), token=owner_token)
    _assert_error(error, -32602, "BAD_REQUEST", 400)
    locations = [issue["loc"] for issue in error["data"]["issues"]]
    assert ["format"] in locations
    assert all("msg" in issue for issue in error["data"]["issues"])


def test_missing_required_field_is_reported_per_field(client, owner_token):
    error = client.error("batchExport.create", {"name": "x", "format": "CSV"}, token=owner_token)
    _assert_error(error, -32602, "BAD_REQUEST", 400)
    locations = {tuple(issue["loc"]) for issue in error["data"]["issues"]}
    assert {("projectId",), ("query",)} <= locations


def test_no_token_is_unauthorized(client, project):
    error = client.error("batchExport.all", {"projectId": project.id})
    _assert_error(error, -32001, "UNAUTHORIZED", 401)


def test_unknown_token_is_unauthorized(client, project):
    error = client.error("batchExport.all", {"projectId": project.id}, token="bx_not-a-real-token")
    _assert_error(error, -32001, "UNAUTHORIZED", 401)


def test_expired_token_is_unauthorized(client, project):
    token = project.member("OWNER", ttl=timedelta(seconds=-1))
    error = client.error("batchExport.all", {"projectId": project.id}, token=token)
    _assert_error(error, -32001, "UNAUTHORIZED", 401)


def test_revoked_token_is_unauthorized(client, project):
    from db import access

    token = project.member("OWNER")
    assert "result" in client.call("batchExport.all", {"projectId": project.id}, token=token)
    access.revoke_session(project.conn, token)
    # The API hears of the revocation through a Postgres notification (procedures/access_cache.py),
    # milliseconds later; it must take effect within the cache's lifetime at the latest.
    deadline = time.monotonic() + 6
    while "result" in (reply := client.call("batchExport.all", {"projectId": project.id}, token=token)):
        assert time.monotonic() < deadline, "a revoked token still works after the cache's lifetime"
        time.sleep(0.01)
    _assert_error(reply["error"], -32001, "UNAUTHORIZED", 401)


def test_malformed_authorization_header_is_unauthorized(api, project):
    reply = httpx.post(
        f"{api.url}/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": "batchExport.all", "params": {"projectId": project.id}},
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    )
    _assert_error(reply.json()["error"], -32001, "UNAUTHORIZED", 401)


def test_role_without_the_scope_is_forbidden(client, project):
    viewer = project.member("VIEWER")
    error = client.error("batchExport.create", create_params(project.id), token=viewer)
    _assert_error(error, -32003, "FORBIDDEN", 403)


def test_project_that_does_not_exist_is_forbidden_not_not_found(client, owner_token):
    error = client.error("batchExport.all", {"projectId": "no-such-project"}, token=owner_token)
    _assert_error(error, -32003, "FORBIDDEN", 403)


def test_export_of_another_project_is_not_found(client, project, owner_token, conn):
    from db import access

    other = access.create_project(conn, "someone else's project")
    other_user = access.upsert_user(conn, f"other-{other['id']}@example.com")
    access.set_project_role(conn, other["id"], other_user["id"], "OWNER")
    other_token = access.create_session(conn, other_user["id"], timedelta(hours=1))
    foreign = client.result("batchExport.create", create_params(other["id"]), token=other_token)

    error = client.error(
        "batchExport.cancel", {"projectId": project.id, "batchExportId": foreign["id"]}, token=owner_token
    )
    _assert_error(error, -32004, "NOT_FOUND", 404)
    assert foreign["id"] not in error["message"]


def test_cancelling_a_finished_export_is_precondition_failed(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute("UPDATE batch_exports SET status = 'COMPLETED', finished_at = now() WHERE id = %s", (export["id"],))
    error = client.error(
        "batchExport.cancel", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token
    )
    _assert_error(error, -32012, "PRECONDITION_FAILED", 412)
    assert "COMPLETED" in error["message"]


def test_unexpected_failure_is_internal_error_without_details(client, project, owner_token, conn, caplog):
    # A corrupt stored query is a server-side fault: the caller gets a generic 500-class error.
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute('UPDATE batch_exports SET query = \'{"tableName": "nope"}\' WHERE id = %s', (export["id"],))
    error = client.error("batchExport.all", {"projectId": project.id}, token=owner_token)
    _assert_error(error, -32603, "INTERNAL_SERVER_ERROR", 500)
    assert "nope" not in str(error) and "Traceback" not in str(error)


@pytest.mark.parametrize("params", [None, [], {}])
def test_missing_params_are_bad_request(client, owner_token, params):
    error = client.error("batchExport.all", params, token=owner_token)
    _assert_error(error, -32602, "BAD_REQUEST", 400)
