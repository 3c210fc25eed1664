"""The scheduledExport router: a project's exports on a schedule into its own bucket (OWNER and ADMIN only).

Secrets are write-only: sealed (workers.secret_box) before they reach Postgres, replaced by
`secretSet` in every reply and audit entry, and never logged (SecretStr hides them from reprs).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db import AsyncConnection, Row, audit_logs, one
from db import scheduled_exports as schedules
from procedures.auth import rpc, scoped
from procedures.context import ProjectContext
from rpc import RPCError
from schemas import default_compression
from schemas.scheduled_exports import (
    AzureDestination,
    AzureDestinationView,
    CreateScheduledExport,
    Deleted,
    ListRuns,
    ListScheduledExports,
    RunFile,
    S3Destination,
    S3DestinationView,
    ScheduledExport,
    ScheduledExportList,
    ScheduledExportRef,
    ScheduledExportRun,
    ScheduledExportRunList,
    StartFrom,
    UpdateScheduledExport,
    ValidateDestination,
    ValidationResult,
    secret_of,
)
from workers import destinations
from workers.scheduled import destination_of, run_now
from workers.secret_box import SecretBox, SecretBoxError
from workers.tables import get_table

RESOURCE_TYPE = "scheduledExport"
SCOPE = "integrations:CRUD"
_NOT_FOUND = "No scheduled export with this id in this project."
# The longest a validation waits for the destination: a dead endpoint answers within this.
VALIDATE_TIMEOUT_SECONDS = 60


def to_scheduled_export(row: dict[str, Any]) -> ScheduledExport:
    stored = row["destination"]
    view: S3DestinationView | AzureDestinationView
    if stored["type"] == "s3":
        view = S3DestinationView(**stored, secretSet=row["secret"] is not None)
    else:
        view = AzureDestinationView(**stored, secretSet=row["secret"] is not None)
    return ScheduledExport(
        id=row["id"],
        projectId=row["project_id"],
        name=row["name"],
        destination=view,
        tables=row["tables"],
        format=row["format"],
        compression=row["compression"],
        columns=row["columns"],
        schedule=row["schedule"],
        startFrom=StartFrom(mode=row["start_mode"], date=row["start_date"]),
        enabled=row["enabled"],
        disabledReason=row["disabled_reason"],
        lastSyncAt=row["last_sync_at"],
        nextSyncAt=row["next_sync_at"],
        runStartedAt=row["run_started_at"],
        lastError=row["last_error"],
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
    )


def to_run(row: dict[str, Any]) -> ScheduledExportRun:
    return ScheduledExportRun(
        id=row["id"],
        scheduledExportId=row["scheduled_export_id"],
        windowStart=row["window_start"],
        windowEnd=row["window_end"],
        status=row["status"],
        rowsExported=row["rows_exported"],
        tablesDone=row["tables_done"],
        tablesTotal=row["tables_total"],
        files=[RunFile(**f) for f in row["files"]],
        attempts=row["attempts"],
        error=row["error"],
        startedAt=row["started_at"],
        finishedAt=row["finished_at"],
        createdAt=row["created_at"],
    )


def _stored(destination: S3Destination | AzureDestination) -> dict[str, Any]:
    """The destination as stored: everything but its secret."""
    return destination.model_dump(mode="json", exclude={"secretAccessKey", "accountKey"})


def _check_tables(tables: list[str], columns: Mapping[Any, list[str]] | None) -> None:
    for table in tables:
        if get_table(table).ingested_at is None:
            raise RPCError(
                "BAD_REQUEST",
                f"The {table} table cannot be exported on a schedule: its rows are aggregates that change as"
                " traces arrive, so no window of them is ever final. Export it with batchExport.create.",
            )
    for table, chosen in (columns or {}).items():
        if table not in tables:
            raise RPCError("BAD_REQUEST", f"columns names the table {table}, which is not among tables.")
        try:
            get_table(table).choose_columns(chosen)
        except ValueError as exc:
            raise RPCError("BAD_REQUEST", f"columns.{table}: {exc}") from None


async def _find(conn: AsyncConnection, ctx: ProjectContext, scheduled_export_id: str, *, lock: bool = False) -> Row:
    """The project's scheduled export (locked until the transaction ends, with `lock`); NOT_FOUND if it has none."""
    key = {"id": scheduled_export_id, "project_id": ctx.project_id}
    cur = await conn.execute(schedules.GET_FOR_UPDATE_SQL if lock else schedules.GET_SQL, key)
    row = await cur.fetchone()
    if row is None:
        raise RPCError("NOT_FOUND", _NOT_FOUND)
    return row


