"""What Langfuse's own frontend and server call each filterable column, written down apart from workers/tables.py.

Read from langfuse/langfuse (`packages/shared/src/tableDefinitions/*`, `observationsTable.ts`,
`eventsTable.ts`, `server/tableMappings/*`): each column's id, display name and filter type, and the
other (name, id) pairs the server maps to the same data. The parity tests send every one of them,
with every operator of its type, and compare the export's rows with `ORACLE_SQL` (an independent
query over the base tables) filtered by `holds` (Langfuse's semantics, written here in Python).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class LangfuseColumn:
    id: str
    name: str
    type: str
    # Other names Langfuse's server maps to the same data: (uiTableName, uiTableId) pairs.
    also: tuple[tuple[str, str], ...] = ()

    @property
    def spellings(self) -> list[str]:
        names = [self.id, self.name]
        for ui_name, ui_id in self.also:
            names += [ui_name, ui_id]
        return list(dict.fromkeys(names))


def _cols(*rows: tuple[Any, ...]) -> list[LangfuseColumn]:
    return [LangfuseColumn(*row) for row in rows]


_OBSERVATION_SCORES = (
    ("scores_avg", "Scores (numeric)", "numberObject"),
    ("score_categories", "Scores (categorical)", "categoryOptions"),
    ("score_booleans", "Scores (boolean)", "booleanObject"),
)
_COMMENTS = (
    ("commentCount", "Comment Count", "number"),
    ("commentContent", "Comment Content", "string"),
)

LANGFUSE_COLUMNS: dict[str, list[LangfuseColumn]] = {
    "traces": _cols(
        ("bookmarked", "⭐️", "boolean"),
        ("id", "ID", "string", (("Trace ID", "traceId"),)),
        ("traceName", "Name", "stringOptions", (("Name", "name"), ("Trace Name", "traceName"))),
        ("environment", "Environment", "stringOptions"),
        ("timestamp", "Timestamp", "datetime"),
        ("userId", "User ID", "string"),
        ("sessionId", "Session ID", "string"),
        ("metadata", "Metadata", "stringObject"),
        ("version", "Version", "string"),
        ("release", "Release", "string"),
        ("level", "Level", "stringOptions"),
        ("traceTags", "Tags", "arrayOptions", (("Tags", "tags"), ("Trace Tags", "traceTags"))),
        ("inputTokens", "Input Tokens", "number"),
        ("outputTokens", "Output Tokens", "number"),
        ("errorCount", "Error Level Count", "number"),
        ("warningCount", "Warning Level Count", "number"),
        ("defaultCount", "Default Level Count", "number"),
        ("debugCount", "Debug Level Count", "number"),
        ("totalTokens", "Total Tokens", "number"),
        ("tokens", "Tokens", "number"),
        ("scores_avg", "Scores (numeric)", "numberObject", (("Scores", "scores"),)),
        ("score_categories", "Scores (categorical)", "categoryOptions"),
        ("score_booleans", "Scores (boolean)", "booleanObject"),
        ("latency", "Latency (s)", "number"),
        ("inputCost", "Input Cost ($)", "number"),
        ("outputCost", "Output Cost ($)", "number"),
        ("totalCost", "Total Cost ($)", "number"),
        *_COMMENTS,
        ("evaluatorId", "Evaluator ID", "string"),
    ),
    "observations": _cols(
        ("id", "ID", "stringOptions"),
        ("name", "Name", "stringOptions"),
        ("type", "type", "stringOptions"),
        ("traceId", "Trace ID", "string"),
        ("parentObservationId", "Parent Observation ID", "string"),
        ("traceName", "Trace Name", "stringOptions"),
        ("userId", "User ID", "string"),
        ("environment", "Environment", "stringOptions"),
        ("startTime", "Start Time", "datetime"),
        ("endTime", "End Time", "datetime"),
        ("timeToFirstToken", "Time To First Token (s)", "number"),
        ("latency", "Latency (s)", "number"),
        ("tokensPerSecond", "Tokens per second", "number"),
        ("inputCost", "Input Cost ($)", "number"),
        ("outputCost", "Output Cost ($)", "number"),
        ("totalCost", "Total Cost ($)", "number"),
        ("level", "Level", "stringOptions"),
        ("statusMessage", "Status Message", "string"),
        ("model", "Model", "stringOptions", (("Provided Model Name", "providedModelName"),)),
        ("modelId", "Model ID", "stringOptions"),
        ("inputTokens", "Input Tokens", "number"),
        ("outputTokens", "Output Tokens", "number"),
        ("totalTokens", "Total Tokens", "number"),
        ("tokens", "Tokens", "number"),
        ("metadata", "Metadata", "stringObject"),
        *_OBSERVATION_SCORES,
        ("version", "Version", "string"),
        ("promptName", "Prompt Name", "stringOptions"),
        ("promptVersion", "Prompt Version", "number"),
        ("tags", "Trace Tags", "arrayOptions"),
        *_COMMENTS,
        ("toolNames", "Available Tool Names", "arrayOptions"),
        ("calledToolNames", "Called Tool Names", "arrayOptions"),
        ("toolDefinitions", "Available Tools", "number"),
        ("toolCalls", "Tool Calls", "number"),
    ),
    "events": _cols(
        ("id", "ID", "stringOptions"),
        ("traceId", "Trace ID", "string"),
        ("startTime", "Start Time", "datetime"),
        ("endTime", "End Time", "datetime"),
        ("name", "Name", "stringOptions"),
        ("type", "Type", "stringOptions"),
        ("environment", "Environment", "stringOptions"),
        ("version", "Version", "string"),
        ("userId", "User ID", "string"),
        ("sessionId", "Session ID", "string"),
        ("traceName", "Trace Name", "stringOptions"),
        ("level", "Level", "stringOptions"),
        ("statusMessage", "Status Message", "string"),
        ("promptName", "Prompt Name", "stringOptions"),
        ("promptVersion", "Prompt Version", "number"),
        ("modelId", "Model ID", "stringOptions"),
        ("providedModelName", "Provided Model Name", "stringOptions"),
        ("totalCost", "Cost ($)", "number", (("Total Cost ($)", "totalCost"),)),
        ("inputTokens", "Input Tokens", "number"),
        ("outputTokens", "Output Tokens", "number"),
        ("totalTokens", "Total Tokens", "number"),
        ("inputCost", "Input Cost ($)", "number"),
        ("outputCost", "Output Cost ($)", "number"),
        ("latency", "Latency (s)", "number"),
        ("timeToFirstToken", "Time To First Token (s)", "number"),
        ("tokensPerSecond", "Tokens per second", "number"),
        ("input", "Input", "string"),
        ("output", "Output", "string"),
        ("metadata", "Metadata", "stringObject"),
        ("traceTags", "Trace Tags", "arrayOptions"),
        *_OBSERVATION_SCORES,
        ("trace_scores_avg", "Trace Scores (numeric)", "numberObject"),
        ("trace_score_categories", "Trace Scores (categorical)", "categoryOptions"),
        ("trace_score_booleans", "Trace Scores (boolean)", "booleanObject"),
        *_COMMENTS,
        ("positionInTrace", "Position in Trace", "positionInTrace"),
        ("hasParentObservation", "Has Parent Observation", "boolean"),
        ("isRootObservation", "Is Root Observation", "boolean"),
        ("hasInput", "Has Input", "boolean"),
        ("hasOutput", "Has Output", "boolean"),
        ("experimentDatasetId", "Experiment Dataset ID", "stringOptions"),
        ("experimentId", "Experiment ID", "stringOptions"),
        ("experimentName", "Experiment Name", "stringOptions"),
        ("toolNames", "Available Tool Names", "arrayOptions"),
        ("calledToolNames", "Called Tool Names", "arrayOptions"),
        ("toolDefinitions", "Available Tools", "number"),
        ("toolCalls", "Tool Calls", "number"),
        ("isExperimentItemRootSpan", "Is Experiment Item Root Span", "boolean"),
        ("serviceVersion", "Service Version", "string"),
        ("scopeName", "Scope Name", "string"),
        ("scopeVersion", "Scope Version", "string"),
        ("telemetrySdkLanguage", "Telemetry SDK Language", "string"),
        ("telemetrySdkName", "Telemetry SDK Name", "string"),
        ("telemetrySdkVersion", "Telemetry SDK Version", "string"),
    ),
    "scores": _cols(
        ("id", "ID", "string"),
        ("timestamp", "Timestamp", "datetime"),
        ("environment", "Environment", "stringOptions"),
        ("traceId", "Trace ID", "string"),
        ("observationId", "Observation ID", "string"),
        ("sessionId", "Session ID", "string"),
        ("name", "Name", "stringOptions"),
        ("value", "Value", "number"),
        ("source", "Source", "stringOptions"),
        ("comment", "Comment", "string"),
        ("authorUserId", "Author User ID", "string"),
        ("dataType", "Data Type", "stringOptions"),
        ("stringValue", "String Value", "stringOptions"),
        ("booleanValue", "Boolean Value", "stringOptions"),
        ("metadata", "Metadata", "stringObject"),
        ("traceName", "Trace Name", "stringOptions"),
        ("userId", "User ID", "stringOptions"),
        ("trace_tags", "Trace Tags", "arrayOptions", (("Trace Tags", "tags"),)),
    ),
    "sessions": _cols(
        ("bookmarked", "⭐️", "boolean"),
        ("id", "ID", "string"),
        ("userIds", "User IDs", "arrayOptions"),
        ("environment", "Environment", "stringOptions"),
        ("sessionDuration", "Session Duration (s)", "number", (("Session Duration", "sessionDuration"),)),
        ("createdAt", "Created At", "datetime"),
        ("countTraces", "Traces Count", "number", (("Count Traces", "countTraces"), ("Traces Count", "tracesCount"))),
        ("inputCost", "Input Cost ($)", "number", (("Session Input Cost", "inputCost"),)),
        ("outputCost", "Output Cost ($)", "number", (("Session Output Cost", "outputCost"),)),
        ("totalCost", "Total Cost ($)", "number", (("Session Total Cost", "totalCost"),)),
        ("inputTokens", "Input Tokens", "number"),
        ("outputTokens", "Output Tokens", "number"),
        ("totalTokens", "Total Tokens", "number", (("Usage", "totalTokens"),)),
        ("usage", "Usage", "number", (("Session Total Usage", "usage"),)),
        ("traceTags", "Trace Tags", "arrayOptions"),
        *_OBSERVATION_SCORES,
        *_COMMENTS,
    ),
    "dataset_run_items": _cols(
        ("datasetRunId", "Dataset Run ID", "stringOptions"),
        ("createdAt", "Created At", "datetime"),
        ("eventTs", "Event Timestamp", "datetime"),
        ("datasetItemId", "Dataset Item ID", "stringOptions"),
        ("datasetId", "Dataset", "stringOptions"),
        ("agg_scores_avg", "Scores (numeric)", "numberObject"),
        ("agg_score_categories", "Scores (categorical)", "categoryOptions"),
        ("agg_score_booleans", "Scores (boolean)", "booleanObject"),
    ),
    "dataset_items": _cols(
        ("id", "ID", "stringOptions"),
        ("datasetName", "Dataset Name", "stringOptions"),
        ("status", "Status", "stringOptions"),
        ("sourceTraceId", "Source Trace ID", "string"),
        ("sourceObservationId", "Source Observation ID", "string"),
        ("createdAt", "Created At", "datetime"),
        ("updatedAt", "Updated At", "datetime"),
        ("metadata", "Metadata", "stringObject"),
        ("validFrom", "Valid From", "datetime"),
    ),
    # Langfuse's audit log table has no filters; ours are our own (EXPORT_COLUMNS.md).
    "audit_logs": _cols(
        ("createdAt", "Created At", "datetime"),
        ("userId", "User ID", "stringOptions"),
        ("resourceType", "Resource Type", "stringOptions"),
        ("resourceId", "Resource ID", "stringOptions"),
        ("action", "Action", "stringOptions"),
    ),
}

# Langfuse's sortable columns per table (its tables' `enableSorting` columns and orderBy mappings).
LANGFUSE_SORT_COLUMNS: dict[str, list[str]] = {
    "traces": [
        "timestamp",
        "name",
        "userId",
        "sessionId",
        "latency",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "tokens",
        "inputCost",
        "outputCost",
        "totalCost",
        "level",
        "release",
        "version",
        "environment",
        "bookmarked",
        "id",
    ],
    "observations": [
        "startTime",
        "endTime",
        "name",
        "type",
        "level",
        "latency",
        "timeToFirstToken",
        "tokensPerSecond",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "tokens",
        "inputCost",
        "outputCost",
        "totalCost",
        "model",
        "modelId",
        "promptName",
        "traceName",
        "toolDefinitions",
        "toolCalls",
        "id",
    ],
    "events": [
        "startTime",
        "endTime",
        "name",
        "type",
        "level",
        "latency",
        "timeToFirstToken",
        "tokensPerSecond",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "inputCost",
        "outputCost",
        "totalCost",
        "providedModelName",
        "modelId",
        "traceName",
        "toolDefinitions",
        "toolCalls",
        "id",
    ],
    "scores": ["timestamp", "name", "value", "source", "dataType", "traceName", "userId", "id"],
    "sessions": [
        "createdAt",
        "id",
        "countTraces",
        "sessionDuration",
        "inputCost",
        "outputCost",
        "totalCost",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "usage",
        "bookmarked",
    ],
    "dataset_run_items": ["createdAt", "id"],
    "dataset_items": ["createdAt", "id", "status"],
    "audit_logs": ["createdAt", "id"],
}

# --- the rows, computed independently ------------------------------------------------------------

_LEVEL = """CASE WHEN bool_or(x.level = 'ERROR') THEN 'ERROR' WHEN bool_or(x.level = 'WARNING') THEN 'WARNING'
    WHEN bool_or(x.level = 'DEFAULT') THEN 'DEFAULT' WHEN bool_or(x.level = 'DEBUG') THEN 'DEBUG' END"""


def _num(doc: str, key: str) -> str:
    return f"CASE WHEN jsonb_typeof({doc} -> '{key}') = 'number' THEN ({doc} ->> '{key}')::numeric END"


def _scores_of(where: str) -> str:
    return f"""(SELECT coalesce(jsonb_agg(jsonb_build_object('name', sx.name, 'dataType', sx.data_type, 'value', sx.value,
                                                       'stringValue', sx.string_value)), '[]')
             FROM scores sx WHERE sx.project_id = %(project_id)s AND {where})"""


def _comments_of(object_type: str, object_id: str) -> str:
    return f"""(SELECT coalesce(jsonb_agg(cx.content), '[]') FROM comments cx
             WHERE cx.project_id = %(project_id)s AND cx.object_type = '{object_type}' AND cx.object_id = {object_id})"""


_OBSERVATION_ROW = f"""
    o.id, o.name, o.type, o.trace_id AS "traceId", o.parent_observation_id AS "parentObservationId",
    t.name AS "traceName", t.user_id AS "userId", t.session_id AS "sessionId", o.environment,
    o.start_time AS "startTime", o.end_time AS "endTime",
    extract(epoch FROM o.completion_start_time - o.start_time)::float8 AS "timeToFirstToken",
    extract(epoch FROM o.end_time - o.start_time)::float8 AS latency,
    ({_num("o.usage_details", "output")}) / nullif(extract(epoch FROM o.end_time - o.start_time), 0) AS "tokensPerSecond",
    {_num("o.cost_details", "input")} AS "inputCost", {_num("o.cost_details", "output")} AS "outputCost",
    coalesce(o.total_cost, {_num("o.cost_details", "total")}) AS "totalCost",
    o.level, o.status_message AS "statusMessage", o.model, o.model AS "providedModelName",
    o.internal_model_id AS "modelId",
    {_num("o.usage_details", "input")} AS "inputTokens", {_num("o.usage_details", "output")} AS "outputTokens",
    coalesce({_num("o.usage_details", "total")},
             CASE WHEN o.usage_details ?| ARRAY['input', 'output']
                  THEN coalesce({_num("o.usage_details", "input")}, 0) + coalesce({_num("o.usage_details", "output")}, 0)
             END) AS "totalTokens",
    o.metadata, o.version, o.prompt_name AS "promptName", o.prompt_version AS "promptVersion",
    t.tags AS "traceTags", o.input #>> '{{}}' AS input, o.output #>> '{{}}' AS output,
    o.input AS input_json, o.output AS output_json,
    {_scores_of("sx.observation_id = o.id")} AS scores,
    {_scores_of("sx.trace_id = o.trace_id AND sx.observation_id IS NULL")} AS trace_scores,
    {_comments_of("OBSERVATION", "o.id")} AS comments,
    ARRAY(SELECT jsonb_object_keys(o.tool_definitions) ORDER BY 1) AS "toolNames",
    ARRAY(SELECT c ->> 'name' FROM jsonb_array_elements(o.tool_calls) c) AS "calledToolNames",
    (SELECT count(*) FROM jsonb_object_keys(o.tool_definitions)) AS "toolDefinitions",
    jsonb_array_length(o.tool_calls) AS "toolCalls",
    (SELECT array_agg(p.id ORDER BY p.start_time, p.id) FROM observations p
      WHERE p.project_id = o.project_id AND p.trace_id = o.trace_id) AS trace_order,
    o.experiment_dataset_id AS "experimentDatasetId", o.experiment_id AS "experimentId",
    o.experiment_name AS "experimentName", o.experiment_item_root_span_id AS root_span,
    o.service_version AS "serviceVersion", o.scope_name AS "scopeName", o.scope_version AS "scopeVersion",
    o.telemetry_sdk_language AS "telemetrySdkLanguage", o.telemetry_sdk_name AS "telemetrySdkName",
    o.telemetry_sdk_version AS "telemetrySdkVersion"
