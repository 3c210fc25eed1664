"""Who may do what: the role → scope table, and the middlewares that resolve a session and a project role."""

from __future__ import annotations

import dataclasses
from typing import Any

from db import access
from procedures.context import Context, ProjectContext, SessionContext, User
from rpc import Call, RPCError

# The one place roles meet scopes (DESIGN.md, "Procedures").
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "OWNER": frozenset({"batchExports:create", "batchExports:read", "auditLogs:read"}),
    "ADMIN": frozenset({"batchExports:create", "batchExports:read", "auditLogs:read"}),
    "MEMBER": frozenset({"batchExports:create", "batchExports:read"}),
    "VIEWER": frozenset(),
    "NONE": frozenset(),
}
ROLES = tuple(ROLE_SCOPES)

_NO_ACCESS = "You do not have access to this project, or it does not exist."


async def require_session(call: Call) -> Any:
    """Resolves `Authorization: Bearer <token>` to a user, or answers UNAUTHORIZED."""
    ctx: Context = call.ctx
    if ctx.token is None:
        raise RPCError("UNAUTHORIZED", "Sign in first: send `Authorization: Bearer <session token>`.")
    async with ctx.resources.pool.connection() as conn:
        cur = await conn.execute(access.SESSION_USER_SQL, {"token_hash": access.hash_token(ctx.token)})
        row = await cur.fetchone()
    if row is None:
        raise RPCError("UNAUTHORIZED", "The session token is unknown, revoked or expired: sign in again.")
    user = User(id=row["id"], email=row["email"], name=row["name"], image=row["image"])
    return await call.next(ctx=SessionContext(**_fields(ctx), user=user))


async def require_project_role(call: Call) -> Any:
    """Loads the caller's role in `input.projectId` and checks the procedure's `scope` meta."""
    ctx: SessionContext = call.ctx
    project_id = call.input.projectId
    async with ctx.resources.pool.connection() as conn:
        cur = await conn.execute(access.PROJECT_ROLE_SQL, {"user_id": ctx.user.id, "project_id": project_id})
        row = await cur.fetchone()
    # A missing project and a project without membership look the same, so existence is not revealed.
    if row is None or row["role"] in (None, "NONE"):
        raise RPCError("FORBIDDEN", _NO_ACCESS)
    scopes = ROLE_SCOPES[row["role"]]
    required = call.meta.get("scope")
    if required is not None and required not in scopes:
        raise RPCError("FORBIDDEN", f"Your role in this project ({row['role']}) lacks the `{required}` permission.")
    project_ctx = ProjectContext(
        **_fields(ctx),
        project_id=project_id,
        org_id=row["org_id"],
        role=row["role"],
        org_role=row["org_role"],
        project_role=row["project_role"],
        scopes=scopes,
    )
    return await call.next(ctx=project_ctx)


def require_scope(ctx: ProjectContext, scope: str, what: str) -> None:
    """A second scope some inputs need (exporting audit logs needs `auditLogs:read`)."""
    if scope not in ctx.scopes:
        raise RPCError("FORBIDDEN", f"Your role in this project ({ctx.role}) lacks the `{scope}` permission needed {what}.")


def _fields(ctx: Context) -> dict[str, Any]:
    return {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
