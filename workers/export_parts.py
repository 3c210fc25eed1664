"""Large exports: planned as parts, each part an RQ job of its own, and one job that assembles the file.

An export with more rows than `BATCH_EXPORT_PART_ROWS` is cut, inside the snapshot of its first
attempt, into contiguous ranges of its total order (the `orderBy` column, then `id`): the plan
holds each range's first row and the next range's first row, and what every part must agree on
(the score columns, the row limit). Each part streams its range into an object of its own, with
none of the format's header or footer; the assembly job, which RQ starts once every part job has
ended, joins them into the export's one object: the header, the parts in order (with the JSON
array's commas between them) and the footer, or for Parquet the parts' row groups under one
footer. So the file holds exactly the bytes a single stream would have written (compressed
files: the same bytes once decompressed, as one gzip member or zstd frame per part).

Consistency: every part reads in a snapshot of its own and keeps to rows created no later than
the export (the cut-off every export has), so rows created later never appear, and every row
that existed when the export was planned appears in exactly one part as long as its ordered-by
value stays as it was: the ranges are fixed by those values at planning time. A row updated
while the export runs appears with its values as of the moment its part was read; a row whose
ordered-by value changes may move into another part's range (and so appear twice, or not at
all); a row deleted before its part is read is missing. A retry redoes only parts that are not
DONE, so a crash never duplicates or drops rows of a finished part.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import rq
from psycopg import sql

import db
from db import batch_export_parts, batch_exports
from schemas import BatchExportQuery
from schemas.settings import Settings, get_settings
from workers.compression import COMPRESSIONS, Compression
from workers.filters import CompiledQuery, OrderKey, compile_query
from workers.formats import FORMATS, FileFormat, count_rows, source
from workers.logs import log_context
from workers.outcome import ExportFailed, attempt_failed, complete, final_key, one_attempt_at_a_time
from workers.queue import resume_parts
from workers.storage import open_storage, safe_name
from workers.stream import Cancelled, ExportedFile, Stream, export_params, score_names, with_score_columns, write_stream
from workers.tables import ScoreName

log = logging.getLogger(__name__)


class Planned(Exception):
    """Raised inside a whole export's stream, before any row is written: the export is planned as parts."""

    def __init__(self, parts: int, part_rows: int):
        super().__init__(f"{parts} parts")
        self.parts, self.part_rows = parts, part_rows


# --- planning --------------------------------------------------------------------------------------


def plan_if_large(
    settings: Settings, export: dict[str, Any], data: db.Connection, compiled: CompiledQuery, params: dict[str, Any]
) -> None:
    """Inside the first attempt's snapshot: plans the export as parts and enqueues them (raising
    Planned) when it has more rows to write than one part holds; returns otherwise."""

    part_rows = settings.BATCH_EXPORT_PART_ROWS
    limit = settings.BATCH_EXPORT_ROW_LIMIT
    if limit is not None and limit <= part_rows:
        return
    capped = db.one(data.execute(count_rows(compiled, part_rows + 1), params).fetchone())["n"]
    if capped <= part_rows:
        return
    total = db.one(data.execute(count_rows(compiled, None), params).fetchone())["n"]
    # One sort of the order keys alone: in memory, not in temporary files, where it fits.
    data.execute("SET LOCAL work_mem = '256MB'")
    boundaries = data.execute(_boundaries(compiled, part_rows, limit), params).fetchall()
    rows = total if limit is None else min(total, limit)
    starts = [b for b in boundaries if b["n"] <= rows]
    end = next((_row_key(b) for b in boundaries if b["n"] == rows + 1), None)
    parts = [
        {
            "part": i,
            "first_row": None if i == 0 else _row_key(start),
            "next_row": _row_key(starts[i + 1]) if i + 1 < len(starts) else end,
            "rows_planned": min(part_rows, rows - i * part_rows),
        }
        for i, start in enumerate(starts)
    ]
    plan = {
        "scoreColumns": [[s.name, s.numeric] for s in score_names(data, params)]
        if compiled.table.score_alias is not None
        else [],
        "orderType": boundaries[0]["type"],
        "truncatedAt": limit if rows < total else None,
        "partRows": part_rows,
    }
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        batch_export_parts.plan(conn, export["id"], plan, parts)
        export = batch_exports.load(conn, export["id"]) or export
        resume(settings, conn, export)
    raise Planned(len(parts), part_rows)


