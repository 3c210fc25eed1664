"""Between a format and storage: compression streamed while the file is written, and the object's size and SHA-256.

Formats write many small pieces (a COPY row at a time); `FileSink` gathers them in a C buffer and
only every megabyte does Python work: compress the chunk, hash and count what comes out, hand it
to storage. So the bytes are compressed, hashed and counted exactly once, as they are written,
and the checksum a user verifies is the one of the bytes stored.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard
from isal import isal_zlib

CHUNK_BYTES = 1024 * 1024


class Compressor(Protocol):
    def compress(self, data: Any, /) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(frozen=True)
class Compression:
    name: str
    # Appended to the format's extension: "csv" + ".gz"
    suffix: str
    content_type: str | None
    new_compressor: Callable[[], Compressor] | None

    def extension(self, format_extension: str) -> str:
        return format_extension + self.suffix


def _gzip() -> Compressor:
    # ISA-L's deflate (python-isal) writes standard gzip several times faster than zlib; level 1 of its 0..3
    # compresses CSV about as well as zlib's default.
    return isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)


def _zstd() -> Compressor:
    # Level 3 is zstd's default; one worker thread compresses beside the thread that moves the rows.
    return zstandard.ZstdCompressor(level=3, threads=1, write_checksum=True).compressobj()


COMPRESSIONS: dict[str, Compression] = {
    "none": Compression("none", "", None, None),
    "gzip": Compression("gzip", ".gz", "application/gzip", _gzip),
    "zstd": Compression("zstd", ".zst", "application/zstd", _zstd),
}


class _Digest(io.RawIOBase):
    """The raw end of FileSink: compresses a chunk, then hashes, counts and stores what comes out."""

    def __init__(self, store: Callable[[bytes], object], compressor: Compressor | None):
        self._store, self._compressor = store, compressor
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.abandoned = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data)
        # The buffer reuses its memory after this call: hand storage bytes of its own.
        self._emit(self._compressor.compress(data) if self._compressor else bytes(data))
        return size

    def finish(self) -> None:
        if self._compressor is not None:
            self._emit(self._compressor.flush())

    def _emit(self, data: bytes) -> None:
        if data and not self.abandoned:
            self.sha256.update(data)
            self.bytes += len(data)
            self._store(data)


class FileSink:
    """A writable file for a format: `write` is a buffered C call.

    As a context manager: a clean exit ends the compressed stream (`close()`), an exception abandons the file.
    """

    def __init__(self, store: Callable[[bytes], object], compression: Compression):
        factory = compression.new_compressor
        self._digest = _Digest(store, factory() if factory else None)
        self._buffer = io.BufferedWriter(self._digest, CHUNK_BYTES)
        self.write = self._buffer.write

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def close(self) -> None:
        """Writes what is buffered and the compressor's end; call once, after the last write."""
        self._buffer.flush()
        self._digest.finish()

    def abandon(self) -> None:
        """The file will not be kept: nothing buffered reaches storage any more, even when the buffer is collected."""
        self._digest.abandoned = True

    @property
    def bytes(self) -> int:
        return self._digest.bytes

    @property
    def sha256(self) -> str:
        return self._digest.sha256.hexdigest()
