"""The exportable tables, defined once: columns, filters, search, order and the SQL they come from.

Everything else derives from these definitions: the CSV header and JSON keys (`ExportTable.keys`),
the filter whitelist (`ExportTable.find_column`), the search, the ordering and the SELECT that
renders each cell (`workers.filters` and `workers.formats`), and docs/COLUMNS.md
(`batch-export docs`), the table of keys and filters users read.

Column SQL is trusted text written here; it refers to the aliases of the table's `source`, in
which `{project_id}` and `{cutoff}` are filled with bound parameters (the export's project and
creation time: rows created later never appear, so a retry sees the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Imported by name: `sql` is also the name of a column's SQL text below.
from psycopg.sql import SQL, Composable

# How a column's value is rendered into a file. Postgres does the rendering (see workers.formats).
Kind = Literal["text", "timestamp", "number", "boolean", "json", "array"]

# Filter types a column may declare (schemas.filters has the operators of each).
FilterType = Literal["string", "stringOptions", "stringObject", "number", "datetime", "arrayOptions", "boolean"]


@dataclass(frozen=True)
class Column:
    key: str
    sql: str
    kind: Kind
    # Set when the column can be filtered: its display name and filter type.
    display: str | None = None
    filter: FilterType | None = None
    # Other ids the frontend uses for the same column (e.g. traces' `traceName` for `name`).
    aliases: tuple[str, ...] = ()
    # False for filter-only columns, which are not written to the file.
    exported: bool = True

    @property
    def expr(self) -> Composable:
        """The column's SQL as one parenthesized expression, ready to compose into a statement."""
        return SQL("({})").format(SQL(self.sql))

    @property
    def sortable(self) -> bool:
        # Orders over JSON documents or arrays mean nothing to a user and cannot use an index.
        return self.kind in ("text", "timestamp", "number", "boolean")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases, *((self.display,) if self.display else ()))


@dataclass(frozen=True)
class ExportTable:
    name: str
    source: str
    columns: tuple[Column, ...]
    time_column: str
    default_order: tuple[str, Literal["ASC", "DESC"]]
    id_search: tuple[str, ...]
    content_search: tuple[str, ...] = ()
    _lookup: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[str, Column] = {}
        for column in self.columns:
            for name in column.names:
                # First definition wins: an output key is never shadowed by another column's alias.
                lookup.setdefault(name, column)
        object.__setattr__(self, "_lookup", lookup)
        assert self.column(self.time_column) and self.column(self.default_order[0]) and self.column("id")

    @property
    def exported_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.exported)

    @property
    def keys(self) -> list[str]:
        """The CSV header and the JSON keys, in file order."""
        return [c.key for c in self.exported_columns]

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def find_column(self, name: str) -> Column | None:
        """A column by its key, an alias, or its display name (what the frontend sends)."""
        return self._lookup.get(name)

    @property
    def filterable_columns(self) -> list[Column]:
        return [c for c in self.columns if c.filter]

    def filter_names(self) -> list[str]:
        """Every accepted filter column, as `id ("Display name")`, for error messages."""
        return [f'{c.key} ("{c.display}")' if c.display else c.key for c in self.filterable_columns]

    def sortable_names(self) -> list[str]:
        return [c.key for c in self.columns if c.sortable]


def _c(
    key: str,
    sql: str,
    kind: Kind = "text",
    display: str | None = None,
    filter: FilterType | None = None,
    aliases: tuple[str, ...] = (),
    exported: bool = True,
) -> Column:
    return Column(key, sql, kind, display, filter, aliases, exported)


# --- shared SQL -----------------------------------------------------------------------------------


def _json_number(doc: str, key: str) -> str:
    # A usage or cost key holding something other than a JSON number is treated as absent, not an error.
    return f"(CASE WHEN jsonb_typeof({doc} -> '{key}') = 'number' THEN ({doc} ->> '{key}')::numeric END)"


