"""The batchExport router and its handlers: create, cancel, list, and download links for a project's exports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from db import audit_logs, batch_exports, one
from procedures.auth import rpc, scoped
from procedures.context import ProjectContext
from procedures.export_changes import ChangeStream
from procedures.metrics import EXPORTS_CREATED, EXPORTS_FINISHED
from rpc import Checkpoint, RPCError, Tracked, checkpoint, tracked
from schemas import (
    ACTIVE_STATUSES,
    BatchExport,
    BatchExportList,
    BatchExportQuery,
    BatchExportRef,
    CreateBatchExport,
    DownloadUrl,
    ExportUser,
    ListBatchExports,
    Progress,
    WatchBatchExports,
    default_compression,
)
from workers.filters import InvalidExportQuery, validate_query
from workers.queue import enqueue_export, export_queue

log = logging.getLogger(__name__)

RESOURCE_TYPE = "batchExport"
# How long a link handed out by downloadUrl works; ask again for a fresh one.
DOWNLOAD_LINK_LIFETIME = timedelta(minutes=10)
# Tables whose export needs a scope besides `batchExports:create` (DESIGN.md, "Procedures").
TABLE_SCOPES = {"audit_logs": "auditLogs:read"}


def to_batch_export(row: dict[str, Any], now: datetime | None = None) -> BatchExport:
    now = now or datetime.now(UTC)
    is_expired = row["expires_at"] is not None and row["expires_at"] <= now
    return BatchExport(
        id=row["id"],
        projectId=row["project_id"],
        name=row["name"],
        status=row["status"],
        format=row["format"],
        query=BatchExportQuery.model_validate(row["query"]),
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
        finishedAt=row["finished_at"],
        expiresAt=row["expires_at"],
        isExpired=is_expired,
        isDownloadable=row["status"] == "COMPLETED" and row["object_key"] is not None and not is_expired,
        log=row["log"],
        compression=row["compression"],
        columns=row["columns"],
        fileBytes=row["file_bytes"],
        sha256=row["sha256"],
        progress=Progress(
            rowsExported=row["rows_exported"],
            rowsTotal=row["rows_total"],
            partsDone=row["parts_total"] if row["status"] == "COMPLETED" else row["parts_done"],
            partsTotal=row["parts_total"],
        ),
        user=ExportUser(id=row["user_id"], name=row["user_name"], image=row["user_image"]) if row["user_id"] else None,
    )


async def create_export(ctx: ProjectContext, input: CreateBatchExport) -> BatchExport:
    # The caller holds every scope this table needs (the router's `input_scope`): only now is the query examined.
    query = input.query
    try:
        validate_query(query, input.columns)
    except InvalidExportQuery as exc:
        raise RPCError("BAD_REQUEST", exc.message) from None
    settings = ctx.resources.settings

    limit = settings.BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT
    params = batch_exports.insert_params(
        project_id=ctx.project_id,
        user_id=ctx.user.id,
        name=input.name,
        format=input.format,
        query=query.model_dump(mode="json"),
        compression=input.compression or default_compression(input.format),
        columns=input.columns,
    )
    # Pipelined: the lock and the insert go in one round trip, the audit entry and COMMIT in another.
    async with ctx.resources.pool.connection() as conn, conn.pipeline(), conn.transaction():
        # Serialise creates per project so the active-export limit holds under concurrency.
        await conn.execute(batch_exports.LOCK_PROJECT_SQL, params)
        cur = await conn.execute(batch_exports.CREATE_SQL, {**params, "max_active": limit})
        row = one(await cur.fetchone())
        if row["id"] is None:
            raise RPCError(
                "TOO_MANY_REQUESTS",
                f"This project already has {row['active']} exports queued or running (the limit is "
                f"{limit}): wait for one to finish or cancel one.",
            )
        export = to_batch_export(row)
        await conn.execute(audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, export.id, "create", None, export))
    EXPORTS_CREATED.labels(query.tableName, input.format).inc()

    # The export is durable now. If Redis is unreachable the caller still gets it, QUEUED: the
    # sweep enqueues it once Redis is back, so nothing is lost and nothing runs twice.
    try:
        await asyncio.to_thread(enqueue_export, ctx.resources.redis, export.id, settings, project_id=ctx.project_id)
    except redis.RedisError as exc:
        log.warning(
            "export %s accepted but not enqueued (Redis: %s); the sweep will enqueue it", export.id, type(exc).__name__
        )
    return export


async def cancel_export(ctx: ProjectContext, input: BatchExportRef) -> BatchExport:
    params = {"id": input.batchExportId, "project_id": ctx.project_id}
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(batch_exports.GET_FOR_UPDATE_SQL, params)
        row = await cur.fetchone()
        if row is None:
            raise RPCError("NOT_FOUND", "No batch export with this id in this project.")
        before = to_batch_export(row)
        if before.status == "CANCELLED":
            return before
        if before.status not in ACTIVE_STATUSES:
            raise RPCError(
                "PRECONDITION_FAILED",
                f"This export is already {before.status}; only queued or running exports can be cancelled.",
            )
        await conn.execute(batch_exports.CANCEL_SQL, params)
        cur = await conn.execute(batch_exports.GET_SQL, params)
        after = to_batch_export(one(await cur.fetchone()))
        await conn.execute(audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, after.id, "cancel", before, after))
    # Counted here, where an export becomes CANCELLED exactly once (workers count the other final statuses).
    EXPORTS_FINISHED.labels("CANCELLED", after.query.tableName, after.format).inc()

    # A queued job is taken off the queue; a running one sees CANCELLED at its next progress write
    # and stops itself (that also covers Redis being unreachable right now).
    try:
        await asyncio.to_thread(_discard_queued_job, ctx.resources.redis, after.id)
    except redis.RedisError as exc:
        log.warning("export %s cancelled; its job could not be removed from Redis (%s)", after.id, type(exc).__name__)
    return after


def _discard_queued_job(connection: redis.Redis, export_id: str) -> None:
    try:
        job = Job.fetch(export_id, connection=connection, serializer=export_queue(connection).serializer)
    except NoSuchJobError:
        return
    if job.get_status() in ("queued", "scheduled", "deferred"):
        job.cancel()
        job.delete()


async def list_exports(ctx: ProjectContext, input: ListBatchExports) -> BatchExportList:
    params = {"project_id": ctx.project_id, "limit": input.limit, "offset": input.page * input.limit}
    async with ctx.resources.pool.connection() as conn:
        cur = await conn.execute(batch_exports.PAGE_SQL, params)
        rows = await cur.fetchall()
        if rows:
            total = rows[0]["total_count"]
        else:  # an empty project, or a page past the end
            cur = await conn.execute(batch_exports.COUNT_SQL, params)
            total = one(await cur.fetchone())["n"]
    now = datetime.now(UTC)
    return BatchExportList(exports=[to_batch_export(r, now) for r in rows], totalCount=total)


async def download_url(ctx: ProjectContext, input: BatchExportRef) -> DownloadUrl:
    params = {"id": input.batchExportId, "project_id": ctx.project_id}
    async with ctx.resources.pool.connection() as conn:
        cur = await conn.execute(batch_exports.GET_SQL, params)
        row = await cur.fetchone()
        if row is None:
            raise RPCError("NOT_FOUND", "No batch export with this id in this project.")
        export = to_batch_export(row)
        if export.status != "COMPLETED" or row["object_key"] is None:
            raise RPCError(
                "PRECONDITION_FAILED",
                f"This export is {export.status}; a download link exists only once it has COMPLETED.",
            )
        if export.isExpired:
            assert export.expiresAt is not None, "only an export with an expiry time expires"
            raise RPCError(
                "PRECONDITION_FAILED",
                f"This export's file expired at {export.expiresAt.isoformat()}; create the export again.",
            )
        # Never longer than the file itself will exist.
        expires_at = min(datetime.now(UTC) + DOWNLOAD_LINK_LIFETIME, row["expires_at"])
        settings = ctx.resources.settings
        url = await asyncio.to_thread(ctx.resources.storage.download_url, row["object_key"], expires_at, settings)
        await conn.execute(audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, export.id, "download", export, export))
    return DownloadUrl(url=url, expiresAt=expires_at)


async def watch_exports(
    ctx: ProjectContext, input: WatchBatchExports
) -> AsyncIterator[Tracked[BatchExport] | Checkpoint]:
    """The project's exports (or one of them) each time its status or progress changes."""
    last_event_id = int(input.lastEventId) if input.lastEventId is not None else None
    # Awaited before the stream opens: once the client sees it open, no change can be missed.
    changes = await ctx.resources.export_changes.open(ctx.project_id, input.batchExportId, last_event_id)
    return TrackedChanges(changes)


