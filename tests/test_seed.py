"""The seed: realistic, deterministic rows in every exportable table, carrying every awkward value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

import db
from db import access
from devstack.seed import SEEDED_TABLES, SeedError, seed

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TRACES = 200  # well over the 44 awkward strings: each gets a trace of its own, and the rest stay realistic


@pytest.fixture(scope="module")
def module_conn(database_url: str):
    with db.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def seeded(module_conn: psycopg.Connection) -> tuple[str, dict[str, int]]:
    project = access.create_project(module_conn, "seeded")
    counts = seed(module_conn, project["id"], traces=TRACES, rng_seed=7, now=NOW)
    return project["id"], counts


def _count(conn: psycopg.Connection, table: str, project_id: str) -> int:
    return conn.execute(f"SELECT count(*) AS n FROM {table} WHERE project_id = %s", (project_id,)).fetchone()["n"]


def _rows(conn: psycopg.Connection, table: str, project_id: str) -> list[dict]:
    """A table's rows for the project with the project's own ids blanked, so two projects can be compared."""
    rows = conn.execute(f"SELECT * FROM {table} WHERE project_id = %s ORDER BY id", (project_id,)).fetchall()
    blanked = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("project_id", "org_id")}
        # audit_logs.id is a global key, so it embeds the project id
        row["id"] = row["id"].replace(project_id, "<project>")
        blanked.append(row)
    return blanked


def test_every_exportable_table_gets_rows_for_the_project(module_conn, seeded):
    project_id, _ = seeded
    empty = [table for table in SEEDED_TABLES if _count(module_conn, table, project_id) == 0]
    assert empty == []


def test_returned_counts_match_the_rows_in_the_database(module_conn, seeded):
    project_id, counts = seeded
    assert set(counts) == set(SEEDED_TABLES)
    assert {t: _count(module_conn, t, project_id) for t in SEEDED_TABLES} == counts
    assert counts["traces"] == TRACES
    assert 2 * TRACES <= counts["observations"] <= 4 * TRACES
    assert 0.6 * TRACES <= counts["scores"] <= 1.6 * TRACES


@pytest.mark.parametrize(
    "table, column",
    [
        ("traces", "name"),
        ("traces", "user_id"),
        ("traces", "release"),
        ("traces", "version"),
        ("traces", "output #>> '{}'"),
        ("traces", "metadata ->> 'note'"),
        ("observations", "name"),
        ("observations", "status_message"),
        ("observations", "output #>> '{}'"),
        ("scores", "string_value"),
        ("scores", "comment"),
    ],
)
def test_every_awkward_string_is_stored_exactly_in_each_column_that_carries_them(
    module_conn, seeded, awkward_values, table, column
):
    project_id, _ = seeded
    stored = {
        r["v"] for r in module_conn.execute(f"SELECT {column} AS v FROM {table} WHERE project_id = %s", (project_id,))
    }
    missing = [s[:40] for s in awkward_values["strings"] if s not in stored]
    assert missing == []


def test_every_awkward_string_is_found_by_an_equality_query_on_the_trace_name(module_conn, seeded, awkward_values):
    project_id, _ = seeded
    for value in awkward_values["strings"]:
        names = module_conn.execute(
            "SELECT name FROM traces WHERE project_id = %s AND name = %s", (project_id, value)
        ).fetchall()
        assert [r["name"] for r in names] == [value]


def test_every_awkward_json_value_is_stored_exactly(module_conn, seeded, awkward_values):
    project_id, _ = seeded
    places = [
        "SELECT input AS v FROM traces WHERE project_id = %s AND input = %s",
        "SELECT metadata -> 'value' AS v FROM traces WHERE project_id = %s AND metadata -> 'value' = %s",
        "SELECT input AS v FROM observations WHERE project_id = %s AND input = %s",
        "SELECT input AS v FROM dataset_items WHERE project_id = %s AND input = %s",
        "SELECT before AS v FROM audit_logs WHERE project_id = %s AND before = %s",
    ]
    for value in awkward_values["json_values"]:
        for query in places:
            found = module_conn.execute(query, (project_id, Jsonb(value))).fetchall()
            assert found, f"{value!r} missing: {query}"
            # Equal as jsonb and equal again once read back (big integers and tiny floats included).
            assert all(r["v"] == value for r in found)


def test_a_seed_smaller_than_the_awkward_set_still_carries_every_value(conn, awkward_values):
    project = access.create_project(conn, "tiny")
    counts = seed(conn, project["id"], traces=3, now=NOW)
    assert counts["traces"] == 3
    strings = set()
    for row in conn.execute("SELECT name, user_id, tags FROM traces WHERE project_id = %s", (project["id"],)):
        strings.update([row["name"], row["user_id"], *row["tags"]])
    assert [s[:40] for s in awkward_values["strings"] if s not in strings] == []
    for value in awkward_values["json_values"]:
        for table in ("dataset_items", "audit_logs"):
            column = "input" if table == "dataset_items" else "before"
            row = conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE project_id = %s AND {column} = %s",
                (project["id"], Jsonb(value)),
            ).fetchone()
            assert row["n"] >= 1, (table, value)


def test_the_same_seed_gives_the_same_rows_in_another_project(conn):
    first = access.create_project(conn, "first")["id"]
    second = access.create_project(conn, "second")["id"]
    seed(conn, first, traces=50, rng_seed=3, now=NOW)
    seed(conn, second, traces=50, rng_seed=3, now=NOW)
    for table in SEEDED_TABLES:
        assert _rows(conn, table, first) == _rows(conn, table, second), table


def test_a_seed_written_over_two_connections_equals_one_written_over_one(conn, monkeypatch):
    import devstack.seed as seed_module

    helpers = []
    start_helper = seed_module._start_helper
    monkeypatch.setattr(seed_module, "_start_helper", lambda *a: helpers.append(start_helper(*a)) or helpers[-1])
    serial = access.create_project(conn, "one connection")["id"]
    parallel = access.create_project(conn, "two connections")["id"]
    serial_counts = seed(conn, serial, traces=300, rng_seed=5, now=NOW)
    assert helpers == []
    monkeypatch.setattr(seed_module, "BULK_FROM", 200)
    parallel_counts = seed(conn, parallel, traces=300, rng_seed=5, now=NOW)
    assert len(helpers) == 1 and helpers[0] is not None and helpers[0].conn.closed
    assert parallel_counts == serial_counts
    for table in SEEDED_TABLES:
        assert _rows(conn, table, serial) == _rows(conn, table, parallel), table


def test_a_seed_that_fails_leaves_nothing_behind_on_either_connection(conn, monkeypatch):
    import devstack.seed as seed_module

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(seed_module, "BULK_FROM", 200)
    monkeypatch.setattr(seed_module, "_insert_audit_logs", fail)
    project_id = access.create_project(conn, "failing")["id"]
    with pytest.raises(RuntimeError, match="disk full"):
        seed(conn, project_id, traces=300, now=NOW)
    assert {t: _count(conn, t, project_id) for t in SEEDED_TABLES} == dict.fromkeys(SEEDED_TABLES, 0)


def _index_definitions(conn: psycopg.Connection) -> list[tuple[str, str, str | None]]:
    """Every index of the seeded tables, with the constraint it backs, as the catalog defines them."""
    rows = conn.execute(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,
                  pg_get_constraintdef(c.oid) AS constraint_definition
           FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
           WHERE i.indrelid::regclass::text = ANY(%s) ORDER BY 1""",
        (list(SEEDED_TABLES),),
    ).fetchall()
    return [(r["name"], r["definition"], r["constraint_definition"]) for r in rows]


