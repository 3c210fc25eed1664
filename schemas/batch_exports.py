"""Wire models of the batchExport procedures: what the frontend sends and what it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas.filters import ColumnName, Filter

TableName = Literal[
    "traces",
    "observations",
    "events",
    "scores",
    "sessions",
    "dataset_run_items",
    "dataset_items",
    "audit_logs",
]
ExportFormat = Literal["CSV", "JSON", "JSONL", "PARQUET"]
# How the file is compressed while it is written (the download keeps the compressed bytes); for
# PARQUET, the codec of its columns.
Compression = Literal["none", "gzip", "zstd"]


def default_compression(format: ExportFormat) -> Compression:
    """What `compression` means when a create leaves it out: zstd columns for Parquet, plain text otherwise."""
    return "zstd" if format == "PARQUET" else "none"


ExportStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
# An active export may still change; a final one never does (and a final status never overwrites CANCELLED).
ACTIVE_STATUSES: tuple[ExportStatus, ...] = ("QUEUED", "PROCESSING")
FINAL_STATUSES: tuple[ExportStatus, ...] = ("COMPLETED", "FAILED", "CANCELLED")
# Langfuse's TracingSearchType: `content` searches input, output (and metadata); `input` and `output` one of them.
SearchType = Literal["id", "content", "input", "output"]


def _no_nul(value: str) -> str:
    # Postgres text cannot hold NUL: without this check such a value reaches the database and fails there.
    if "\x00" in value:
        raise ValueError("must not contain a NUL (\\u0000) character")
    return value


ProjectId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)]
BatchExportId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)]
ExportName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), AfterValidator(_no_nul)
]


class _Input(BaseModel):
    # A typo in a field name is a mistake the caller should hear about, not have silently ignored.
    model_config = ConfigDict(extra="forbid")


class OrderBy(_Input):
    column: ColumnName
    order: Literal["ASC", "DESC"]


class BatchExportQuery(_Input):
    """The table view being exported: the same shape as the frontend's table state."""

    tableName: TableName
    filter: Annotated[list[Filter], Field(max_length=50)] | None = None
    searchQuery: Annotated[str, StringConstraints(max_length=1000)] | None = None
    # Each search type at most once: like every other list on the wire, its length is bounded.
    searchType: Annotated[list[SearchType], Field(max_length=len(get_args(SearchType)), fail_fast=True)] | None = None
    orderBy: OrderBy | None = None
    # The page the user was looking at; an export always covers every matching row, as in Langfuse.
    limit: Annotated[int, Field(ge=1)] | None = None
    page: Annotated[int, Field(ge=0)] | None = None


class CreateBatchExport(_Input):
    projectId: ProjectId
    name: ExportName
    query: BatchExportQuery
    format: ExportFormat
    # Left out (or null): the format's default, `default_compression`.
    compression: Compression | None = None
    # The table's columns (ids or display names) in the order wanted; null for all of them.
    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=500)] | None = None


class BatchExportRef(_Input):
    projectId: ProjectId
    batchExportId: BatchExportId


class ListBatchExports(_Input):
    projectId: ProjectId
    page: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class WatchBatchExports(_Input):
    """batchExport.onChange: the project's exports, or one of them, as they change."""

    projectId: ProjectId
    # One export (the stream starts with its current state), or null for all of the project's.
    batchExportId: BatchExportId | None = None
    # The id of the last event seen: the stream replays every change after it. A reconnecting
    # client's Last-Event-ID header fills it.
    lastEventId: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None


class Progress(BaseModel):
    rowsExported: Annotated[int, Field(description="Rows written so far: the sum over the export's parts.")]
    rowsTotal: Annotated[int | None, Field(description="Rows the file will hold, once counted; null until then.")]
    partsDone: Annotated[int, Field(description="Parts of the file written so far.")]
    partsTotal: Annotated[
        int,
        Field(
            description="Parts the file is written in: 1, or more for an export of more rows than"
            " BATCH_EXPORT_PART_ROWS, written by several workers at once."
        ),
    ]


class ExportUser(BaseModel):
    id: str
    name: str | None
    image: str | None


class BatchExport(BaseModel):
    id: str
    projectId: str
    name: str
    status: ExportStatus
    format: ExportFormat
    query: BatchExportQuery
    createdAt: datetime
    updatedAt: datetime
    finishedAt: datetime | None
    expiresAt: datetime | None
    isExpired: bool
    isDownloadable: bool
    log: str | None
    compression: Compression
    columns: list[str] | None
    # Size and SHA-256 (hex) of the stored object, once completed: what a download can be checked against.
    fileBytes: int | None
    sha256: str | None
    progress: Progress
    user: ExportUser | None


class BatchExportList(BaseModel):
    exports: list[BatchExport]
    totalCount: int


class DownloadUrl(BaseModel):
    url: str
    expiresAt: datetime
