"""Pydantic wire models: the single source of truth for procedure inputs and outputs."""

from schemas.batch_exports import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    BatchExport,
    BatchExportList,
    BatchExportQuery,
    BatchExportRef,
    Compression,
    CreateBatchExport,
    DownloadUrl,
    ExportFormat,
    ExportStatus,
    ExportUser,
    ListBatchExports,
    OrderBy,
    Progress,
    TableName,
    default_compression,
)
from schemas.filters import Filter

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "BatchExport",
    "BatchExportList",
    "BatchExportQuery",
    "BatchExportRef",
    "Compression",
    "CreateBatchExport",
    "DownloadUrl",
    "ExportFormat",
    "ExportStatus",
    "ExportUser",
    "Filter",
    "ListBatchExports",
    "OrderBy",
    "Progress",
    "TableName",
    "default_compression",
]
