"""Parquet files: Postgres's rows as Arrow record batches (ADBC), written by pyarrow as typed columns.

The PostgreSQL ADBC driver runs the export's SELECT as `COPY … TO STDOUT (FORMAT binary)` and
decodes the binary rows into Arrow columns in C++, a batch of about `BATCH_BYTES` at a time; the
only per-batch Python work is renaming the columns, parsing the `numeric` ones (the driver hands
them over as decimal text) and counting rows. The export job writes 1,000,000 traces as fast as
psql's CSV COPY reads them (1.11x, bench/export_throughput.py); psycopg's binary COPY with a
Python loop over its rows was slower in every round of bench/parquet_paths.py and keeps a core
busy in Python. Each batch becomes one row group, so the writer holds at most one batch: memory
stays flat whatever the number of rows.

The column types come from the table definition (`workers.tables.PARQUET_TYPES`); the SELECT casts
each column to the Postgres type whose binary form the driver turns into that Arrow type.

pyarrow and the driver are imported by this module only, which only the worker loads, and only
for a Parquet export: the API and the text formats never pay for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql

from workers.filters import CompiledQuery
from workers.formats import PumpResult, SourceError, StatementCancel, Watch, row_cap, select_rows
from workers.tables import Column, ExportTable, Kind

# What the driver gathers into one record batch, and so the size of a row group before encoding.
# 8 MiB keeps the work horse's peak resident memory under 200 MB (bench/RESULTS.md); larger
# batches compress a few percent better and cost memory.
BATCH_BYTES = 8 * 1024 * 1024

ARROW_TYPES: dict[Kind, pa.DataType] = {
    "text": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "json": pa.json_(pa.string()),
    "array": pa.list_(pa.string()),
}

# The Postgres type each kind is read as. `numeric` for numbers: its decimal text parses into
# float64 without the out-of-range error a cast to float8 raises on a huge cost; int8 rounds a
# fractional token count, as PARQUET_TYPES says.
POSTGRES_TYPES: dict[Kind, str] = {
    "text": "text",
    "timestamp": "timestamptz",
    "integer": "int8",
    "number": "numeric",
    "boolean": "bool",
    "json": "text",
    "array": "text[]",
}


def arrow_schema(table: ExportTable) -> pa.Schema:
    return pa.schema([pa.field(c.key, ARROW_TYPES[c.kind]) for c in table.exported_columns])


def select_statement(compiled: CompiledQuery, limit: int | None) -> sql.Composed:
    """The export's SELECT with every cell cast to the type its Parquet column is read from."""
    cells = [_cell(c) for c in compiled.table.exported_columns]
    return select_rows(compiled, cells, limit)


def _cell(column: Column) -> sql.Composable:
    return sql.SQL("({})::{}").format(column.expr, sql.SQL(POSTGRES_TYPES[column.kind]))


def write(
    database_url: str,
    snapshot: str,
    statement: str,
    table: ExportTable,
    out: Callable[[Any], Any],
    *,
    codec: str,
    limit: int | None,
    watch: Watch,
) -> PumpResult:
    """Writes the statement's rows (read inside `snapshot`) as one Parquet file into `out`.

    `codec` is the export's `compression` ("zstd", "gzip", "none": pyarrow's own names). At most
    `limit` rows (None: all); the statement asks for one more to detect a cut. `watch.cancelled` is
    asked between batches, and `watch.cancel_query` lets the watchdog stop the statement while it runs.
    """
    schema = arrow_schema(table)
    kinds = [c.kind for c in table.exported_columns]
    sink = _Output(out)
    writer = pq.ParquetWriter(sink, schema, compression=codec)
    n = 0
    truncated = False
    cap = row_cap(limit)
    try:
        with _batches(database_url, snapshot, statement, watch.cancel_query) as batches:
            for batch in batches:
                if watch.cancelled:
                    break
                if n + batch.num_rows > cap:
                    truncated = True
                    batch = batch.slice(0, cap - n)
                if batch.num_rows:
                    writer.write_batch(_typed(batch, kinds, schema))
                    n += batch.num_rows
                watch.rows = n
                if truncated:
                    break
    except BaseException:
        # The caller abandons the file; the writer is only released, whatever its footer would do.
        with contextlib.suppress(Exception):
            writer.close()
        raise
    writer.close()  # the footer: the file is valid from here on, with zero row groups if no row matched
    watch.rows = n
    return PumpResult(n, truncated)


@contextlib.contextmanager
def _batches(
    database_url: str, snapshot: str, statement: str, cancel: StatementCancel
) -> Iterator[Iterator[pa.RecordBatch]]:
    """The statement's record batches, read on a connection of its own that joins the export's snapshot."""
    try:
        database = adbc_driver_postgresql.connect(database_url)
    except adbc_driver_manager.Error as exc:
        raise SourceError(_first_line(exc)) from exc
    with database, adbc_driver_manager.AdbcConnection(database) as conn:
        _run(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _run(conn, sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string())
        with adbc_driver_manager.AdbcStatement(conn) as query:
            query.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
            query.set_sql_query(statement)
            cancel.attach(query.cancel)
            try:
                stream, _ = query.execute_query()
                reader = pa.RecordBatchReader._import_from_c(stream.address)
            except adbc_driver_manager.Error as exc:
                raise SourceError(_first_line(exc)) from exc
            try:
                yield _read(reader)
            finally:
                cancel.attach(None)
                reader.close()


def _read(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (OSError, adbc_driver_manager.Error) as exc:
            # The driver reports a failure mid-stream (libpq's own words) through Arrow's C stream.
            raise SourceError(_first_line(exc)) from exc
        yield batch


def _run(conn: adbc_driver_manager.AdbcConnection, statement: str) -> None:
    with adbc_driver_manager.AdbcStatement(conn) as stmt:
        stmt.set_sql_query(statement)
        try:
            stmt.execute_update()
        except adbc_driver_manager.Error as exc:
            raise SourceError(_first_line(exc)) from exc


def _typed(batch: pa.RecordBatch, kinds: list[Kind], schema: pa.Schema) -> pa.RecordBatch:
    """The driver's batch under the table's column names and types."""
    arrays = []
    for array, kind in zip(batch.columns, kinds):
        if kind == "number":
            # numeric arrives as decimal text ("1.50", "nan"); beyond float64's range it parses to ±inf.
            array = pc.cast(array.storage, pa.float64())
        elif kind == "json":
            array = pa.ExtensionArray.from_storage(ARROW_TYPES["json"], array)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # "[libpq] Execution error [PGRES_FATAL_ERROR]: ERROR:  canceling statement …": keep Postgres's words.
    for marker in ("ERROR:", "FATAL:"):
        if marker in text:
            text = text[text.index(marker) + len(marker) :]
            break
    return " ".join((text.splitlines() or [type(exc).__name__])[0].split())


class _Output:
    """The file object pyarrow writes into: every write goes straight to the export's sink."""

    def __init__(self, write: Callable[[Any], Any]) -> None:
        self._write = write
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self._write(data)
        size = memoryview(data).nbytes
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True
