"""A test's world: projects with members of any role, and the hostile values every seed and export carries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg

import devstack
from db import access

# The project ships devstack/fixtures/awkward_values.json for the seed; tests use the same one.
AWKWARD_VALUES = json.loads(
    (Path(devstack.__file__).parent / "fixtures" / "awkward_values.json").read_text(encoding="utf-8")
)


TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


@dataclass
class Project:
    """A fresh project for one test, with a way to add members and get their tokens."""

    id: str
    org_id: str
    conn: psycopg.Connection

    def member(
        self, role: str | None, *, org_role: str = "NONE", name: str | None = None, ttl=timedelta(hours=1)
    ) -> str:
        import uuid

        user = access.upsert_user(self.conn, f"{uuid.uuid4().hex}@example.com", name or f"{role or org_role} user")
        access.set_org_role(self.conn, self.org_id, user["id"], org_role)
        if role is not None:
            access.set_project_role(self.conn, self.id, user["id"], role)
        return access.create_session(self.conn, user["id"], ttl)
