"""How rows get from Postgres into a Parquet file: the options measured against psql's CSV COPY.

    .venv/bin/python bench/parquet_paths.py [--rows 200000] [--rounds 3]

Starts its own Postgres, seeds N traces and exports them, in the same process and order alternating
each round, along three paths:

- adbc: the PostgreSQL ADBC driver runs the Parquet export's typed SELECT as binary COPY and decodes
  it into Arrow record batches in C++; pyarrow writes each batch as a row group (what the job does,
  through `workers.parquet.write`).
- psycopg binary: psycopg's binary COPY of the same SELECT, its rows (Python tuples) gathered into
  columns, then `pyarrow.array` per column every 10,000 rows: the Python loop over tuples.
- psql CSV COPY: the CSV export's COPY into a file, the baseline the issue measures against.

Reports rows/s, the ratio of each to the CSV COPY, and the file sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from export_runs import copy_to_file
from export_throughput import seeded_project
from harness import Report, local_servers, median, table
from psycopg import sql

import db
from schemas import BatchExportQuery
from workers import parquet
from workers.filters import compile_query
from workers.formats import FORMATS, StatementCancel
from workers.stream import with_score_columns

BATCH_ROWS = 10_000


class _Unwatched:
    """No watchdog: nothing reports progress or cancels here."""

    def __init__(self) -> None:
        self.rows = 0
        self.cancelled = False
        self.cancel_query = StatementCancel()


def statements(database_url: str, project_id: str, rows: int):
    """The Parquet export's typed SELECT and the CSV export's COPY, as SQL texts, and the table with scores."""
    with db.connect(database_url) as conn:
        compiled = compile_query(BatchExportQuery.model_validate({"tableName": "traces"}))
        params = {**compiled.params, "project_id": project_id, "cutoff": datetime.now(UTC)}
        compiled = with_score_columns(conn, compiled, params)
        cursor = psycopg.ClientCursor(conn)
        select = cursor.mogrify(parquet.select_statement(compiled, rows + 1), params)
        csv_copy = cursor.mogrify(FORMATS["CSV"].copy_statement(compiled, rows + 1), params)
    return select, csv_copy, compiled.table


def snapshot_of(conn: psycopg.Connection) -> str:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]


def adbc_path(database_url: str, select: str, export_table, path: Path) -> tuple[float, int]:
    """(seconds, bytes), as each path returns."""
    started = time.monotonic()
    with psycopg.connect(database_url) as holder, path.open("wb") as out:
        parquet.write(
            database_url,
            snapshot_of(holder),
            select,
            export_table,
            out.write,
            codec="zstd",
            limit=None,
            watch=_Unwatched(),
        )
    return time.monotonic() - started, path.stat().st_size


def psycopg_binary_path(database_url: str, select: str, export_table, path: Path) -> tuple[float, int]:
    schema = parquet.arrow_schema(export_table)
    kinds = [c.kind for c in export_table.exported_columns]
    started = time.monotonic()
    n = 0
    with psycopg.connect(database_url) as conn, conn.cursor(binary=True) as cur:
        writer = pq.ParquetWriter(path, schema, compression="zstd")
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(sql.SQL(select))
        with cur.copy(statement) as copy:
            copy.set_types([parquet.POSTGRES_TYPES[k] for k in kinds])
            columns: list[list] = [[] for _ in kinds]
            for row in copy.rows():
                for column, value in zip(columns, row):
                    column.append(value)
                n += 1
                if n % BATCH_ROWS == 0:
                    writer.write_batch(_batch(columns, kinds, schema))
                    columns = [[] for _ in kinds]
            if columns[0]:
                writer.write_batch(_batch(columns, kinds, schema))
        writer.close()
    return time.monotonic() - started, path.stat().st_size


def _batch(columns: list[list], kinds: list, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for values, kind, field in zip(columns, kinds, schema):
        if kind == "number":
            values = [None if v is None else float(v) for v in values]
        if kind == "json":
            arrays.append(pa.ExtensionArray.from_storage(field.type, pa.array(values, pa.string())))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", type=Path, help="keep Postgres's data here and reuse an earlier seed")
    args = parser.parse_args()

    report = Report(f"Parquet paths, {args.rows:,} traces")
    work = Path(tempfile.mkdtemp(prefix="bx-bench-parquet-"))
    runs: dict[str, list[tuple[float, int]]] = {}
    with local_servers(args.reuse) as servers, db.connect(servers.database_url) as conn:
        caller, _ = seeded_project(conn, servers.folder, args.rows)
        select, csv_copy, export_table = statements(servers.database_url, caller.project_id, args.rows)
        paths = {
            "adbc": lambda p: adbc_path(servers.database_url, select, export_table, p),
            "psycopg binary": lambda p: psycopg_binary_path(servers.database_url, select, export_table, p),
            "psql CSV COPY": lambda p: copy_to_file(servers.database_url, csv_copy, p),
        }
        for round_no in range(args.rounds):
            names = list(paths) if round_no % 2 == 0 else list(reversed(paths))
            for name in names:
                target = work / f"{name.replace(' ', '_')}.out"
                seconds, size = paths[name](target)
                runs.setdefault(name, []).append((seconds, size))
                print(
                    f"round {round_no + 1} {name:15} {seconds:7.2f} s  {args.rows / seconds:>10,.0f} rows/s", flush=True
                )
                target.unlink(missing_ok=True)

    baseline = median([s for s, _ in runs["psql CSV COPY"]])
    rows = []
    for name, results in runs.items():
        seconds = median([s for s, _ in results])
        size = results[0][1]
        rows.append(
            [
                name,
                f"{args.rows / seconds:,.0f} ({seconds:.2f} s)",
                f"**{baseline / seconds:.2f}**",
                f"{size / 2**20:,.1f} MiB",
            ]
        )
    report.add(table(["path", "rows/s", "÷ psql CSV COPY", "file"], rows))
    report.add(
        f"Medians of {args.rounds} rounds, order alternating. All three read the same rows (the traces with their"
        " score columns, in the default order) on the same Postgres; the Parquet paths write zstd columns."
        " The job uses the fastest: adbc."
    )
    report.save()


if __name__ == "__main__":
    sys.exit(main())