def test_a_bulk_seed_loaded_before_its_indexes_gives_the_same_rows_and_the_same_indexes(conn, monkeypatch):
    import devstack.seed as seed_module

    before = _index_definitions(conn)
    serial = access.create_project(conn, "indexes kept")["id"]
    seed(conn, serial, traces=300, rng_seed=9, now=NOW)
    # Other projects' rows are in these tables; pretend they are empty, as in a fresh database.
    monkeypatch.setattr(seed_module, "BULK_FROM", 200)
    monkeypatch.setattr(seed_module, "_is_empty", lambda cur, table: True)
    bulk = access.create_project(conn, "indexes built after")["id"]
    seed(conn, bulk, traces=300, rng_seed=9, now=NOW)
    assert _index_definitions(conn) == before
    for table in SEEDED_TABLES:
        assert _rows(conn, table, serial) == _rows(conn, table, bulk), table


def test_a_bulk_seed_that_fails_leaves_the_indexes_as_they_were(conn, monkeypatch):
    import devstack.seed as seed_module

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    before = _index_definitions(conn)
    monkeypatch.setattr(seed_module, "BULK_FROM", 200)
    monkeypatch.setattr(seed_module, "_is_empty", lambda cur, table: True)
    monkeypatch.setattr(seed_module, "_insert_audit_logs", fail)
    project_id = access.create_project(conn, "failing bulk")["id"]
    with pytest.raises(RuntimeError, match="disk full"):
        seed(conn, project_id, traces=300, now=NOW)
    assert _index_definitions(conn) == before
    assert {t: _count(conn, t, project_id) for t in SEEDED_TABLES} == dict.fromkeys(SEEDED_TABLES, 0)


