"""Every procedure × every role: the role → scope table of DESIGN.md, as a caller meets it."""

import pytest

from tests.support.rpc_client import create_params

ALLOWED = {
    # procedure: roles that may call it
    "batchExport.create": {"OWNER", "ADMIN", "MEMBER"},
    "batchExport.cancel": {"OWNER", "ADMIN", "MEMBER"},
    "batchExport.all": {"OWNER", "ADMIN", "MEMBER"},
}
# downloadUrl's role checks are in test_download.py: it needs a completed export first.
ROLES = ["OWNER", "ADMIN", "MEMBER", "VIEWER", "NONE", None]  # None: no membership at all


def _params(method: str, project_id: str, export_id: str) -> dict:
    if method == "batchExport.create":
        return create_params(project_id)
    if method == "batchExport.cancel":
        return {"projectId": project_id, "batchExportId": export_id}
    return {"projectId": project_id}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "no-membership")
@pytest.mark.parametrize("method", sorted(ALLOWED))
def test_procedure_allows_exactly_the_roles_with_its_scope(client, project, owner_token, method, role):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    token = project.member(role)
    reply = client.call(method, _params(method, project.id, export["id"]), token=token)
    if role in ALLOWED[method]:
        assert "result" in reply, reply
    else:
        assert reply["error"]["data"]["code"] == "FORBIDDEN"
        assert reply["error"]["data"]["httpStatus"] == 403


@pytest.mark.parametrize("org_role", ["OWNER", "ADMIN", "MEMBER"])
def test_organization_role_applies_when_there_is_no_project_role(client, project, org_role):
    token = project.member(None, org_role=org_role)
    assert "result" in client.call("batchExport.all", {"projectId": project.id}, token=token)


def test_project_role_overrides_a_stronger_organization_role(client, project):
    token = project.member("VIEWER", org_role="OWNER")
    error = client.error("batchExport.all", {"projectId": project.id}, token=token)
    assert error["data"]["code"] == "FORBIDDEN"


def test_project_role_overrides_a_weaker_organization_role(client, project):
    token = project.member("MEMBER", org_role="VIEWER")
    assert "result" in client.call("batchExport.all", {"projectId": project.id}, token=token)


@pytest.mark.parametrize("role,allowed", [("OWNER", True), ("ADMIN", True), ("MEMBER", False)])
def test_exporting_audit_logs_needs_audit_log_read(client, project, role, allowed):
    token = project.member(role)
    params = create_params(project.id, query={"tableName": "audit_logs", "filter": None, "orderBy": None})
    reply = client.call("batchExport.create", params, token=token)
    if allowed:
        assert reply["result"]["status"] == "QUEUED"
    else:
        assert reply["error"]["data"]["code"] == "FORBIDDEN"
        assert "auditLogs:read" in reply["error"]["message"]


@pytest.mark.parametrize(
    "query",
    [
        {"tableName": "audit_logs", "filter": None, "orderBy": {"column": "no_such_column", "order": "ASC"}},
        {
            "tableName": "audit_logs",
            "filter": [{"column": "no_such_column", "type": "string", "operator": "=", "value": "x"}],
            "orderBy": None,
        },
    ],
    ids=["invalid-orderBy", "invalid-filter"],
)
def test_a_member_exporting_audit_logs_with_an_invalid_query_is_forbidden_not_told_the_columns(client, project, query):
    # Authorization comes before the query is examined: a caller without `auditLogs:read` must not
    # learn which columns the audit_logs table has.
    token = project.member("MEMBER")
    error = client.error("batchExport.create", create_params(project.id, query=query), token=token)
    assert error["data"]["code"] == "FORBIDDEN"
    assert "auditLogs:read" in error["message"]
    assert "resourceType" not in error["message"] and "createdAt" not in error["message"]


def test_a_role_in_one_project_grants_nothing_in_another(client, project, conn):
    from db import access

    other = access.create_project(conn, "other")
    token = project.member("OWNER")
    error = client.error("batchExport.all", {"projectId": other["id"]}, token=token)
    assert error["data"]["code"] == "FORBIDDEN"