def _seconds(start: str, end: str) -> str:
    # trim_scale: 1.25, not extract()'s 1.250000.
    return f"trim_scale(extract(epoch FROM ({end} - {start})))"


_OBS_INPUT_COST = _json_number("o.cost_details", "input")
_OBS_OUTPUT_COST = _json_number("o.cost_details", "output")
_OBS_TOTAL_COST = f"coalesce(o.total_cost, {_json_number('o.cost_details', 'total')})"
_OBS_INPUT_USAGE = _json_number("o.usage_details", "input")
_OBS_OUTPUT_USAGE = _json_number("o.usage_details", "output")
_OBS_TOTAL_USAGE = (
    f"coalesce({_json_number('o.usage_details', 'total')},"
    f" CASE WHEN {_OBS_INPUT_USAGE} IS NOT NULL OR {_OBS_OUTPUT_USAGE} IS NOT NULL"
    f" THEN coalesce({_OBS_INPUT_USAGE}, 0) + coalesce({_OBS_OUTPUT_USAGE}, 0) END)"
)

# Per-trace aggregates of its observations (latency, cost, tokens), shared by traces and sessions.
# One grouped scan of the project's observations joined by hash is far cheaper for an export of
# many traces than a lookup per trace.
_TRACE_OBSERVATION_TOTALS = f"""
    SELECT o.trace_id,
           min(o.start_time) AS first_start,
           max(coalesce(o.end_time, o.start_time)) AS last_end,
           sum({_OBS_INPUT_COST}) AS input_cost,
           sum({_OBS_OUTPUT_COST}) AS output_cost,
           sum({_OBS_TOTAL_COST}) AS total_cost,
           sum({_OBS_INPUT_USAGE}) AS input_tokens,
           sum({_OBS_OUTPUT_USAGE}) AS output_tokens,
           sum({_OBS_TOTAL_USAGE}) AS total_tokens,
           count(*) AS observation_count
    FROM observations o
    WHERE o.project_id = {{project_id}} AND o.created_at <= {{cutoff}} AND o.trace_id IS NOT NULL
    GROUP BY o.trace_id
"""

# --- traces ---------------------------------------------------------------------------------------

TRACES = ExportTable(
    name="traces",
    source=f"""traces t
    LEFT JOIN ({_TRACE_OBSERVATION_TOTALS}) ot ON ot.trace_id = t.id
    WHERE t.project_id = {{project_id}} AND t.created_at <= {{cutoff}}""",
    columns=(
        _c("id", "t.id", display="ID", filter="string"),
        _c("timestamp", "t.timestamp", "timestamp", "Timestamp", "datetime"),
        _c("name", "t.name", display="Name", filter="stringOptions", aliases=("traceName",)),
        _c("userId", "t.user_id", display="User ID", filter="string"),
        _c("sessionId", "t.session_id", display="Session ID", filter="string"),
        _c("release", "t.release", display="Release", filter="string"),
        _c("version", "t.version", display="Version", filter="string"),
        _c("environment", "t.environment", display="Environment", filter="stringOptions"),
        _c("tags", "t.tags", "array", "Tags", "arrayOptions", aliases=("traceTags",)),
        _c("bookmarked", "t.bookmarked", "boolean", "⭐️", "boolean"),
        _c("public", "t.public", "boolean"),
        _c("input", "t.input", "json"),
        _c("output", "t.output", "json"),
        _c("metadata", "t.metadata", "json", "Metadata", "stringObject"),
        _c("latency", _seconds("ot.first_start", "ot.last_end"), "number", "Latency (s)", "number"),
        _c("totalCost", "ot.total_cost", "number", "Total Cost ($)", "number"),
        _c("inputTokens", "ot.input_tokens", "number", "Input Tokens", "number"),
        _c("outputTokens", "ot.output_tokens", "number", "Output Tokens", "number"),
        _c("totalTokens", "ot.total_tokens", "number", "Total Tokens", "number"),
        _c("observationCount", "coalesce(ot.observation_count, 0)", "number"),
    ),
    time_column="timestamp",
    default_order=("timestamp", "DESC"),
    id_search=("id", "name", "userId", "sessionId"),
    content_search=("input", "output", "metadata"),
)

