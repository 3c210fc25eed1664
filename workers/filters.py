"""The filter → SQL compiler: a BatchExportQuery's filters, search and order as parameterized SQL.

Column SQL comes only from the table definitions (workers.tables); every user value (filter
values, JSON keys, the search text) becomes a named placeholder whose value travels in `params`,
never SQL text. `validate_query` runs the same compiler without a database, so the API rejects
at create time exactly what the worker would reject.

Text comparisons: `=` is exact; `contains`, `does not contain`, `starts with`, `ends with` ignore
case, as the frontend's table search does. Negative operators (`does not contain`, `none of`)
keep rows whose value is missing: an empty cell does not contain the text. A text or number test
on one key of a JSON object (`stringObject`, `numberObject`) holds only where the key exists,
`does not contain` included, as Langfuse's filters do; `is not set` is the test for a missing key.
The option and boolean tests by key (`categoryOptions` `none of`, `booleanObject` `<>`) keep rows
without the key or score, as Langfuse's score filters do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql

from schemas import BatchExportQuery
from schemas.filters import (
    ArrayOptionsFilter,
    BooleanFilter,
    BooleanObjectFilter,
    CategoryOptionsFilter,
    DatetimeFilter,
    NullFilter,
    NumberFilter,
    NumberObjectFilter,
    PositionInTraceFilter,
    StringFilter,
    StringObjectFilter,
    StringOptionsFilter,
)
from workers.tables import Column, ExportTable, ScoreName, get_table


class InvalidExportQuery(Exception):
    """A query the export cannot run; `message` names what is wrong and what would be valid."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# Which filter types each declared column type accepts: Langfuse's compatible pairs
# (filterTypeCompatibility.ts) and a few more that mean the same. `null` is accepted by every filterable column.
ACCEPTED_FILTER_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("string", "stringOptions"),
    "stringOptions": ("stringOptions", "string", "categoryOptions"),
    "stringObject": ("stringObject", "numberObject", "categoryOptions"),
    "number": ("number",),
    "datetime": ("datetime",),
    "arrayOptions": ("arrayOptions", "stringOptions"),
    "boolean": ("boolean",),
    # Scores by name: `{name: [averages]}` objects, `name:value` category and `name:true|false` boolean lists.
    "numberObject": ("numberObject",),
    "categoryOptions": ("categoryOptions", "stringOptions"),
    "booleanObject": ("booleanObject",),
    "positionInTrace": ("positionInTrace",),
    "null": (),
}

# What separates the words `matches` looks for.
_WHITESPACE = "[ \\t\\n\\r\\f\\v]+"