FROM observations o
LEFT JOIN traces t ON t.project_id = o.project_id AND t.id = o.trace_id
WHERE o.project_id = %(project_id)s"""

ORACLE_SQL: dict[str, str] = {
    "traces": f"""
SELECT t.id, t.name, t.environment, t.timestamp, t.user_id AS "userId", t.session_id AS "sessionId", t.metadata,
       t.version, t.release, t.tags, t.bookmarked, x.*,
       {_scores_of("sx.trace_id = t.id AND sx.observation_id IS NULL")} AS scores,
       {_comments_of("TRACE", "t.id")} AS comments
FROM traces t
CROSS JOIN LATERAL (
    SELECT {_LEVEL} AS level,
           count(*) FILTER (WHERE x.level = 'ERROR') AS "errorCount",
           count(*) FILTER (WHERE x.level = 'WARNING') AS "warningCount",
           count(*) FILTER (WHERE x.level = 'DEFAULT') AS "defaultCount",
           count(*) FILTER (WHERE x.level = 'DEBUG') AS "debugCount",
           sum({_num("x.usage_details", "input")}) AS "inputTokens",
           sum({_num("x.usage_details", "output")}) AS "outputTokens",
           sum(coalesce({_num("x.usage_details", "total")},
                        CASE WHEN x.usage_details ?| ARRAY['input', 'output']
                             THEN coalesce({_num("x.usage_details", "input")}, 0)
                                  + coalesce({_num("x.usage_details", "output")}, 0) END)) AS "totalTokens",
           extract(epoch FROM max(coalesce(x.end_time, x.start_time)) - min(x.start_time))::float8 AS latency,
           sum({_num("x.cost_details", "input")}) AS "inputCost",
           sum({_num("x.cost_details", "output")}) AS "outputCost",
           sum(coalesce(x.total_cost, {_num("x.cost_details", "total")})) AS "totalCost"
    FROM observations x WHERE x.project_id = t.project_id AND x.trace_id = t.id
) x
WHERE t.project_id = %(project_id)s""",
    "observations": f"SELECT {_OBSERVATION_ROW}",
    "events": f"SELECT {_OBSERVATION_ROW}",
    "scores": """
