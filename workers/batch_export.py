"""The RQ job: one export, from QUEUED to a complete file in storage and an email with its link.

`run_batch_export(batch_export_id)` is called by RQ with the id only. It streams the export's
rows into its file (workers.stream), unless the export has more rows than one part holds: then
it plans the export as parts and leaves them to their own jobs (workers.export_parts).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import db
from db import batch_exports
from schemas import FINAL_STATUSES, BatchExportQuery
from schemas.settings import Settings, get_settings
from workers import export_parts
from workers.compression import COMPRESSIONS
from workers.filters import InvalidExportQuery, compile_query
from workers.formats import FORMATS
from workers.logs import log_context
from workers.outcome import ExportFailed, attempt_failed, complete, fail, final_key, one_attempt_at_a_time
from workers.storage import open_storage
from workers.stream import Cancelled, Stream, export_params, write_stream

__all__ = ["ExportFailed", "run_batch_export"]

log = logging.getLogger(__name__)


def run_batch_export(batch_export_id: str) -> None:
    # Every line of the attempt carries the export's id (the worker sets it too; a direct call does not).
    with log_context(exportId=batch_export_id):
        _attempt(batch_export_id)


def _attempt(batch_export_id: str) -> None:
    settings = get_settings()
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        one_attempt_at_a_time(conn, batch_export_id)
        export = batch_exports.load(conn, batch_export_id)
        if export is None or export["status"] in FINAL_STATUSES:
            log.info("export %s is %s: nothing to do", batch_export_id, export["status"] if export else "gone")
            return
        export = batch_exports.mark_processing(conn, batch_export_id)
        if export is None:
            log.info("export %s was cancelled before it started", batch_export_id)
            return
        with log_context(projectId=export["project_id"]):
            # One line per attempt at its start and its end (or none for an attempt that was killed), so
            # operators can count and time the attempts at an export across workers.
            log.info("export %s: attempt started in process %d", batch_export_id, os.getpid())
            try:
                _run(settings, conn, export)
            except InvalidExportQuery as exc:
                # Retrying cannot fix a query; the API validates at create time, so this is a stored old query.
                fail(settings, conn, export, f"The export's query cannot run: {exc.message}")
            except ExportFailed:
                raise
            except Exception as exc:
                attempt_failed(settings, conn, export, exc)
            finally:
                log.info("export %s: attempt ended in process %d", batch_export_id, os.getpid())


def _run(settings: Settings, conn: db.Connection, export: dict[str, Any]) -> None:
    export_id = export["id"]
    if export["plan"] is not None:
        # A retry of an export that was already planned: the parts that are DONE stay done.
        export_parts.resume(settings, conn, export)
        return
    compiled = compile_query(BatchExportQuery.model_validate(export["query"]), export["columns"])
    fmt = FORMATS[export["format"]]
    # Parquet compresses column by column (the export's `compression` is its codec): the file itself is not.
    compression = COMPRESSIONS[export["compression"] if fmt.text else "none"]
    storage = open_storage(settings)
    key = final_key(export)
    limit = settings.BATCH_EXPORT_ROW_LIMIT
    started = time.monotonic()

    storage.discard_partials(key)  # what a crashed attempt may have left
    stream = Stream(
        compiled=compiled,
        params=export_params(export, compiled),
        limit=limit,
        framed=True,
        scores=None,
        record_progress=lambda c, rows, total: batch_exports.record_progress(c, export_id, rows, total),
        count=True,
    )
    try:
        result = write_stream(settings, export, stream, fmt, compression, storage, key, plan=export_parts.plan_if_large)
    except Cancelled:
        log.info("export %s was cancelled; its partial file is deleted", export_id)
        return
    except export_parts.Planned as planned:
        log.info("export %s is written as %d parts of up to %d rows", export_id, planned.parts, planned.part_rows)
        return
    truncated_at = limit if result.truncated else None
    complete(settings, conn, export, storage, key, result, time.monotonic() - started, truncated_at=truncated_at)