_COMPARISONS = {"=": "=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}


@dataclass(frozen=True)
class OrderKey:
    """The export's total order: one column, then `id` to break ties (unless the column is `id`)."""

    column: Column
    id_column: Column
    descending: bool

    @property
    def by_id(self) -> bool:
        return self.column is self.id_column

    @property
    def sql(self) -> sql.Composable:
        direction = sql.SQL("DESC" if self.descending else "ASC")
        keys = [sql.SQL("{} {} NULLS LAST").format(self.column.expr, direction)]
        if not self.by_id:
            keys.append(sql.SQL("{} {}").format(self.id_column.expr, direction))
        return sql.SQL(", ").join(keys)


@dataclass
class CompiledQuery:
    """The pieces of the export's SELECT that depend on the user's query."""

    table: ExportTable
    conditions: list[sql.Composable]
    order: OrderKey
    params: dict[str, Any] = field(default_factory=dict)
    # A part of a large export: the condition of its range of the order (workers.export_parts).
    part: sql.Composable | None = None

    def with_score_columns(self, scores: Sequence[ScoreName], quote: Callable[[str], str]) -> CompiledQuery:
        return replace(self, table=self.table.with_score_columns(scores, quote))

    def in_part(self, condition: sql.Composable, params: dict[str, Any]) -> CompiledQuery:
        """The same query narrowed to one part's range of the order, its values bound under `params`' names."""
        return replace(self, part=condition, params={**self.params, **params})

    def in_window(self, start: datetime) -> CompiledQuery:
        """Only the rows ingested at or after `start`; the window's end is the cut-off, bound as for every export.

        The window is the query's part: like a part of a large export, its SELECT reads the window's
        rows by index and computes each aggregate (observations, scores …) for those rows alone, not
        for the whole project every run."""
        if self.table.ingested_at is None:
            raise InvalidExportQuery(f"The {self.table.name} table is not exported on a schedule.")
        condition = sql.SQL("{} >= {}").format(sql.SQL(self.table.ingested_at), sql.Placeholder("window_start"))
        return self.in_part(condition, {"window_start": start})

    @property
    def order_by(self) -> sql.Composable:
        return self.order.sql

    @property
    def where(self) -> sql.Composable:
        """Conditions to AND onto the table's source (which always ends in a WHERE clause)."""
        if not self.conditions:
            return sql.SQL("")
        return sql.SQL(" AND ").join([sql.SQL(""), *self.conditions])


class _Params:
    """Collects bound values under generated names: the SQL only ever holds placeholders."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> sql.Placeholder:
        name = f"q{len(self.values)}"
        self.values[name] = value
        return sql.Placeholder(name)


def validate_query(query: BatchExportQuery, columns: Sequence[str] | None = None) -> None:
    """Raises InvalidExportQuery for anything the worker could not run; never touches the database."""
    compile_query(query, columns)


def compile_query(query: BatchExportQuery, columns: Sequence[str] | None = None) -> CompiledQuery:
    """The export's query; `columns` (names of the table's columns, in file order) narrows what is written."""
    table = get_table(query.tableName)
    if columns is not None:
        try:
            table = table.choose_columns(columns)
        except ValueError as exc:
            raise InvalidExportQuery(str(exc)) from None
    params = _Params()
    conditions = [compile_filter(table, f, params) for f in query.filter or []]
    search = compile_search(table, query.searchQuery, query.searchType, params)
    if search is not None:
        conditions.append(search)
    return CompiledQuery(table, conditions, compile_order(table, query), params.values)


# --- columns --------------------------------------------------------------------------------------


def resolve_filter_column(table: ExportTable, name: str) -> Column:
    column = table.find_filter_column(name)
    if column is None or column.filter is None:
        raise InvalidExportQuery(
            f'Unknown filter column "{name}" for table {table.name}. Valid columns: {", ".join(table.filter_names())}.'
        )
    return column


def _text_expr(column: Column) -> sql.Composable:
    # A JSON column filtered as text: a JSON string's own text, any other document's JSON text.
    if column.kind == "json":
        return sql.SQL("({} #>> ARRAY[]::text[])").format(column.expr)
    return column.expr


# --- filters --------------------------------------------------------------------------------------


def compile_filter(table: ExportTable, f: Any, params: _Params) -> sql.Composable:
    column = resolve_filter_column(table, f.column)
    assert column.filter is not None, "resolve_filter_column returns filterable columns only"
    accepted = ACCEPTED_FILTER_TYPES[column.filter]
    if f.type != "null" and f.type not in accepted:
        raise InvalidExportQuery(
            f'Column "{column.key}" of {table.name} takes {" or ".join(accepted + ("null",))} filters, not "{f.type}".'
        )
    _check_text(getattr(f, "key", None), "filter key")

    if isinstance(f, NullFilter):
        nullness = sql.SQL("IS NULL" if f.operator == "is null" else "IS NOT NULL")
        if column.kind == "json":
            # A stored JSON null is as empty as a missing value.
            expr = sql.SQL("nullif({}, 'null'::jsonb)").format(column.expr)
            return sql.SQL("({} {})").format(expr, nullness)
        return sql.SQL("({} {})").format(column.expr, nullness)

    if isinstance(f, PositionInTraceFilter):
        return _position_test(column, f)

    if isinstance(f, DatetimeFilter):
        value = f.value if f.value.tzinfo else f.value.replace(tzinfo=UTC)
        return _compare(column.expr, f.operator, params.add(value))

    if isinstance(f, NumberFilter):
        return _compare(column.expr, f.operator, params.add(_number(f.value)))

    if isinstance(f, BooleanFilter):
        op = sql.SQL("=" if f.operator == "=" else "IS DISTINCT FROM")
        return sql.SQL("({} {} {})").format(column.expr, op, params.add(f.value))

    if isinstance(f, StringFilter):
        _check_text(f.value, "filter value")
        if column.kind == "array":
            return _any_element_test(column.expr, f.operator, f.value, params)
        return _string_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, StringOptionsFilter):
        _check_options(f.value)
        if column.filter in ("arrayOptions", "categoryOptions") or column.kind == "array":
            # On a list (tags, a row's comments): any of = one element is listed; none of = none is.
            return _array_test(column.expr, f.operator, f.value, params)
        return _options_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, CategoryOptionsFilter):
        _check_options(f.value)
        if column.filter == "categoryOptions":
            # Score categories are stored flat, as `name:value`, the way Langfuse's filter spells them.
            key = _json_key(f.key, column)
            return _array_test(column.expr, f.operator, [f"{key}:{v}" for v in f.value], params)
        if column.filter == "stringObject":
            # As on score categories: `any of` needs the key to hold a listed value, `none of` keeps
            # the rows where it holds none (or is not set).
            key_test = _has_key(column, f.key, params)
            test = _options_test(_json_key_text(column, f.key, params), "any of", f.value, params)
            hit = sql.SQL("coalesce({} AND {}, false)").format(key_test, test)
            return hit if f.operator == "any of" else sql.SQL("(NOT {})").format(hit)
        if f.key:
            raise InvalidExportQuery(f'Column "{column.key}" of {table.name} is not a JSON object: it takes no key.')
        return _options_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, StringObjectFilter):
        _check_text(f.value, "filter value")
        key_test = _has_key(column, f.key, params)
        if f.operator == "is not set":
            return sql.SQL("(NOT coalesce({}, false))").format(key_test)
        if f.operator == "is set":
            return sql.SQL("coalesce({}, false)").format(key_test)
        test = _string_test(_json_key_text(column, f.key, params), f.operator, f.value, params)
        return sql.SQL("({} AND {})").format(key_test, test)

    if isinstance(f, NumberObjectFilter) and column.filter == "numberObject":
        # Score averages by name, `{name: [average, ...]}`: Langfuse keeps one average per name and
        # value label, so a boolean score may hold two. The test holds if any of them passes.
        return sql.SQL(
            "EXISTS (SELECT FROM jsonb_array_elements(coalesce({col} -> {key}, '[]'::jsonb)) AS a(v)"
            " WHERE (a.v)::numeric {op} {value})"
        ).format(
            col=column.expr,
            key=params.add(_json_key(f.key, column)),
            op=sql.SQL(_COMPARISONS[f.operator]),
            value=params.add(_number(f.value)),
        )

    if isinstance(f, NumberObjectFilter):
        number = sql.SQL(
            "(CASE WHEN jsonb_typeof({col} -> {key}) = 'number' THEN ({col} ->> {key})::numeric END)"
        ).format(col=column.expr, key=params.add(_json_key(f.key, column)))
        return _compare(number, f.operator, params.add(_number(f.value)))

    if isinstance(f, BooleanObjectFilter):
        return _boolean_object_test(column, f, params)

    if isinstance(f, ArrayOptionsFilter):
        _check_options(f.value)
        return _array_test(column.expr, f.operator, f.value, params)

    raise InvalidExportQuery(f'Unsupported filter type "{f.type}".')  # pragma: no cover - the schema's union is closed


def _any_element_test(expr: sql.Composable, operator: str, value: str, params: _Params) -> sql.Composable:
    """A text test on a list (e.g. a row's comments): holds if one element passes; `does not contain` if none contains."""
    if operator == "does not contain":
        return sql.SQL("(NOT {})").format(_any_element_test(expr, "contains", value, params))
    test = _string_test(sql.SQL("e.v"), operator, value, params)
    return sql.SQL("EXISTS (SELECT FROM unnest({}) AS e(v) WHERE {})").format(expr, test)


def _array_test(expr: sql.Composable, operator: str, values: list[str], params: _Params) -> sql.Composable:
    array = sql.SQL("coalesce({}, '{{}}'::text[])").format(expr)
    options = sql.SQL("{}::text[]").format(params.add(list(values)))
    if operator == "any of":
        return sql.SQL("({} && {})").format(array, options)
    if operator == "all of":
        return sql.SQL("({} @> {})").format(array, options)
    return sql.SQL("(NOT ({} && {}))").format(array, options)


def _boolean_object_test(column: Column, f: BooleanObjectFilter, params: _Params) -> sql.Composable:
    """Boolean scores by name, stored as `name:true` / `name:false` (Langfuse's `score_booleans`).

    `=` holds where the row has a score of that name with that value; `<>` where it has none
    (a row without the score at all passes `<>`, as in Langfuse).
    """
    entry = f"{_json_key(f.key, column)}:{'true' if f.value else 'false'}"
    test = _array_test(column.expr, "all of", [entry], params)
    return test if f.operator == "=" else sql.SQL("(NOT {})").format(test)


def _position_test(column: Column, f: PositionInTraceFilter) -> sql.Composable:
    """The column is `ARRAY[is root (1/0), position from the start, position from the end]` of an observation."""
    index, position = {
        "root": (1, 1),
        "first": (2, 1),
        "last": (3, 1),
        "nthFromStart": (2, f.value),
        "nthFromEnd": (3, f.value),
    }[f.key]
    return sql.SQL("(({})[{}] = {})").format(column.expr, sql.Literal(index), sql.Literal(position))


def _compare(expr: sql.Composable, operator: str, value: sql.Composable) -> sql.Composable:
    return sql.SQL("({} {} {})").format(expr, sql.SQL(_COMPARISONS[operator]), value)


def _string_test(expr: sql.Composable, operator: str, value: str, params: _Params) -> sql.Composable:
    if operator == "=":
        return sql.SQL("({} = {})").format(expr, params.add(value))
    if operator == "is not empty":
        return sql.SQL("({} <> '')").format(expr)
    if operator == "matches":
        # Every word of the value (split at whitespace, case ignored) is a word of the text.
        words = sql.SQL("array_remove(regexp_split_to_array(lower({}), {}), '')")
        return sql.SQL("({} @> {})").format(
            words.format(expr, sql.Literal(_WHITESPACE)), words.format(params.add(value), sql.Literal(_WHITESPACE))
        )
    needle = params.add(value.lower())
    lowered = sql.SQL("lower({})").format(expr)
    if operator == "contains":
        return sql.SQL("(strpos({}, {}) > 0)").format(lowered, needle)
    if operator == "does not contain":
        return sql.SQL("({} IS NULL OR strpos({}, {}) = 0)").format(expr, lowered, needle)
    if operator == "starts with":
        return sql.SQL("starts_with({}, {})").format(lowered, needle)
    if operator == "ends with":
        return sql.SQL("(right({}, char_length({})) = {})").format(lowered, needle, needle)
    raise InvalidExportQuery(f'Unsupported string operator "{operator}".')  # pragma: no cover


def _options_test(expr: sql.Composable, operator: str, values: list[str], params: _Params) -> sql.Composable:
    options = sql.SQL("{}::text[]").format(params.add(list(values)))
    if operator == "any of":
        return sql.SQL("({} = ANY({}))").format(expr, options)
    return sql.SQL("({} IS NULL OR NOT ({} = ANY({})))").format(expr, expr, options)


def _json_key(key: str | None, column: Column) -> str:
    if not key or not key.strip():
        raise InvalidExportQuery(
            f'A filter on "{column.key}" needs the key of the JSON value to test (e.g. "customer").'
        )
    return key


def _has_key(column: Column, key: str | None, params: _Params) -> sql.Composable:
    # jsonb_typeof: `?` would also hold on an array holding the key as an element.
    return sql.SQL("(jsonb_typeof({col}) = 'object' AND {col} ? {key})").format(
        col=column.expr, key=params.add(_json_key(key, column))
    )


def _json_key_text(column: Column, key: str | None, params: _Params) -> sql.Composable:
    return sql.SQL("({} ->> {})").format(column.expr, params.add(_json_key(key, column)))


def _number(value: float) -> Decimal:
    if not math.isfinite(value):
        raise InvalidExportQuery("A number filter needs a finite number.")
    # repr gives the shortest text that round-trips, so 0.1 compares equal to numeric 0.1.
    return Decimal(repr(value))


def _check_text(value: str | None, what: str) -> None:
    if value is not None and "\x00" in value:
        raise InvalidExportQuery(f"The {what} contains a NUL character, which no stored value can contain.")


def _check_options(values: list[str]) -> None:
    for value in values:
        _check_text(value, "filter value")


# --- search ---------------------------------------------------------------------------------------


def compile_search(
    table: ExportTable, search_query: str | None, search_types: Sequence[str] | None, params: _Params
) -> sql.Composable | None:
    """Case-insensitive substring search: `id` over ids and names, `content` over input/output/metadata,
    `input` or `output` over that one column."""
    if search_query is None or not search_query.strip():
        return None
    _check_text(search_query, "search text")
    keys: list[str] = []
    for search_type in dict.fromkeys(search_types or ["id"]):
        if search_type not in table.search_types:
            raise InvalidExportQuery(
                f"{table.name} has no {search_type} to search: its search types are {', '.join(table.search_types)}."
            )
        if search_type == "id":
            keys += table.id_search
        elif search_type == "content":
            keys += table.content_search
        else:
            keys.append(search_type)
    columns = [table.column(k) for k in dict.fromkeys(keys)]
    needle = params.add(search_query.strip().lower())
    tests = [
        sql.SQL("strpos(lower({}), {}) > 0").format(
            sql.SQL("{}::text").format(c.expr) if c.kind == "json" else c.expr, needle
        )
        for c in columns
    ]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests))


# --- order ----------------------------------------------------------------------------------------


def compile_order(table: ExportTable, query: BatchExportQuery) -> OrderKey:
    """The user's order (or the table's default), then `id` so equal values always come out the same way."""
    column: Column | None
    if query.orderBy is None:
        column, direction = table.column(table.default_order[0]), table.default_order[1]
    else:
        column = table.find_sort_column(query.orderBy.column)
        if column is None or not column.sortable:
            raise InvalidExportQuery(
                f'Cannot order {table.name} by "{query.orderBy.column}". '
                f"Sortable columns: {', '.join(table.sortable_names())}."
            )
        direction = query.orderBy.order
    return OrderKey(column, table.column("id"), descending=direction != "ASC")