def _box(ctx: ProjectContext) -> SecretBox:
    return SecretBox.from_settings(ctx.resources.settings)


async def create_scheduled_export(ctx: ProjectContext, input: CreateScheduledExport) -> ScheduledExport:
    _check_tables(list(input.tables), input.columns)
    secret = secret_of(input.destination)
    if secret is None:
        field = "secretAccessKey" if input.destination.type == "s3" else "accountKey"
        raise RPCError("BAD_REQUEST", f"destination.{field} is required to create a scheduled export.")
    row_id = str(uuid.uuid4())
    values = {
        "id": row_id,
        "project_id": ctx.project_id,
        "user_id": ctx.user.id,
        "name": input.name,
        "destination": _stored(input.destination),
        "secret": _box(ctx).seal(secret.get_secret_value(), row_id),
        "tables": list(input.tables),
        "format": input.format,
        "compression": input.compression or default_compression(input.format),
        "columns": input.columns,
        "schedule": input.schedule,
        "start_mode": input.startFrom.mode,
        "start_date": input.startFrom.date,
        "enabled": input.enabled,
    }
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        await conn.execute(schedules.INSERT_SQL, schedules.params(values))
        cur = await conn.execute(schedules.GET_SQL, {"id": row_id, "project_id": ctx.project_id})
        created = to_scheduled_export(one(await cur.fetchone()))
        await conn.execute(audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, row_id, "create", None, created))
    return created


async def update_scheduled_export(ctx: ProjectContext, input: UpdateScheduledExport) -> ScheduledExport:
    key = {"id": input.scheduledExportId, "project_id": ctx.project_id}
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        row = await _find(conn, ctx, input.scheduledExportId, lock=True)
        before = to_scheduled_export(row)
        values = dict(row)
        changes = input.model_dump(exclude_unset=True, exclude={"projectId", "scheduledExportId"})
        for field, column in (("name", "name"), ("schedule", "schedule"), ("enabled", "enabled")):
            if field in changes and changes[field] is not None:
                values[column] = changes[field]
        if input.tables is not None:
            values["tables"] = list(input.tables)
        if "columns" in changes:
            values["columns"] = input.columns
        if input.format is not None:
            values["format"] = input.format
            values["compression"] = input.compression or default_compression(input.format)
        elif input.compression is not None:
            values["compression"] = input.compression
        _check_tables(values["tables"], values["columns"])
        if input.startFrom is not None and input.startFrom != before.startFrom:
            cur = await conn.execute(schedules.HAS_RUNS_SQL, key)
            if one(await cur.fetchone())["any"]:
                raise RPCError(
                    "PRECONDITION_FAILED",
                    "startFrom can only change before the first run: later windows continue where the last one"
                    " ended. Create another scheduled export to export from another date.",
                )
            values["start_mode"], values["start_date"] = input.startFrom.mode, input.startFrom.date
        if input.destination is not None:
            secret = secret_of(input.destination)
            if secret is not None:
                values["secret"] = _box(ctx).seal(secret.get_secret_value(), row["id"])
            elif input.destination.type != row["destination"]["type"]:
                raise RPCError(
                    "BAD_REQUEST",
                    "A destination of another type needs its own secret: give"
                    f" destination.{'secretAccessKey' if input.destination.type == 's3' else 'accountKey'}.",
                )
            values["destination"] = _stored(input.destination)
        await conn.execute(schedules.UPDATE_SQL, schedules.params(values))
        cur = await conn.execute(schedules.GET_SQL, key)
        after = to_scheduled_export(one(await cur.fetchone()))
        await conn.execute(audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, row["id"], "update", before, after))
    return after


async def delete_scheduled_export(ctx: ProjectContext, input: ScheduledExportRef) -> Deleted:
    key = {"id": input.scheduledExportId, "project_id": ctx.project_id}
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        row = await _find(conn, ctx, input.scheduledExportId, lock=True)
        await conn.execute(schedules.DELETE_SQL, key)
        await conn.execute(
            audit_logs.INSERT_SQL, ctx.audit_entry(RESOURCE_TYPE, row["id"], "delete", to_scheduled_export(row), None)
        )
    return Deleted(deleted=True)


