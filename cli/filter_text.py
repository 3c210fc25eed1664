"""`--filter 'COLUMN OP VALUE'` and `--order-by COLUMN:DIR` from the command line to wire filters.

The query is checked against the table definitions (workers.tables, the same compiler the API runs)
before anything is sent, so a typo in a filter is a usage error naming the valid columns, not a
round trip.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from cli.errors import UsageError
from schemas import BatchExportQuery, Filter
from schemas.filters import (
    ArrayOptionsOperator,
    BooleanOperator,
    DatetimeOperator,
    MatchOperator,
    NullOperator,
    NumberOperator,
    OptionsOperator,
    StringObjectOperator,
    StringOperator,
    TracePosition,
)
from workers.tables import TABLES, Column, ExportTable

FILTER_HELP = """\
filters (--filter, repeatable; all must match):
  COLUMN OPERATOR VALUE, one argument each, so quote it for the shell:
    --filter 'name contains checkout'        --filter 'timestamp >= 2026-01-01T00:00:00Z'
    --filter 'tags any of prod,beta'         --filter 'metadata.customer = acme'
    --filter 'latency > 2.5'                 --filter 'bookmarked = true'
    --filter 'release is null'               --filter 'environment none of staging'
    --filter 'scores_avg.accuracy >= 0.8'    --filter 'score_booleans.is_correct = false'
    --filter 'metadata.customer is set'      --filter 'positionInTrace = nthFromEnd:2'
  COLUMN is a column id or display name of the table (`metadata.KEY` for a key of a JSON object
  column, `scores_avg.NAME` for a score by name); the first operator in the text ends the column.
  Operators: = <> > < >= <=, contains, "does not contain", "starts with", "ends with", matches,
  "is not empty", "is set", "is not set", "any of", "none of", "all of", "is null", "is not null"
  (which ones a column takes depends on its type; a wrong one lists the valid ones). A trace
  position is root, first, last, nthFromStart:N or nthFromEnd:N.
  Lists are comma-separated ('tags any of "a,b",c' keeps the comma of "a,b"); a date may omit the
  time (UTC midnight); "quotes" around a text value keep its spaces.
