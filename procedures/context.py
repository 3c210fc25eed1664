"""What a procedure knows about its request: the app's resources, the bearer token, and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from schemas.settings import Settings
from workers.storage import Storage

if TYPE_CHECKING:
    from procedures.access_cache import AccessCache


@dataclass(frozen=True, slots=True)
class Resources:
    """Created once per process at start-up and shared by every request."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: redis.Redis
    storage: Storage
    access_cache: AccessCache


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
class SessionContext(Context):
    """After `require_session`: the caller is a signed-in user."""

    user: User


@dataclass(frozen=True, slots=True)
class ProjectContext(SessionContext):
    """After `require_project_access`: the caller's role in the project named by the input."""

    project_id: str
    org_id: str
    role: str
    org_role: str | None
    project_role: str | None
    scopes: frozenset[str]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
