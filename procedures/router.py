"""The application's procedures, assembled into one router: the table of every callable method."""

from __future__ import annotations

from procedures.auth import report_database_outages, require_project_access, require_session
from procedures.batch_export import cancel_export, create_export, download_url, list_exports
from rpc import RPC
from schemas import BatchExport, BatchExportList, BatchExportRef, CreateBatchExport, DownloadUrl, ListBatchExports

rpc = RPC()
# Every procedure touching Postgres answers an outage in words a caller can act on.
database_procedure = rpc.procedure.use(report_database_outages)
protected_procedure = database_procedure.use(require_session)
# DESIGN.md's protected_project_procedure: a session, a role in `input.projectId`, and a scope.
protected_project_procedure = database_procedure.use(require_project_access)


def scoped(scope: str):
    return protected_project_procedure.meta(scope=scope)


batch_export_router = rpc.router(
    create=scoped("batchExports:create").input(CreateBatchExport).output(BatchExport).mutation(create_export),
    cancel=scoped("batchExports:create").input(BatchExportRef).output(BatchExport).mutation(cancel_export),
    all=scoped("batchExports:read").input(ListBatchExports).output(BatchExportList).query(list_exports),
    # A link hands out the file: never on a cached (possibly just revoked) session.
    downloadUrl=scoped("batchExports:read")
    .meta(access_cache=False)
    .input(BatchExportRef)
    .output(DownloadUrl)
    .query(download_url),
)

app_router = rpc.router(batchExport=batch_export_router)