SELECT s.id, s.timestamp, s.environment, s.trace_id AS "traceId", s.observation_id AS "observationId",
       s.session_id AS "sessionId", s.name, s.value, s.source, s.comment, s.author_user_id AS "authorUserId",
       s.data_type AS "dataType", s.string_value AS "stringValue",
       CASE WHEN s.data_type = 'BOOLEAN' AND s.string_value <> '' THEN lower(s.string_value) END AS "booleanValue",
       s.metadata,
       t.name AS "traceName", t.user_id AS "userId", t.tags AS trace_tags
FROM scores s LEFT JOIN traces t ON t.project_id = s.project_id AND t.id = s.trace_id
WHERE s.project_id = %(project_id)s""",
    "sessions": f"""
SELECT t.session_id AS id,
       coalesce(array_agg(DISTINCT t.user_id) FILTER (WHERE t.user_id IS NOT NULL), '{{}}') AS "userIds",
       coalesce(min(ts.environment), min(t.environment)) AS environment, min(t.timestamp) AS "createdAt",
       count(*) AS "countTraces", coalesce(bool_or(ts.bookmarked), false) AS bookmarked,
       sum(x.input_cost) AS "inputCost", sum(x.output_cost) AS "outputCost", sum(x.total_cost) AS "totalCost",
       sum(x.input_tokens) AS "inputTokens", sum(x.output_tokens) AS "outputTokens",
       sum(x.total_tokens) AS "totalTokens", sum(x.total_tokens) AS usage,
       extract(epoch FROM greatest(max(t.timestamp), max(x.last_end)) - min(t.timestamp))::float8 AS "sessionDuration",
       coalesce((SELECT array_agg(DISTINCT tag) FROM traces t2, unnest(t2.tags) tag
                 WHERE t2.project_id = %(project_id)s AND t2.session_id = t.session_id), '{{}}') AS "traceTags",
       {_scores_of("sx.session_id = t.session_id")} AS scores,
       {_comments_of("SESSION", "t.session_id")} AS comments
