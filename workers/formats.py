"""File formats: Postgres renders every row as finished CSV or JSON text; Python only moves the bytes.

A row-by-row Python formatter is about ten times slower than `COPY … TO STDOUT`, so each format
is a SELECT whose expressions already produce the final text (ISO 8601 UTC timestamps, JSON
values as JSON text, formula-neutralized CSV cells), streamed with COPY. The only per-row Python
work is counting rows and, for JSON, the comma between array elements.

JSON and JSONL rows travel through COPY's CSV mode with a quote and a delimiter (0x01, 0x02)
that JSON text can never contain raw (JSON escapes every control character) and JSON text never
holds a raw newline, so COPY passes each row through untouched: no quoting, no backslash
escaping to undo.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import sql

from workers.filters import CompiledQuery
from workers.tables import ISO_UTC, Column, ExportTable

# Cells a spreadsheet would run as a formula get a leading apostrophe (OWASP's CSV injection advice).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class Progress(Protocol):
    """Where the pump leaves its row count for the progress reporter (another thread) to pick up."""

    rows: int


class Watch(Progress, Protocol):
    """The export's watchdog as a reader of rows sees it: where the count goes, whether the export was
    cancelled, and the cancel of the statement reading the rows."""

    cancelled: bool
    cancel_query: StatementCancel


@dataclass
class PumpResult:
    rows: int
    truncated: bool


class SourceError(Exception):
    """Postgres failed while sending a Parquet export's rows (workers.parquet); the message is Postgres's."""


class StatementCancel:
    """Stops the statement that reads an export's rows, from another thread (the export's watchdog).

    A cancel that comes before the statement starts is kept and stops it as soon as it is attached.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Callable[[], object] | None = None
        self._requested = False

    def attach(self, target: Callable[[], object] | None) -> None:
        with self._lock:
            self._target = target
            if target is None or not self._requested:
                return
        target()

    def __call__(self) -> None:
        with self._lock:
            self._requested = True
            target = self._target
        if target is not None:
            target()


def csv_cell(column: Column) -> sql.Composable:
    """The column's CSV cell text (NULL becomes an empty cell)."""
    e = column.expr
    if column.kind == "text":
        # ascii() reads the first character's code without building a substring: a third cheaper than left().
        codes = sql.SQL(", ").join(sql.Literal(ord(p)) for p in FORMULA_PREFIXES)
        return sql.SQL("CASE WHEN ascii({e}) IN ({p}) THEN '''' || {e} ELSE {e} END").format(e=e, p=codes)
    if column.kind == "timestamp":
        return sql.SQL(ISO_UTC).format(e)
    if column.kind == "boolean":
        return sql.SQL("CASE WHEN {e} THEN 'true' WHEN NOT {e} THEN 'false' END").format(e=e)
    if column.kind == "json":
        return sql.SQL("{}::text").format(e)
    if column.kind == "array":
        return sql.SQL("to_json({})::text").format(e)
    return sql.SQL("({})::text").format(e)  # numbers: Postgres's shortest exact text


def json_value(column: Column) -> sql.Composable:
    """The column's value as JSON text; SQL NULL becomes JSON null."""
    e = column.expr
    if column.kind == "timestamp":
        # to_char's output needs no JSON escaping: quoting it is enough, and cheaper than to_json().
        value = sql.SQL("'\"' || {} || '\"'").format(sql.SQL(ISO_UTC).format(e))
    elif column.kind == "json":
        value = sql.SQL("{}::text").format(e)
    else:
        value = sql.SQL("to_json({})::text").format(e)
    return sql.SQL("coalesce({}, 'null')").format(value)


def json_object(table: ExportTable) -> sql.Composable:
    """One compact JSON object per row, keys in the table definition's order."""
    parts: list[sql.Composable] = []
    for i, column in enumerate(table.exported_columns):
        parts.append(sql.Literal(("{" if i == 0 else ",") + json.dumps(column.key) + ":"))
        parts.append(json_value(column))
    parts.append(sql.Literal("}"))
    return sql.SQL(" || ").join(parts)


def _limit(limit: int | None) -> sql.Composable:
    return sql.SQL("") if limit is None else sql.SQL(" LIMIT {}").format(sql.Literal(limit))


# workers.tables marks with this comment where an aggregate may be narrowed to a part's rows.
_IN_PART = re.compile(r"/\*in part: ([\w.]+)\*/")


def source(compiled: CompiledQuery, *, narrowed_to: sql.Composable | None = None) -> sql.Composed:
    """The table's FROM clause, the export's project and cut-off bound where it names them.

    `narrowed_to` (a subquery of ids): each aggregate the table marks (tables.in_part) reads only the
    rows of those ids, instead of the whole project's. As `= ANY(ARRAY(ids))`, not `IN (ids)`: Postgres
    then looks the ids up in the aggregated table's index, reading only the part's own rows, where it
    planned `IN` as a scan of every row of the project joined with the ids (measured on 10M traces:
    each part read all 30M observations, 145 s of its time; bench/RESULTS.md)."""
    text = compiled.table.source
    ids: dict[str, sql.Composable] = {}
    if narrowed_to is not None:
        text = _IN_PART.sub(r"AND \1 = ANY(ARRAY{part_rows})", text)
        ids["part_rows"] = narrowed_to
    return sql.SQL(text).format(project_id=sql.Placeholder("project_id"), cutoff=sql.Placeholder("cutoff"), **ids)