def test_another_seed_gives_other_rows(conn):
    first = access.create_project(conn, "seed 1")["id"]
    second = access.create_project(conn, "seed 2")["id"]
    seed(conn, first, traces=50, rng_seed=1, now=NOW)
    seed(conn, second, traces=50, rng_seed=2, now=NOW)
    assert _rows(conn, "traces", first) != _rows(conn, "traces", second)
    assert _rows(conn, "observations", first) != _rows(conn, "observations", second)


def test_rows_are_created_no_later_than_now_within_the_last_30_days(module_conn, seeded):
    project_id, _ = seeded
    for table in SEEDED_TABLES:
        row = module_conn.execute(
            f"SELECT min(created_at) AS first, max(created_at) AS last, max(updated_at) AS updated"
            f" FROM {table} WHERE project_id = %s",
            (project_id,),
        ).fetchone()
        assert row["last"] <= NOW and row["updated"] <= NOW, table
        assert row["first"] >= NOW - timedelta(days=30), table
    row = module_conn.execute(
        "SELECT min(timestamp) AS first, max(timestamp) AS last FROM traces WHERE project_id = %s", (project_id,)
    ).fetchone()
    assert NOW - timedelta(days=30) <= row["first"] <= row["last"] <= NOW


def test_the_default_now_is_the_database_clock_so_a_later_export_sees_every_row(conn):
    project_id = access.create_project(conn, "default now")["id"]
    seed(conn, project_id, traces=5)
    after = conn.execute("SELECT now() AS now").fetchone()["now"]
    for table in SEEDED_TABLES:
        row = conn.execute(
            f"SELECT max(created_at) AS last FROM {table} WHERE project_id = %s", (project_id,)
        ).fetchone()
        assert row["last"] <= after, table


def test_observations_belong_to_existing_traces_and_parents(module_conn, seeded):
    project_id, _ = seeded
    orphans = module_conn.execute(
        """SELECT o.id FROM observations o
           LEFT JOIN traces t ON t.project_id = o.project_id AND t.id = o.trace_id
           LEFT JOIN observations parent ON parent.project_id = o.project_id AND parent.id = o.parent_observation_id
           WHERE o.project_id = %s
             AND (t.id IS NULL OR (o.parent_observation_id IS NOT NULL
                                   AND (parent.id IS NULL OR parent.trace_id <> o.trace_id)))""",
        (project_id,),
    ).fetchall()
    assert orphans == []