FROM traces t
LEFT JOIN trace_sessions ts ON ts.project_id = t.project_id AND ts.id = t.session_id
CROSS JOIN LATERAL (
    SELECT sum({_num("o.cost_details", "input")}) AS input_cost, sum({_num("o.cost_details", "output")}) AS output_cost,
           sum(coalesce(o.total_cost, {_num("o.cost_details", "total")})) AS total_cost,
           sum({_num("o.usage_details", "input")}) AS input_tokens,
           sum({_num("o.usage_details", "output")}) AS output_tokens,
           sum(coalesce({_num("o.usage_details", "total")},
                        CASE WHEN o.usage_details ?| ARRAY['input', 'output']
                             THEN coalesce({_num("o.usage_details", "input")}, 0)
                                  + coalesce({_num("o.usage_details", "output")}, 0) END)) AS total_tokens,
           max(coalesce(o.end_time, o.start_time)) AS last_end
    FROM observations o WHERE o.project_id = t.project_id AND o.trace_id = t.id
) x
WHERE t.project_id = %(project_id)s AND t.session_id IS NOT NULL
GROUP BY t.session_id""",
    "dataset_run_items": f"""
SELECT ri.id, ri.dataset_run_id AS "datasetRunId", ri.created_at AS "createdAt", t.timestamp AS "eventTs",
       ri.dataset_item_id AS "datasetItemId", r.dataset_id AS "datasetId",
       {_scores_of("sx.trace_id = ri.trace_id AND sx.observation_id IS NULL")} AS scores