def _row_key(boundary: dict[str, Any]) -> dict[str, Any]:
    return {"value": boundary["value"], "id": boundary["id"]}


def _boundaries(compiled: CompiledQuery, part_rows: int, limit: int | None) -> sql.Composed:
    """The first row of every part (and the first row past the limit): the rows of the ordered key
    and id numbered, none of them rendered."""
    order = compiled.order
    wanted = sql.SQL("mod(n - 1, {}) = 0").format(sql.Literal(part_rows))
    if limit is not None:
        wanted = sql.SQL("({wanted} AND n <= {limit}) OR n = {next}").format(
            wanted=wanted, limit=sql.Literal(limit), next=sql.Literal(limit + 1)
        )
    return sql.SQL(
        "SELECT n, k::text AS value, pg_typeof(k)::text AS type, i AS id FROM ("
        "SELECT {key} AS k, {id} AS i, row_number() OVER (ORDER BY {order}) AS n"
        " FROM {source}{where}) numbered WHERE {wanted} ORDER BY n"
    ).format(
        key=order.column.expr,
        id=order.id_column.expr,
        order=compiled.order_by,
        source=source(compiled),
        where=compiled.where,
        wanted=wanted,
    )


def range_condition(
    order: OrderKey, order_type: str, first_row: dict[str, Any] | None, next_row: dict[str, Any] | None
) -> tuple[sql.Composable, dict[str, Any]]:
    """The SQL condition of a part's range of the export's order, and the values it binds.

    NULLs of the ordered-by column come last in either direction, as the export's ORDER BY puts them."""
    tests: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {}
    for name, row, at_or_after in (("first", first_row, True), ("next", next_row, False)):
        if row is None:
            continue
        value, row_id = sql.Placeholder(f"part_{name}_value"), sql.Placeholder(f"part_{name}_id")
        params[f"part_{name}_value"], params[f"part_{name}_id"] = row["value"], row["id"]
        # Ascending: "at or after" is >=, "before" is <; descending turns them round.
        compare = sql.SQL((">=" if at_or_after else "<") if not order.descending else ("<=" if at_or_after else ">"))
        key, row_id_expr = order.column.expr, order.id_column.expr
        if order.by_id:
            tests.append(sql.SQL("{} {} {}").format(row_id_expr, compare, row_id))
            continue
        typed = sql.SQL("CAST({} AS {})").format(value, sql.SQL(order_type))
        pair = sql.SQL("({k}, {i}) {op} ({v}, {r})").format(k=key, i=row_id_expr, op=compare, v=typed, r=row_id)
        if row["value"] is None:
            # The range's edge falls among the NULLs, which are ordered by id alone.
            by_id = sql.SQL("{} {} {}").format(row_id_expr, compare, row_id)
            test = sql.SQL("({k} IS NULL AND {b})" if at_or_after else "({k} IS NOT NULL OR {b})")
            tests.append(test.format(k=key, b=by_id))
        else:
            test = sql.SQL("({k} IS NULL OR {p})" if at_or_after else "({k} IS NOT NULL AND {p})")
            tests.append(test.format(k=key, p=pair))
    return sql.SQL(" AND ").join(tests), params


def resume(settings: Settings, conn: db.Connection, export: dict[str, Any]) -> list[int]:
    """From inside a job: enqueues the parts that are not DONE (and the assembly); returns those parts."""
    job = rq.get_current_job()
    connection = job.connection if job is not None else redis.Redis.from_url(settings.REDIS_URL)
    return resume_parts(connection, conn, export, settings)


# --- a part ----------------------------------------------------------------------------------------


def part_key(export: dict[str, Any], part: int) -> str:
    """Where a part's object is stored until the assembly: beside the export's file, in a hidden folder."""
    fmt, compression = _file_of(export)
    return "/".join(
        (
            safe_name(export["project_id"], fallback="project"),
            safe_name(export["id"], fallback="export"),
            ".parts",
            f"part-{part:05d}.{compression.extension(fmt.extension)}",
        )
    )


