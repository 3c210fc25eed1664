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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

# Imported by name: `sql` is also the name of a column's SQL text below.
from psycopg.sql import SQL, Composable, Placeholder

# How a column's value is rendered into a file. Postgres does the rendering (see workers.formats).
# `integer` and `number` read the same in text files; Parquet stores them as int64 and float64.
Kind = Literal["text", "timestamp", "integer", "number", "boolean", "json", "array"]

# Each kind's column type in Parquet files (workers.parquet builds the Arrow schema from these).
# JSON values are their jsonb text in the Arrow JSON extension type; a fractional count (a token
# count a client sent as 1.5) is rounded to the nearest whole number there.
PARQUET_TYPES: dict[Kind, str] = {
    "text": "string",
    "timestamp": "timestamp[us, UTC]",
    "integer": "int64",
    "number": "float64",
    "boolean": "bool",
    "json": "string (JSON)",
    "array": "list<string>",
}

# The files' timestamp format, as SQL around one expression: ISO 8601 UTC with microseconds and "Z".
ISO_UTC = "to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

# Filter types a column may declare (schemas.filters has the operators of each).
FilterType = Literal[
    "string",
    "stringOptions",
    "stringObject",
    "number",
    "datetime",
    "arrayOptions",
    "boolean",
    "numberObject",
    "categoryOptions",
    "booleanObject",
    "positionInTrace",
    "null",
]


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
        """The column's SQL as one parenthesized expression, ready to compose into a statement.

        SQL that names `{project_id}` or `{cutoff}` (a correlated subquery) gets the export's bound
        parameters there, as the table's source does; its other braces must then be doubled.
        """
        if "{project_id}" in self.sql or "{cutoff}" in self.sql:
            bound = SQL(self.sql).format(project_id=Placeholder("project_id"), cutoff=Placeholder("cutoff"))
            return SQL("({})").format(bound)
        return SQL("({})").format(SQL(self.sql))

    @property
    def sortable(self) -> bool:
        # Orders over JSON documents or arrays mean nothing to a user and cannot use an index.
        return self.kind in ("text", "timestamp", "integer", "number", "boolean")

    @property
    def parquet_type(self) -> str:
        return PARQUET_TYPES[self.kind]

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
    # The source's alias of the per-row score aggregate (see _score_aggregates) when the rows carry
    # one column per score name, as Langfuse's trace, observation and event exports do.
    score_alias: str | None = None
    # The base row's ingestion time in the source's SQL: scheduled exports take the rows of one window
    # of it at a time. None: the table is not exported on a schedule (sessions: aggregates that change
    # as their traces arrive, so no window of them is ever final).
    ingested_at: str | None = None
    # The keys of the columns the user chose, in file order; None for every exported column.
    chosen: tuple[str, ...] | None = None
    _lookup: dict[str, Column] = field(init=False, repr=False, compare=False)
    _export_lookup: dict[str, Column] = field(init=False, repr=False, compare=False)
    _filter_lookup: dict[str, Column] = field(init=False, repr=False, compare=False)
    _sort_lookup: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def lookup(columns: list[Column]) -> dict[str, Column]:
            found: dict[str, Column] = {}
            for column in columns:
                for name in column.names:
                    # First definition wins: an output key is never shadowed by another column's alias.
                    found.setdefault(name, column)
            return found

        # A name may mean one column in the file and another in a filter: Langfuse's `toolCalls` filter
        # counts the calls that the `toolCalls` column lists. Filters and orders look among their own first.
        object.__setattr__(self, "_lookup", lookup(list(self.columns)))
        object.__setattr__(self, "_export_lookup", lookup([c for c in self.columns if c.exported]))
        object.__setattr__(self, "_filter_lookup", lookup([c for c in self.columns if c.filter]))
        sortable = [c for c in self.columns if c.sortable]
        object.__setattr__(self, "_sort_lookup", lookup(sortable + [c for c in self.columns if not c.sortable]))
        assert self.column(self.time_column) and self.column(self.default_order[0]) and self.column("id")

    @property
    def exported_columns(self) -> tuple[Column, ...]:
        if self.chosen is not None:
            return tuple(self.column(key) for key in self.chosen)
        return tuple(c for c in self.columns if c.exported)

    def choose_columns(self, names: Sequence[str]) -> ExportTable:
        """This table writing only the columns named (by key, alias or display name), in the order given.

        Filters and the order may still use every column. Raises ValueError naming the valid columns.
        """
        if not names:
            raise ValueError(f"Choose at least one column, or none at all for every column: {self.column_names()}.")
        chosen: list[str] = []
        for name in names:
            found = self._export_lookup.get(name)
            if found is None:
                raise ValueError(
                    f'Unknown column "{name}" for table {self.name}. Valid columns: {self.column_names()}.'
                )
            if found.key in chosen:
                raise ValueError(f'Column "{name}" is chosen twice (as "{found.key}"): name each column once.')
            chosen.append(found.key)
        return replace(self, chosen=tuple(chosen))

    def column_names(self) -> str:
        """Every exportable column, as `key ("Display name")`, for error messages."""
        return ", ".join(_described(c) for c in self.columns if c.exported)

    @property
    def keys(self) -> list[str]:
        """The CSV header and the JSON keys, in file order."""
        return [c.key for c in self.exported_columns]

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def with_score_columns(self, scores: Sequence[ScoreName], quote: Callable[[str], str]) -> ExportTable:
        """This table with one exported column per score name appended, in the order given.

        `quote` makes a score name (user data) an SQL string literal. The column's key is the score's
        name, as in Langfuse's files; a name that is already a key of the row gets a " (score)" suffix.
        """
        if self.score_alias is None or not scores or self.chosen is not None:
            # A choice of columns holds exactly the columns chosen.
            return self
        taken = set(self.keys)
        added = []
        for score in scores:
            key = score.name if score.name not in taken else f"{score.name} (score)"
            taken.add(key)
            value = f"{self.score_alias}.by_name ->> {quote(score.name)}"
            if score.numeric:
                added.append(_c(key, f"({value})::numeric", "number"))
            else:
                added.append(_c(key, value))
        return replace(self, columns=(*self.columns, *added))

    def find_column(self, name: str) -> Column | None:
        """A column by its key, an alias, or its display name (what the frontend sends)."""
        return self._lookup.get(name)

    def find_filter_column(self, name: str) -> Column | None:
        """The filterable column a filter's `column` names, or None."""
        return self._filter_lookup.get(name)

    def find_sort_column(self, name: str) -> Column | None:
        """The column an `orderBy` names: a sortable one where the name has several meanings."""
        return self._sort_lookup.get(name)

    @property
    def filterable_columns(self) -> list[Column]:
        return [c for c in self.columns if c.filter]

    def filter_names(self) -> list[str]:
        """Every accepted filter column, as `id ("Display name")`, for error messages."""
        return [_described(c) for c in self.filterable_columns]

    @property
    def search_types(self) -> list[str]:
        """The `searchType` values this table answers: `id`, and `content`, `input`, `output` where it has them."""
        types = ["id"]
        if self.content_search:
            types.append("content")
        types += [k for k in ("input", "output") if k in self.content_search]
        return types

    def sortable_names(self) -> list[str]:
        return [c.key for c in self.columns if c.sortable]


