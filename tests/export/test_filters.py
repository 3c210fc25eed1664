"""Filters, search and ordering: each type and operator exports exactly the rows it should, in a total order.

Expected rows are computed here in Python from what the seed inserted, independently of the SQL
compiler; ordering is each table's default (time DESC, then id DESC) unless a test orders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import BatchExportQuery
from tests.support.exports import BASE_TIME, SeededProject
from workers.filters import InvalidExportQuery, compile_query, validate_query

# --- the rows as the export should see them ---------------------------------------------------------


def trace_rows(seeded: SeededProject) -> list[dict[str, Any]]:
    rows = []
    for trace in seeded.traces:
        i = int(trace["id"][-3:])
        rows.append(
            {
                "id": trace["id"],
                "time": trace["timestamp"],
                "name": trace["name"],
                "userId": trace["user_id"],
                "sessionId": trace["session_id"],
                "release": trace["release"],
                "version": trace["version"],
                "environment": trace["environment"],
                "tags": trace["tags"],
                "bookmarked": trace["bookmarked"],
                "metadata": trace["metadata"],
                "input": trace["input"],
                "output": trace["output"],
                "latency": 2.5,
                "totalCost": i / 1000 + 0.0005,
                "inputTokens": 10 * i,
                "totalTokens": 10 * i + 5,
            }
        )
    return rows


def observation_rows(seeded: SeededProject) -> list[dict[str, Any]]:
    traces = {t["id"]: t for t in seeded.traces}
    rows = []
    for obs in seeded.observations:
        trace = traces[obs["trace_id"]]
        rows.append(
            {
                **obs,
                "time": obs["start_time"],
                "traceTags": trace["tags"],
                "userId": trace["user_id"],
                "sessionId": trace["session_id"],
                "release": trace["release"],
                "traceName": trace["name"],
                "latency": (obs["end_time"] - obs["start_time"]).total_seconds(),
                "inputTokens": obs.get("usage_details", {}).get("input"),
            }
        )
    return rows


def score_rows(seeded: SeededProject) -> list[dict[str, Any]]:
    traces = {t["id"]: t for t in seeded.traces}
    return [
        {
            **s,
            "time": s["timestamp"],
            "traceTags": traces[s["trace_id"]]["tags"],
            "userId": traces[s["trace_id"]]["user_id"],
        }
        for s in seeded.scores
    ]


def expected_ids(rows: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> list[str]:
    matching = [r for r in rows if predicate(r)]
    return [r["id"] for r in sorted(matching, key=lambda r: (r["time"], r["id"]), reverse=True)]


def f(column: str, type: str, operator: str, value: Any = None, key: str | None = None) -> dict[str, Any]:
    filter_ = {"column": column, "type": type, "operator": operator}
    if type != "null":
        filter_["value"] = value
    if key is not None:
        filter_["key"] = key
    return filter_


def lower(value: str | None) -> str:
    return (value or "").lower()


T10 = BASE_TIME + timedelta(minutes=10)

TRACE_CASES = [
    (f("id", "string", "=", "trace-003"), lambda r: r["id"] == "trace-003"),
    (f("name", "string", "contains", "QUOTES"), lambda r: "quotes" in lower(r["name"])),
    (f("Name", "string", "does not contain", "a"), lambda r: "a" not in lower(r["name"])),
    (f("userId", "string", "starts with", "="), lambda r: r["userId"].startswith("=")),
    (f("User ID", "string", "ends with", "SPACE "), lambda r: lower(r["userId"]).endswith("space ")),
    (f("sessionId", "string", "does not contain", "session"), lambda r: r["sessionId"] is None),
    (
        f("traceName", "stringOptions", "any of", ["comma, inside", "CON", "%_ like wildcards %_"]),
        lambda r: r["name"] in ("comma, inside", "CON", "%_ like wildcards %_"),
    ),
    (
        f("name", "stringOptions", "none of", ["comma, inside", "CON"]),
        lambda r: r["name"] not in ("comma, inside", "CON"),
    ),
    (f("Environment", "stringOptions", "any of", ["staging"]), lambda r: r["environment"] == "staging"),
    (f("version", "string", "=", "2.0"), lambda r: r["version"] == "2.0"),
    (f("release", "string", "=", "v1"), lambda r: r["release"] == "v1"),
    (f("tags", "arrayOptions", "any of", ["odd", "CON"]), lambda r: bool({"odd", "CON"} & set(r["tags"]))),
    (f("Tags", "arrayOptions", "all of", ["even", "CON"]), lambda r: {"even", "CON"} <= set(r["tags"])),
    (
        f("traceTags", "arrayOptions", "none of", ["odd", "=SUM(A1:A9)"]),
        lambda r: not {"odd", "=SUM(A1:A9)"} & set(r["tags"]),
    ),
    (f("metadata", "stringObject", "=", "CON", key="customer"), lambda r: r["metadata"]["customer"] == "CON"),
    (f("Metadata", "stringObject", "contains", "%_", key="customer"), lambda r: "%_" in r["metadata"]["customer"]),
    (f("metadata", "stringObject", "does not contain", "o", key="tier"), lambda r: "o" not in r["metadata"]["tier"]),
    (
        f("metadata", "stringObject", "starts with", "'", key="customer"),
        lambda r: r["metadata"]["customer"].startswith("'"),
    ),
    (
        f("metadata", "stringObject", "ends with", "--", key="customer"),
        lambda r: r["metadata"]["customer"].endswith("--"),
    ),
    (f("metadata", "stringObject", "=", "x", key="no such key"), lambda r: False),
    (f("metadata", "numberObject", ">=", 40, key="rank"), lambda r: r["metadata"]["rank"] >= 40),
    (f("metadata", "numberObject", "=", 3, key="rank"), lambda r: r["metadata"]["rank"] == 3),
    (f("metadata", "numberObject", "<", 2, key="rank"), lambda r: r["metadata"]["rank"] < 2),
    (f("metadata", "numberObject", ">", 0, key="customer"), lambda r: False),  # not a number: no match, no error
    (f("metadata", "categoryOptions", "any of", ["gold"], key="tier"), lambda r: r["metadata"]["tier"] == "gold"),
    (f("metadata", "categoryOptions", "none of", ["gold"], key="tier"), lambda r: r["metadata"]["tier"] != "gold"),
    (f("bookmarked", "boolean", "=", True), lambda r: r["bookmarked"]),
    (f("⭐️", "boolean", "<>", True), lambda r: not r["bookmarked"]),
    (f("timestamp", "datetime", ">", T10.isoformat()), lambda r: r["time"] > T10),
    (f("Timestamp", "datetime", ">=", T10.isoformat()), lambda r: r["time"] >= T10),
    (f("timestamp", "datetime", "<", T10.isoformat()), lambda r: r["time"] < T10),
    (f("timestamp", "datetime", "<=", T10.isoformat()), lambda r: r["time"] <= T10),
    (f("Latency (s)", "number", "=", 2.5), lambda r: True),
    (f("totalCost", "number", ">", 0.02), lambda r: r["totalCost"] > 0.02),
    (f("Total Cost ($)", "number", "<=", 0.0105), lambda r: r["totalCost"] <= 0.0105),
    (f("inputTokens", "number", "<", 50), lambda r: r["inputTokens"] < 50),
    (f("totalTokens", "number", "=", 105), lambda r: r["totalTokens"] == 105),
    (f("sessionId", "null", "is null"), lambda r: r["sessionId"] is None),
    (f("sessionId", "null", "is not null"), lambda r: r["sessionId"] is not None),
    (f("metadata", "null", "is null"), lambda r: False),
]


@pytest.mark.parametrize(
    "filter_,predicate", TRACE_CASES, ids=[f"{c[0]['column']} {c[0]['type']} {c[0]['operator']}" for c in TRACE_CASES]
)
def test_trace_filter_exports_exactly_the_matching_rows(export_table, seeded, filter_, predicate):
    result = export_table(seeded, {"tableName": "traces", "filter": [filter_]}, "JSONL")
    assert result.row["status"] == "COMPLETED", result.row["log"]
    assert result.ids() == expected_ids(trace_rows(seeded), predicate)


def test_filters_combine_with_and(export_table, seeded):
    query = {
        "tableName": "traces",
        "filter": [
            f("environment", "stringOptions", "any of", ["production"]),
            f("bookmarked", "boolean", "=", False),
            f("metadata", "stringObject", "=", "silver", key="tier"),
        ],
    }
    expected = expected_ids(
        trace_rows(seeded),
        lambda r: r["environment"] == "production" and not r["bookmarked"] and r["metadata"]["tier"] == "silver",
    )
    assert export_table(seeded, query, "CSV").ids() == expected and expected


OBSERVATION_CASES = [
    (
        f("id", "stringOptions", "any of", ["obs-001-gen", "obs-002-root"]),
        lambda r: r["id"] in ("obs-001-gen", "obs-002-root"),
    ),
    (f("Type", "stringOptions", "any of", ["GENERATION"]), lambda r: r["type"] == "GENERATION"),
    (f("level", "stringOptions", "none of", ["DEFAULT"]), lambda r: r["level"] != "DEFAULT"),
    (f("model", "stringOptions", "any of", ["claude"]), lambda r: r.get("model") == "claude"),
    (f("Prompt Version", "number", "=", 2), lambda r: r.get("prompt_version") == 2),
    (f("Trace Tags", "arrayOptions", "any of", ["odd"]), lambda r: "odd" in r["traceTags"]),
    (f("Start Time", "datetime", "<", T10.isoformat()), lambda r: r["start_time"] < T10),
    (f("latency", "number", ">", 2), lambda r: r["latency"] > 2),
    (f("parentObservationId", "null", "is null"), lambda r: r.get("parent_observation_id") is None),
    (f("inputTokens", "number", ">=", 400), lambda r: (r["inputTokens"] or 0) >= 400),
    (f("statusMessage", "string", "contains", "Quotes"), lambda r: "quotes" in lower(r.get("status_message"))),
    (f("traceName", "stringOptions", "any of", ["CON"]), lambda r: r["traceName"] == "CON"),
    (f("userId", "string", "=", "CON"), lambda r: r["userId"] == "CON"),
]


@pytest.mark.parametrize("filter_,predicate", OBSERVATION_CASES, ids=[c[0]["column"] for c in OBSERVATION_CASES])
def test_observation_filter_exports_exactly_the_matching_rows(export_table, seeded, filter_, predicate):
    result = export_table(seeded, {"tableName": "observations", "filter": [filter_]}, "JSON")
    assert result.ids() == expected_ids(observation_rows(seeded), predicate)


EVENT_CASES = [
    (f("isRootObservation", "boolean", "=", True), lambda r: r.get("parent_observation_id") is None),
    (f("Is Root Observation", "boolean", "<>", True), lambda r: r.get("parent_observation_id") is not None),
    (f("input", "string", "contains", "MESSAGES"), lambda r: isinstance(r["input"], dict) and "messages" in r["input"]),
    (f("Output", "string", "=", "CON"), lambda r: r["output"] == "CON"),  # a JSON string compares as its text
    (f("release", "string", "=", "v1"), lambda r: r["release"] == "v1"),
    (f("Session ID", "string", "=", "session-2"), lambda r: r["sessionId"] == "session-2"),
    (f("outputTokens", "number", "=", 5), lambda r: r["type"] == "GENERATION"),
]


@pytest.mark.parametrize("filter_,predicate", EVENT_CASES, ids=[c[0]["column"] for c in EVENT_CASES])
def test_event_filter_exports_exactly_the_matching_rows(export_table, seeded, filter_, predicate):
    result = export_table(seeded, {"tableName": "events", "filter": [filter_]}, "JSONL")
    assert result.ids() == expected_ids(observation_rows(seeded), predicate)


SCORE_CASES = [
    (f("value", "number", ">", 5), lambda r: r["value"] > 5),
    (f("Data Type", "stringOptions", "any of", ["CATEGORICAL"]), lambda r: r["data_type"] == "CATEGORICAL"),
    (f("source", "stringOptions", "none of", ["API", "EVAL"]), lambda r: r["source"] == "ANNOTATION"),
    (f("stringValue", "stringOptions", "any of", ["CON", "NaN"]), lambda r: r["string_value"] in ("CON", "NaN")),
    (f("tags", "arrayOptions", "all of", ["even"]), lambda r: "even" in r["traceTags"]),
    (f("Name", "stringOptions", "any of", ["quality"]), lambda r: r["name"] == "quality"),
    (f("userId", "stringOptions", "any of", ["CON"]), lambda r: r["userId"] == "CON"),
    (f("traceId", "string", "=", "trace-007"), lambda r: r["trace_id"] == "trace-007"),
    (f("metadata", "stringObject", "contains", "日本", key="reviewer"), lambda r: "日本" in r["metadata"]["reviewer"]),
]


@pytest.mark.parametrize("filter_,predicate", SCORE_CASES, ids=[c[0]["column"] for c in SCORE_CASES])
def test_score_filter_exports_exactly_the_matching_rows(export_table, seeded, filter_, predicate):
    result = export_table(seeded, {"tableName": "scores", "filter": [filter_]}, "CSV")
    assert result.ids() == expected_ids(score_rows(seeded), predicate)


def test_session_filters(export_table, seeded):
    def ids(*filters):
        return sorted(export_table(seeded, {"tableName": "sessions", "filter": list(filters)}, "JSON").ids())

    assert ids(f("id", "string", "=", "session-3")) == ["session-3"]
    assert ids(f("⭐️", "boolean", "=", True)) == ["session-1"]
    counts = {}
    for t in seeded.traces:
        if t["session_id"]:
            counts[t["session_id"]] = counts.get(t["session_id"], 0) + 1
    assert ids(f("Traces Count", "number", ">", 7)) == sorted(s for s, n in counts.items() if n > 7)
    user_of = {t["session_id"]: set() for t in seeded.traces}
    for t in seeded.traces:
        user_of[t["session_id"]].add(t["user_id"])
    assert ids(f("User IDs", "arrayOptions", "any of", ["CON"])) == sorted(
        s for s, u in user_of.items() if s and "CON" in u
    )
    assert ids(f("createdAt", "datetime", ">", (BASE_TIME + timedelta(minutes=3)).isoformat())) == []


def test_dataset_and_audit_log_filters(export_table, seeded):
    def ids(table, *filters):
        return export_table(seeded, {"tableName": table, "filter": list(filters)}, "JSONL").ids()

    items = sorted(seeded.dataset_items, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert ids("dataset_items", f("Status", "stringOptions", "any of", ["ARCHIVED"])) == [
        i["id"] for i in items if i["status"] == "ARCHIVED"
    ]
    assert ids("dataset_items", f("Item ID", "stringOptions", "any of", ["item-01"])) == ["item-01"]
    assert ids("dataset_items", f("metadata", "stringObject", "contains", "QUOTES", key="label")) == [
        i["id"] for i in items if "quotes" in i["metadata"]["label"].lower()
    ]
    run_items = sorted(seeded.dataset_run_items, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert ids("dataset_run_items", f("Dataset", "stringOptions", "any of", ["dataset-a"])) == [
        r["id"] for r in run_items
    ]
    assert ids("dataset_run_items", f("datasetId", "stringOptions", "none of", ["dataset-a"])) == []
    entries = sorted(seeded.audit_logs, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert ids("audit_logs", f("Resource Type", "stringOptions", "any of", ["trace"])) == [
        e["id"] for e in entries if e["resource_type"] == "trace"
    ]
    assert ids("audit_logs", f("createdAt", "datetime", ">=", (BASE_TIME + timedelta(seconds=5)).isoformat())) == [
        e["id"] for e in entries if e["created_at"] >= BASE_TIME + timedelta(seconds=5)
    ]


# --- search -------------------------------------------------------------------------------------------


def test_id_search_matches_ids_and_names_ignoring_case(export_table, seeded):
    result = export_table(seeded, {"tableName": "traces", "searchQuery": "QUOTES"}, "JSONL")
    expected = expected_ids(
        trace_rows(seeded), lambda r: any("quotes" in lower(r[k]) for k in ("id", "name", "userId", "sessionId"))
    )
    assert result.ids() == expected and expected


def test_content_search_matches_input_output_and_metadata(export_table, seeded):
    def jsontext(value):
        return json.dumps(value, ensure_ascii=False).lower()

    query = {"tableName": "traces", "searchQuery": "wildcards %_", "searchType": ["content"]}
    expected = expected_ids(
        trace_rows(seeded), lambda r: any("wildcards %_" in jsontext(r[k]) for k in ("input", "output", "metadata"))
    )
    assert export_table(seeded, query, "CSV").ids() == expected and expected


def test_search_with_like_wildcards_is_literal(export_table, seeded):
    rows = export_table(seeded, {"tableName": "traces", "searchQuery": "%_"}, "JSONL").json_rows()
    # The trace of that name, and the one whose user id it is; `%` and `_` match nothing else.
    assert sorted(r["id"] for r in rows) == ["trace-037", "trace-038"]
    assert all("%_" in r["name"] or "%_" in r["userId"] for r in rows)


# --- ordering -----------------------------------------------------------------------------------------


def test_default_order_breaks_equal_timestamps_by_id(export_table, seeded):
    ids = export_table(seeded, {"tableName": "traces"}, "JSONL").ids()
    assert ids == [t["id"] for t in sorted(seeded.traces, key=lambda t: (t["timestamp"], t["id"]), reverse=True)]


def test_order_by_is_honoured_with_id_as_tie_breaker(export_table, seeded):
    asc = export_table(
        seeded, {"tableName": "traces", "orderBy": {"column": "Timestamp", "order": "ASC"}}, "JSON"
    ).ids()
    assert asc == [t["id"] for t in sorted(seeded.traces, key=lambda t: (t["timestamp"], t["id"]))]
    # Every trace has the same latency: the order is decided by id alone.
    by_latency = export_table(
        seeded, {"tableName": "traces", "orderBy": {"column": "latency", "order": "DESC"}}, "JSON"
    ).ids()
    assert by_latency == sorted((t["id"] for t in seeded.traces), reverse=True)


def test_order_by_a_text_column(export_table, seeded):
    rows = export_table(
        seeded, {"tableName": "scores", "orderBy": {"column": "value", "order": "DESC"}}, "JSON"
    ).json_rows()
    assert [r["value"] for r in rows] == sorted((s["value"] for s in seeded.scores), reverse=True)
    names = export_table(
        seeded, {"tableName": "observations", "orderBy": {"column": "name", "order": "ASC"}}, "JSON"
    ).json_rows()
    assert len(names) == len(seeded.observations)


# --- validation at create time ------------------------------------------------------------------------


def q(**query: Any) -> BatchExportQuery:
    return BatchExportQuery.model_validate({"tableName": "traces", **query})


def invalid(query: BatchExportQuery) -> str:
    with pytest.raises(InvalidExportQuery) as caught:
        validate_query(query)
    assert caught.value.message == str(caught.value)
    return caught.value.message


def test_valid_queries_pass_validation_without_a_database():
    validate_query(q())
    validate_query(
        q(
            filter=[
                f(c[0]["column"], c[0]["type"], c[0]["operator"], c[0].get("value"), c[0].get("key"))
                for c in TRACE_CASES
            ]
        )
    )
    validate_query(
        q(orderBy={"column": "Total Cost ($)", "order": "ASC"}, searchQuery="x", searchType=["id", "content"])
    )


def test_unknown_filter_column_names_the_valid_ones():
    message = invalid(q(filter=[f("password", "string", "=", "x")]))
    assert '"password"' in message and 'id ("ID")' in message and 'latency ("Latency (s)")' in message


def test_column_that_is_exported_but_not_filterable_is_rejected():
    assert "Unknown filter column" in invalid(q(filter=[f("input", "string", "contains", "x")]))


def test_wrong_filter_type_for_the_column():
    message = invalid(q(filter=[f("timestamp", "string", "=", "yesterday")]))
    assert '"timestamp"' in message and "datetime" in message
    assert "number" in invalid(q(filter=[f("latency", "stringOptions", "any of", ["1"])]))


def test_order_by_a_column_that_cannot_be_sorted():
    message = invalid(q(orderBy={"column": "tags", "order": "ASC"}))
    assert "tags" in message and "timestamp" in message
    assert "Sortable columns" in invalid(q(orderBy={"column": "nope", "order": "ASC"}))


def test_object_filters_need_a_key():
    assert "key" in invalid(q(filter=[f("metadata", "stringObject", "=", "x", key="")]))
    assert "key" in invalid(q(filter=[f("metadata", "numberObject", "=", 1, key="  ")]))
    assert "key" in invalid(q(filter=[f("metadata", "categoryOptions", "any of", ["x"])]))
    assert "no key" in invalid(q(filter=[f("name", "categoryOptions", "any of", ["x"], key="k")]))


def test_bad_values_are_rejected():
    assert "finite" in invalid(q(filter=[f("latency", "number", ">", float("nan"))]))
    assert "NUL" in invalid(q(filter=[f("name", "string", "=", "a\x00b")]))
    with pytest.raises(ValidationError):
        q(filter=[f("name", "string", "matches regex", "x")])


def test_user_values_never_become_sql_text():
    hostile = "'; DROP TABLE traces; --"
    compiled = compile_query(
        q(
            filter=[f("name", "string", "contains", hostile), f("metadata", "stringObject", "=", "x", key=hostile)],
            searchQuery=hostile,
        )
    )
    rendered = compiled.where.as_string(None) if hasattr(compiled.where, "as_string") else str(compiled.where)
    assert "DROP TABLE" not in rendered
    assert hostile in compiled.params.values() and hostile.lower() in compiled.params.values()