def _file_of(export: dict[str, Any]) -> tuple[FileFormat, Compression]:
    fmt = FORMATS[export["format"]]
    return fmt, COMPRESSIONS[export["compression"] if fmt.text else "none"]


def run_export_part(export_id: str, part: int) -> None:
    """The RQ job of one part: streams its range into the part's object, unless the part is DONE."""
    with log_context(exportId=export_id, part=part):
        _attempt_part(export_id, part)


def _attempt_part(export_id: str, part: int) -> None:
    settings = get_settings()
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        one_attempt_at_a_time(conn, f"{export_id}/part/{part}")
        export = batch_exports.load(conn, export_id)
        if export is None:
            return
        with log_context(projectId=export["project_id"]):
            if export["status"] != "PROCESSING":
                log.info("export %s is %s: part %d has nothing to do", export_id, export["status"], part)
                discard_parts(settings, conn, export)
                return
            row = batch_export_parts.start(conn, export_id, part, worker=f"{socket.gethostname()}:{os.getpid()}")
            if row is None:
                log.info("export %s: part %d is done already", export_id, part)
                return
            where = f"Part {part + 1} of {export['parts_total']}: "
            log.info(
                "export %s part %d: attempt %d started in process %d", export_id, part, row["attempts"], os.getpid()
            )
            try:
                _write_part(settings, conn, export, row)
            except ExportFailed:
                raise
            except Exception as exc:
                attempt_failed(settings, conn, export, exc, where)
            finally:
                log.info("export %s part %d: attempt ended in process %d", export_id, part, os.getpid())


def _write_part(settings: Settings, conn: db.Connection, export: dict[str, Any], row: dict[str, Any]) -> None:
    export_id, part = export["id"], row["part"]
    plan = export["plan"]
    compiled = compile_query(BatchExportQuery.model_validate(export["query"]), export["columns"])
    condition, range_params = range_condition(compiled.order, plan["orderType"], row["first_row"], row["next_row"])
    compiled = compiled.in_part(condition, range_params)
    fmt, compression = _file_of(export)
    storage = open_storage(settings)
    key = part_key(export, part)
    storage.discard_partials(key)
    stream = Stream(
        compiled=compiled,
        params=export_params(export, compiled),
        limit=None,
        framed=False,
        scores=[ScoreName(name, numeric) for name, numeric in plan["scoreColumns"]],
        record_progress=lambda c, rows, total: batch_export_parts.record_progress(c, export_id, part, rows),
        count=False,
    )
    try:
        result = write_stream(settings, export, stream, fmt, compression, storage, key)
    except Cancelled:
        log.info("export %s was stopped during part %d; its objects are deleted", export_id, part)
        discard_parts(settings, conn, export)
        return
    done = batch_export_parts.finish(
        conn, export_id, part, rows=result.rows, object_key=key, file_bytes=result.file_bytes, sha256=result.sha256
    )
    if not done:
        storage.delete(key)
        discard_parts(settings, conn, export)
        log.info("export %s was stopped as part %d finished; its objects are deleted", export_id, part)
        return
    log.info("export %s part %d: %d rows, %d bytes", export_id, part, result.rows, result.file_bytes)


def discard_parts(settings: Settings, conn: db.Connection, export: dict[str, Any]) -> None:
    """Deletes every part of an export that will not be (or has been) assembled.

    Every part's key is deleted, stored or not: deleting a missing object is no error, and on file
    storage each delete also removes the parts' folder once the last part in it is gone."""
    storage = open_storage(settings)
    for part in range(export["parts_total"]):
        storage.delete(part_key(export, part))
    batch_export_parts.forget_objects(conn, export["id"])


# --- the assembly ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRange:
    """Bytes of a stored object, copied into the assembled object as they are."""

    key: str
    offset: int
    length: int


def assemble_export(export_id: str) -> None:
    """The RQ job that runs once every part job has ended: the parts become the export's one object."""
    with log_context(exportId=export_id):
        _attempt_assembly(export_id)