def _described(column: Column) -> str:
    """`key ("Display name")`, or the key alone: how error messages name a column."""
    return f'{column.key} ("{column.display}")' if column.display else column.key


@dataclass(frozen=True)
class ScoreName:
    """A score name of the project, and whether all its scores are numbers (numeric or boolean)."""

    name: str
    numeric: bool


# The project's score names at the export's cut-off: the score columns of a trace, observation or event row.
SCORE_NAMES_SQL = """
    SELECT s.name, bool_and(s.data_type IN ('NUMERIC', 'BOOLEAN')) AS numeric
    FROM scores s
    WHERE s.project_id = %(project_id)s AND s.created_at <= %(cutoff)s
    GROUP BY s.name
    ORDER BY s.name COLLATE "C"
"""


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
def _trace_observation_totals(where: str = "") -> str:
    """Per trace, the totals over its observations; `where` narrows the observations (an `in_part` marker)."""
    return f"""
    SELECT o.trace_id,
           min(o.start_time) AS first_start,
           max(coalesce(o.end_time, o.start_time)) AS last_end,
           sum({_OBS_INPUT_COST}) AS input_cost,
           sum({_OBS_OUTPUT_COST}) AS output_cost,
           sum({_OBS_TOTAL_COST}) AS total_cost,
           sum({_OBS_INPUT_USAGE}) AS input_tokens,
           sum({_OBS_OUTPUT_USAGE}) AS output_tokens,
           sum({_OBS_TOTAL_USAGE}) AS total_tokens,
           count(*) AS observation_count,
           count(*) FILTER (WHERE o.level = 'ERROR') AS error_count,
           count(*) FILTER (WHERE o.level = 'WARNING') AS warning_count,
           count(*) FILTER (WHERE o.level = 'DEFAULT') AS default_count,
           count(*) FILTER (WHERE o.level = 'DEBUG') AS debug_count
    FROM observations o
    WHERE o.project_id = {{project_id}} AND o.created_at <= {{cutoff}} AND o.trace_id IS NOT NULL{where}
    GROUP BY o.trace_id
"""


