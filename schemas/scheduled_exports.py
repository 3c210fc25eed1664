"""Wire models of the scheduledExport procedures: exports that run on a schedule into the customer's own bucket."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from schemas.batch_exports import Compression, ExportFormat, ExportName, ProjectId, TableName, _no_nul
from schemas.filters import ColumnName

Schedule = Literal["every_20_minutes", "hourly", "daily", "weekly"]
StartMode = Literal["full_history", "from_today", "from_date"]
RunStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]
ScheduledExportId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)]


def _object_prefix(value: str) -> str:
    # Keys are `{prefix}/{table}/…`: a prefix is a path of plain segments, never one that climbs out.
    value = value.strip().strip("/")
    if any(segment in ("", ".", "..") for segment in value.split("/")) and value:
        raise ValueError("must be path segments separated by single '/', without '.' or '..'")
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _endpoint(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(:\d+)?/?", value):
        raise ValueError("must be an http:// or https:// URL of a host, such as https://s3.example.com:9000")
    return value.rstrip("/")


def _secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


def _no_double_hyphen(value: str) -> str:
    if "--" in value:
        raise ValueError("must not contain two hyphens in a row (Azure's rule for container names)")
    return value


ObjectPrefix = Annotated[str, StringConstraints(max_length=512), AfterValidator(_object_prefix)]
Endpoint = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_endpoint)]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=4096), AfterValidator(_secret)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class S3Destination(_Input):
    """An AWS S3 bucket, or an S3-compatible one (MinIO, R2, GCS's interoperability API …) at `endpoint`."""

    type: Literal["s3"]
    # AWS's rules for bucket names (lowercase letters, digits, dots and hyphens; 3 to 63 long).
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: ObjectPrefix = ""
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")] = "us-east-1"
    endpoint: Endpoint | None = None
    forcePathStyle: bool = False
    accessKeyId: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
    # Write-only. Left out of an update, the stored secret is kept.
    secretAccessKey: Secret | None = None


class AzureDestination(_Input):
    """An Azure Blob Storage container (or Azurite's at `endpoint`)."""

    type: Literal["azure"]
    # Azure's rules for container names (lowercase letters, digits and single hyphens; 3 to 63 long).
    container: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"), AfterValidator(_no_double_hyphen)
    ]
    prefix: ObjectPrefix = ""
    accountName: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{3,24}$")]
    # Write-only. Left out of an update, the stored key is kept.
    accountKey: Secret | None = None
    endpoint: Endpoint | None = None


Destination = Annotated[S3Destination | AzureDestination, Field(discriminator="type")]


def secret_of(destination: S3Destination | AzureDestination) -> SecretStr | None:
    return destination.secretAccessKey if isinstance(destination, S3Destination) else destination.accountKey


class StartFrom(_Input):
    """Where the first window starts: the table's first row, midnight UTC today, or `date`."""

    mode: StartMode
    date: datetime | None = None

    @model_validator(mode="after")
    def _date_with_from_date(self) -> StartFrom:
        if self.mode == "from_date":
            if self.date is None:
                raise ValueError("startFrom.date is required when startFrom.mode is from_date")
            if self.date.tzinfo is None:
                raise ValueError("startFrom.date needs a time zone, for example 2026-01-01T00:00:00Z")
            if self.date > datetime.now(UTC):
                raise ValueError("startFrom.date is in the future: use from_today, or a date that has passed")
        elif self.date is not None:
            raise ValueError(f"startFrom.date is only for mode from_date, not {self.mode}")
        return self


ScheduledTables = Annotated[list[TableName], Field(min_length=1, max_length=8)]
TableColumns = dict[TableName, Annotated[list[ColumnName], Field(min_length=1, max_length=500)]]


def _unique_tables(tables: list[TableName]) -> list[TableName]:
    if len(set(tables)) != len(tables):
        raise ValueError("must name each table once")
    return tables