"""


# The operator lists are schemas.filters' own, so the command line offers exactly what the API takes.
_STRING_OPS = get_args(StringOperator) + get_args(MatchOperator)
_OBJECT_OPS = get_args(StringObjectOperator) + get_args(MatchOperator)
_NULL_OPS = get_args(NullOperator)
_OPTIONS_OPS = get_args(OptionsOperator)
_NUMBER_OPS = get_args(NumberOperator)
_BOOLEAN_OPS = get_args(BooleanOperator)
# On a JSON column, `=` compares text; the orderings compare numbers.
_ORDERING_OPS = tuple(op for op in _NUMBER_OPS if op not in _STRING_OPS)
# Operators that test only the column (or the key): no value follows them.
_VALUELESS_OPS = ("is not empty", "is set", "is not set", *_NULL_OPS)

# For each declared column type (workers.tables), the operators the command line offers and the
# wire filter type each one becomes. The API accepts these combinations (workers.filters'
# ACCEPTED_FILTER_TYPES); the local check below runs that same compiler before anything is sent.
CLI_OPERATORS: dict[str, dict[str, str]] = {
    "string": {**dict.fromkeys(_STRING_OPS, "string"), **dict.fromkeys(_OPTIONS_OPS, "stringOptions")},
    "stringOptions": {**dict.fromkeys(_OPTIONS_OPS, "stringOptions"), **dict.fromkeys(_STRING_OPS, "string")},
    "stringObject": {
        **dict.fromkeys(_OBJECT_OPS, "stringObject"),
        **dict.fromkeys(_ORDERING_OPS, "numberObject"),
        **dict.fromkeys(_OPTIONS_OPS, "categoryOptions"),
    },
    "numberObject": dict.fromkeys(_NUMBER_OPS, "numberObject"),
    "categoryOptions": dict.fromkeys(_OPTIONS_OPS, "categoryOptions"),
    "booleanObject": dict.fromkeys(_BOOLEAN_OPS, "booleanObject"),
    "number": dict.fromkeys(_NUMBER_OPS, "number"),
    "datetime": dict.fromkeys(get_args(DatetimeOperator), "datetime"),
    "arrayOptions": dict.fromkeys(get_args(ArrayOptionsOperator), "arrayOptions"),
    "boolean": dict.fromkeys(_BOOLEAN_OPS, "boolean"),
    "positionInTrace": {"=": "positionInTrace"},
    "null": {},
}
for _type, _operators in CLI_OPERATORS.items():
    if _type != "positionInTrace":
        _operators.update(dict.fromkeys(_NULL_OPS, "null"))
# Columns whose filters name a key inside them: a JSON object's key, or a score's name.
KEYED_TYPES = ("stringObject", "numberObject", "categoryOptions", "booleanObject")
_POSITIONS = get_args(TracePosition)

# Longest first, so `>=` is not read as `>` followed by "=...".
_SYMBOL_OPERATORS = (">=", "<=", "<>", "!=", "=", ">", "<")
_WORD_OPERATORS = (
    "does not contain",
    "contains",
    "starts with",
    "ends with",
    "matches",
    "any of",
    "none of",
    "all of",
    "is not empty",
    "is not null",
    "is null",
    "is not set",
    "is set",
)
_OPERATOR_ALIASES = {"!=": "<>"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")

_FILTER_ADAPTER: TypeAdapter = TypeAdapter(Filter)


@dataclass(frozen=True)
class _FilterText:
    column: str
    operator: str
    value: str


def split_filter(text: str) -> _FilterText:
    """`COLUMN OPERATOR VALUE`: the first operator after a non-empty column ends the column."""
    lowered = text.lower()
    for i in range(1, len(text)):
        for op in _SYMBOL_OPERATORS:
            if text.startswith(op, i):
                return _FilterText(text[:i].strip(), _OPERATOR_ALIASES.get(op, op), text[i + len(op) :].strip())
        if not text[i - 1].isspace():
            continue
        for op in _WORD_OPERATORS:
            end = i + len(op)
            if lowered.startswith(op, i) and (end == len(text) or text[end].isspace()):
                return _FilterText(text[:i].strip(), op, text[end:].strip())
    raise UsageError(
        f"cannot read the filter {text!r}: write COLUMN OPERATOR VALUE, e.g. 'name contains foo'. "
        f"Operators: {_operator_list(op for op in _SYMBOL_OPERATORS + _WORD_OPERATORS if op not in _OPERATOR_ALIASES)}."
    )


def _operator_list(operators: Iterable[str]) -> str:
    return ", ".join(f'"{op}"' if " " in op else op for op in dict.fromkeys(operators))


def find_column(table: ExportTable, name: str) -> Column | None:
    """A filterable column by id, alias or display name; case does not matter when unambiguous."""
    column = table.find_filter_column(name)
    if column is not None:
        return column
    matches = {c for c in table.filterable_columns if name.casefold() in (n.casefold() for n in c.names)}
    return matches.pop() if len(matches) == 1 else None


def _describe_columns(table: ExportTable) -> str:
    """`userId "User ID" (string), latency "Latency (s)" (number), …`: what a filter may name."""
    described = []
    for c in table.filterable_columns:
        display = f' "{c.display}"' if c.display and c.display.casefold() != c.key.casefold() else ""
        described.append(f"{c.key}{display} ({c.filter})")
    return ", ".join(described)


def parse_filter(table: ExportTable, text: str) -> dict[str, Any]:
    """One `--filter` argument as a wire Filter of `table`; UsageError names what would be valid."""
    parts = split_filter(text)
    column, key = find_column(table, parts.column), None
    if column is None and "." in parts.column:
        head, key = parts.column.split(".", 1)
        column = find_column(table, head.strip())
        key = key.strip()
    if column is None:
        raise UsageError(
            f"unknown filter column {parts.column!r} for table {table.name}. Valid columns: {_describe_columns(table)}."
        )
    object_columns = [c.key for c in table.filterable_columns if c.filter in KEYED_TYPES]
    if key is not None and column.filter not in KEYED_TYPES:
        raise UsageError(
            f"{column.key} is not a JSON object or score column, so {parts.column!r} cannot name a key in it"
            + (f" (keyed columns of {table.name}: {', '.join(object_columns)})." if object_columns else ".")
        )
    assert column.filter is not None, "only filterable columns get here"
    operators = CLI_OPERATORS[column.filter]
    wire_type = operators.get(parts.operator)
    if wire_type is None:
        raise UsageError(
            f"{column.key} is a {column.filter} column of {table.name}: it takes "
            f"{_operator_list(operators)}, not {parts.operator!r}."
        )
    if column.filter in KEYED_TYPES and wire_type != "null" and not key:
        example = "customer = acme" if column.filter == "stringObject" else "accuracy >= 0.8"
        raise UsageError(f"{column.key} holds values by name: name the one to test, e.g. '{column.key}.{example}'.")

    wire: dict[str, Any] = {"column": column.key, "type": wire_type, "operator": parts.operator}
    if key is not None and wire_type != "null":
        wire["key"] = key
    if wire_type == "positionInTrace":
        wire.update(_position(column, parts))
    else:
        wire["value"] = _filter_value(column, wire_type, parts)
    try:
        model = _FILTER_ADAPTER.validate_python(wire)
    except ValidationError as exc:
        problem = "; ".join(err["msg"] for err in exc.errors())
        raise UsageError(f"filter {text!r}: {problem}") from None
    return model.model_dump(mode="json", exclude_none=True)


def _filter_value(column: Column, wire_type: str, parts: _FilterText) -> Any:
    value = parts.value
    where = f"filter on {column.key} ({column.filter})"
    if parts.operator in _VALUELESS_OPS:
        if value:
            raise UsageError(f"{where}: {parts.operator!r} takes no value, got {value!r}.")
        return ""
    if not value:
        raise UsageError(f"{where}: {parts.operator!r} needs a value after it.")
    if wire_type in ("stringOptions", "categoryOptions", "arrayOptions"):
        options = [_unquote(v.strip()) for v in next(csv.reader([value], skipinitialspace=True))]
        options = [v for v in options if v != ""]
        if not options:
            raise UsageError(f"{where}: {parts.operator!r} needs one or more comma-separated values.")
        return options
    if wire_type in ("number", "numberObject"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise UsageError(f"{where}: {value!r} is not a number.")
        return number
    if wire_type == "datetime":
        return _parse_datetime(value, where)
    if wire_type in ("boolean", "booleanObject"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise UsageError(f"{where}: {value!r} is not true or false.")
    return _unquote(value)


def _position(column: Column, parts: _FilterText) -> dict[str, Any]:
    """`root`, `first`, `last`, `nthFromStart:N` or `nthFromEnd:N` as the filter's key and value."""
    name, _, n = parts.value.partition(":")
    matched = next((p for p in _POSITIONS if p.casefold() == name.strip().casefold()), None)
    if matched is None:
        raise UsageError(
            f"filter on {column.key}: {parts.value!r} is not a position; write root, first, last, "
            "nthFromStart:N or nthFromEnd:N."
        )
    if matched not in ("nthFromStart", "nthFromEnd"):
        if n:
            raise UsageError(f"filter on {column.key}: {matched!r} takes no number, got {parts.value!r}.")
        return {"key": matched}
    if not n.strip().isdigit() or int(n) < 1:
        raise UsageError(f"filter on {column.key}: {matched} needs a position of 1 or more, e.g. {matched}:2.")
    return {"key": matched, "value": int(n)}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _parse_datetime(value: str, where: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{where}: {value!r} is not a date or time; write ISO 8601, e.g. 2026-01-01 or 2026-01-01T12:00:00Z."
        ) from None
    # A time without a zone means UTC, as everywhere in the exported files.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def parse_order_by(table: ExportTable, text: str) -> dict[str, str]:
    """`COLUMN[:ASC|DESC]` (ascending when no direction is given)."""
    name, _, direction = text.rpartition(":") if ":" in text else (text, ":", "ASC")
    direction = direction.strip().upper()
    if direction not in ("ASC", "DESC"):
        raise UsageError(f"--order-by {text!r}: the direction is ASC or DESC, e.g. timestamp:DESC.")
    column = table.find_sort_column(name.strip())
    if column is None:
        lowered = {c for c in table.columns if name.strip().casefold() in (n.casefold() for n in c.names)}
        column = lowered.pop() if len(lowered) == 1 else None
    if column is None or not column.sortable:
        raise UsageError(
            f"cannot order {table.name} by {name.strip()!r}. Sortable columns: {', '.join(table.sortable_names())}."
        )
    return {"column": column.key, "order": direction}


def build_query(args: argparse.Namespace) -> dict[str, Any]:
    """The export's query from the command line, checked by the same compiler the API and worker use."""
    from workers.filters import InvalidExportQuery, validate_query

    table = TABLES[args.table]
    query: dict[str, Any] = {
        "tableName": table.name,
        "filter": [parse_filter(table, text) for text in args.filter],
        "orderBy": parse_order_by(table, args.order_by) if args.order_by else None,
    }
    if args.search is not None:
        query["searchQuery"] = args.search
        if args.search_in:
            query["searchType"] = list(dict.fromkeys(args.search_in))
    try:
        validate_query(BatchExportQuery.model_validate(query))
    except ValidationError as exc:
        raise UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    except InvalidExportQuery as exc:
        raise UsageError(exc.message) from None
    return query


# --- progress --------------------------------------------------------------------------------------
