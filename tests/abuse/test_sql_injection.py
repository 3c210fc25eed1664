"""SQL injection through every string that reaches SQL: refused, or inert; the database is untouched.

Each hostile string (the classics below and every awkward value) goes into each place a request
can put text: filter column, value, key and operator, orderBy column, searchQuery, export name,
projectId and batchExportId. The API either refuses it with a documented error or stores it as
data; the exports it accepts are run, and their files hold exactly the rows the filters select
from the caller's own project. Every table is checksummed before and after.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from psycopg import sql

from tests.support.abuse import CANARY, Arena, assert_error_object, table_fingerprints
from tests.support.exports import run_export
from tests.support.rpc_client import RpcClient

CLASSIC = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "1' OR '1'='1' /*",
    "'; DROP TABLE traces; --",
    "'); DROP TABLE batch_exports; --",
    '"; DROP TABLE users; --',
    "x' UNION SELECT id, project_id FROM traces --",
    "' AND 1=(SELECT count(*) FROM pg_sleep(20)) --",
    "'||pg_sleep(20)||'",
    "1; SELECT pg_sleep(20); --",
    "$$; DELETE FROM traces; $$",
    "\\'; DELETE FROM audit_logs; --",
    "E'\\x27 OR true --",
    "ʼ OR 1=1 --",  # U+02BC, which some normalizers turn into a quote
    "%(project_id)s",
    "%s",
    "{project_id}",
    "{cutoff}",
    "t.project_id",
    "project_id) OR (true",
    "*/ OR 1=1 /*",
    "'::text) OR true --",
    "metadata'->>'x",
    "\x00' OR 1=1 --",
]


def hostile_strings(awkward_values: dict) -> list[str]:
    return CLASSIC + awkward_values["strings"]


@pytest.fixture
def attacker_client(abuse_client: RpcClient, arena: Arena):
    """Calls as the attacker's owner; every reply within a generous bound (a pg_sleep that ran would not be)."""

    def call(method: str, params: dict) -> dict:
        started = time.monotonic()
        reply = abuse_client.call(method, params, token=arena.attacker_owner)
        assert time.monotonic() - started < 15, f"{method} took {time.monotonic() - started:.1f} s"
        assert CANARY not in json.dumps(reply), reply
        if "error" in reply:
            assert_error_object(reply["error"])
        return reply

    return call


def create(call, arena: Arena, query: dict, name: str = "probe", format: str = "CSV") -> dict:
    return call("batchExport.create", {"projectId": arena.attacker.id, "name": name, "format": format, "query": query})


def error_code(reply: dict) -> str | None:
    return reply["error"]["data"]["code"] if "error" in reply else None


def export_rows(conn, arena: Arena, export_id: str, workdir: Path) -> list[dict]:
    row = run_export(conn, export_id, workdir)
    assert row["status"] == "COMPLETED", row["log"]
    data = arena.file(row["object_key"])
    assert CANARY.encode() not in data and arena.victim.id.encode() not in data
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.fixture
def untouched(conn, arena: Arena):
    """Fails the test if any table, or any row outside the attacker's own exports, changed."""
    before = table_fingerprints(conn, except_project=arena.attacker.id)
    yield
    assert table_fingerprints(conn, except_project=arena.attacker.id) == before


def test_hostile_filter_columns_operators_and_order_columns_are_bad_request(
    attacker_client, arena, awkward_values, untouched
):
    for text in hostile_strings(awkward_values):
        column = {"column": text, "type": "string", "operator": "=", "value": "x"}
        operator = {"column": "name", "type": "string", "operator": text, "value": "x"}
        kind = {"column": "name", "type": text, "operator": "=", "value": "x"}
        order = {"column": text, "order": "ASC"}
        order_direction = {"column": "name", "order": text}
        for query in (
            {"tableName": "traces", "filter": [column]},
            {"tableName": "traces", "filter": [operator]},
            {"tableName": "traces", "filter": [kind]},
            {"tableName": "traces", "orderBy": order},
            {"tableName": "traces", "orderBy": order_direction},
            {"tableName": text},
        ):
            assert error_code(create(attacker_client, arena, query)) == "BAD_REQUEST", (text, query)


def _keep_everything_filters(text: str) -> list[dict]:
    """Filters that keep every one of the caller's traces, unless `text` were run as SQL."""
    return [
        {"column": "name", "type": "string", "operator": "does not contain", "value": text},
        # `does not contain` would drop them: like Langfuse's, it holds only where the key exists.
        {"column": "metadata", "type": "stringObject", "key": text, "operator": "is not set", "value": ""},
        {"column": "metadata", "type": "stringObject", "key": "tier", "operator": "does not contain", "value": text},
        {"column": "metadata", "type": "categoryOptions", "key": text, "operator": "none of", "value": [text]},
        {"column": "tags", "type": "arrayOptions", "operator": "none of", "value": [text]},
        {"column": "environment", "type": "stringOptions", "operator": "none of", "value": [text, "staging"]},
    ]