def test_scores_and_dataset_rows_point_at_rows_that_exist(module_conn, seeded):
    project_id, _ = seeded
    dangling = module_conn.execute(
        """SELECT 'score ' || s.id AS what FROM scores s
           WHERE s.project_id = %(p)s AND (
               (s.trace_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.project_id = s.project_id AND t.id = s.trace_id))
            OR (s.observation_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM observations o WHERE o.project_id = s.project_id AND o.id = s.observation_id AND o.trace_id = s.trace_id))
            OR (s.session_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM trace_sessions ts WHERE ts.project_id = s.project_id AND ts.id = s.session_id))
            OR (s.trace_id IS NULL AND s.session_id IS NULL))
           UNION ALL
           SELECT 'item ' || i.id FROM dataset_items i
           WHERE i.project_id = %(p)s AND (
               (i.source_trace_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.project_id = i.project_id AND t.id = i.source_trace_id))
            OR (i.source_observation_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM observations o WHERE o.project_id = i.project_id AND o.id = i.source_observation_id)))
           UNION ALL
           SELECT 'run item ' || ri.id FROM dataset_run_items ri
           WHERE ri.project_id = %(p)s AND (
               NOT EXISTS (SELECT 1 FROM traces t WHERE t.project_id = ri.project_id AND t.id = ri.trace_id)
            OR NOT EXISTS (SELECT 1 FROM dataset_items i JOIN dataset_runs r ON r.project_id = i.project_id AND r.dataset_id = i.dataset_id
                           WHERE i.project_id = ri.project_id AND i.id = ri.dataset_item_id AND r.id = ri.dataset_run_id)
            OR (ri.observation_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM observations o WHERE o.project_id = ri.project_id AND o.id = ri.observation_id AND o.trace_id = ri.trace_id)))""",
        {"p": project_id},
    ).fetchall()
    assert dangling == []


def test_observations_of_a_trace_a_dataset_run_executed_carry_its_experiment(module_conn, seeded):
    """Each observation of a run item's trace carries the run of the trace's first run item (by id); others none."""
    project_id, _ = seeded
    rows = module_conn.execute(
        """WITH first_item AS (
               SELECT DISTINCT ON (ri.trace_id) ri.trace_id, r.dataset_id, r.id AS run_id, r.name, ri.dataset_item_id
               FROM dataset_run_items ri JOIN dataset_runs r ON r.project_id = ri.project_id AND r.id = ri.dataset_run_id
               WHERE ri.project_id = %(p)s ORDER BY ri.trace_id, ri.id)
           SELECT o.id, (e.trace_id IS NOT NULL) AS in_run,
                  (o.experiment_dataset_id, o.experiment_id, o.experiment_name, o.experiment_item_id)
                      IS NOT DISTINCT FROM (e.dataset_id, e.run_id, e.name, e.dataset_item_id) AS same,
                  o.experiment_item_root_span_id IS NOT DISTINCT FROM
                      CASE WHEN e.trace_id IS NOT NULL THEN root.id END AS root_span
           FROM observations o
           LEFT JOIN first_item e ON e.trace_id = o.trace_id
           LEFT JOIN observations root ON root.project_id = o.project_id AND root.trace_id = o.trace_id
                                      AND root.parent_observation_id IS NULL
           WHERE o.project_id = %(p)s""",
        {"p": project_id},
    ).fetchall()
    assert any(r["in_run"] for r in rows) and not all(r["in_run"] for r in rows)
    assert [r["id"] for r in rows if not (r["same"] and r["root_span"])] == []


def test_trace_sessions_hold_one_row_per_distinct_session_id(module_conn, seeded):
    project_id, _ = seeded
    sessions = {
        r["id"] for r in module_conn.execute("SELECT id FROM trace_sessions WHERE project_id = %s", (project_id,))
    }
    used = {
        r["session_id"]
        for r in module_conn.execute(
            "SELECT DISTINCT session_id FROM traces WHERE project_id = %s AND session_id IS NOT NULL", (project_id,)
        )
    }
    assert sessions == used
    nulls = module_conn.execute(
        "SELECT count(*) AS n FROM traces WHERE project_id = %s AND session_id IS NULL", (project_id,)
    ).fetchone()["n"]
    assert nulls > 0


def test_latency_and_time_to_first_token_are_positive_and_children_sit_inside_their_root(module_conn, seeded):
    project_id, _ = seeded
    bad = module_conn.execute(
        """SELECT o.id FROM observations o
           LEFT JOIN observations root ON root.project_id = o.project_id AND root.id = o.parent_observation_id
           WHERE o.project_id = %s AND (
               o.end_time IS NULL OR o.end_time <= o.start_time
            OR (o.type = 'GENERATION' AND NOT (o.start_time < o.completion_start_time AND o.completion_start_time < o.end_time))
            OR (root.id IS NOT NULL AND (o.start_time < root.start_time OR o.end_time > root.end_time)))""",
        (project_id,),
    ).fetchall()
    assert bad == []


