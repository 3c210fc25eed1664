"""What a procedure knows about its request: the app's resources, the bearer token, and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel
from starlette.requests import Request

from db import audit_logs
from db.connection import FailFastPool
from procedures.access_cache import AccessCache
from procedures.export_changes import ExportChangeFeed
from procedures.streams import OpenStreams
from schemas.settings import Settings
from workers.storage import Storage


@dataclass(frozen=True, slots=True)
class Resources:
    """Created once per process at start-up and shared by every request."""

    settings: Settings
    pool: FailFastPool
    redis: redis.Redis
    storage: Storage
    access_cache: AccessCache[ProjectAccess]
    export_changes: ExportChangeFeed  # the exports' changes, live, for batchExport.onChange
    streams: OpenStreams  # the subscription streams open in this process


@dataclass(frozen=True, slots=True)
class Context:
    """The context of every call: set before any middleware runs."""

    resources: Resources
    token: str | None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str | None
    image: str | None


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """Who a token belongs to and what they are in one project (`role` None: nothing), and the context
    their calls in it run with (None without a role), built once: the access cache hands both out."""

    user: User
    org_id: str | None
    role: str | None
    org_role: str | None
    project_role: str | None
    session_expires_at: datetime
    context: ProjectContext | None

    @classmethod
    def from_row(cls, row: dict[str, Any], ctx: Context, scopes: frozenset[str]) -> ProjectAccess:
        """The answer of `db.access.ACCESS_SQL` for the caller of `ctx`; `scopes` are its role's."""
        user = User(id=row["id"], email=row["email"], name=row["name"], image=row["image"])
        role, org_id, project_id = row["role"], row["org_id"], row["project_id"]
        context = None
        if role is not None and org_id is not None:
            context = ProjectContext(
                resources=ctx.resources,
                token=ctx.token,
                user=user,
                project_id=project_id,
                org_id=org_id,
                role=role,
                org_role=row["org_role"],
                project_role=row["project_role"],
                scopes=scopes,
            )
        return cls(
            user=user,
            org_id=org_id,
            role=role,
            org_role=row["org_role"],
            project_role=row["project_role"],
            session_expires_at=row["session_expires_at"],
            context=context,
        )


@dataclass(frozen=True, slots=True)
class ProjectContext(Context):
    """After `require_project_access`: the signed-in caller and their role in the project named by the input."""

    user: User
    project_id: str
    org_id: str
    role: str
    org_role: str | None
    project_role: str | None
    scopes: frozenset[str]

    def audit_entry(
        self, resource_type: str, resource_id: str, action: str, before: BaseModel | None, after: BaseModel | None
    ) -> dict[str, Any]:
        """The audit entry of this caller's `action` on a resource, its states before and after as the API shows them."""
        return audit_logs.entry_params(
            user_id=self.user.id,
            org_id=self.org_id,
            user_org_role=self.org_role,
            project_id=self.project_id,
            user_project_role=self.project_role,
            resource_type=resource_type,
            resource_id=resource_id,
            action=action,
            before=before.model_dump(mode="json") if before else None,
            after=after.model_dump(mode="json") if after else None,
        )


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
