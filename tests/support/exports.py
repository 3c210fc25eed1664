"""Projects seeded row by row for export tests, exports created as `create` writes them, and what a run produced."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from db import batch_exports
from tests.support.world import Project, new_project

BASE_TIME = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

# The big project of the export tests: an export of them runs long enough to see its progress.
BIG_TRACES = 300_000


@dataclass
class SeededProject(Project):
    """A project with the rows that were inserted into it, so tests compute expected rows without the exporter."""

    traces: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    dataset_items: list[dict[str, Any]] = field(default_factory=list)
    dataset_run_items: list[dict[str, Any]] = field(default_factory=list)
    audit_logs: list[dict[str, Any]] = field(default_factory=list)


JSON_COLUMNS = {
    "input",
    "output",
    "metadata",
    "model_parameters",
    "usage_details",
    "provided_usage_details",
    "cost_details",
    "provided_cost_details",
    "before",
    "after",
    "expected_output",
}


def insert_row(conn: psycopg.Connection, table: str, row: dict[str, Any]) -> None:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(map(sql.Placeholder, row)),
    )
    params = {k: Jsonb(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}
    conn.execute(statement, params)


def seed_project(conn: psycopg.Connection, awkward: dict[str, Any], name: str = "export tests") -> SeededProject:
    """Every awkward string and JSON value lands in names, ids of users, tags, metadata, input and output."""
    strings: list[str] = awkward["strings"]
    json_values: list[Any] = awkward["json_values"]
    project = new_project(
        conn, name, user_email=f"analyst-{uuid.uuid4().hex[:8]}@example.com", user_name='Analyst "=1+1"'
    )
    seeded = SeededProject(**vars(project))
    pid = project.id

    for i, text in enumerate(strings):
        trace = {
            "id": f"trace-{i:03d}",
            "project_id": pid,
            # Pairs of traces share a timestamp, so the id tie-breaker decides their order.
            "timestamp": BASE_TIME + timedelta(minutes=i // 2),
            "name": text,
            "user_id": strings[(i + 1) % len(strings)],
            "session_id": f"session-{i % 5}" if i % 7 else None,
            "release": f"v{i % 3}",
            "version": f"{i % 4}.0",
            "environment": "production" if i % 2 else "staging",
            "tags": [text, "even" if i % 2 == 0 else "odd"],
            "bookmarked": i % 4 == 0,
            "public": i % 5 == 0,
            "input": json_values[i % len(json_values)],
            "output": {"text": text, "n": i},
            "metadata": {"customer": text, "rank": i, "tier": "gold" if i % 3 == 0 else "silver"},
        }
        insert_row(conn, "traces", trace)
        seeded.traces.append(trace)
        root = {
            "id": f"obs-{i:03d}-root",
            "project_id": pid,
            "trace_id": trace["id"],
            "type": "SPAN",
            "start_time": trace["timestamp"],
            "end_time": trace["timestamp"] + timedelta(seconds=2.5),
            "name": text,
            "metadata": {"step": text},
            "level": "DEFAULT",
            "input": json_values[(i + 1) % len(json_values)],
            "output": text,
            "environment": trace["environment"],
        }
        generation = {
            "id": f"obs-{i:03d}-gen",
            "project_id": pid,
            "trace_id": trace["id"],
            "parent_observation_id": root["id"],
            "type": "GENERATION",
            "start_time": trace["timestamp"] + timedelta(seconds=0.5),
            "end_time": trace["timestamp"] + timedelta(seconds=1.75),
            "completion_start_time": trace["timestamp"] + timedelta(seconds=0.75),
            "name": f"generation {i}",
            "metadata": {"model_family": "gpt", "i": i},
            "level": "ERROR" if i % 6 == 0 else "DEFAULT",
            "status_message": text if i % 6 == 0 else None,
            "model": "gpt-4o" if i % 2 else "claude",
            "model_parameters": {"temperature": 0.5},
            "prompt_name": "greeting",
            "prompt_version": i % 3 + 1,
            "input": {"messages": [{"role": "user", "content": text}]},
            "output": json_values[i % len(json_values)],
            "usage_details": {"input": 10 * i, "output": 5, "total": 10 * i + 5},
            "provided_usage_details": {"input": 10 * i},
            "cost_details": {"input": i / 1000, "output": 0.0005, "total": i / 1000 + 0.0005},
            "total_cost": i / 1000 + 0.0005,
            "environment": trace["environment"],
        }
        for obs in (root, generation):
            insert_row(conn, "observations", obs)
            seeded.observations.append(obs)
        score = {
            "id": f"score-{i:03d}",
            "project_id": pid,
            "trace_id": trace["id"],
            "observation_id": generation["id"],
            "timestamp": trace["timestamp"] + timedelta(seconds=3),
            "name": "quality" if i % 2 else "relevance",
            "value": i / 4,
            "string_value": text if i % 2 == 0 else None,
            "source": ("API", "EVAL", "ANNOTATION")[i % 3],
            "data_type": "NUMERIC" if i % 2 else "CATEGORICAL",
            "comment": text,
            "metadata": {"reviewer": text},
            "author_user_id": project.user_id,
        }
        insert_row(conn, "scores", score)
        seeded.scores.append(score)

    insert_row(conn, "trace_sessions", {"id": "session-1", "project_id": pid, "bookmarked": True, "public": True})
    insert_row(conn, "datasets", {"id": "dataset-a", "project_id": pid, "name": strings[17]})
    insert_row(conn, "dataset_runs", {"id": "run-a", "project_id": pid, "dataset_id": "dataset-a", "name": strings[11]})
    for i, value in enumerate(json_values):
        item = {
            "id": f"item-{i:02d}",
            "project_id": pid,
            "dataset_id": "dataset-a",
            "status": "ARCHIVED" if i % 3 == 0 else "ACTIVE",
            "input": value,
            "expected_output": {"answer": strings[i]},
            "metadata": {"label": strings[i]},
            "source_trace_id": f"trace-{i:03d}",
            "created_at": BASE_TIME + timedelta(seconds=i),
        }
        insert_row(conn, "dataset_items", item)
        seeded.dataset_items.append(item)
        run_item = {
            "id": f"run-item-{i:02d}",
            "project_id": pid,
            "dataset_run_id": "run-a",
            "dataset_item_id": item["id"],
            "trace_id": f"trace-{i:03d}",
            "created_at": BASE_TIME + timedelta(seconds=i),
        }
        insert_row(conn, "dataset_run_items", run_item)
        seeded.dataset_run_items.append(run_item)
    for i, value in enumerate(json_values):
        entry = {
            "id": f"audit-{i:02d}",
            "project_id": pid,
            "org_id": project.org_id,
            "user_id": project.user_id,
            "resource_type": "trace" if i % 2 else "prompt",
            "resource_id": strings[i + 5],
            "action": "update",
            "before": value,
            "after": {"changed": strings[i + 5]},
            "created_at": BASE_TIME + timedelta(seconds=i),
        }
        insert_row(conn, "audit_logs", entry)
        seeded.audit_logs.append(entry)
    return seeded


@dataclass
class ExportResult:
    id: str
    row: dict[str, Any]
    data: bytes | None

    @property
    def text(self) -> str:
        assert self.data is not None, f"export {self.id} has no file: {self.row['status']} {self.row['log']}"
        return self.data.decode("utf-8")

    def csv_rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.text, newline="")))

    def csv_header(self) -> list[str]:
        return next(csv.reader(io.StringIO(self.text, newline="")))

    def json_rows(self) -> list[dict[str, Any]]:
        if self.row["format"] == "JSON":
            return json.loads(self.text)
        # Split on "\n" only: str.splitlines would also split inside values holding U+2028 and friends.
        return [json.loads(line) for line in self.text.split("\n")[:-1]]

    def ids(self) -> list[str]:
        rows = self.csv_rows() if self.row["format"] == "CSV" else self.json_rows()
        return [r["id"] for r in rows]


def insert_big_traces(conn: psycopg.Connection, project_id: str, count: int) -> None:
    """`count` traces of ~700 bytes each (an export of them streams tens of MB), inserted inside Postgres."""
    conn.execute(
        """INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, tags, input, output, metadata)
           SELECT 'big-' || lpad(g::text, 7, '0'), %s, '2025-01-01'::timestamptz + (g / 3) * interval '1 second',
                  'trace ' || g, 'user-' || (g %% 100), 'session-' || (g %% 1000), ARRAY['a', 'b'],
                  jsonb_build_object('prompt', repeat('x', 400), 'g', g, 'quote', 'he said "hi", then left'),
                  '"=1+2"', jsonb_build_object('k', g %% 7)
           FROM generate_series(1, %s) g""",
        (project_id, count),
    )
    conn.execute("ANALYZE traces")


def run_export(conn: psycopg.Connection, export_id: str, workdir: Path | None = None) -> dict[str, Any]:
    """Runs the RQ job's function in this process (as a worker would) and returns the export's row."""
    from workers.batch_export import run_batch_export

    with contextlib.chdir(workdir or Path.cwd()):
        run_batch_export(export_id)
    return batch_exports.load(conn, export_id)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read a megabyte at a time (export files run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
