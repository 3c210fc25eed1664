"""GET /exports/download: streams a finished export from the local storage folder behind a signed link.

S3 links are presigned by S3 itself and never reach this route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from procedures.context import Resources
from workers.compression import COMPRESSIONS
from workers.formats import FORMATS
from workers.storage import StorageError, content_disposition, verify_download_signature

CHUNK_BYTES = 1024 * 1024
CONTENT_TYPES = {f.extension: f.content_type for f in FORMATS.values()} | {
    c.suffix.lstrip("."): c.content_type for c in COMPRESSIONS.values() if c.content_type
}


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    # A sync iterator: Starlette reads it in a thread, so a slow disk never blocks the event loop.
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def download_endpoint(resources: Resources):
    async def download(request: Request) -> Response:
        params = request.query_params
        key, expires, sig = params.get("key"), params.get("expires"), params.get("sig")
        if not key or not expires or not sig or not verify_download_signature(key, expires, sig, resources.settings):
            return _refuse(403, "FORBIDDEN", "This download link is invalid or has expired: ask for a new one.")
        try:
            handle = resources.storage.open_read(key)
        except (FileNotFoundError, StorageError):
            return _refuse(404, "NOT_FOUND", "This export's file no longer exists (it may have expired).")
        extension = key.rsplit(".", 1)[-1]
        return StreamingResponse(
            _chunks(handle),
            media_type=CONTENT_TYPES.get(extension, "application/octet-stream"),
            headers={"Content-Disposition": content_disposition(key), "Cache-Control": "private, no-store"},
        )

    return download