def test_generations_carry_model_usage_and_cost_that_add_up(module_conn, seeded):
    project_id, _ = seeded
    rows = module_conn.execute(
        "SELECT * FROM observations WHERE project_id = %s AND type = 'GENERATION'", (project_id,)
    ).fetchall()
    assert rows
    for row in rows:
        usage, cost = row["usage_details"], row["cost_details"]
        assert row["model"] and row["model_parameters"]
        assert usage["input"] + usage["output"] == usage["total"] > 0
        assert cost["input"] + cost["output"] == pytest.approx(cost["total"])
        assert float(row["total_cost"]) == pytest.approx(cost["total"])
        assert row["provided_usage_details"] in ({}, usage)
    assert any(r["prompt_name"] and r["prompt_version"] for r in rows)


def test_score_values_agree_with_their_data_type(module_conn, seeded):
    project_id, _ = seeded
    rows = module_conn.execute("SELECT * FROM scores WHERE project_id = %s", (project_id,)).fetchall()
    for row in rows:
        kind = row["data_type"]
        if kind == "NUMERIC":
            assert row["value"] is not None and row["string_value"] is None, row
        elif kind == "BOOLEAN":
            assert (row["value"], row["string_value"]) in ((1.0, "True"), (0.0, "False")), row
        else:
            assert row["value"] is None and row["string_value"] is not None, row


def test_the_data_is_varied(module_conn, seeded):
    project_id, _ = seeded

    def distinct(query: str) -> set:
        return {r["v"] for r in module_conn.execute(query, (project_id,))}

    assert len(distinct("SELECT environment AS v FROM traces WHERE project_id = %s")) >= 3
    assert distinct("SELECT type AS v FROM observations WHERE project_id = %s") == {"SPAN", "GENERATION", "EVENT"}
    assert {"WARNING", "ERROR"} <= distinct("SELECT level AS v FROM observations WHERE project_id = %s")
    assert distinct("SELECT data_type AS v FROM scores WHERE project_id = %s") == {
        "NUMERIC",
        "BOOLEAN",
        "CATEGORICAL",
        "TEXT",
    }
    assert distinct("SELECT source AS v FROM scores WHERE project_id = %s") == {"API", "EVAL", "ANNOTATION"}
    targets = distinct(
        "SELECT CASE WHEN observation_id IS NOT NULL THEN 'observation' WHEN trace_id IS NULL THEN 'session'"
        " ELSE 'trace' END AS v FROM scores WHERE project_id = %s"
    )
    assert targets == {"observation", "session", "trace"}
    assert distinct("SELECT bookmarked AS v FROM traces WHERE project_id = %s") == {True, False}
    assert None in distinct("SELECT user_id AS v FROM traces WHERE project_id = %s")


def test_audit_logs_belong_to_the_project_and_its_organization(module_conn, seeded):
    project_id, _ = seeded
    org_id = access.project_org_id(module_conn, project_id)
    orgs = {
        r["org_id"] for r in module_conn.execute("SELECT org_id FROM audit_logs WHERE project_id = %s", (project_id,))
    }
    assert orgs == {org_id}


def test_seeding_a_project_that_already_has_traces_is_refused(module_conn, seeded):
    project_id, counts = seeded
    with pytest.raises(SeedError, match="already has traces"):
        seed(module_conn, project_id, traces=TRACES, rng_seed=7, now=NOW)
    assert _count(module_conn, "traces", project_id) == counts["traces"]


def test_an_unknown_project_is_refused(conn):
    with pytest.raises(SeedError, match="does not exist"):
        seed(conn, "no-such-project", traces=1)