async def list_scheduled_exports(ctx: ProjectContext, input: ListScheduledExports) -> ScheduledExportList:
    async with ctx.resources.pool.connection() as conn:
        cur = await conn.execute(schedules.LIST_SQL, {"project_id": ctx.project_id})
        rows = await cur.fetchall()
    return ScheduledExportList(scheduledExports=[to_scheduled_export(r) for r in rows])


async def validate_destination(ctx: ProjectContext, input: ValidateDestination) -> ValidationResult:
    if input.destination is not None:
        destination = input.destination
        given = secret_of(destination)
        if given is None:
            field = "secretAccessKey" if destination.type == "s3" else "accountKey"
            raise RPCError("BAD_REQUEST", f"destination.{field} is required to validate a destination.")
        secret = given.get_secret_value()
    else:
        assert input.scheduledExportId is not None, "ValidateDestination gives one of the two"
        async with ctx.resources.pool.connection() as conn:
            row = await _find(conn, ctx, input.scheduledExportId)
        destination = destination_of(row)
        try:
            secret = _box(ctx).open(row["secret"], row["id"])
        except SecretBoxError as exc:
            return ValidationResult(ok=False, message=f"The stored secret cannot be read: {exc}.")
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(destinations.validate, destination, secret), VALIDATE_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return ValidationResult(
            ok=False, message=f"The destination did not answer within {VALIDATE_TIMEOUT_SECONDS} s."
        )


async def run_scheduled_export_now(ctx: ProjectContext, input: ScheduledExportRef) -> ScheduledExportRun:
    async with ctx.resources.pool.connection() as conn:
        row = await _find(conn, ctx, input.scheduledExportId)
    if not row["enabled"]:
        reason = f" ({row['disabled_reason']})" if row["disabled_reason"] else ""
        raise RPCError("PRECONDITION_FAILED", f"This scheduled export is disabled{reason}: enable it first.")
    settings = ctx.resources.settings
    run = await asyncio.to_thread(run_now, settings, ctx.resources.redis, row["id"])
    if run is None:
        raise RPCError(
            "PRECONDITION_FAILED",
            f"There is nothing to export yet: the next window starts at {_when(row['last_sync_at'])} and rows"
            f" are exported {settings.SCHEDULED_EXPORT_LAG_SECONDS:.0f} s after their ingestion.",
        )
    return to_run(run)


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "the first row"


async def list_runs(ctx: ProjectContext, input: ListRuns) -> ScheduledExportRunList:
    async with ctx.resources.pool.connection() as conn:
        await _find(conn, ctx, input.scheduledExportId)
        page = {"id": input.scheduledExportId, "limit": input.limit, "offset": input.page * input.limit}
        cur = await conn.execute(schedules.RUNS_PAGE_SQL, page)
        rows = await cur.fetchall()
        if rows:
            total = rows[0]["total_count"]
        else:
            cur = await conn.execute(schedules.RUNS_COUNT_SQL, page)
            total = one(await cur.fetchone())["n"]
    return ScheduledExportRunList(runs=[to_run(r) for r in rows], totalCount=total)


# Every procedure reads or changes where a project's data goes, with secrets: never on a cached session.
_integrations = scoped(SCOPE).meta(access_cache=False)

scheduled_export_router = rpc.router(
    create=_integrations.input(CreateScheduledExport).output(ScheduledExport).mutation(create_scheduled_export),
    update=_integrations.input(UpdateScheduledExport).output(ScheduledExport).mutation(update_scheduled_export),
    delete=_integrations.input(ScheduledExportRef).output(Deleted).mutation(delete_scheduled_export),
    all=_integrations.input(ListScheduledExports).output(ScheduledExportList).query(list_scheduled_exports),
    validate=_integrations.input(ValidateDestination).output(ValidationResult).mutation(validate_destination),
    runNow=_integrations.input(ScheduledExportRef).output(ScheduledExportRun).mutation(run_scheduled_export_now),
    runs=_integrations.input(ListRuns).output(ScheduledExportRunList).query(list_runs),
)