def select_rows(compiled: CompiledQuery, cells: list[sql.Composable], limit: int | None) -> sql.Composed:
    """The export's SELECT; `limit` None for every matching row.

    A part's SELECT keeps to the ids of its rows (a subquery Postgres answers from the table itself,
    dropping the aggregates it does not read), and computes each aggregate for those ids alone: so
    every part costs its share of the export, not the whole export again. The subquery is repeated
    where it is used, rather than shared; the outer `IN` keeps Postgres's estimate of how many rows
    the part holds, so the joins with the (index-read) aggregates stay hash joins."""
    where = compiled.where
    narrowed_to = None
    if compiled.part is not None:
        row_id = compiled.order.id_column.expr
        narrowed_to = sql.SQL("(SELECT {id} FROM {source}{where} AND {part})").format(
            id=row_id, source=source(compiled), where=where, part=compiled.part
        )
        # Its ids, not its range alone: an ordered-by value computed by a narrowed aggregate is NULL
        # for the rows of other parts, which the range (NULLs last) would take for rows of the last
        # part. The range too: every one of the ids is in it, and on a column of the table itself it
        # lets Postgres read the part's rows by index instead of every row of the project.
        where = sql.SQL("{where} AND {part} AND {id} IN {ids}").format(
            where=where, part=compiled.part, id=row_id, ids=narrowed_to
        )
    return sql.SQL("SELECT {cells} FROM {source}{where} ORDER BY {order}{limit}").format(
        cells=sql.SQL(", ").join(cells),
        source=source(compiled, narrowed_to=narrowed_to),
        where=where,
        order=compiled.order_by,
        limit=_limit(limit),
    )


def count_rows(compiled: CompiledQuery, limit: int | None) -> sql.Composed:
    """How many rows the export will hold (capped), for `rowsTotal`; no ordering, no rendering."""
    return sql.SQL("SELECT count(*) AS n FROM (SELECT 1 FROM {source}{where}{limit}) capped").format(
        source=source(compiled), where=compiled.where, limit=_limit(limit)
    )


def one_more(limit: int | None) -> int | None:
    """What the statement asks for: one row past the limit tells a cut file from one that fits exactly."""
    return None if limit is None else limit + 1


def row_cap(limit: int | None) -> int:
    """The most rows a file may hold, as a number to compare counts with: no limit is no cap."""
    return sys.maxsize if limit is None else limit


@dataclass(frozen=True)
class FileFormat:
    name: str
    extension: str
    content_type: str
    # Text formats are COPY's own rows, compressed as a whole; Parquet (workers.parquet) is typed
    # columns, compressed column by column.
    text: bool = True

    def copy_statement(self, compiled: CompiledQuery, limit: int | None) -> sql.Composed:
        if self.name == "CSV":
            select = select_rows(compiled, [csv_cell(c) for c in compiled.table.exported_columns], limit)
            return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(select)
        select = select_rows(compiled, [json_object(compiled.table)], limit)
        return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')").format(select)

    def header(self, table: ExportTable) -> bytes:
        if self.name == "CSV":
            # Score columns are named by users: quoted as any cell, and neutralized against formulas.
            out = io.StringIO()
            csv.writer(out, lineterminator="\r\n").writerow(
                "'" + key if key.startswith(FORMULA_PREFIXES) else key for key in table.keys
            )
            return out.getvalue().encode()
        return b"[\n" if self.name == "JSON" else b""

    def footer(self, rows: int) -> bytes:
        if self.name == "JSON":
            return b"\n]\n" if rows else b"]\n"
        return b""

    def pump(self, copy: Any, write: Callable[[Any], Any], limit: int | None, progress: Progress) -> PumpResult:
        """Moves COPY's rows into `write`; at most `limit` rows (None: all), the statement asks for one more to detect a cut."""
        emit = self._row_writer(write)
        n = 0
        truncated = False
        cap = row_cap(limit)
        for row in copy:
            n += 1
            if n > cap:
                truncated = True
                n = cap
                continue
            emit(row, n)
            if not n & 1023:
                progress.rows = n
        progress.rows = n
        return PumpResult(n, truncated)

    def _row_writer(self, write: Callable[[Any], Any]) -> Callable[[Any, int], None]:
        """How one COPY row (libpq hands over exactly one per read, ending in "\n") reaches the file."""
        if self.name == "JSON":

            def emit(row: Any, n: int) -> None:
                # The array separator replaces the row's newline.
                if n != 1:
                    write(b",\n")
                write(row[:-1])

        elif self.name == "CSV":

            def emit(row: Any, n: int) -> None:
                # RFC 4180 ends records with CRLF; COPY ends them with LF. A line break inside a
                # quoted value is data and stays as it is.
                write(row[:-1])
                write(b"\r\n")

        else:

            def emit(row: Any, n: int) -> None:
                write(row)

        return emit


FORMATS: dict[str, FileFormat] = {
    "CSV": FileFormat("CSV", "csv", "text/csv; charset=utf-8"),
    "JSON": FileFormat("JSON", "json", "application/json"),
    "JSONL": FileFormat("JSONL", "jsonl", "application/x-ndjson"),
    "PARQUET": FileFormat("PARQUET", "parquet", "application/vnd.apache.parquet", text=False),
}