def _json_numbers(value: Any) -> Iterator[str]:
    """Every number in a JSON value, as the text it is written with."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_numbers(item)
    elif isinstance(value, _NumberText):
        yield value


class _NumberText(str):
    pass


def _padded(number: str) -> bool:
    """0.30000000000000000000, 1.50, 2.0: a decimal's scale, which no SDK's JSON encoder writes."""
    mantissa = number.lower().split("e")[0]
    return "." in mantissa and mantissa.endswith("0")


def test_seeded_json_numbers_are_written_as_an_sdk_would_send_them(module_conn, seeded, awkward_values):
    project_id, _ = seeded
    padded = []
    for table in SEEDED_TABLES:
        columns = module_conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = %s AND data_type = 'jsonb' ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        for column in (c["column_name"] for c in columns):
            query = sql.SQL("SELECT {}::text AS v FROM {} WHERE project_id = %s AND {} IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(table), sql.Identifier(column)
            )
            for row in module_conn.execute(query, (project_id,)):
                numbers = _json_numbers(json.loads(row["v"], parse_float=_NumberText, parse_int=_NumberText))
                padded += [(table, column, n) for n in numbers if _padded(n)]
    assert sorted({(t, c) for t, c, _ in padded}) == [], padded[:10]


def test_an_export_of_seeded_observations_carries_their_temperature_as_sent(
    module_conn, seeded, tmp_path, monkeypatch, database_url
):
    from db import batch_exports
    from schemas.settings import get_settings
    from workers.batch_export import run_batch_export

    project_id, _ = seeded
    storage = tmp_path / "exports"
    storage.mkdir()
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "DATABASE_URL": database_url,
        "EXPORT_STORAGE_URL": storage.as_uri(),
        "SECRET_KEY": "test-secret-key-0123456789",
        "SMTP_URL": "",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    user = access.upsert_user(module_conn, "seed-exporter@example.com", "Seed Exporter")
    query = {
        "tableName": "observations",
        "filter": [{"column": "type", "type": "stringOptions", "operator": "any of", "value": ["GENERATION"]}],
        "orderBy": None,
    }
    export_id = module_conn.execute(
        batch_exports.INSERT_SQL,
        batch_exports.insert_params(
            project_id=project_id, user_id=user["id"], name="seed", format="JSONL", query=query
        ),
    ).fetchone()["id"]
    try:
        run_batch_export(export_id)
    finally:
        get_settings.cache_clear()
    row = batch_exports.load(module_conn, export_id)
    text = (storage / row["object_key"]).read_text()
    assert '"temperature": 0.3' in text.replace('"temperature":0.3', '"temperature": 0.3')
    assert "0.30000" not in text and "0.50000" not in text


def test_live_ingestion_adds_traces_now_to_a_project_that_has_rows(conn):
    from devstack.seed import ingest_live

    project = access.create_project(conn, "live")
    seed(conn, project["id"], traces=20)
    conn.commit()
    with db.connect(conn.info.dsn, autocommit=True) as live:
        added = ingest_live(live, project["id"], per_second=200, seconds=0.3)
    assert added > 0
    rows = conn.execute(
        "SELECT t.created_at, (SELECT count(*) FROM observations o WHERE o.project_id = t.project_id AND o.trace_id = t.id)"
        " + (SELECT count(*) FROM scores s WHERE s.project_id = t.project_id AND s.trace_id = t.id) AS children"
        " FROM traces t WHERE t.project_id = %s AND t.id LIKE 'live-%%'",
        (project["id"],),
    ).fetchall()
    assert len(rows) == added and all(r["children"] == 2 for r in rows), "each with an observation and a score"
    assert all(datetime.now(UTC) - r["created_at"] < timedelta(minutes=5) for r in rows), "ingested now"
    with pytest.raises(SeedError):
        ingest_live(conn, project["id"], per_second=0)


def test_live_ingestion_from_the_command_line_stops_cleanly_on_sigterm(conn, database_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    project = access.create_project(conn, "live cli")
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "seed", "--project", project["id"], "--live", "50"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        count = "SELECT count(*) AS n FROM traces WHERE project_id = %s"
        while conn.execute(count, (project["id"],)).fetchone()["n"] == 0:
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stderr.read() if process.stderr else ""
            )
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    added = int(out.split()[1])
    stored = conn.execute(count, (project["id"],)).fetchone()["n"]
    # The signal may land between a trace's commit and its count: one more stored than said, never fewer.
    assert 1 <= added <= stored <= added + 1, (out, stored)
