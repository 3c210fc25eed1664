"""What Langfuse's files carry and ours now do too: a column per score name, comments, and its filter semantics.

Each test builds a small project row by row, runs the real export job and reads the file it wrote.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.support.exports import BASE_TIME, SeededProject, insert_row, run_export
from tests.support.world import new_project
from workers.tables import TABLES

# Score names users type: one the row already has as a key, a formula, a comma and quotes with a line break.
AWKWARD_NAMES = ["name", "=SUM(A1)", 'comma, "quoted"\nline', "ß∂ƒ accuracy"]


@pytest.fixture
def scored(conn) -> SeededProject:
    """Three traces: t-1 scored and commented, t-2 with one categorical score, t-3 with nothing."""
    project = SeededProject(**vars(new_project(conn, "scored", user_email=None, user_name="Scorer")))
    pid = project.id
    for n in (1, 2, 3):
        insert_row(
            conn,
            "traces",
            {
                "id": f"t-{n}",
                "project_id": pid,
                "timestamp": BASE_TIME + timedelta(minutes=n),
                "name": f"trace {n}",
                "input": {"question": f"needle-in-input {n}" if n == 1 else "plain"},
                "output": {"answer": "needle-in-output" if n == 2 else "plain"},
                "metadata": [{"customer": "acme"}, {"customer": "other"}, {}][n - 1],
            },
        )
    insert_row(conn, "traces", {"id": "t-4", "project_id": pid, "timestamp": BASE_TIME, "name": "no metadata"})
    for n, parent in ((1, None), (2, "o-1")):
        insert_row(
            conn,
            "observations",
            {
                "id": f"o-{n}",
                "project_id": pid,
                "trace_id": "t-1",
                "parent_observation_id": parent,
                "type": "SPAN",
                "start_time": BASE_TIME + timedelta(seconds=n),
                "name": f"span {n}",
            },
        )

    def score(sid: str, name: str, data_type: str, value: float | None, string_value: str | None = None, **where):
        insert_row(
            conn,
            "scores",
            {
                "id": sid,
                "project_id": pid,
                "trace_id": "t-1",
                "timestamp": BASE_TIME,
                "name": name,
                "data_type": data_type,
                "value": value,
                "string_value": string_value,
                "source": "API",
                **where,
            },
        )

    score("s-1", "accuracy", "NUMERIC", 0.5)
    score("s-2", "accuracy", "NUMERIC", 1.0)
    score("s-3", "is_correct", "BOOLEAN", 1, "True")
    score("s-4", "tone", "CATEGORICAL", None, "polite")
    score("s-5", "tone", "CATEGORICAL", None, "rude", trace_id="t-2")
    score("s-6", "accuracy", "NUMERIC", 0.25, observation_id="o-1")
    for i, name in enumerate(AWKWARD_NAMES):
        score(f"s-awk-{i}", name, "NUMERIC", i + 2)
    insert_row(
        conn,
        "comments",
        {
            "id": "c-1",
            "project_id": pid,
            "object_type": "TRACE",
            "object_id": "t-1",
            "content": "Check, this",
            "author_user_id": "u-1",
        },
    )
    insert_row(
        conn,
        "comments",
        {"id": "c-2", "project_id": pid, "object_type": "TRACE", "object_id": "t-1", "content": "second look"},
    )
    return project


def _score_keys() -> list[str]:
    # Every score name of the project, in code point order; "name" is a key of the row already.
    names = sorted({"accuracy", "is_correct", "tone", *AWKWARD_NAMES})
    return [f"{n} (score)" if n in TABLES["traces"].keys else n for n in names]


def test_traces_end_in_one_column_per_score_name_with_the_averages_and_values(export_table, scored):
    result = export_table(scored, {"tableName": "traces"}, "JSON")
    assert result.row["status"] == "COMPLETED", result.row["log"]
    rows = {r["id"]: r for r in result.json_rows()}
    assert list(rows["t-1"]) == TABLES["traces"].keys + _score_keys()
    first = rows["t-1"]
    # The trace's own scores only: the observation's accuracy (0.25) is not averaged in.
    assert first["accuracy"] == 0.75 and first["is_correct"] == 1 and first["tone"] == "polite"
    assert first["name (score)"] == 2 and first["name"] == "trace 1"
    assert [first[n] for n in AWKWARD_NAMES[1:]] == [3, 4, 5]
    assert rows["t-2"]["tone"] == "rude" and rows["t-2"]["accuracy"] is None
    assert all(rows["t-3"][k] is None for k in _score_keys())
    assert first["commentCount"] == 2 and sorted(c["content"] for c in first["comments"]) == [
        "Check, this",
        "second look",
    ]
    # Inside the JSON, the files' own timestamp format.
    assert all(c["createdAt"].endswith("Z") and "T" in c["createdAt"] for c in first["comments"])
    assert rows["t-3"]["commentCount"] == 0 and rows["t-3"]["comments"] == []


def test_score_names_in_the_csv_header_are_quoted_and_neutralized_like_any_cell(export_table, scored):
    result = export_table(scored, {"tableName": "traces"}, "CSV")
    header = result.csv_header()
    expected = ["'" + k if k.startswith("=") else k for k in _score_keys()]
    assert header[len(TABLES["traces"].keys) :] == expected
    # The name with a comma, quotes and a line break is one header cell, and its values line up under it.
    first = next(r for r in result.csv_rows() if r["id"] == "t-1")
    assert first['comma, "quoted"\nline'] == "4" and first["'=SUM(A1)"] == "3" and first["accuracy"] == "0.75"


def test_observations_carry_their_own_scores_and_comments(export_table, scored):
    rows = {r["id"]: r for r in export_table(scored, {"tableName": "observations"}, "JSONL").json_rows()}
    assert rows["o-1"]["accuracy"] == 0.25 and rows["o-2"]["accuracy"] is None
    assert rows["o-1"]["tone"] is None and rows["o-1"]["commentCount"] == 0


def test_the_score_columns_are_fixed_when_the_export_is_created(export_settings, storage_dir, scored, conn):
    export_id = scored.new_export(conn, {"tableName": "traces"}, "JSON")
    created = conn.execute("SELECT created_at FROM batch_exports WHERE id = %s", (export_id,)).fetchone()["created_at"]
    # A score written after the export was created: not a column, though it exists when the job runs.
    conn.execute(
        """INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at)
           VALUES ('s-late', %s, 't-3', %s, 'late', 1, 'NUMERIC', 'API', %s)""",
        (scored.id, BASE_TIME, created + timedelta(seconds=1)),
    )
    row = run_export(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    rows = json.loads((storage_dir / row["object_key"]).read_text())
    assert all(list(r) == TABLES["traces"].keys + _score_keys() for r in rows)


def _ids(export_table, project: SeededProject, table: str, filters: list[dict[str, Any]], **query) -> list[str]:
    result = export_table(project, {"tableName": table, "filter": filters, **query}, "JSONL")
    assert result.row["status"] == "COMPLETED", result.row["log"]
    return sorted(result.ids())


def test_score_and_comment_filters_select_the_scored_rows(export_table, scored):
    def ids(*filters):
        return _ids(export_table, scored, "traces", list(filters))

    assert ids(
        {"column": "Scores (numeric)", "type": "numberObject", "key": "accuracy", "operator": ">", "value": 0.7}
    ) == ["t-1"]
    boolean = {"column": "score_booleans", "type": "booleanObject", "key": "is_correct", "value": True}
    assert ids({**boolean, "operator": "="}) == ["t-1"]
    # As in Langfuse: `<>` keeps the traces that have no such score at all.
    assert ids({**boolean, "operator": "<>"}) == ["t-2", "t-3", "t-4"]
    tone = {"column": "score_categories", "type": "categoryOptions", "key": "tone", "value": ["polite"]}
    assert ids({**tone, "operator": "any of"}) == ["t-1"]
    assert ids({**tone, "operator": "none of"}) == ["t-2", "t-3", "t-4"]
    assert ids({"column": "Comment Content", "type": "string", "operator": "contains", "value": "LOOK"}) == ["t-1"]
    assert ids({"column": "commentCount", "type": "number", "operator": ">=", "value": 1}) == ["t-1"]


def test_does_not_contain_on_a_json_key_needs_the_key_as_langfuse_does(export_table, scored):
    def ids(operator: str, value: str = ""):
        return _ids(
            export_table,
            scored,
            "traces",
            [{"column": "metadata", "type": "stringObject", "key": "customer", "operator": operator, "value": value}],
        )

    # t-3's metadata lacks the key and t-4 has none: neither "does not contain" anything.
    assert ids("does not contain", "acm") == ["t-2"]
    assert ids("is set") == ["t-1", "t-2"]
    assert ids("is not set") == ["t-3", "t-4"]
    # Langfuse's old spelling of "is set".
    assert ids("contains") == ["t-1", "t-2"]


@pytest.mark.parametrize(
    "search_type,expected",
    [(["input"], ["t-1"]), (["output"], ["t-2"]), (["content"], ["t-1", "t-2"]), (["id"], [])],
)
def test_search_scopes_look_where_langfuse_looks(export_table, scored, search_type, expected):
    assert _ids(export_table, scored, "traces", [], searchQuery="NEEDLE-in", searchType=search_type) == expected
