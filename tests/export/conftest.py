"""Fixtures for the export engine: a seeded project full of awkward values, exports, and the job's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemas.settings import get_settings
from tests.support.exports import (
    BIG_TRACES,
    ExportResult,
    SeededProject,
    insert_big_traces,
    run_export,
    seed_project,
)
from tests.support.stream_gate import StreamGate
from tests.support.world import Project, new_project


@pytest.fixture(scope="session")
def seeded(database_url: str, awkward_values: dict) -> SeededProject:
    """One read-only project for the many tests that only export (tests that write seed their own)."""
    import db

    with db.connect(database_url, autocommit=True) as c:
        return seed_project(c, awkward_values, "shared export fixture")


@pytest.fixture(scope="session")
def big_project(database_url: str) -> Project:
    """Enough rows that an export runs for seconds: long enough to cancel it, or kill it, half-way."""
    import db

    with db.connect(database_url, autocommit=True) as c:
        project = new_project(c, "big export", user_email="big-exporter@example.com", user_name="Big")
        insert_big_traces(c, project.id, BIG_TRACES)
    return project


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


@pytest.fixture
def export_settings(
    monkeypatch: pytest.MonkeyPatch, database_url: str, storage_dir: Path, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The job reads Settings from the environment, as in production; returns the variables set."""
    env = {
        "DATABASE_URL": database_url,
        "EXPORT_STORAGE_URL": storage_dir.as_uri(),
        "PUBLIC_BASE_URL": "http://exports.test",
        "SECRET_KEY": "test-secret-key-0123456789",
        "SMTP_URL": "",
        "EMAIL_FROM": "exports@example.com",
        "BATCH_EXPORT_ROW_LIMIT": "1500000",
        "OUTBOX_DIR": str(tmp_path / ".data" / "outbox"),
    }
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def gated_export(
    export_settings: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StreamGate]:
    """The job reaches Postgres through a StreamGate, so the test can hold its row stream mid-way."""
    with StreamGate(database_url) as gate:
        monkeypatch.setenv("DATABASE_URL", gate.url)
        get_settings.cache_clear()
        yield gate
    get_settings.cache_clear()


@pytest.fixture
def export_table(
    conn: psycopg.Connection, export_settings: dict[str, str], storage_dir: Path
) -> Callable[..., ExportResult]:
    """Creates an export of the seeded project, runs the job in this process, returns the row and file."""

    def run(
        project: SeededProject,
        query: dict[str, Any],
        format: str = "CSV",
        name: str = "my export",
        *,
        compression: str | None = None,
        columns: list[str] | None = None,
    ) -> ExportResult:
        export_id = project.new_export(conn, query, format, name, compression=compression, columns=columns)
        row = run_export(conn, export_id)
        data = (storage_dir / row["object_key"]).read_bytes() if row["object_key"] else None
        return ExportResult(export_id, row, data)

    return run