class CreateScheduledExport(_Input):
    projectId: ProjectId
    name: ExportName
    destination: Destination
    tables: Annotated[ScheduledTables, AfterValidator(_unique_tables)]
    format: ExportFormat = "PARQUET"
    # Left out (or null): the format's default (zstd for Parquet, none for text).
    compression: Compression | None = None
    # Per table, its columns (ids or display names) in the order wanted; a table left out gets all of them.
    columns: TableColumns | None = None
    schedule: Schedule
    startFrom: StartFrom
    enabled: bool = True


class UpdateScheduledExport(_Input):
    """Any field of create; those left out keep their value (and a destination without its secret, the secret)."""

    projectId: ProjectId
    scheduledExportId: ScheduledExportId
    name: ExportName | None = None
    destination: Destination | None = None
    tables: Annotated[ScheduledTables, AfterValidator(_unique_tables)] | None = None
    format: ExportFormat | None = None
    compression: Compression | None = None
    columns: TableColumns | None = None
    schedule: Schedule | None = None
    startFrom: StartFrom | None = None
    enabled: bool | None = None


class ScheduledExportRef(_Input):
    projectId: ProjectId
    scheduledExportId: ScheduledExportId


class ListScheduledExports(_Input):
    projectId: ProjectId


class ValidateDestination(_Input):
    """A destination as create would take it, or a stored scheduled export's (with its stored secret)."""

    projectId: ProjectId
    destination: Destination | None = None
    scheduledExportId: ScheduledExportId | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ValidateDestination:
        if (self.destination is None) == (self.scheduledExportId is None):
            raise ValueError("give either destination or scheduledExportId, not both and not neither")
        return self


class ListRuns(_Input):
    projectId: ProjectId
    scheduledExportId: ScheduledExportId
    page: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=100)] = 50


# --- replies -------------------------------------------------------------------------------------


class S3DestinationView(BaseModel):
    type: Literal["s3"]
    bucket: str
    prefix: str
    region: str
    endpoint: str | None
    forcePathStyle: bool
    accessKeyId: str
    secretSet: Annotated[bool, Field(description="A secret access key is stored (it is never sent back).")]


class AzureDestinationView(BaseModel):
    type: Literal["azure"]
    container: str
    prefix: str
    accountName: str
    endpoint: str | None
    secretSet: Annotated[bool, Field(description="An account key is stored (it is never sent back).")]


DestinationView = Annotated[S3DestinationView | AzureDestinationView, Field(discriminator="type")]


class ScheduledExport(BaseModel):
    id: str
    projectId: str
    name: str
    destination: DestinationView
    tables: list[TableName]
    format: ExportFormat
    compression: Compression
    columns: dict[str, list[str]] | None
    schedule: Schedule
    startFrom: StartFrom
    enabled: bool
    disabledReason: Annotated[
        str | None, Field(description="Why the schedule stopped itself (the destination refused its credentials).")
    ]
    lastSyncAt: Annotated[
        datetime | None, Field(description="The end of the last exported window: the next run starts here.")
    ]
    nextSyncAt: Annotated[datetime | None, Field(description="When the next run is due (null while disabled).")]
    runStartedAt: Annotated[datetime | None, Field(description="When the run in progress started, if one is.")]
    lastError: str | None
    createdAt: datetime
    updatedAt: datetime


class ScheduledExportList(BaseModel):
    scheduledExports: list[ScheduledExport]


class Deleted(BaseModel):
    deleted: Literal[True]


class ValidationResult(BaseModel):
    ok: bool
    message: Annotated[
        str, Field(description="What the destination said: the problem in its own words, or that all went well.")
    ]


class RunFile(BaseModel):
    table: TableName
    key: Annotated[str, Field(description="The object's key in the destination, prefix included.")]
    rows: int
    bytes: int
    sha256: str


class ScheduledExportRun(BaseModel):
    id: str
    scheduledExportId: str
    windowStart: datetime
    windowEnd: datetime
    status: RunStatus
    rowsExported: int
    tablesDone: int
    tablesTotal: int
    files: list[RunFile]
    attempts: int
    error: str | None
    startedAt: datetime | None
    finishedAt: datetime | None
    createdAt: datetime


class ScheduledExportRunList(BaseModel):
    runs: list[ScheduledExportRun]
    totalCount: int