FROM dataset_run_items ri
JOIN dataset_runs r ON r.project_id = ri.project_id AND r.id = ri.dataset_run_id
LEFT JOIN traces t ON t.project_id = ri.project_id AND t.id = ri.trace_id
WHERE ri.project_id = %(project_id)s""",
    "dataset_items": """
SELECT di.id, d.name AS "datasetName", di.status, di.source_trace_id AS "sourceTraceId",
       di.source_observation_id AS "sourceObservationId", di.created_at AS "createdAt", di.updated_at AS "updatedAt",
       di.metadata, di.valid_from AS "validFrom"
FROM dataset_items di JOIN datasets d ON d.project_id = di.project_id AND d.id = di.dataset_id
WHERE di.project_id = %(project_id)s""",
    "audit_logs": """
SELECT a.id, a.created_at AS "createdAt", a.user_id AS "userId", a.resource_type AS "resourceType",
       a.resource_id AS "resourceId", a.action
FROM audit_logs a WHERE a.project_id = %(project_id)s""",
}


def value_of(table: str, column: LangfuseColumn, row: dict[str, Any]) -> Any:
    """The value Langfuse's filter on `column` tests, from an oracle row."""
    cid = column.id
    if cid in ("scores_avg", "agg_scores_avg", "trace_scores_avg"):
        return score_averages(row["trace_scores" if cid.startswith("trace_") else "scores"])
    if cid in ("score_categories", "agg_score_categories", "trace_score_categories"):
        return score_categories(row["trace_scores" if cid.startswith("trace_") else "scores"])
    if cid in ("score_booleans", "agg_score_booleans", "trace_score_booleans"):
        return score_booleans(row["trace_scores" if cid.startswith("trace_") else "scores"])
    if cid == "commentCount":
        return len(row["comments"])
    if cid == "commentContent":
        return row["comments"] or None
    if cid == "evaluatorId":
        metadata = row["metadata"]
        value = metadata.get("evaluator_id") if isinstance(metadata, dict) else None
        return value if value is None or isinstance(value, str) else str(value)
    if cid == "tokens":
        return row["totalTokens"]
    if cid == "traceName" and table == "traces":
        return row["name"]
    if cid == "traceTags" and table == "traces":
        return row["tags"]
    if cid == "tags" and table in ("observations",):
        return row["traceTags"]
    if cid == "positionInTrace":
        order = row["trace_order"] or []
        at = order.index(row["id"])
        return (row["parentObservationId"] is None, at + 1, len(order) - at)
    if cid in ("hasParentObservation", "isRootObservation"):
        has_parent = row["parentObservationId"] is not None
        return has_parent if cid == "hasParentObservation" else not has_parent
    if cid in ("hasInput", "hasOutput"):
        value = row["input_json" if cid == "hasInput" else "output_json"]
        return value is not None and value != ""
    if cid == "isExperimentItemRootSpan":
        return row["root_span"] == row["id"]
    return row[cid]