class TrackedChanges:
    """A stream's changes as its events: the BatchExport, tracked with its seq, after a checkpoint at the
    seq it starts from (a client that reconnects before any event resumes there, missing nothing). A
    class rather than a generator, so that closing it unregisters the stream even if nothing was pulled."""

    def __init__(self, changes: ChangeStream) -> None:
        self.changes = changes
        self.started = False

    def __aiter__(self) -> TrackedChanges:
        return self

    async def __anext__(self) -> Tracked[BatchExport] | Checkpoint:
        if not self.started:
            self.started = True
            return checkpoint(str(self.changes.sent))
        change = await anext(self.changes)
        # The same BatchExport object goes to every stream following the project: encoded once.
        return tracked(str(change.seq), change.export)

    async def aclose(self) -> None:
        await self.changes.aclose()


def table_scope(input: CreateBatchExport) -> str | None:
    """The further scope exporting this table needs, if any."""
    return TABLE_SCOPES.get(input.query.tableName)


batch_export_router = rpc.router(
    create=scoped("batchExports:create", input_scope=table_scope)
    .input(CreateBatchExport)
    .output(BatchExport)
    .mutation(create_export),
    cancel=scoped("batchExports:create").input(BatchExportRef).output(BatchExport).mutation(cancel_export),
    all=scoped("batchExports:read").input(ListBatchExports).output(BatchExportList).query(list_exports),
    # A link hands out the file: never on a cached (possibly just revoked) session.
    downloadUrl=scoped("batchExports:read")
    .meta(access_cache=False)
    .input(BatchExportRef)
    .output(DownloadUrl)
    .query(download_url),
    # A stream is checked against Postgres when it opens (never the cache), then whenever access
    # changes anywhere (procedures/streams.py).
    onChange=scoped("batchExports:read").input(WatchBatchExports).output(BatchExport).subscription(watch_exports),
)