def in_part(key: str) -> str:
    """Marks where an aggregate over the rows of one exported row (`key` is that row's id) may be narrowed
    to a part's rows: a comment, which workers.formats turns into a condition when it writes a part."""
    return f" /*in part: {key}*/"


# The most severe level among a trace's observations (Langfuse's aggregated level).
_TRACE_LEVEL = """CASE WHEN ot.error_count > 0 THEN 'ERROR' WHEN ot.warning_count > 0 THEN 'WARNING'
    WHEN ot.default_count > 0 THEN 'DEFAULT' WHEN ot.debug_count > 0 THEN 'DEBUG' END"""


def _score_aggregates(object_id: str, where: str) -> str:
    """Per scored object, Langfuse's three score filters and the values of the export's score columns.

    `averages`: `{name: [average, ...]}` over numeric and boolean scores, one average per name and
    value label as Langfuse groups them; `categories`: `name:value` of categorical scores;
    `booleans`: `name:true|false` of boolean scores; `by_name`: `{name: value}` for the export's
    columns (numeric and boolean: the average; categorical and text: the values, comma-joined).
    """
    return f"""
    SELECT n.object_id,
           jsonb_object_agg(n.name, n.averages) FILTER (WHERE n.averages IS NOT NULL) AS averages,
           array_cat_agg(n.categories) AS categories,
           array_cat_agg(n.booleans) AS booleans,
           jsonb_object_agg(n.name, n.export_value) AS by_name
    FROM (
        SELECT g.object_id, g.name,
               jsonb_agg(g.average ORDER BY g.average) FILTER (WHERE g.data_type IN ('NUMERIC', 'BOOLEAN'))
                 AS averages,
               array_agg(g.name || ':' || g.string_value ORDER BY g.string_value)
                 FILTER (WHERE g.data_type = 'CATEGORICAL' AND g.string_value <> '') AS categories,
               array_agg(g.name || ':' || lower(g.string_value) ORDER BY g.string_value)
                 FILTER (WHERE g.data_type = 'BOOLEAN' AND g.string_value <> '') AS booleans,
               CASE WHEN bool_or(g.data_type IN ('NUMERIC', 'BOOLEAN'))
                    THEN to_jsonb(sum(g.total) / nullif(sum(g.counted), 0))
                    ELSE to_jsonb(string_agg(g.string_value, ', ' ORDER BY g.string_value)) END AS export_value
        FROM (
            SELECT {object_id} AS object_id, s.name, s.data_type, coalesce(s.string_value, '') AS string_value,
                   avg(s.value)::float8 AS average, sum(s.value)::float8 AS total, count(s.value) AS counted
            FROM scores s
            WHERE s.project_id = {{project_id}} AND s.created_at <= {{cutoff}} AND {where}
            GROUP BY 1, 2, 3, 4
        ) g
        GROUP BY g.object_id, g.name
    ) n
    GROUP BY n.object_id
"""


def _score_filters(
    alias: str, prefix: str = "", label: str = "Scores", aliases: tuple[str, ...] = ()
) -> tuple[Column, ...]:
    """Langfuse's three score filters (filter only) over a `_score_aggregates` source joined as `alias`."""
    return (
        _c(f"{prefix}scores_avg", f"{alias}.averages", "json", f"{label} (numeric)", "numberObject", aliases, False),
        _c(
            f"{prefix}score_categories",
            f"{alias}.categories",
            "array",
            f"{label} (categorical)",
            "categoryOptions",
            exported=False,
        ),
        _c(
            f"{prefix}score_booleans",
            f"{alias}.booleans",
            "array",
            f"{label} (boolean)",
            "booleanObject",
            exported=False,
        ),
    )


def _comment_aggregates(object_type: str, where: str = "") -> str:
    """Per commented object of one type: how many comments, their texts (for `commentContent`) and the comments."""
    return f"""
    SELECT c.object_id, count(*) AS comment_count,
           array_agg(c.content ORDER BY c.created_at, c.id) AS contents,
           jsonb_agg(jsonb_build_object('id', c.id, 'content', c.content, 'authorUserId', c.author_user_id,
                                        -- the files' timestamp format, inside the JSON too
                                        'createdAt', {ISO_UTC.format("c.created_at")})
                     ORDER BY c.created_at, c.id) AS comments
    FROM comments c
    WHERE c.project_id = {{project_id}} AND c.created_at <= {{cutoff}} AND c.object_type = '{object_type}'{where}
    GROUP BY c.object_id
"""


# The comment columns over a `_comment_aggregates` source joined as `cm`.
_COMMENT_COLUMNS = (
    _c("commentCount", "coalesce(cm.comment_count, 0)", "integer", "Comment Count", "number"),
    _c("comments", "coalesce(cm.comments, '[]'::jsonb)", "json"),
)
_COMMENT_CONTENT = _c("commentContent", "cm.contents", "array", "Comment Content", "string", exported=False)