def score_averages(scores: list[dict[str, Any]]) -> dict[str, list[float]] | None:
    """Langfuse's scores_avg: an average per (name, data type, value label) of numeric and boolean scores.

    None (as the score columns are null) when the row has no score of the kind.
    """
    groups: dict[tuple[str, str, str], list[float]] = {}
    for s in scores:
        if s["dataType"] in ("NUMERIC", "BOOLEAN") and s["value"] is not None:
            groups.setdefault((s["name"], s["dataType"], s["stringValue"] or ""), []).append(s["value"])
    averages: dict[str, list[float]] = {}
    for (name, _, _), values in groups.items():
        averages.setdefault(name, []).append(sum(values) / len(values))
    return averages or None


def score_categories(scores: list[dict[str, Any]]) -> set[str] | None:
    found = {f"{s['name']}:{s['stringValue']}" for s in scores if s["dataType"] == "CATEGORICAL" and s["stringValue"]}
    return found or None


def score_booleans(scores: list[dict[str, Any]]) -> set[str] | None:
    found = {
        f"{s['name']}:{s['stringValue'].lower()}" for s in scores if s["dataType"] == "BOOLEAN" and s["stringValue"]
    }
    return found or None


# --- Langfuse's semantics ------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """What a text operator reads of a value: strings as they are, anything else as its text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _string_holds(operator: str, value: Any, wanted: str) -> bool:
    text = _text(value)
    if operator == "is not empty":
        return text not in (None, "")
    if operator == "matches":
        words = set(re.split(r"[ \t\n\r\f\v]+", (text or "").lower())) - {""}
        return set(re.split(r"[ \t\n\r\f\v]+", wanted.lower())) - {""} <= words
    if operator == "does not contain":
        # We differ from Langfuse on case (ours ignores it) and keep rows without a value.
        return text is None or wanted.lower() not in text.lower()
    if text is None:
        return False
    if operator == "=":
        return text == wanted
    if operator == "contains":
        return wanted.lower() in text.lower()
    if operator == "starts with":
        return text.lower().startswith(wanted.lower())
    if operator == "ends with":
        return text.lower().endswith(wanted.lower())
    raise AssertionError(operator)


