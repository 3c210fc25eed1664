"""The middlewares that resolve a session and a project role against the role → scope table (roles.py),
and the base procedures every procedure of the application starts from (tRPC's trpc.ts)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from db import access
from procedures.context import Context, ProjectAccess, ProjectContext
from procedures.request_ids import current_request_id
from procedures.roles import BAD_TOKEN, ROLE_SCOPES, refusal
from procedures.streams import Holder
from rpc import RPC, Call, Procedure, RPCError
from workers.logs import log_context

log = logging.getLogger(__name__)

# A procedure's `input_scope` meta: the further scope one particular input needs (None: none), e.g.
# exporting the audit_logs table needs `auditLogs:read`. Checked with the procedure's own scope,
# before the handler sees the input, so a caller without it never learns what a valid input would be.
InputScope = Callable[[Any], str | None]


async def require_project_access(call: Call) -> Any:
    """The session, the caller's role in `input.projectId`, and the procedure's scopes
    (`scope` meta, and `input_scope` meta for what this input needs besides).

    One round trip to Postgres answers both questions. Queries may take the answer from a short
    cache instead (procedures/access_cache.py: a change to sessions or memberships drops it within
    milliseconds). Mutations, and queries marked `.meta(access_cache=False)` (a download link hands
    out data), always ask Postgres, so a revoked token or a lowered role stops them at once.
    """
    ctx: Context = call.ctx
    project_id = call.input.projectId
    key = (_token_hash(ctx), project_id)
    cache = ctx.resources.access_cache
    cacheable = call.kind == "query" and call.meta.get("access_cache", True)
    found = cache.get(key) if cacheable else None
    if found is None:
        generation = cache.generation
        async with ctx.resources.pool.connection() as conn:
            cur = await conn.execute(access.ACCESS_SQL, {"token_hashes": [key[0]], "project_ids": [project_id]})
            row = await cur.fetchone()
        if row is None or row["id"] is None:
            raise RPCError("UNAUTHORIZED", BAD_TOKEN)
        found = ProjectAccess.from_row(row, ctx, ROLE_SCOPES.get(row["role"], frozenset()))
        cache.put(key, found, generation, valid_until=found.session_expires_at)
    input_scope: InputScope | None = call.meta.get("input_scope")
    required = [scope for scope in (call.meta.get("scope"), input_scope(call.input) if input_scope else None) if scope]
    refused = refusal(found.role, found.org_id, required)
    if refused is not None:
        raise refused
    # Built with the answer: a cached answer's calls all run with the same (immutable) context.
    project_ctx = found.context
    assert project_ctx is not None, "a role without a context was refused above"
    # The lines logged from here on are about this project (and only once the caller may see it).
    with log_context(projectId=project_id):
        result = await call.next(ctx=project_ctx)
    if call.kind == "subscription":
        # A stream outlives this check: it is registered, and ended the moment the caller loses access.
        holder = Holder(
            token_hash=key[0],
            project_id=project_id,
            user_id=found.user.id,
            scopes=tuple(required),
            session_expires_at=found.session_expires_at,
        )
        return ctx.resources.streams.guard(result, holder)
    return result


def _token_hash(ctx: Context) -> bytes:
    if ctx.token is None:
        raise RPCError("UNAUTHORIZED", "Sign in first: send `Authorization: Bearer <session token>`.")
    return access.hash_token(ctx.token)


async def report_database_outages(call: Call) -> Any:
    """Postgres unreachable (down, restarting, pool exhausted): INTERNAL_SERVER_ERROR that says so.

    The caller learns it is temporary and gets the request's id (the one on its log lines); the log
    gets the exception's type, never its text (which can hold the connection string)."""
    try:
        return await call.next()
    except (psycopg.OperationalError, PoolTimeout) as exc:
        request_id = current_request_id() or uuid.uuid4().hex
        log.warning("%s: database unavailable (%s) [requestId=%s]", call.path, type(exc).__name__, request_id)
        raise RPCError(
            "INTERNAL_SERVER_ERROR",
            "The database is unavailable right now; try again in a moment.",
            data={"requestId": request_id},
        ) from None


# --- the base procedures ----------------------------------------------------------------------------

# Handlers receive a ProjectContext; `create_context` (procedures/app.py) starts each call with a Context.
rpc = RPC(ProjectContext)
# Every procedure touching Postgres answers an outage in words a caller can act on.
database_procedure = rpc.procedure.use(report_database_outages)
# DESIGN.md's protected_project_procedure: a session, a role in `input.projectId`, and a scope.
protected_project_procedure = database_procedure.use(require_project_access)


def scoped(scope: str, *, input_scope: InputScope | None = None) -> Procedure:
    """A protected_project_procedure that needs `scope`, and `input_scope(input)` where that names one."""
    procedure = protected_project_procedure.meta(scope=scope)
    return procedure.meta(input_scope=input_scope) if input_scope else procedure