def test_hostile_values_and_keys_are_refused_or_stored_as_data(attacker_client, arena, awkward_values, conn, untouched):
    for text in hostile_strings(awkward_values):
        name = text[:255] if text.strip() else "blank name"
        reply = create(
            attacker_client, arena, {"tableName": "traces", "filter": _keep_everything_filters(text)}, name=name
        )
        if "\x00" in text or not text.strip():
            # Postgres text cannot hold NUL; an object filter needs a key.
            assert error_code(reply) == "BAD_REQUEST", reply
            continue
        assert "result" in reply, (text, reply)
        stored = conn.execute(
            "SELECT name, query FROM batch_exports WHERE id = %s", (reply["result"]["id"],)
        ).fetchone()
        filters = stored["query"]["filter"]
        assert stored["name"] == name.strip() and [filters[0]["value"], filters[1]["key"], filters[2]["value"]] == [
            text,
            text,
            text,
        ]
        conn.execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE id = %s", (reply["result"]["id"],))


def test_exports_with_hostile_values_and_keys_hold_exactly_the_callers_matching_rows(
    attacker_client, arena, awkward_values, conn, tmp_path, untouched
):
    mine = conn.execute(
        "SELECT id, name FROM traces WHERE project_id = %s ORDER BY id", (arena.attacker.id,)
    ).fetchall()
    texts = [t for t in hostile_strings(awkward_values) if t.strip() and "\x00" not in t]
    for group in (texts[i : i + 8] for i in range(0, len(texts), 8)):  # 50 filters at most per query
        filters = [f for text in group for f in _keep_everything_filters(text)]
        reply = create(attacker_client, arena, {"tableName": "traces", "filter": filters}, name=group[0][:255])
        expected = [r["id"] for r in mine if not any(t.lower() in r["name"].lower() for t in group)]
        rows = export_rows(conn, arena, reply["result"]["id"], tmp_path)
        assert sorted(r["id"] for r in rows) == expected, group
        assert expected, "the filters should keep the caller's rows, or the test proves nothing"


def test_hostile_search_text_matches_literally_within_the_callers_rows(
    attacker_client, arena, conn, tmp_path, untouched
):
    for text in CLASSIC:
        reply = create(
            attacker_client, arena, {"tableName": "traces", "searchQuery": text, "searchType": ["id", "content"]}
        )
        if "\x00" in text:
            assert error_code(reply) == "BAD_REQUEST"
            continue
        # The caller's traces say "mine", "hello" or "gold": no hostile text occurs in them.
        assert export_rows(conn, arena, reply["result"]["id"], tmp_path) == [], text


def test_every_table_exports_only_the_callers_rows_under_hostile_search_and_filters(
    attacker_client, arena, conn, tmp_path, untouched
):
    from workers.tables import TABLES

    for table, definition in TABLES.items():
        reply = create(attacker_client, arena, {"tableName": table, "searchQuery": "' OR project_id <> '' --"})
        assert export_rows(conn, arena, reply["result"]["id"], tmp_path) == [], table
        text_column = next(c.key for c in definition.filterable_columns if c.filter in ("string", "stringOptions"))
        reply = create(
            attacker_client,
            arena,
            {
                "tableName": table,
                "filter": [
                    {"column": text_column, "type": "string", "operator": "does not contain", "value": "' OR 1=1 --"}
                ],
            },
        )
        ids = {r["id"] for r in export_rows(conn, arena, reply["result"]["id"], tmp_path)}
        source = {"events": ("id", "observations"), "sessions": ("session_id", "traces")}.get(table, ("id", table))
        statement = sql.SQL("SELECT {} AS id FROM {} WHERE project_id = %s").format(*map(sql.Identifier, source))
        own = {r["id"] for r in conn.execute(statement, (arena.attacker.id,))}
        assert ids <= own, (table, ids - own)


def test_hostile_keys_of_number_filters_are_inert(attacker_client, arena, conn, tmp_path, untouched):
    for text in CLASSIC[:8]:
        query = {
            "tableName": "observations",
            "filter": [{"column": "metadata", "type": "numberObject", "key": text, "operator": ">=", "value": 0}],
        }
        # No observation has a number under that key, so nothing is selected.
        assert export_rows(conn, arena, create(attacker_client, arena, query)["result"]["id"], tmp_path) == [], text


def test_hostile_project_ids_are_forbidden_or_bad_request(attacker_client, arena, awkward_values, untouched):
    for text in hostile_strings(awkward_values):
        for method, params in (
            ("batchExport.all", {"projectId": text}),
            ("batchExport.create", {"projectId": text, "name": "x", "format": "CSV", "query": {"tableName": "traces"}}),
            ("batchExport.cancel", {"projectId": text, "batchExportId": arena.victim_export["id"]}),
            ("batchExport.downloadUrl", {"projectId": text, "batchExportId": arena.victim_export["id"]}),
        ):
            reply = attacker_client(method, params)
            expected = "BAD_REQUEST" if (not text or "\x00" in text or len(text) > 200) else "FORBIDDEN"
            assert error_code(reply) == expected, (method, text, reply)


def test_hostile_export_ids_are_not_found_or_bad_request(attacker_client, arena, awkward_values, untouched):
    for text in hostile_strings(awkward_values) + [arena.victim_export["id"] + "' OR '1'='1"]:
        for method in ("batchExport.cancel", "batchExport.downloadUrl"):
            reply = attacker_client(method, {"projectId": arena.attacker.id, "batchExportId": text})
            expected = "BAD_REQUEST" if (not text or "\x00" in text or len(text) > 200) else "NOT_FOUND"
            assert error_code(reply) == expected, (method, text, reply)