def _compare(operator: str, value: Any, wanted: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, datetime) or isinstance(wanted, datetime):
        left, right = value, wanted
    else:
        left, right = float(value), float(wanted)
    return {
        "=": left == right,
        ">": left > right,
        "<": left < right,
        ">=": left >= right,
        "<=": left <= right,
    }[operator]


def holds(filter_: dict[str, Any], column: LangfuseColumn, value: Any) -> bool:
    """Whether a row whose `column` holds `value` passes `filter_`, as Langfuse's filters decide."""
    kind, operator, wanted, key = filter_["type"], filter_["operator"], filter_.get("value"), filter_.get("key")
    if kind == "null":
        return (value is None) if operator == "is null" else value is not None
    if kind == "string" and isinstance(value, list):
        # A text test on a list (a row's comments): one element passing is enough; none may contain.
        if operator == "does not contain":
            return not any(_string_holds("contains", v, wanted) for v in value)
        return any(_string_holds(operator, v, wanted) for v in value)
    if kind == "string":
        return _string_holds(operator, value, wanted)
    if kind == "stringOptions" and (column.type in ("arrayOptions", "categoryOptions") or isinstance(value, list)):
        present = set(value or ())
        return bool(present & set(wanted)) if operator == "any of" else not present & set(wanted)
    if kind == "stringOptions":
        text = _text(value)
        return text in wanted if operator == "any of" else text is None or text not in wanted
    if kind == "arrayOptions":
        present = set(value or ())
        if operator == "any of":
            return bool(present & set(wanted))
        if operator == "all of":
            return set(wanted) <= present
        return not present & set(wanted)
    if kind in ("number", "datetime"):
        if isinstance(wanted, str):
            wanted = datetime.fromisoformat(wanted)
        return _compare(operator, value, wanted)
    if kind == "boolean":
        return (value is wanted) if operator == "=" else value is not wanted
    if kind == "stringObject":
        present = isinstance(value, dict) and key in value
        if operator == "is set":
            return present
        if operator == "is not set":
            return not present
        if not present:
            return False  # Langfuse: the key must exist, `does not contain` included
        inner = value[key]
        if inner is not None and not isinstance(inner, str):
            inner = _json_text(inner)
        return _string_holds(operator, inner, wanted)
    if kind == "numberObject" and column.type == "numberObject":
        return any(_compare(operator, v, wanted) for v in (value or {}).get(key, []))
    if kind == "numberObject":
        inner = value.get(key) if isinstance(value, dict) else None
        number = inner if isinstance(inner, (int, float)) and not isinstance(inner, bool) else None
        return number is not None and math.isfinite(number) and _compare(operator, number, wanted)
    if kind == "categoryOptions":
        entries = {f"{key}:{v}" for v in wanted}
        hit = bool(set(value or ()) & entries)
        return hit if operator == "any of" else not hit
    if kind == "booleanObject":
        hit = f"{key}:{'true' if wanted else 'false'}" in (value or set())
        return hit if operator == "=" else not hit
    if kind == "positionInTrace":
        is_root, from_start, from_end = value
        return {
            "root": is_root,
            "first": from_start == 1,
            "last": from_end == 1,
            "nthFromStart": from_start == wanted,
            "nthFromEnd": from_end == wanted,
        }[key]
    raise AssertionError(kind)


def _json_text(value: Any) -> str:
    import json

    # Postgres's jsonb text: ", " and ": " between items.
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
