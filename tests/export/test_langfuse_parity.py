"""Every filter Langfuse's frontend can send is accepted and selects the rows Langfuse's semantics select.

For every table, every filter column Langfuse defines (tests/support/langfuse.py), every operator of
its type and of each compatible type, by id, by display name and by the other names Langfuse's
server maps: the request validates as `batchExport.create` validates it, and the rows the export's
own statement selects equal those an independent query (ORACLE_SQL) keeps under `holds`. Values
are taken from the seeded data (devstack's seed, awkward values included), so each case has rows
on both sides of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from statistics import median_low
from typing import Any

import psycopg
import pytest

import db
from devstack.seed import seed
from schemas import BatchExportQuery
from schemas.batch_exports import CreateBatchExport
from tests.support.langfuse import (
    LANGFUSE_COLUMNS,
    LANGFUSE_SORT_COLUMNS,
    ORACLE_SQL,
    LangfuseColumn,
    holds,
    value_of,
)
from tests.support.world import new_project
from workers.filters import ACCEPTED_FILTER_TYPES, compile_query
from workers.formats import select_rows

TRACES = 500
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

STRING_OPERATORS = ("=", "contains", "does not contain", "starts with", "ends with", "is not empty", "matches")


@dataclass
class World:
    conn: psycopg.Connection
    project_id: str
    rows: dict[str, list[dict[str, Any]]]

    def select_ids(self, table: str, filters: list[dict[str, Any]], order_by: dict | None = None) -> list[str]:
        query = BatchExportQuery.model_validate({"tableName": table, "filter": filters, "orderBy": order_by})
        compiled = compile_query(query)
        statement = select_rows(compiled, [compiled.table.column("id").expr], 1_000_000)
        params = {**compiled.params, "project_id": self.project_id, "cutoff": NOW}
        return [r["id"] for r in self.conn.execute(statement, params)]


@pytest.fixture(scope="module")
def world(database_url: str) -> World:
    conn = db.connect(database_url, autocommit=True)
    project = new_project(conn, "langfuse parity")
    seed(conn, project.id, traces=TRACES, rng_seed=11, now=NOW)
    rows = {table: conn.execute(sql, {"project_id": project.id}).fetchall() for table, sql in ORACLE_SQL.items()}
    return World(conn, project.id, rows)


def _common(values: list[Any]) -> list[Any]:
    """The values, most frequent first (ties in a stable order)."""
    counts = Counter(values)
    return sorted(counts, key=lambda v: (-counts[v], repr(v)))


def _usable(text: Any) -> bool:
    return isinstance(text, str) and text.strip() != "" and "\x00" not in text


def _exact(number: Any) -> bool:
    # A value `=` can hit: the float the wire carries is exactly the stored number.
    return Decimal(repr(float(number))) == Decimal(str(number))


def filter_cases(table: str, column: LangfuseColumn, values: list[Any]) -> list[dict[str, Any]]:
    """The filters (without `column`) to send for one column: each operator of its type and compatible types."""
    cases: list[dict[str, Any]] = []
    kind = column.type

    def add(type_: str, operator: str, value: Any = None, key: str | None = None) -> None:
        case: dict[str, Any] = {"type": type_, "operator": operator}
        if value is not None:
            case["value"] = value
        if key is not None:
            case["key"] = key
        cases.append(case)

    if kind in ("string", "stringOptions"):
        flat = [v for vs in values if vs for v in (vs if isinstance(vs, list) else [vs])]
        texts = _common([v for v in flat if _usable(v)])
        if texts:
            text = texts[0]
            middle = text[1:-1] if len(text) > 3 else text
            for operator in STRING_OPERATORS:
                value = {
                    "=": text,
                    "contains": middle,
                    "does not contain": middle,
                    "starts with": text[:2],
                    "ends with": text[-2:],
                    "is not empty": "",
                    "matches": text,
                }[operator]
                add("string", operator, value)
            add("stringOptions", "any of", texts[:2])
            add("stringOptions", "none of", texts[:1])
    elif kind == "arrayOptions":
        elements = _common([e for vs in values for e in (vs or []) if _usable(e)])
        if elements:
            add("arrayOptions", "any of", elements[:1])
            add("arrayOptions", "all of", elements[:2])
            add("arrayOptions", "none of", elements[:1])
            add("stringOptions", "any of", elements[1:3] or elements[:1])
            add("stringOptions", "none of", elements[:1])
    elif kind == "number":
        numbers = [v for v in values if v is not None]
        if numbers:
            middle = median_low(numbers)
            for operator in (">", "<", ">=", "<="):
                add("number", operator, float(middle))
            exact = [n for n in _common(numbers) if _exact(n)]
            if exact:
                add("number", "=", float(exact[0]))
    elif kind == "datetime":
        moments = sorted(v for v in values if v is not None)
        if moments:
            middle = moments[len(moments) // 2].isoformat()
            for operator in (">", "<", ">=", "<="):
                add("datetime", operator, middle)
    elif kind == "boolean":
        for operator in ("=", "<>"):
            add("boolean", operator, True)
        add("boolean", "=", False)
    elif kind == "stringObject":
        pairs = [(k, v) for d in values if isinstance(d, dict) for k, v in d.items() if _usable(v)]
        if pairs:
            key, text = _common(pairs)[0]
            middle = text[1:-1] if len(text) > 3 else text
            for operator, value in (
                ("=", text),
                ("contains", middle),
                ("does not contain", middle),
                ("starts with", text[:2]),
                ("ends with", text[-2:]),
            ):
                add("stringObject", operator, value, key)
            keys = Counter(k for d in values if isinstance(d, dict) for k in d)
            partial = [k for k, n in keys.most_common() if n < len(values)] or [key]
            add("stringObject", "is set", "", partial[0])
            add("stringObject", "is not set", "", partial[0])
            # Langfuse's old spelling of "is set": contains "".
            add("stringObject", "contains", "", partial[0])
    elif kind == "numberObject":
        by_name = Counter(name for d in values for name in (d or {}))
        if by_name:
            key = by_name.most_common(1)[0][0]
            averages = [a for d in values for a in (d or {}).get(key, [])]
            middle = median_low(averages)
            for operator in (">", "<", ">=", "<="):
                add("numberObject", operator, float(middle), key)
            exact = [a for a in _common(averages) if _exact(a)]
            if exact:
                add("numberObject", "=", exact[0], key)
    elif kind == "categoryOptions":
        entries = _common([e for s in values for e in (s or ())])
        if entries:
            key, _, category = entries[0].partition(":")
            add("categoryOptions", "any of", [category], key)
            add("categoryOptions", "none of", [category], key)
            add("stringOptions", "any of", entries[:2])
            add("stringOptions", "none of", entries[:1])
    elif kind == "booleanObject":
        entries = _common([e for s in values for e in (s or ())])
        if entries:
            key = entries[0].rpartition(":")[0]
            add("booleanObject", "=", True, key)
            add("booleanObject", "<>", True, key)
            add("booleanObject", "=", False, key)
    elif kind == "positionInTrace":
        for key in ("root", "first", "last"):
            add("positionInTrace", "=", None, key)
        add("positionInTrace", "=", 2, "nthFromStart")
        add("positionInTrace", "=", 2, "nthFromEnd")
    if kind != "positionInTrace":
        add("null", "is null", "")
        add("null", "is not null", "")
    return cases


COLUMN_CASES = [(table, column) for table, columns in LANGFUSE_COLUMNS.items() for column in columns]


@pytest.mark.parametrize("table,column", COLUMN_CASES, ids=[f"{table}-{column.id}" for table, column in COLUMN_CASES])
def test_every_langfuse_filter_selects_the_rows_langfuse_would(world, table, column):
    rows = world.rows[table]
    values = [value_of(table, column, row) for row in rows]
    cases = filter_cases(table, column, values)
    assert len(cases) >= 4, f"the seed gives {table}.{column.id} no values to filter on"
    sizes = []
    for case in cases:
        expected = sorted(row["id"] for row, value in zip(rows, values, strict=True) if holds(case, column, value))
        for spelling in (column.id, column.name):
            filter_ = {"column": spelling, **case}
            # Accepted exactly as batchExport.create accepts it.
            CreateBatchExport.model_validate(
                {"projectId": "p", "name": "x", "format": "CSV", "query": {"tableName": table, "filter": [filter_]}}
            )
            assert sorted(world.select_ids(table, [filter_])) == expected, (spelling, case)
        sizes.append(len(expected))
    # The values split the rows: some filter keeps some rows, some filter drops some.
    assert any(n > 0 for n in sizes) and any(n < len(rows) for n in sizes), (table, column.id, sizes)


SPELLING_CASES = [
    (table, column, spelling)
    for table, column in COLUMN_CASES
    for spelling in column.spellings
    if spelling not in (column.id, column.name)
]


@pytest.mark.parametrize(
    "table,column,spelling",
    SPELLING_CASES,
    ids=[f"{table}-{column.id}-{spelling}" for table, column, spelling in SPELLING_CASES],
)
def test_every_name_langfuse_server_maps_means_the_same_column(table, column, spelling):
    case = {"type": "null", "operator": "is not null", "value": ""}
    by_id = compile_query(
        BatchExportQuery.model_validate({"tableName": table, "filter": [{"column": column.id, **case}]})
    )
    other = compile_query(
        BatchExportQuery.model_validate({"tableName": table, "filter": [{"column": spelling, **case}]})
    )
    assert by_id.conditions[0].as_string() == other.conditions[0].as_string()


SORT_CASES = [(table, column) for table, columns in LANGFUSE_SORT_COLUMNS.items() for column in columns]


@pytest.mark.parametrize("table,column", SORT_CASES, ids=[f"{t}-{c}" for t, c in SORT_CASES])
def test_every_langfuse_sort_column_orders_both_ways(world, table, column):
    spec = next((c for c in LANGFUSE_COLUMNS[table] if column in (c.id, c.name)), None)
    ids = {}
    for order in ("ASC", "DESC"):
        ids[order] = world.select_ids(table, [], {"column": column, "order": order})
    assert sorted(ids["ASC"]) == sorted(ids["DESC"]) == sorted(r["id"] for r in world.rows[table])
    if spec is not None and spec.type in ("number", "datetime"):
        by_id = {r["id"]: value_of(table, spec, r) for r in world.rows[table]}
        present = [by_id[i] for i in ids["ASC"] if by_id[i] is not None]
        assert present == sorted(present), f"{table} ordered by {column} ASC"
        present = [by_id[i] for i in ids["DESC"] if by_id[i] is not None]
        assert present == sorted(present, reverse=True), f"{table} ordered by {column} DESC"
        # Rows without a value come last both ways, as the export promises.
        missing = [i for i in ids["ASC"] if by_id[i] is None]
        assert ids["ASC"][len(ids["ASC"]) - len(missing) :] == missing


def test_every_langfuse_column_type_takes_the_filter_types_langfuse_pairs_with_it():
    # filterTypeCompatibility.ts: a column type accepts these filter types (besides null).
    langfuse_pairs = {
        "string": {"string", "stringOptions"},
        "stringOptions": {"string", "stringOptions"},
        "arrayOptions": {"arrayOptions", "stringOptions"},
        "datetime": {"datetime"},
        "number": {"number"},
        "boolean": {"boolean"},
        "stringObject": {"stringObject"},
        "numberObject": {"numberObject"},
        "categoryOptions": {"categoryOptions", "stringOptions"},
    }
    for column_type, types in langfuse_pairs.items():
        assert types <= set(ACCEPTED_FILTER_TYPES[column_type]), column_type