# --- traces ---------------------------------------------------------------------------------------

TRACES = ExportTable(
    name="traces",
    ingested_at="t.created_at",
    source=f"""traces t
    LEFT JOIN ({_trace_observation_totals(in_part("o.trace_id"))}) ot ON ot.trace_id = t.id
    LEFT JOIN ({_score_aggregates("s.trace_id", "s.trace_id IS NOT NULL AND s.observation_id IS NULL" + in_part("s.trace_id"))}) sc
        ON sc.object_id = t.id
    LEFT JOIN ({_comment_aggregates("TRACE", in_part("c.object_id"))}) cm ON cm.object_id = t.id
    WHERE t.project_id = {{project_id}} AND t.created_at <= {{cutoff}}""",
    columns=(
        _c("id", "t.id", display="ID", filter="string", aliases=("traceId", "Trace ID")),
        _c("timestamp", "t.timestamp", "timestamp", "Timestamp", "datetime"),
        _c("name", "t.name", display="Name", filter="stringOptions", aliases=("traceName", "Trace Name")),
        _c("userId", "t.user_id", display="User ID", filter="string"),
        _c("sessionId", "t.session_id", display="Session ID", filter="string"),
        _c("release", "t.release", display="Release", filter="string"),
        _c("version", "t.version", display="Version", filter="string"),
        _c("environment", "t.environment", display="Environment", filter="stringOptions"),
        _c("tags", "t.tags", "array", "Tags", "arrayOptions", aliases=("traceTags", "Trace Tags")),
        _c("bookmarked", "t.bookmarked", "boolean", "⭐️", "boolean"),
        _c("public", "t.public", "boolean"),
        _c("input", "t.input", "json"),
        _c("output", "t.output", "json"),
        _c("metadata", "t.metadata", "json", "Metadata", "stringObject"),
        _c("latency", _seconds("ot.first_start", "ot.last_end"), "number", "Latency (s)", "number"),
        _c("totalCost", "ot.total_cost", "number", "Total Cost ($)", "number"),
        _c("inputTokens", "ot.input_tokens", "integer", "Input Tokens", "number"),
        _c("outputTokens", "ot.output_tokens", "integer", "Output Tokens", "number"),
        _c("totalTokens", "ot.total_tokens", "integer", "Total Tokens", "number"),
        _c("observationCount", "coalesce(ot.observation_count, 0)", "integer"),
        _c("level", _TRACE_LEVEL, display="Level", filter="stringOptions"),
        _c("errorCount", "coalesce(ot.error_count, 0)", "integer", "Error Level Count", "number"),
        _c("warningCount", "coalesce(ot.warning_count, 0)", "integer", "Warning Level Count", "number"),
        _c("defaultCount", "coalesce(ot.default_count, 0)", "integer", "Default Level Count", "number"),
        _c("debugCount", "coalesce(ot.debug_count, 0)", "integer", "Debug Level Count", "number"),
        _c("inputCost", "ot.input_cost", "number", "Input Cost ($)", "number"),
        _c("outputCost", "ot.output_cost", "number", "Output Cost ($)", "number"),
        *_COMMENT_COLUMNS,
        # Filter-only: what Langfuse's filters test, not columns of its trace rows.
        _c("tokens", "ot.total_tokens", "integer", "Tokens", "number", exported=False),
        _COMMENT_CONTENT,
        *_score_filters("sc", aliases=("scores", "Scores")),
        _c("evaluatorId", "t.metadata ->> 'evaluator_id'", display="Evaluator ID", filter="string", exported=False),
    ),
    time_column="timestamp",
    default_order=("timestamp", "DESC"),
    id_search=("id", "name", "userId", "sessionId"),
    content_search=("input", "output", "metadata"),
    score_alias="sc",
)

# --- observations and events ----------------------------------------------------------------------

# An observation with its trace's fields; the trace must also predate the export to be joined.
# Every other join is unique on its key, so Postgres drops it from a plan that reads none of its columns.
_OBSERVATIONS_SOURCE = f"""observations o
    LEFT JOIN traces t ON t.project_id = o.project_id AND t.id = o.trace_id AND t.created_at <= {{cutoff}}
    LEFT JOIN models m ON m.id = o.internal_model_id AND (m.project_id IS NULL OR m.project_id = o.project_id)
    LEFT JOIN ({_score_aggregates("s.observation_id", "s.observation_id IS NOT NULL" + in_part("s.observation_id"))}) sc
        ON sc.object_id = o.id
    LEFT JOIN ({_score_aggregates("s.trace_id", "s.trace_id IS NOT NULL AND s.observation_id IS NULL")}) tsc
        ON tsc.object_id = o.trace_id
    LEFT JOIN ({_comment_aggregates("OBSERVATION", in_part("c.object_id"))}) cm ON cm.object_id = o.id
    WHERE o.project_id = {{project_id}} AND o.created_at <= {{cutoff}}"""

