"""Blob storage for export files (a local folder or S3), object keys, and signed download links.

An object becomes visible only when complete: a file is written under a temporary name, fsynced
and renamed; an S3 object is a multipart upload that is completed at the end or aborted. Keys
are `{projectId}/{exportId}/{safe-name}.{ext}` and every segment is sanitized, so no export
name can reach outside the storage prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urlencode, urlparse

from schemas.settings import Settings

log = logging.getLogger(__name__)

# S3 parts must be at least 5 MiB (except the last); larger parts mean fewer requests.
S3_PART_SIZE = 8 * 1024 * 1024
# SigV4 presigned URLs cannot live longer than a week.
S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_FILE_BUFFER = 1024 * 1024

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


class StorageError(Exception):
    """The storage refused an operation; the message says which and why."""


# --- keys -----------------------------------------------------------------------------------------


def safe_name(name: str, *, max_length: int = 100, fallback: str = "export") -> str:
    """One path segment from any text: letters, digits, `-`, `_`, `.`; never `..`, a slash or a control character."""
    text = unicodedata.normalize("NFKC", name)
    text = re.sub(r"[^\w.\-]+", "_", text, flags=re.UNICODE)  # \w keeps unicode letters and digits
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"[._-]*_[._-]*", "_", text).strip("._-")  # "a / ../b" → "a_b", not "a_._b"
    text = text[:max_length].rstrip("._-")
    if not text:
        return fallback
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def object_key(project_id: str, export_id: str, name: str, extension: str) -> str:
    return "/".join(
        (
            safe_name(project_id, fallback="project"),
            safe_name(export_id, fallback="export"),
            f"{safe_name(name)}.{extension}",
        )
    )


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p != p.strip() or any(ord(ch) < 32 for ch in p) for p in parts):
        raise StorageError(f"not a valid export object key: {key!r}")
    return parts


def download_filename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def content_disposition(key: str) -> str:
    """`attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / 5987)."""
    filename = download_filename(key)
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- signed links for the local folder -------------------------------------------------------------


def _signature(key: str, expires: int, secret: str) -> str:
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_download_query(key: str, expires_at: datetime, settings: Settings) -> str:
    expires = int(expires_at.timestamp())
    return urlencode({"key": key, "expires": expires, "sig": _signature(key, expires, settings.SECRET_KEY)})


def verify_download_signature(key: str, expires: str | int, sig: str, settings: Settings) -> bool:
    """True for a link this service signed that has not expired; compares in constant time."""
    try:
        expires_int = int(expires)
    except (TypeError, ValueError):
        return False
    expected = _signature(key, expires_int, settings.SECRET_KEY)
    valid = hmac.compare_digest(expected.encode(), str(sig).encode())
    return valid and expires_int >= int(datetime.now(UTC).timestamp())


# --- the storage interface -------------------------------------------------------------------------


class ObjectWriter(Protocol):
    # Writers may set `write` as a plain attribute, so the hot loop calls the underlying C method directly.
    def write(self, data: bytes, /) -> object: ...


class Storage(Protocol):
    def writer(self, key: str, content_type: str) -> Any:
        """Context manager yielding an ObjectWriter; the object appears on a clean exit, never before."""

    def discard_partials(self, key: str) -> None:
        """Removes what an interrupted attempt at writing `key` left behind."""

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def read_range(self, key: str, offset: int, length: int) -> bytes: ...

    def read_chunks(self, key: str, offset: int, length: int) -> Iterator[bytes]:
        """The `length` bytes of `key` from `offset`, a megabyte or so at a time."""

    def assembler(self, key: str, content_type: str) -> Any:
        """Context manager yielding an ObjectAssembly; the object appears on a clean exit, never before."""

    def download_url(self, key: str, expires_at: datetime, settings: Settings) -> str: ...

    def check_ready(self) -> None:
        """Returns if an export could be written now; raises (OSError, StorageError, botocore's errors) if not."""


class ObjectAssembly(Protocol):
    """Builds one object from bytes given here and ranges of stored objects, copied inside the storage."""

    def write(self, data: bytes, /) -> object: ...

    def append(self, key: str, offset: int, length: int) -> None: ...


def open_storage(settings: Settings) -> Storage:
    url = urlparse(settings.EXPORT_STORAGE_URL)
    if url.scheme == "s3":
        return S3Storage(url.netloc, url.path.strip("/"), _s3_endpoint(settings))
    if url.scheme == "file":
        return FileStorage(Path(unquote(url.path)))
    raise StorageError(
        f"EXPORT_STORAGE_URL must be file:///abs/path or s3://bucket/prefix, not {settings.EXPORT_STORAGE_URL!r}"
    )


def _s3_endpoint(settings: Settings) -> str | None:
    return settings.S3_ENDPOINT_URL or None


# --- local folder ---------------------------------------------------------------------------------


class FileStorage:
    def __init__(self, root: Path):
        self.root = root.resolve()

    def check_ready(self) -> None:
        # A real write, not os.access: that says yes to root on any folder, even a read-only mount.
        # The folder is made if missing, as an export's first write would make it.
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".ready-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()

    def path(self, key: str) -> Path:
        path = self.root.joinpath(*_check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"export object key escapes the storage folder: {key!r}")
        return path

    @contextmanager
    def writer(self, key: str, content_type: str) -> Iterator[_FileWriter]:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        handle = open(temporary, "xb", buffering=_FILE_BUFFER)
        try:
            yield _FileWriter(handle.write, handle)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temporary, final)
            _fsync_dir(final.parent)
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise

    @contextmanager
    def assembler(self, key: str, content_type: str) -> Iterator[ObjectAssembly]:
        with self.writer(key, content_type) as out:
            yield _FileAssembly(self, out.handle)

    def discard_partials(self, key: str) -> None:
        final = self.path(key)
        if final.parent.is_dir():
            for leftover in final.parent.glob(f".{glob_escape(final.name)}.*.partial"):
                leftover.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        # Drop the export's (and then the project's) folder once empty; a concurrent write keeps them.
        for folder in (path.parent, path.parent.parent):
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open_read(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with open(self.path(key), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def read_chunks(self, key: str, offset: int, length: int) -> Iterator[bytes]:
        with open(self.path(key), "rb", buffering=0) as f:
            f.seek(offset)
            while length > 0:
                chunk = f.read(min(length, _FILE_BUFFER))
                if not chunk:
                    raise StorageError(f"{key} ended {length} bytes early")
                length -= len(chunk)
                yield chunk

    def download_url(self, key: str, expires_at: datetime, settings: Settings) -> str:
        return f"{settings.PUBLIC_BASE_URL}/exports/download?{signed_download_query(key, expires_at, settings)}"


@dataclass
class _FileWriter:
    write: Any
    handle: Any


class _FileAssembly:
    """Writes into the writer's temporary file; ranges of other files are copied by the kernel (copy_file_range)."""

    def __init__(self, storage: FileStorage, handle: Any):
        self._storage = storage
        self._handle = handle  # the temporary file the writer fills

    def write(self, data: bytes) -> None:
        self._handle.write(data)

    def append(self, key: str, offset: int, length: int) -> None:
        self._handle.flush()
        target = self._handle.fileno()
        with open(self._storage.path(key), "rb") as source:
            while length > 0:
                copied = os.copy_file_range(source.fileno(), target, length, offset)
                if copied == 0:
                    raise StorageError(f"{key} ended {length} bytes early")
                offset += copied
                length -= copied


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _fsync_dir(folder: Path) -> None:
    # The rename itself must survive a crash, not only the file's bytes.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- S3 -------------------------------------------------------------------------------------------


class S3Storage:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, client: Any = None):
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(s3={"addressing_style": "path"} if endpoint_url else {}, retries={"mode": "standard"})
            client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client

    def full_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def writer(self, key: str, content_type: str) -> Iterator[ObjectWriter]:
        upload = _MultipartUpload(self.client, self.bucket, self.full_key(key), content_type)
        try:
            yield upload
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    @contextmanager
    def assembler(self, key: str, content_type: str) -> Iterator[ObjectAssembly]:
        upload = _MultipartAssembly(self, self.full_key(key), content_type)
        try:
            yield upload
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def discard_partials(self, key: str) -> None:
        full = self.full_key(key)
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full)
        for item in listing.get("Uploads", []):
            if item["Key"] == full:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=item["UploadId"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    def check_ready(self) -> None:
        # The cheapest call that proves the endpoint answers, the credentials work and the bucket exists.
        self.client.head_bucket(Bucket=self.bucket)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def open_read(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))["Body"]

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        answer = self.client.get_object(
            Bucket=self.bucket, Key=self.full_key(key), Range=f"bytes={offset}-{offset + length - 1}"
        )
        data: bytes = answer["Body"].read()
        return data

    def read_chunks(self, key: str, offset: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        body = self.client.get_object(
            Bucket=self.bucket, Key=self.full_key(key), Range=f"bytes={offset}-{offset + length - 1}"
        )["Body"]
        yield from body.iter_chunks(_FILE_BUFFER)

    def download_url(self, key: str, expires_at: datetime, settings: Settings) -> str:
        seconds = int((expires_at - datetime.now(UTC)).total_seconds())
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.full_key(key),
                "ResponseContentDisposition": content_disposition(key),
            },
            ExpiresIn=max(1, min(seconds, S3_MAX_PRESIGN_SECONDS)),
        )


class _MultipartUpload:
    """Buffers writes into parts; a file smaller than one part is a single PUT at the end."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str):
        self.client, self.bucket, self.key, self.content_type = client, bucket, key, content_type
        self.buffer = io.BytesIO()
        self._buffer_write = self.buffer.write
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: Any) -> None:
        self._buffer_write(data)
        if self.buffer.tell() >= S3_PART_SIZE:
            self._upload_part()

    def _started(self) -> str:
        """The multipart upload's id, created on first use (a small file never needs one)."""
        if self.upload_id is None:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )
            self.upload_id = created["UploadId"]
        return self.upload_id

    def _upload_part(self) -> None:
        number = len(self.parts) + 1
        body = self.buffer.getvalue()
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._started(), PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.buffer = io.BytesIO()
        self._buffer_write = self.buffer.write

    def complete(self) -> None:
        if self.upload_id is None:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=self.buffer.getvalue(), ContentType=self.content_type
            )
            return
        if self.buffer.tell():
            self._upload_part()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:
                log.warning(
                    "could not abort the multipart upload of %s; the bucket's lifecycle rule must",
                    self.key,
                    exc_info=True,
                )


# One part copied inside S3 may be at most 5 GiB.
S3_MAX_PART_SIZE = 5 * 1024**3
S3_MIN_PART_SIZE = 5 * 1024**2


class _MultipartAssembly(_MultipartUpload):
    """One multipart upload whose parts are ranges of stored objects, copied inside S3 (UploadPartCopy).

    Every part but the last must hold at least 5 MiB: bytes given here, and ranges too small to be a
    part of their own, gather in the upload's buffer (a range is read to fill it) until it is large enough.
    """

    def __init__(self, storage: S3Storage, key: str, content_type: str):
        super().__init__(storage.client, storage.bucket, key, content_type)
        self.storage = storage

    def append(self, key: str, offset: int, length: int) -> None:
        if self.buffer.tell():
            take = min(length, max(0, S3_MIN_PART_SIZE - self.buffer.tell()))
            self._buffer_write(self.storage.read_range(key, offset, take))
            offset, length = offset + take, length - take
            if self.buffer.tell() < S3_MIN_PART_SIZE:
                return  # the whole range is in the buffer, which waits for more
            self._upload_part()
        if length < S3_MIN_PART_SIZE:
            self._buffer_write(self.storage.read_range(key, offset, length))
            return
        pieces = -(-length // S3_MAX_PART_SIZE)  # equal pieces, each at least 2.5 GiB when there are several
        size = -(-length // pieces)
        source = {"Bucket": self.bucket, "Key": self.storage.full_key(key)}
        for start in range(offset, offset + length, size):
            end = min(start + size, offset + length)
            answer = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._started(),
                PartNumber=len(self.parts) + 1,
                CopySource=source,
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
            self.parts.append({"PartNumber": len(self.parts) + 1, "ETag": answer["CopyPartResult"]["ETag"]})