def _attempt_assembly(export_id: str) -> None:
    settings = get_settings()
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        one_attempt_at_a_time(conn, export_id)
        export = batch_exports.load(conn, export_id)
        if export is None:
            return
        with log_context(projectId=export["project_id"]):
            if export["status"] != "PROCESSING":
                log.info("export %s is %s: its parts are deleted, not assembled", export_id, export["status"])
                discard_parts(settings, conn, export)
                return
            try:
                _assemble(settings, conn, export)
            except ExportFailed:
                raise
            except Exception as exc:
                attempt_failed(settings, conn, export, exc, "Joining the parts into one file: ")


class PartsMissing(Exception):
    pass


def _assemble(settings: Settings, conn: db.Connection, export: dict[str, Any]) -> None:
    started = time.monotonic()
    parts = batch_export_parts.parts(conn, export["id"])
    missing = [p["part"] + 1 for p in parts if p["status"] != "DONE"]
    if missing:
        # A part's last attempt failed (the export is about to be FAILED) or its job was lost (the sweep
        # enqueues it again, and this job after it).
        raise PartsMissing(f"parts {', '.join(map(str, missing))} of {len(parts)} are not written")
    fmt, compression = _file_of(export)
    storage = open_storage(settings)
    key = final_key(export)
    storage.discard_partials(key)
    pieces = _pieces(conn, storage, export, fmt, compression, parts)
    digest = hashlib.sha256()
    size = 0
    with storage.assembler(key, compression.content_type or fmt.content_type) as out:
        for piece in pieces:
            if isinstance(piece, bytes):
                out.write(piece)
                chunks: Iterator[bytes] = iter((piece,))
            else:
                out.append(piece.key, piece.offset, piece.length)
                chunks = storage.read_chunks(piece.key, piece.offset, piece.length)
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
    rows = sum(p["rows_exported"] for p in parts)
    plan = export["plan"]
    truncated_at = plan["truncatedAt"]
    result = ExportedFile(rows, truncated_at is not None, size, digest.hexdigest())
    elapsed = (datetime.now(UTC) - export["created_at"]).total_seconds()
    log.info("export %s: %d parts joined in %.1f s", export["id"], len(parts), time.monotonic() - started)
    complete(settings, conn, export, storage, key, result, elapsed, truncated_at=truncated_at, parts=len(parts))
    discard_parts(settings, conn, export)


def _pieces(
    conn: db.Connection,
    storage: Any,
    export: dict[str, Any],
    fmt: FileFormat,
    compression: Compression,
    parts: list[dict[str, Any]],
) -> list[bytes | StoredRange]:
    """The assembled object, in order: bytes made here (header, separators, footer) and ranges of the parts."""
    if not fmt.text:
        from workers import parquet_concat

        pieces = []
        for p in parts:
            key: str = p["object_key"]

            def read_range(offset: int, length: int, key: str = key) -> bytes:
                data: bytes = storage.read_range(key, offset, length)
                return data

            pieces.append(
                parquet_concat.ParquetPiece(p["file_bytes"], parquet_concat.read_footer(read_range, p["file_bytes"]))
            )
        ranges: list[bytes | StoredRange] = [b"PAR1"]
        for p, piece in zip(parts, pieces, strict=True):
            offset, length = parquet_concat.data_range(piece)
            if length:
                ranges.append(StoredRange(p["object_key"], offset, length))
        ranges.append(parquet_concat.joined_footer(pieces))
        return ranges

    plan = export["plan"]
    compiled = compile_query(BatchExportQuery.model_validate(export["query"]), export["columns"])
    scores = [ScoreName(name, numeric) for name, numeric in plan["scoreColumns"]]
    compiled = with_score_columns(conn, compiled, {}, scores)
    rows = sum(p["rows_exported"] for p in parts)
    written = [p for p in parts if p["rows_exported"]]
    out: list[bytes | StoredRange] = [_frame(compression, fmt.header(compiled.table))]
    for i, p in enumerate(written):
        if i and fmt.name == "JSON":
            out.append(_frame(compression, b",\n"))
        out.append(StoredRange(p["object_key"], 0, p["file_bytes"]))
    out.append(_frame(compression, fmt.footer(rows)))
    return [piece for piece in out if piece]


def _frame(compression: Compression, data: bytes) -> bytes:
    """`data` as the file holds it: as it is, or as a gzip member / zstd frame of its own."""
    if not data or compression.new_compressor is None:
        return data
    compressor = compression.new_compressor()
    return compressor.compress(data) + compressor.flush()