# Where an observation stands in its trace, by start time (then id): [is root (1/0), n-th from the start, n-th from the end].
_POSITION_IN_TRACE = """ARRAY[
    (o.parent_observation_id IS NULL)::int,
    1 + (SELECT count(*) FROM observations p WHERE p.project_id = o.project_id AND p.trace_id = o.trace_id
             AND p.created_at <= {cutoff} AND (p.start_time, p.id) < (o.start_time, o.id)),
    1 + (SELECT count(*) FROM observations p WHERE p.project_id = o.project_id AND p.trace_id = o.trace_id
             AND p.created_at <= {cutoff} AND (p.start_time, p.id) > (o.start_time, o.id))]"""

_LATENCY_SECONDS = _seconds("o.start_time", "o.end_time")


def _present(json: str) -> str:
    # Langfuse's hasInput / hasOutput: a payload that is neither missing, JSON null nor an empty string.
    return f"""({json} IS NOT NULL AND {json} NOT IN ('null'::jsonb, '""'::jsonb))"""


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
        _c(
            "model",
            "o.model",
            display="Model",
            filter="stringOptions",
            aliases=("providedModelName", "Provided Model Name"),
        ),
        _c("internalModelId", "o.internal_model_id"),
        _c("modelParameters", "o.model_parameters", "json"),
        _c("promptId", "o.prompt_id"),
        _c("promptName", "o.prompt_name", display="Prompt Name", filter="stringOptions"),
        _c("promptVersion", "o.prompt_version", "integer", "Prompt Version", "number"),
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
        _c("inputUsage", _OBS_INPUT_USAGE, "integer", "Input Tokens", "number", aliases=("inputTokens",)),
        _c("outputUsage", _OBS_OUTPUT_USAGE, "integer", "Output Tokens", "number", aliases=("outputTokens",)),
        _c(
            "totalUsage",
            _OBS_TOTAL_USAGE,
            "integer",
            "Total Tokens",
            "number",
            aliases=("totalTokens", "tokens", "Tokens"),
        ),
        _c("traceTags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("tags",)),
        _c("traceTimestamp", "t.timestamp", "timestamp"),
        _c("userId", "t.user_id", display="User ID", filter="string"),
        _c("sessionId", "t.session_id", display="Session ID", filter="string"),
        _c("release", "t.release", display="Release", filter="string"),
        _c("modelId", "o.internal_model_id", display="Model ID", filter="stringOptions"),
        _c("inputPrice", "m.input_price", "number", "Input Price ($)", "number"),
        _c("outputPrice", "m.output_price", "number", "Output Price ($)", "number"),
        _c("totalPrice", "m.total_price", "number", "Total Price ($)", "number"),
        _c("usagePricingTierId", "o.usage_pricing_tier_id", display="Usage Pricing Tier ID", filter="stringOptions"),
        _c(
            "usagePricingTierName",
            "o.usage_pricing_tier_name",
            display="Usage Pricing Tier Name",
            filter="stringOptions",
        ),
        _c(
            "tokensPerSecond",
            # float8, as Langfuse computes it: a quotient has no exact decimal to keep.
            f"({_OBS_OUTPUT_USAGE} / nullif({_LATENCY_SECONDS}, 0))::float8",
            "number",
            "Tokens per second",
            "number",
        ),
        _c("toolDefinitions", "o.tool_definitions", "json"),
        _c("toolCalls", "o.tool_calls", "json"),
        _c("toolCallNames", "o.tool_call_names", "array", "Called Tool Names", "arrayOptions", ("calledToolNames",)),
        *_COMMENT_COLUMNS,
        _c("latencyMs", "trim_scale(extract(epoch FROM (o.end_time - o.start_time)) * 1000)", "number"),
        _c(
            "timeToFirstTokenMs",
            "trim_scale(extract(epoch FROM (o.completion_start_time - o.start_time)) * 1000)",
            "number",
        ),
        # Filter-only: what Langfuse's filters test, not columns of its rows.
        _c(
            "toolNames",
            "ARRAY(SELECT jsonb_object_keys(o.tool_definitions))",
            "array",
            "Available Tool Names",
            "arrayOptions",
            exported=False,
        ),
        _c(
            "availableToolCount",
            "(SELECT count(*) FROM jsonb_object_keys(o.tool_definitions))",
            "integer",
            "Available Tools",
            "number",
            ("toolDefinitions",),
            exported=False,
        ),
        _c(
            "toolCallCount",
            "jsonb_array_length(o.tool_calls)",
            "integer",
            "Tool Calls",
            "number",
            ("toolCalls",),
            exported=False,
        ),
        _COMMENT_CONTENT,
        *_score_filters("sc", aliases=("scores",)),
        *_score_filters("tsc", "trace_", "Trace Scores"),
        _c("positionInTrace", _POSITION_IN_TRACE, "array", "Position in Trace", "positionInTrace", exported=False),
        _c(
            "hasParentObservation",
            "(o.parent_observation_id IS NOT NULL)",
            "boolean",
            "Has Parent Observation",
            "boolean",
            exported=False,
        ),
        _c(
            "isRootObservation",
            "(o.parent_observation_id IS NULL)",
            "boolean",
            "Is Root Observation",
            "boolean",
            exported=False,
        ),
        _c("hasInput", _present("o.input"), "boolean", "Has Input", "boolean", exported=False),
        _c("hasOutput", _present("o.output"), "boolean", "Has Output", "boolean", exported=False),
    )
}

