"""A test's world: projects with members of any role, and the hostile values every seed and export carries."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

import devstack
from db import access, batch_exports
from schemas import default_compression

# The project ships devstack/fixtures/awkward_values.json for the seed; tests use the same one.
AWKWARD_VALUES = json.loads(
    (Path(devstack.__file__).parent / "fixtures" / "awkward_values.json").read_text(encoding="utf-8")
)


TRACES_BY_TIME = {"tableName": "traces", "orderBy": {"column": "timestamp", "order": "ASC"}}

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


@dataclass
class Project:
    """A project in a test's world: its ids, the user its exports are made by, and a way to add members.

    Every suite builds its projects with `new_project`. `conn` is the connection it was made on
    (`member` adds users through it); `user_id`, `user_email` and `token` are the exporting user,
    when the project has one, and that user's session when they have a role.
    """

    id: str
    org_id: str
    conn: psycopg.Connection
    user_id: str | None = None
    user_email: str | None = None
    token: str | None = None

    def new_export(
        self,
        conn: psycopg.Connection,
        query: dict[str, Any] = TRACES_BY_TIME,
        fmt: str = "CSV",
        name: str = "my export",
        *,
        compression: str | None = None,
        columns: list[str] | None = None,
    ) -> str:
        """An export row as `batchExport.create` writes it, by the project's user (the test enqueues it, or not).

        Without `compression`, the format's default, as `create` gives it.
        """
        row = conn.execute(
            batch_exports.INSERT_SQL,
            batch_exports.insert_params(
                project_id=self.id,
                user_id=self.user_id,
                name=name,
                format=fmt,
                query=query,
                compression=compression or default_compression(fmt),
                columns=columns,
            ),
        ).fetchone()
        return row["id"]

    def member(
        self, role: str | None, *, org_role: str = "NONE", name: str | None = None, ttl=timedelta(hours=1)
    ) -> str:
        user = access.upsert_user(self.conn, f"{uuid.uuid4().hex}@example.com", name or f"{role or org_role} user")
        access.set_org_role(self.conn, self.org_id, user["id"], org_role)
        if role is not None:
            access.set_project_role(self.conn, self.id, user["id"], role)
        return access.create_session(self.conn, user["id"], ttl)


def new_project(
    conn: psycopg.Connection,
    name: str = "test project",
    *,
    user_email: str | None = None,
    user_name: str | None = None,
    role: str | None = None,
    ttl: timedelta = timedelta(hours=2),
) -> Project:
    """A new project (in an organization of its own); with a user's email, name or role, the user its exports are made by.

    A `role` makes that user a member of the project (and of no other) with a session token.
    """
    created = access.create_project(conn, name)
    project = Project(id=created["id"], org_id=created["org_id"], conn=conn)
    if user_email is None and user_name is None and role is None:
        return project
    email = user_email or f"{uuid.uuid4().hex[:12]}@example.com"
    user = access.upsert_user(conn, email, user_name or f"{name} user")
    project.user_id, project.user_email = user["id"], email
    if role is not None:
        access.set_org_role(conn, project.org_id, user["id"], "NONE")
        access.set_project_role(conn, project.id, user["id"], role)
        project.token = access.create_session(conn, user["id"], ttl)
    return project
