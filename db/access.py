"""Users, organizations, projects, memberships and bearer-token sessions."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta
from typing import Any

from db.connection import Connection, one


@functools.lru_cache(maxsize=4096)
def hash_token(token: str) -> bytes:
    # Tokens are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    # Kept for the API's recent callers: every call of theirs needs it (an LRU bounds the memory).
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return "bx_" + secrets.token_urlsafe(32)


# For each (token hash, project id) pair: the session's user and their role in that project, in one
# round trip for any number of pairs (a call asks for one; the API's open streams recheck all theirs
# at once). Every pair gets a row: a NULL `id` means no valid session; a NULL role means no
# membership or no such project (the two look the same). The project membership overrides the
# organization membership.
ACCESS_SQL = """
SELECT k.token_hash, k.project_id, u.id, u.email, u.name, u.image, s.expires_at AS session_expires_at,
       p.org_id, om.role AS org_role, pm.role AS project_role, coalesce(pm.role, om.role) AS role
FROM unnest(%(token_hashes)s::bytea[], %(project_ids)s::text[]) AS k (token_hash, project_id)
LEFT JOIN auth_sessions s ON s.token_hash = k.token_hash AND s.revoked_at IS NULL AND s.expires_at > now()
LEFT JOIN users u ON u.id = s.user_id
LEFT JOIN projects p ON p.id = k.project_id AND u.id IS NOT NULL
LEFT JOIN organization_memberships om ON om.org_id = p.org_id AND om.user_id = u.id
LEFT JOIN project_memberships pm ON pm.project_id = p.id AND pm.user_id = u.id
"""


def create_project(conn: Connection, name: str, org_name: str | None = None) -> dict[str, Any]:
    org = one(
        conn.execute(
            "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (org_name or f"{name} organization",)
        ).fetchone()
    )
    return one(
        conn.execute(
            "INSERT INTO projects (org_id, name) VALUES (%s, %s) RETURNING id, org_id, name", (org["id"], name)
        ).fetchone()
    )


def upsert_user(conn: Connection, email: str, name: str | None = None, image: str | None = None) -> dict[str, Any]:
    return one(
        conn.execute(
            "INSERT INTO users (email, name, image) VALUES (%s, %s, %s)"
            " ON CONFLICT (email) DO UPDATE SET name = coalesce(EXCLUDED.name, users.name),"
            " image = coalesce(EXCLUDED.image, users.image), updated_at = now()"
            " RETURNING id, email, name, image",
            (email, name, image),
        ).fetchone()
    )


def set_org_role(conn: Connection, org_id: str, user_id: str, role: str) -> None:
    conn.execute(
        "INSERT INTO organization_memberships (org_id, user_id, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
        (org_id, user_id, role),
    )


def set_project_role(conn: Connection, project_id: str, user_id: str, role: str) -> None:
    conn.execute(
        "INSERT INTO project_memberships (project_id, user_id, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
        (project_id, user_id, role),
    )


def project_org_id(conn: Connection, project_id: str) -> str | None:
    row = conn.execute("SELECT org_id FROM projects WHERE id = %s", (project_id,)).fetchone()
    return row["org_id"] if row else None


def create_session(conn: Connection, user_id: str, ttl: timedelta) -> str:
    """Returns the token; only its hash is stored, so this is the one time it can be seen."""
    token = new_token()
    conn.execute(
        "INSERT INTO auth_sessions (user_id, token_hash, expires_at) VALUES (%s, %s, now() + %s)",
        (user_id, hash_token(token), ttl),
    )
    return token


def revoke_session(conn: Connection, token: str) -> None:
    conn.execute("UPDATE auth_sessions SET revoked_at = now() WHERE token_hash = %s", (hash_token(token),))
