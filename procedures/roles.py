"""Who may do what: the one place roles meet scopes (DESIGN.md, "Procedures"), and the one judgement made
from it, shared by every call's check (procedures/auth.py) and the recheck of open streams (streams.py)."""

from __future__ import annotations

from collections.abc import Iterable

from rpc import RPCError

# The one place roles meet scopes (DESIGN.md, "Procedures").
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "OWNER": frozenset({"batchExports:create", "batchExports:read", "auditLogs:read", "integrations:CRUD"}),
    "ADMIN": frozenset({"batchExports:create", "batchExports:read", "auditLogs:read", "integrations:CRUD"}),
    "MEMBER": frozenset({"batchExports:create", "batchExports:read"}),
    "VIEWER": frozenset(),
    "NONE": frozenset(),
}
ROLES = tuple(ROLE_SCOPES)

NO_ACCESS = "You do not have access to this project, or it does not exist."
BAD_TOKEN = "The session token is unknown, revoked or expired: sign in again."


def refusal(role: str | None, org_id: str | None, required: Iterable[str]) -> RPCError | None:
    """Why a caller with `role` in a project (of organization `org_id`) may not use `required` scopes, if not."""
    # A missing project and a project without membership look the same, so existence is not revealed.
    if role in (None, "NONE") or org_id is None:
        return RPCError("FORBIDDEN", NO_ACCESS)
    scopes = ROLE_SCOPES[role]
    for scope in required:
        if scope not in scopes:
            return RPCError("FORBIDDEN", f"Your role in this project ({role}) lacks the `{scope}` permission.")
    return None
