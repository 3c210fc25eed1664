"""Audit-log entries, in Langfuse's shape: who did what to which resource, with before and after."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

INSERT_SQL = """
INSERT INTO audit_logs (type, user_id, org_id, user_org_role, project_id, user_project_role,
                        resource_type, resource_id, action, before, after)
VALUES ('USER', %(user_id)s, %(org_id)s, %(user_org_role)s, %(project_id)s, %(user_project_role)s,
        %(resource_type)s, %(resource_id)s, %(action)s, %(before)s, %(after)s)
"""


def entry_params(
    *,
    user_id: str,
    org_id: str,
    user_org_role: str | None,
    project_id: str,
    user_project_role: str | None,
    resource_type: str,
    resource_id: str,
    action: str,
    before: Any = None,
    after: Any = None,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "org_id": org_id,
        "user_org_role": user_org_role,
        "project_id": project_id,
        "user_project_role": user_project_role,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "action": action,
        "before": None if before is None else Jsonb(before),
        "after": None if after is None else Jsonb(after),
    }
