"""The files: every table in every format parses, carries the awkward values intact, and keeps the documented keys."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from workers.formats import FORMULA_PREFIXES
from workers.tables import TABLES

FORMATS = ("CSV", "JSON", "JSONL")
# The documented keys of every table (docs/COLUMNS.md renders them from workers/tables.py), copied here so a change to the definitions must be deliberate.
DOCUMENTED_KEYS = {
    "traces": "id timestamp name userId sessionId release version environment tags bookmarked public input output"
    " metadata latency totalCost inputTokens outputTokens totalTokens observationCount level errorCount warningCount"
    " defaultCount debugCount inputCost outputCost commentCount comments",
    "observations": "id traceId startTime endTime projectId parentObservationId type environment name level statusMessage"
    " version createdAt updatedAt input output metadata model internalModelId modelParameters completionStartTime"
    " promptId promptName promptVersion latency timeToFirstToken providedUsageDetails usageDetails costDetails"
    " providedCostDetails inputCost outputCost totalCost inputUsage outputUsage totalUsage traceName traceTags"
    " traceTimestamp userId modelId inputPrice outputPrice totalPrice usagePricingTierId usagePricingTierName"
    " tokensPerSecond toolDefinitions toolCalls toolCallNames commentCount comments",
    "events": "id traceId traceName type name startTime endTime completionStartTime environment version userId sessionId"
    " level statusMessage promptName promptId promptVersion model modelParameters usageDetails costDetails totalCost"
    " input output metadata latency timeToFirstToken tags release parentObservationId latencyMs timeToFirstTokenMs"
    " modelId inputPrice outputPrice totalPrice usagePricingTierId usagePricingTierName tokensPerSecond"
    " toolDefinitions toolCalls toolCallNames commentCount comments experimentDatasetId experimentId experimentName"
    " experimentItemId isExperimentItemRootSpan serviceName serviceVersion scopeName scopeVersion"
    " telemetrySdkLanguage telemetrySdkName telemetrySdkVersion",
    "scores": "id traceId sessionId datasetRunId timestamp source name dataType value stringValue comment metadata"
    " observationId traceName userId traceTags environment authorUserName authorUserId booleanValue configId queueId",
    "sessions": "id userIds countTraces sessionDuration inputCost outputCost totalCost totalTokens traceTags environment"
    " createdAt bookmarked public inputTokens outputTokens totalCount commentCount comments",
    "dataset_run_items": "id projectId datasetRunId datasetRunName datasetItemId traceId observationId createdAt updatedAt"
    " datasetName",
    "dataset_items": "id projectId datasetId sourceTraceId sourceObservationId status createdAt updatedAt input"
    " expectedOutput metadata datasetName validFrom",
    "audit_logs": "id createdAt updatedAt type apiKeyId userId orgId userOrgRole projectId userProjectRole resourceType"
    " resourceId action before after",
}


# The seeded project's score names: the tables whose rows carry scores end in one column per name.
SCORE_COLUMNS = ["quality", "relevance"]


def file_keys(table: str) -> list[str]:
    return TABLES[table].keys + (SCORE_COLUMNS if table in ("traces", "observations", "events") else [])


def neutralized(text: str) -> str:
    return "'" + text if text[:1] in FORMULA_PREFIXES else text


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_table_keys_follow_export_columns_doc():
    assert {name: table.keys for name, table in TABLES.items()} == {
        name: keys.split() for name, keys in DOCUMENTED_KEYS.items()
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_exports_a_parseable_file_in_every_format(export_table, seeded, table, fmt):
    result = export_table(seeded, {"tableName": table}, fmt)
    assert result.row["status"] == "COMPLETED", result.row["log"]
    rows = result.csv_rows() if fmt == "CSV" else result.json_rows()
    assert len(rows) == result.row["rows_exported"] == result.row["rows_total"] > 0
    if fmt == "CSV":
        assert result.csv_header() == file_keys(table)
    else:
        assert all(list(row) == file_keys(table) for row in rows)
    assert result.row["object_key"].endswith(f"/my_export.{fmt.lower()}")


def test_csv_round_trips_every_awkward_value_with_formulas_neutralized(export_table, seeded):
    rows = {r["id"]: r for r in export_table(seeded, {"tableName": "traces"}, "CSV").csv_rows()}
    assert len(rows) == len(seeded.traces)
    for trace in seeded.traces:
        row = rows[trace["id"]]
        assert row["name"] == neutralized(trace["name"])
        assert row["userId"] == neutralized(trace["user_id"])
        assert json.loads(row["tags"]) == trace["tags"]
        assert json.loads(row["input"]) == trace["input"]
        assert json.loads(row["output"]) == trace["output"]
        assert json.loads(row["metadata"]) == trace["metadata"]
        assert row["timestamp"] == iso(trace["timestamp"])
        assert row["bookmarked"] == ("true" if trace["bookmarked"] else "false")


def test_csv_neutralizes_each_formula_prefix(export_table, seeded, awkward_values):
    names = {r["name"] for r in export_table(seeded, {"tableName": "traces"}, "CSV").csv_rows()}
    for text in ("=SUM(A1:A9)", "+1+1", "-2+3", "@cmd", "\t=HIDDEN()", "\r=CR()"):
        assert "'" + text in names and text not in names


def test_csv_holds_nested_values_as_compact_single_line_json(export_table, seeded):
    text = export_table(seeded, {"tableName": "dataset_items"}, "CSV").text
    rows = export_table(seeded, {"tableName": "dataset_items"}, "CSV").csv_rows()
    by_id = {item["id"]: item for item in seeded.dataset_items}
    for row in rows:
        assert "\n" not in row["input"] and json.loads(row["input"]) == by_id[row["id"]]["input"]
    assert text.startswith("id,projectId,datasetId,")


@pytest.mark.parametrize("fmt", ["JSON", "JSONL"])
def test_json_round_trips_every_awkward_value(export_table, seeded, fmt):
    rows = {r["id"]: r for r in export_table(seeded, {"tableName": "traces"}, fmt).json_rows()}
    for trace in seeded.traces:
        row = rows[trace["id"]]
        # JSON files hold values as they are: no formula prefix, real types.
        assert row["name"] == trace["name"]
        assert row["userId"] == trace["user_id"]
        assert row["tags"] == trace["tags"]
        assert row["input"] == trace["input"]
        assert row["output"] == trace["output"]
        assert row["metadata"] == trace["metadata"]
        assert row["timestamp"] == iso(trace["timestamp"])
        assert row["bookmarked"] is trace["bookmarked"]
        assert row["latency"] == 2.5  # first observation start → last observation end, in seconds
        assert row["totalCost"] == pytest.approx(int(trace["id"][-3:]) / 1000 + 0.0005)
        assert row["observationCount"] == 2


def test_jsonl_is_one_object_per_line_even_with_newlines_and_backslashes_in_values(export_table, seeded):
    data = export_table(seeded, {"tableName": "observations"}, "JSONL").data
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(seeded.observations)
    parsed = [json.loads(line) for line in lines[:-1]]
    by_id = {o["id"]: o for o in seeded.observations}
    for row in parsed:
        expected = by_id[row["id"]]
        assert row["name"] == expected["name"]
        assert row["input"] == expected["input"]
        assert row["output"] == expected["output"]
        assert row["metadata"] == expected["metadata"]
    assert any(row["name"] == "backslash \\ and \\n literal" for row in parsed)


def test_observation_durations_are_seconds_and_costs_numbers(export_table, seeded):
    rows = {r["id"]: r for r in export_table(seeded, {"tableName": "observations"}, "JSON").json_rows()}
    generation = rows["obs-004-gen"]
    assert generation["latency"] == 1.25
    assert generation["timeToFirstToken"] == 0.25
    assert generation["inputCost"] == 0.004 and generation["outputCost"] == 0.0005
    assert generation["inputUsage"] == 40 and generation["outputUsage"] == 5 and generation["totalUsage"] == 45
    assert generation["usageDetails"] == {"input": 40, "output": 5, "total": 45}
    assert generation["traceTags"] == seeded.traces[4]["tags"]
    assert rows["obs-004-root"]["latency"] == 2.5 and rows["obs-004-root"]["totalCost"] is None


def test_sessions_aggregate_their_traces(export_table, seeded):
    rows = {r["id"]: r for r in export_table(seeded, {"tableName": "sessions"}, "JSON").json_rows()}
    traces = [t for t in seeded.traces if t["session_id"] == "session-1"]
    session = rows["session-1"]
    assert session["countTraces"] == len(traces)
    assert session["userIds"] == sorted({t["user_id"] for t in traces})
    assert session["traceTags"] == sorted({tag for t in traces for tag in t["tags"]})
    assert session["createdAt"] == iso(min(t["timestamp"] for t in traces))
    last_end = max(t["timestamp"] for t in traces).timestamp() + 2.5
    assert session["sessionDuration"] == pytest.approx(last_end - min(t["timestamp"] for t in traces).timestamp())
    assert session["bookmarked"] is True and rows["session-2"]["bookmarked"] is False


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_rows_still_make_a_valid_file(export_table, seeded, fmt):
    query = {"tableName": "traces", "filter": [{"column": "id", "type": "string", "operator": "=", "value": "nope"}]}
    result = export_table(seeded, query, fmt)
    assert result.row["status"] == "COMPLETED" and result.row["rows_exported"] == 0
    if fmt == "CSV":
        # The score columns too: the header is fixed by the names at the snapshot, not by the rows.
        assert result.text == ",".join(file_keys("traces")) + "\r\n"
    elif fmt == "JSON":
        assert json.loads(result.text) == []
    else:
        assert result.text == ""


def test_csv_records_end_in_crlf_and_line_breaks_inside_values_are_kept(export_table, seeded):
    data = export_table(seeded, {"tableName": "traces"}, "CSV").data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert data.count(b"\r\n") >= len(rows)  # every record ends in CRLF (RFC 4180)
    names = {row[2] for row in rows[1:]}
    assert "line1\nline2" in names and "crlf\r\nline" in names
