"""The filter → SQL compiler: a BatchExportQuery's filters, search and order as parameterized SQL.

Column SQL comes only from the table definitions (workers.tables); every user value (filter
values, JSON keys, the search text) becomes a named placeholder whose value travels in `params`,
never SQL text. `validate_query` runs the same compiler without a database, so the API rejects
at create time exactly what the worker would reject.

Text comparisons: `=` is exact; `contains`, `does not contain`, `starts with`, `ends with` ignore
case, as the frontend's table search does. Negative operators (`does not contain`, `none of`)
keep rows whose value is missing: an empty cell does not contain the text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

from psycopg import sql

from schemas import BatchExportQuery
from schemas.filters import (
    ArrayOptionsFilter,
    BooleanFilter,
    CategoryOptionsFilter,
    DatetimeFilter,
    NullFilter,
    NumberFilter,
    NumberObjectFilter,
    StringFilter,
    StringObjectFilter,
    StringOptionsFilter,
)
from workers.tables import Column, ExportTable, get_table


class InvalidExportQuery(Exception):
    """A query the export cannot run; `message` names what is wrong and what would be valid."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# Which filter types each declared column type accepts. `null` is accepted by every filterable column.
ACCEPTED_FILTER_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("string", "stringOptions"),
    "stringOptions": ("stringOptions", "string", "categoryOptions"),
    "stringObject": ("stringObject", "numberObject", "categoryOptions"),
    "number": ("number",),
    "datetime": ("datetime",),
    "arrayOptions": ("arrayOptions",),
    "boolean": ("boolean",),
}

_COMPARISONS = {"=": "=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}


@dataclass
class CompiledQuery:
    """The pieces of the export's SELECT that depend on the user's query."""

    table: ExportTable
    conditions: list[sql.Composable]
    order_by: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)

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


def validate_query(query: BatchExportQuery) -> None:
    """Raises InvalidExportQuery for anything the worker could not run; never touches the database."""
    compile_query(query)


def compile_query(query: BatchExportQuery) -> CompiledQuery:
    table = get_table(query.tableName)
    params = _Params()
    conditions = [compile_filter(table, f, params) for f in query.filter or []]
    search = compile_search(table, query.searchQuery, query.searchType, params)
    if search is not None:
        conditions.append(search)
    return CompiledQuery(table, conditions, compile_order(table, query), params.values)


# --- columns --------------------------------------------------------------------------------------


def resolve_filter_column(table: ExportTable, name: str) -> Column:
    column = table.find_column(name)
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
        return _string_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, StringOptionsFilter):
        _check_options(f.value)
        return _options_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, CategoryOptionsFilter):
        _check_options(f.value)
        if column.filter == "stringObject":
            return _options_test(_json_key_text(column, f.key, params), f.operator, f.value, params)
        if f.key:
            raise InvalidExportQuery(f'Column "{column.key}" of {table.name} is not a JSON object: it takes no key.')
        return _options_test(_text_expr(column), f.operator, f.value, params)

    if isinstance(f, StringObjectFilter):
        _check_text(f.value, "filter value")
        return _string_test(_json_key_text(column, f.key, params), f.operator, f.value, params)

    if isinstance(f, NumberObjectFilter):
        key = _json_key(f.key, column)
        number = sql.SQL(
            "(CASE WHEN jsonb_typeof({col} -> {key}) = 'number' THEN ({col} ->> {key})::numeric END)"
        ).format(col=column.expr, key=params.add(key))
        return _compare(number, f.operator, params.add(_number(f.value)))

    if isinstance(f, ArrayOptionsFilter):
        _check_options(f.value)
        array = sql.SQL("coalesce({}, '{{}}'::text[])").format(column.expr)
        options = sql.SQL("{}::text[]").format(params.add(list(f.value)))
        if f.operator == "any of":
            return sql.SQL("({} && {})").format(array, options)
        if f.operator == "all of":
            return sql.SQL("({} @> {})").format(array, options)
        return sql.SQL("(NOT ({} && {}))").format(array, options)

    raise InvalidExportQuery(f'Unsupported filter type "{f.type}".')  # pragma: no cover - the schema's union is closed


def _compare(expr: sql.Composable, operator: str, value: sql.Composable) -> sql.Composable:
    return sql.SQL("({} {} {})").format(expr, sql.SQL(_COMPARISONS[operator]), value)


def _string_test(expr: sql.Composable, operator: str, value: str, params: _Params) -> sql.Composable:
    if operator == "=":
        return sql.SQL("({} = {})").format(expr, params.add(value))
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
    """Case-insensitive substring search: `id` over ids and names, `content` over input/output/metadata."""
    if search_query is None or not search_query.strip():
        return None
    _check_text(search_query, "search text")
    types = search_types or ["id"]
    columns = [table.column(k) for k in table.id_search] if "id" in types else []
    if "content" in types:
        columns += [table.column(k) for k in table.content_search]
    needle = params.add(search_query.strip().lower())
    tests = [
        sql.SQL("strpos(lower({}), {}) > 0").format(
            sql.SQL("{}::text").format(c.expr) if c.kind == "json" else c.expr, needle
        )
        for c in columns
    ]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests))


# --- order ----------------------------------------------------------------------------------------


def compile_order(table: ExportTable, query: BatchExportQuery) -> sql.Composable:
    """The user's order (or the table's default), then `id` so equal values always come out the same way."""
    column: Column | None
    if query.orderBy is None:
        column, direction = table.column(table.default_order[0]), table.default_order[1]
    else:
        column = table.find_column(query.orderBy.column)
        if column is None or not column.sortable:
            raise InvalidExportQuery(
                f'Cannot order {table.name} by "{query.orderBy.column}". '
                f"Sortable columns: {', '.join(table.sortable_names())}."
            )
        direction = query.orderBy.order
    direction_sql = sql.SQL("ASC" if direction == "ASC" else "DESC")
    id_column = table.column("id")
    keys = [sql.SQL("{} {} NULLS LAST").format(column.expr, direction_sql)]
    if column is not id_column:
        keys.append(sql.SQL("{} {}").format(id_column.expr, direction_sql))
    return sql.SQL(", ").join(keys)