# Events' own columns: the experiment an observation ran in, and who sent it (OpenTelemetry attributes).
_EVENT_ONLY = (
    _c("experimentDatasetId", "o.experiment_dataset_id", display="Experiment Dataset ID", filter="stringOptions"),
    _c("experimentId", "o.experiment_id", display="Experiment ID", filter="stringOptions"),
    _c("experimentName", "o.experiment_name", display="Experiment Name", filter="stringOptions"),
    _c("experimentItemId", "o.experiment_item_id", display="Experiment Item ID", filter="stringOptions"),
    _c(
        "isExperimentItemRootSpan",
        "coalesce(o.experiment_item_root_span_id = o.id, false)",
        "boolean",
        "Is Experiment Item Root Span",
        "boolean",
    ),
    _c("serviceName", "o.service_name", display="Service Name", filter="string"),
    _c("serviceVersion", "o.service_version", display="Service Version", filter="string"),
    _c("scopeName", "o.scope_name", display="Scope Name", filter="string"),
    _c("scopeVersion", "o.scope_version", display="Scope Version", filter="string"),
    _c("telemetrySdkLanguage", "o.telemetry_sdk_language", display="Telemetry SDK Language", filter="string"),
    _c("telemetrySdkName", "o.telemetry_sdk_name", display="Telemetry SDK Name", filter="string"),
    _c("telemetrySdkVersion", "o.telemetry_sdk_version", display="Telemetry SDK Version", filter="string"),
)


def _pick(columns: dict[str, Column], keys: str, **overrides: Column) -> tuple[Column, ...]:
    return tuple(overrides.get(k) or columns[k] for k in keys.split())


def _filter_only(columns: dict[str, Column], *, besides: tuple[Column, ...]) -> tuple[Column, ...]:
    """The filter-only columns of `columns` that `besides` does not define already."""
    taken = {c.key for c in besides}
    return tuple(c for c in columns.values() if not c.exported and c.key not in taken)


_OBSERVATION_ROW = _pick(
    _O,
    "id traceId startTime endTime projectId parentObservationId type environment name level statusMessage"
    " version createdAt updatedAt input output metadata model internalModelId modelParameters"
    " completionStartTime promptId promptName promptVersion latency timeToFirstToken providedUsageDetails"
    " usageDetails costDetails providedCostDetails inputCost outputCost totalCost inputUsage outputUsage"
    " totalUsage traceName traceTags traceTimestamp userId modelId inputPrice outputPrice totalPrice"
    " usagePricingTierId usagePricingTierName tokensPerSecond toolDefinitions toolCalls toolCallNames"
    " commentCount comments",
)

OBSERVATIONS = ExportTable(
    name="observations",
    ingested_at="o.created_at",
    source=_OBSERVATIONS_SOURCE,
    columns=(*_OBSERVATION_ROW, *_filter_only(_O, besides=_OBSERVATION_ROW)),
    time_column="startTime",
    default_order=("startTime", "DESC"),
    id_search=("id", "name", "traceId"),
    content_search=("input", "output", "metadata"),
    score_alias="sc",
)