# --- observations and events ----------------------------------------------------------------------

# An observation with its trace's fields; the trace must also predate the export to be joined.
_OBSERVATIONS_SOURCE = """observations o
    LEFT JOIN traces t ON t.project_id = o.project_id AND t.id = o.trace_id AND t.created_at <= {cutoff}
    WHERE o.project_id = {project_id} AND o.created_at <= {cutoff}"""

_O = {
    c.key: c
    for c in (
        _c("id", "o.id", display="ID", filter="stringOptions"),
        _c("traceId", "o.trace_id", display="Trace ID", filter="string"),
        _c("traceName", "t.name", display="Trace Name", filter="stringOptions"),
        _c("type", "o.type", display="Type", filter="stringOptions"),
        _c("name", "o.name", display="Name", filter="stringOptions"),
        _c("startTime", "o.start_time", "timestamp", "Start Time", "datetime"),
        _c("endTime", "o.end_time", "timestamp", "End Time", "datetime"),
        _c("completionStartTime", "o.completion_start_time", "timestamp"),
        _c("projectId", "o.project_id"),
        _c("parentObservationId", "o.parent_observation_id", display="Parent Observation ID", filter="string"),
        _c("environment", "o.environment", display="Environment", filter="stringOptions"),
        _c("level", "o.level", display="Level", filter="stringOptions"),
        _c("statusMessage", "o.status_message", display="Status Message", filter="string"),
        _c("version", "o.version", display="Version", filter="string"),
        _c("createdAt", "o.created_at", "timestamp"),
        _c("updatedAt", "o.updated_at", "timestamp"),
        _c("input", "o.input", "json"),
        _c("output", "o.output", "json"),
        _c("metadata", "o.metadata", "json", "Metadata", "stringObject"),
        _c("model", "o.model", display="Model", filter="stringOptions"),
        _c("internalModelId", "o.internal_model_id"),
        _c("modelParameters", "o.model_parameters", "json"),
        _c("promptId", "o.prompt_id"),
        _c("promptName", "o.prompt_name", display="Prompt Name", filter="stringOptions"),
        _c("promptVersion", "o.prompt_version", "number", "Prompt Version", "number"),
        _c("latency", _seconds("o.start_time", "o.end_time"), "number", "Latency (s)", "number"),
        _c(
            "timeToFirstToken",
            _seconds("o.start_time", "o.completion_start_time"),
            "number",
            "Time To First Token (s)",
            "number",
        ),
        _c("providedUsageDetails", "o.provided_usage_details", "json"),
        _c("usageDetails", "o.usage_details", "json"),
        _c("costDetails", "o.cost_details", "json"),
        _c("providedCostDetails", "o.provided_cost_details", "json"),
        _c("inputCost", _OBS_INPUT_COST, "number", "Input Cost ($)", "number"),
        _c("outputCost", _OBS_OUTPUT_COST, "number", "Output Cost ($)", "number"),
        _c("totalCost", _OBS_TOTAL_COST, "number", "Total Cost ($)", "number"),
        _c("inputUsage", _OBS_INPUT_USAGE, "number", "Input Tokens", "number", aliases=("inputTokens",)),
        _c("outputUsage", _OBS_OUTPUT_USAGE, "number", "Output Tokens", "number", aliases=("outputTokens",)),
        _c("totalUsage", _OBS_TOTAL_USAGE, "number", "Total Tokens", "number", aliases=("totalTokens",)),
        _c("traceTags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("tags",)),
        _c("traceTimestamp", "t.timestamp", "timestamp"),
        _c("userId", "t.user_id", display="User ID", filter="string"),
        _c("sessionId", "t.session_id", display="Session ID", filter="string"),
        _c("release", "t.release", display="Release", filter="string"),
    )
}


def _pick(columns: dict[str, Column], keys: str, **overrides: Column) -> tuple[Column, ...]:
    return tuple(overrides.get(k) or columns[k] for k in keys.split())


OBSERVATIONS = ExportTable(
    name="observations",
    source=_OBSERVATIONS_SOURCE,
    columns=_pick(
        _O,
        "id traceId startTime endTime projectId parentObservationId type environment name level statusMessage"
        " version createdAt updatedAt input output metadata model internalModelId modelParameters"
        " completionStartTime promptId promptName promptVersion latency timeToFirstToken providedUsageDetails"
        " usageDetails costDetails providedCostDetails inputCost outputCost totalCost inputUsage outputUsage"
        " totalUsage traceName traceTags traceTimestamp userId",
    ),
    time_column="startTime",
    default_order=("startTime", "DESC"),
    id_search=("id", "name", "traceId"),
    content_search=("input", "output", "metadata"),
)

EVENTS = ExportTable(
    name="events",
    source=_OBSERVATIONS_SOURCE,
    columns=(
        *_pick(
            _O,
            "id traceId traceName type name startTime endTime completionStartTime environment version userId"
            " sessionId level statusMessage promptName promptId promptVersion model modelParameters usageDetails"
            " costDetails totalCost input output metadata latency timeToFirstToken",
            # Events filter `input` / `output` as text: the JSON document's text.
            input=_c("input", "o.input", "json", "Input", "string"),
            output=_c("output", "o.output", "json", "Output", "string"),
        ),
        _c("tags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("traceTags",)),
        _O["release"],
        _O["parentObservationId"],
        # The observations filters that are not columns of an event row, plus the events' own.
        _c("inputCost", _OBS_INPUT_COST, "number", "Input Cost ($)", "number", exported=False),
        _c("outputCost", _OBS_OUTPUT_COST, "number", "Output Cost ($)", "number", exported=False),
        _c("inputTokens", _OBS_INPUT_USAGE, "number", "Input Tokens", "number", exported=False),
        _c("outputTokens", _OBS_OUTPUT_USAGE, "number", "Output Tokens", "number", exported=False),
        _c("totalTokens", _OBS_TOTAL_USAGE, "number", "Total Tokens", "number", exported=False),
        _c(
            "isRootObservation",
            "(o.parent_observation_id IS NULL)",
            "boolean",
            "Is Root Observation",
            "boolean",
            exported=False,
        ),
    ),
    time_column="startTime",
    default_order=("startTime", "DESC"),
    id_search=("id", "name", "traceId"),
    content_search=("input", "output", "metadata"),
)

# --- scores ---------------------------------------------------------------------------------------

SCORES = ExportTable(
    name="scores",
    source="""scores s
    LEFT JOIN traces t ON t.project_id = s.project_id AND t.id = s.trace_id AND t.created_at <= {cutoff}
    LEFT JOIN users au ON au.id = s.author_user_id
    WHERE s.project_id = {project_id} AND s.created_at <= {cutoff}""",
    columns=(
        _c("id", "s.id"),
        _c("traceId", "s.trace_id", display="Trace ID", filter="string"),
        _c("sessionId", "s.session_id", display="Session ID", filter="string"),
        _c("datasetRunId", "s.dataset_run_id"),
        _c("timestamp", "s.timestamp", "timestamp", "Timestamp", "datetime"),
        _c("source", "s.source", display="Source", filter="stringOptions"),
        _c("name", "s.name", display="Name", filter="stringOptions"),
        _c("dataType", "s.data_type", display="Data Type", filter="stringOptions"),
        _c("value", "s.value", "number", "Value", "number"),
        _c("stringValue", "s.string_value", display="String Value", filter="stringOptions"),
        _c("comment", "s.comment"),
        _c("metadata", "s.metadata", "json", "Metadata", "stringObject"),
        _c("observationId", "s.observation_id", display="Observation ID", filter="string"),
        _c("traceName", "t.name", display="Trace Name", filter="stringOptions"),
        _c("userId", "t.user_id", display="User ID", filter="stringOptions"),
        _c("traceTags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("tags",)),
        _c("environment", "s.environment", display="Environment", filter="stringOptions"),
        _c("authorUserName", "au.name"),
    ),
    time_column="timestamp",
    default_order=("timestamp", "DESC"),
    id_search=("id", "name", "traceId"),
    content_search=("comment", "stringValue", "metadata"),
)

# --- sessions -------------------------------------------------------------------------------------

SESSIONS = ExportTable(
    name="sessions",
    source=f"""(
        SELECT t.session_id AS id,
               array_agg(DISTINCT t.user_id ORDER BY t.user_id) FILTER (WHERE t.user_id IS NOT NULL) AS user_ids,
               count(*) AS count_traces,
               min(t.timestamp) AS created_at,
               greatest(max(t.timestamp), max(ot.last_end)) AS last_end,
               sum(ot.input_cost) AS input_cost,
               sum(ot.output_cost) AS output_cost,
               sum(ot.total_cost) AS total_cost,
               sum(ot.total_tokens) AS total_tokens,
               min(t.environment) AS environment
        FROM traces t
        LEFT JOIN ({_TRACE_OBSERVATION_TOTALS}) ot ON ot.trace_id = t.id
        WHERE t.project_id = {{project_id}} AND t.created_at <= {{cutoff}} AND t.session_id IS NOT NULL
        GROUP BY t.session_id
    ) s
    LEFT JOIN (
        SELECT t.session_id, array_agg(DISTINCT tag ORDER BY tag) AS tags
        FROM traces t CROSS JOIN LATERAL unnest(t.tags) AS tag
        WHERE t.project_id = {{project_id}} AND t.created_at <= {{cutoff}} AND t.session_id IS NOT NULL
        GROUP BY t.session_id
    ) st ON st.session_id = s.id
    LEFT JOIN trace_sessions ts ON ts.project_id = {{project_id}} AND ts.id = s.id AND ts.created_at <= {{cutoff}}
    WHERE true""",
    columns=(
        _c("id", "s.id", display="ID", filter="string"),
        _c("userIds", "coalesce(s.user_ids, '{}')", "array", "User IDs", "arrayOptions"),
        _c("countTraces", "s.count_traces", "number", "Traces Count", "number"),
        _c("sessionDuration", _seconds("s.created_at", "s.last_end"), "number", "Session Duration (s)", "number"),
        _c("inputCost", "s.input_cost", "number", "Input Cost ($)", "number"),
        _c("outputCost", "s.output_cost", "number", "Output Cost ($)", "number"),
        _c("totalCost", "s.total_cost", "number", "Total Cost ($)", "number"),
        _c("totalTokens", "s.total_tokens", "number", "Total Tokens", "number"),
        _c("traceTags", "coalesce(st.tags, '{}')", "array", "Trace Tags", "arrayOptions", aliases=("tags",)),
        _c("environment", "coalesce(ts.environment, s.environment)", display="Environment", filter="stringOptions"),
        _c("createdAt", "s.created_at", "timestamp", "Created At", "datetime"),
        _c("bookmarked", "coalesce(ts.bookmarked, false)", "boolean", "⭐️", "boolean"),
        _c("public", "coalesce(ts.public, false)", "boolean"),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id",),
)

# --- datasets -------------------------------------------------------------------------------------

DATASET_RUN_ITEMS = ExportTable(
    name="dataset_run_items",
    source="""dataset_run_items ri
    LEFT JOIN dataset_runs r ON r.project_id = ri.project_id AND r.id = ri.dataset_run_id
    LEFT JOIN datasets d ON d.project_id = r.project_id AND d.id = r.dataset_id
    WHERE ri.project_id = {project_id} AND ri.created_at <= {cutoff}""",
    columns=(
        _c("id", "ri.id"),
        _c("projectId", "ri.project_id"),
        _c("datasetRunId", "ri.dataset_run_id", display="Dataset Run ID", filter="stringOptions"),
        _c("datasetRunName", "r.name"),
        _c("datasetItemId", "ri.dataset_item_id", display="Dataset Item ID", filter="stringOptions"),
        _c("traceId", "ri.trace_id"),
        _c("observationId", "ri.observation_id"),
        _c("createdAt", "ri.created_at", "timestamp", "Created At", "datetime"),
        _c("updatedAt", "ri.updated_at", "timestamp"),
        _c("datasetName", "d.name"),
        _c("datasetId", "r.dataset_id", display="Dataset", filter="stringOptions", exported=False),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id", "datasetRunId", "datasetItemId", "traceId", "datasetRunName", "datasetName"),
)

DATASET_ITEMS = ExportTable(
    name="dataset_items",
    source="""dataset_items di
    LEFT JOIN datasets d ON d.project_id = di.project_id AND d.id = di.dataset_id
    WHERE di.project_id = {project_id} AND di.created_at <= {cutoff}""",
    columns=(
        _c("id", "di.id", display="Item ID", filter="stringOptions"),
        _c("projectId", "di.project_id"),
        _c("datasetId", "di.dataset_id", display="Dataset ID", filter="stringOptions"),
        _c("sourceTraceId", "di.source_trace_id", display="Source Trace ID", filter="string"),
        _c("sourceObservationId", "di.source_observation_id", display="Source Observation ID", filter="string"),
        _c("status", "di.status", display="Status", filter="stringOptions"),
        _c("createdAt", "di.created_at", "timestamp", "Created At", "datetime"),
        _c("updatedAt", "di.updated_at", "timestamp"),
        _c("input", "di.input", "json"),
        _c("expectedOutput", "di.expected_output", "json"),
        _c("metadata", "di.metadata", "json", "Metadata", "stringObject"),
        _c("datasetName", "d.name"),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id", "datasetId", "datasetName"),
    content_search=("input", "expectedOutput", "metadata"),
)

# --- audit logs -----------------------------------------------------------------------------------

AUDIT_LOGS = ExportTable(
    name="audit_logs",
    source="""audit_logs a
    WHERE a.project_id = {project_id} AND a.created_at <= {cutoff}""",
    columns=(
        _c("id", "a.id"),
        _c("createdAt", "a.created_at", "timestamp", "Created At", "datetime"),
        _c("updatedAt", "a.updated_at", "timestamp"),
        _c("type", "a.type"),
        _c("apiKeyId", "a.api_key_id"),
        _c("userId", "a.user_id", display="User ID", filter="stringOptions"),
        _c("orgId", "a.org_id"),
        _c("userOrgRole", "a.user_org_role"),
        _c("projectId", "a.project_id"),
        _c("userProjectRole", "a.user_project_role"),
        _c("resourceType", "a.resource_type", display="Resource Type", filter="stringOptions"),
        _c("resourceId", "a.resource_id", display="Resource ID", filter="stringOptions"),
        _c("action", "a.action", display="Action", filter="stringOptions"),
        _c("before", "a.before", "json"),
        _c("after", "a.after", "json"),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id", "resourceId", "resourceType", "action"),
    content_search=("before", "after"),
)

TABLES: dict[str, ExportTable] = {
    t.name: t for t in (TRACES, OBSERVATIONS, EVENTS, SCORES, SESSIONS, DATASET_RUN_ITEMS, DATASET_ITEMS, AUDIT_LOGS)
}


def get_table(name: str) -> ExportTable:
    return TABLES[name]