_EVENT_ROW = (
    *_pick(
        _O,
        "id traceId traceName type name startTime endTime completionStartTime environment version userId"
        " sessionId level statusMessage promptName promptId promptVersion model modelParameters usageDetails"
        " costDetails totalCost input output metadata latency timeToFirstToken",
        # Events filter `input` / `output` as text: the JSON document's text.
        input=_c("input", "o.input", "json", "Input", "string"),
        output=_c("output", "o.output", "json", "Output", "string"),
        # "Cost ($)" is the events table's own name for the total cost.
        totalCost=_c("totalCost", _OBS_TOTAL_COST, "number", "Total Cost ($)", "number", ("Cost ($)",)),
    ),
    _c("tags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("traceTags",)),
    _O["release"],
    _O["parentObservationId"],
    *_pick(
        _O,
        "latencyMs timeToFirstTokenMs modelId inputPrice outputPrice totalPrice usagePricingTierId"
        " usagePricingTierName tokensPerSecond toolDefinitions toolCalls toolCallNames commentCount comments",
    ),
    *_EVENT_ONLY,
)

EVENTS = ExportTable(
    name="events",
    ingested_at="o.created_at",
    source=_OBSERVATIONS_SOURCE,
    columns=(
        *_EVENT_ROW,
        # The observations columns that are not columns of an event row, as filters.
        *(replace(c, exported=False) for c in _pick(_O, "inputCost outputCost inputUsage outputUsage totalUsage")),
        *_filter_only(_O, besides=_EVENT_ROW),
    ),
    time_column="startTime",
    default_order=("startTime", "DESC"),
    id_search=("id", "name", "traceId"),
    content_search=("input", "output", "metadata"),
    score_alias="sc",
)

# --- scores ---------------------------------------------------------------------------------------

SCORES = ExportTable(
    name="scores",
    ingested_at="s.created_at",
    source="""scores s
    LEFT JOIN traces t ON t.project_id = s.project_id AND t.id = s.trace_id AND t.created_at <= {cutoff}
    LEFT JOIN users au ON au.id = s.author_user_id
    WHERE s.project_id = {project_id} AND s.created_at <= {cutoff}""",
    columns=(
        _c("id", "s.id", display="ID", filter="string"),
        _c("traceId", "s.trace_id", display="Trace ID", filter="string"),
        _c("sessionId", "s.session_id", display="Session ID", filter="string"),
        _c("datasetRunId", "s.dataset_run_id", display="Dataset Run ID", filter="string"),
        _c("timestamp", "s.timestamp", "timestamp", "Timestamp", "datetime"),
        _c("source", "s.source", display="Source", filter="stringOptions"),
        _c("name", "s.name", display="Name", filter="stringOptions"),
        _c("dataType", "s.data_type", display="Data Type", filter="stringOptions"),
        _c("value", "s.value", "number", "Value", "number"),
        _c("stringValue", "s.string_value", display="String Value", filter="stringOptions"),
        _c("comment", "s.comment", display="Comment", filter="string"),
        _c("metadata", "s.metadata", "json", "Metadata", "stringObject"),
        _c("observationId", "s.observation_id", display="Observation ID", filter="string"),
        _c("traceName", "t.name", display="Trace Name", filter="stringOptions"),
        _c("userId", "t.user_id", display="User ID", filter="stringOptions"),
        _c("traceTags", "t.tags", "array", "Trace Tags", "arrayOptions", aliases=("tags", "trace_tags")),
        _c("environment", "s.environment", display="Environment", filter="stringOptions"),
        _c("authorUserName", "au.name"),
        _c("authorUserId", "s.author_user_id", display="Author User ID", filter="string"),
        # A boolean score's value as a boolean; empty for other data types.
        _c("booleanValue", "CASE WHEN s.data_type = 'BOOLEAN' THEN s.value <> 0 END", "boolean"),
        _c("configId", "s.config_id", display="Config ID", filter="string"),
        _c("queueId", "s.queue_id", display="Annotation Queue ID", filter="string"),
        # Filter-only: Langfuse filters a boolean score's label as options, "true" or "false".
        _c(
            "booleanValue",
            "CASE WHEN s.data_type = 'BOOLEAN' AND s.string_value <> '' THEN lower(s.string_value) END",
            display="Boolean Value",
            filter="stringOptions",
            exported=False,
        ),
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
               sum(ot.input_tokens) AS input_tokens,
               sum(ot.output_tokens) AS output_tokens,
               min(t.environment) AS environment
        FROM traces t
        LEFT JOIN ({_trace_observation_totals()}) ot ON ot.trace_id = t.id
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
    LEFT JOIN ({_score_aggregates("s.session_id", "s.session_id IS NOT NULL")}) sc ON sc.object_id = s.id
    LEFT JOIN ({_comment_aggregates("SESSION")}) cm ON cm.object_id = s.id
    WHERE true""",
    columns=(
        _c("id", "s.id", display="ID", filter="string"),
        _c("userIds", "coalesce(s.user_ids, '{}')", "array", "User IDs", "arrayOptions"),
        _c("countTraces", "s.count_traces", "integer", "Traces Count", "number", ("tracesCount", "Count Traces")),
        _c(
            "sessionDuration",
            _seconds("s.created_at", "s.last_end"),
            "number",
            "Session Duration (s)",
            "number",
            ("Session Duration",),
        ),
        _c("inputCost", "s.input_cost", "number", "Input Cost ($)", "number", ("Session Input Cost",)),
        _c("outputCost", "s.output_cost", "number", "Output Cost ($)", "number", ("Session Output Cost",)),
        _c("totalCost", "s.total_cost", "number", "Total Cost ($)", "number", ("Session Total Cost",)),
        _c("totalTokens", "s.total_tokens", "integer", "Total Tokens", "number", ("Usage",)),
        _c("traceTags", "coalesce(st.tags, '{}')", "array", "Trace Tags", "arrayOptions", aliases=("tags",)),
        _c("environment", "coalesce(ts.environment, s.environment)", display="Environment", filter="stringOptions"),
        _c("createdAt", "s.created_at", "timestamp", "Created At", "datetime"),
        _c("bookmarked", "coalesce(ts.bookmarked, false)", "boolean", "⭐️", "boolean"),
        _c("public", "coalesce(ts.public, false)", "boolean"),
        _c("inputTokens", "s.input_tokens", "integer", "Input Tokens", "number"),
        _c("outputTokens", "s.output_tokens", "integer", "Output Tokens", "number"),
        # Langfuse's session files carry the trace count twice, as countTraces and as totalCount.
        _c("totalCount", "s.count_traces", "integer"),
        *_COMMENT_COLUMNS,
        # Filter-only: what Langfuse's filters test, not columns of its session rows.
        _c("usage", "s.total_tokens", "integer", "Session Total Usage", "number", exported=False),
        _COMMENT_CONTENT,
        *_score_filters("sc", aliases=("scores",)),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id",),
)

# --- datasets -------------------------------------------------------------------------------------

DATASET_RUN_ITEMS = ExportTable(
    name="dataset_run_items",
    ingested_at="ri.created_at",
    source=f"""dataset_run_items ri
    LEFT JOIN dataset_runs r ON r.project_id = ri.project_id AND r.id = ri.dataset_run_id
    LEFT JOIN datasets d ON d.project_id = r.project_id AND d.id = r.dataset_id
    LEFT JOIN traces t ON t.project_id = ri.project_id AND t.id = ri.trace_id AND t.created_at <= {{cutoff}}
    LEFT JOIN ({_score_aggregates("s.trace_id", "s.trace_id IS NOT NULL AND s.observation_id IS NULL")}) sc
        ON sc.object_id = ri.trace_id
    WHERE ri.project_id = {{project_id}} AND ri.created_at <= {{cutoff}}""",
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
        # Langfuse's eventTs: when the run's trace happened.
        _c("eventTs", "t.timestamp", "timestamp", "Event Timestamp", "datetime", exported=False),
        *_score_filters("sc", "agg_"),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id", "datasetRunId", "datasetItemId", "traceId", "datasetRunName", "datasetName"),
)

DATASET_ITEMS = ExportTable(
    name="dataset_items",
    ingested_at="di.created_at",
    source="""dataset_items di
    LEFT JOIN datasets d ON d.project_id = di.project_id AND d.id = di.dataset_id
    WHERE di.project_id = {project_id} AND di.created_at <= {cutoff}""",
    columns=(
        _c("id", "di.id", display="Item ID", filter="stringOptions", aliases=("ID",)),
        _c("projectId", "di.project_id"),
        _c("datasetId", "di.dataset_id", display="Dataset ID", filter="stringOptions"),
        _c("sourceTraceId", "di.source_trace_id", display="Source Trace ID", filter="string"),
        _c("sourceObservationId", "di.source_observation_id", display="Source Observation ID", filter="string"),
        _c("status", "di.status", display="Status", filter="stringOptions"),
        _c("createdAt", "di.created_at", "timestamp", "Created At", "datetime"),
        _c("updatedAt", "di.updated_at", "timestamp", "Updated At", "datetime"),
        _c("input", "di.input", "json"),
        _c("expectedOutput", "di.expected_output", "json"),
        _c("metadata", "di.metadata", "json", "Metadata", "stringObject"),
        _c("datasetName", "d.name", display="Dataset Name", filter="stringOptions"),
        _c("validFrom", "di.valid_from", "timestamp", "Valid From", "datetime"),
    ),
    time_column="createdAt",
    default_order=("createdAt", "DESC"),
    id_search=("id", "datasetId", "datasetName"),
    content_search=("input", "expectedOutput", "metadata"),
)

# --- audit logs -----------------------------------------------------------------------------------

AUDIT_LOGS = ExportTable(
    name="audit_logs",
    ingested_at="a.created_at",
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
