"""A subscription read the way any SSE client reads it (httpx-sse), in a thread, its events kept in order."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse

from db import batch_exports

# Long enough for a busy two-core machine; a stream that works answers in milliseconds.
EVENT_TIMEOUT_S = 30


@dataclass(frozen=True)
class StreamEvent:
    event: str  # "message", "error" or "return"
    id: str | None
    data: dict[str, Any]

    @property
    def result(self) -> Any:
        """The event's value: `params.result` of its JSON-RPC notification."""
        assert self.event == "message", self
        return self.data["params"]["result"]

    @property
    def error(self) -> dict[str, Any]:
        assert self.event == "error", self
        return self.data["error"]


class LiveStream:
    """POST /rpc with Accept: text/event-stream, read in a background thread until closed or ended."""

    def __init__(
        self,
        base_url: str,
        method: str,
        params: dict[str, Any],
        *,
        token: str | None,
        last_event_id: str | None = None,
    ) -> None:
        self.events: queue.Queue[StreamEvent | None] = queue.Queue()
        self.checkpoints: list[str] = []
        self.status_code: int | None = None
        self._opened = threading.Event()
        self._closing = threading.Event()
        self._socket: socket.socket | None = None
        headers = {"accept": "text/event-stream"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._read, args=(body, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(EVENT_TIMEOUT_S), "the stream did not open"

    def _read(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        try:
            with connect_sse(self._client, "POST", "/rpc", json=body, headers=headers) as source:
                self.status_code = source.response.status_code
                # httpx's own handle on the connection: shutting it down is how close() interrupts a read.
                self._socket = source.response.extensions["network_stream"].get_extra_info("socket")
                self._opened.set()
                for sse in source.iter_sse():
                    if not sse.data:
                        self.checkpoints.append(sse.id)  # an id to resume from, without an event
                        continue
                    self.events.put(StreamEvent(sse.event, sse.id or None, json.loads(sse.data)))
        except httpx.HTTPError:
            if not self._closing.is_set():
                raise
        finally:
            self._opened.set()
            self.events.put(None)  # the stream ended

    def next(self, timeout: float = EVENT_TIMEOUT_S) -> StreamEvent:
        """The next event; fails if none comes in time or the stream ends."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None
        assert event is not None, "the stream ended"
        return event

    def checkpoint(self, timeout: float = EVENT_TIMEOUT_S) -> str:
        """The first id the stream sent without an event (where a reconnection would resume)."""
        deadline = time.monotonic() + timeout
        while not self.checkpoints:
            assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.01)
        return self.checkpoints[0]

    def until(self, accept: Callable[[StreamEvent], bool], timeout: float = EVENT_TIMEOUT_S) -> list[StreamEvent]:
        """The events up to and including the first that `accept`s."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            event = self.next(max(deadline - time.monotonic(), 0.01))
            seen.append(event)
            if accept(event):
                return seen

    def rest(self, timeout: float = EVENT_TIMEOUT_S) -> list[StreamEvent]:
        """Every event until the server closes the stream; fails if it is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"the stream is still open after {timeout} s") from None
            if event is None:
                return seen
            seen.append(event)

    def close(self) -> None:
        """Hangs up, as a closed tab or a stopped program does."""
        self._closing.set()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the server closed it first
        self._thread.join(timeout=10)
        self._client.close()

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- what a worker writes, for a stream to carry ------------------------------------------------------

FILE_BYTES, SHA256 = 4096, "ab" * 32


def complete_as_a_worker(conn, export_id: str, rows: int = 300) -> None:
    """PROCESSING → COMPLETED with a file of FILE_BYTES whose digest is SHA256, as a worker ends an export."""
    batch_exports.mark_completed(
        conn,
        export_id,
        object_key="k.csv",
        rows_exported=rows,
        file_bytes=FILE_BYTES,
        sha256=SHA256,
        expires_hours=1,
        log=None,
    )


def run_as_a_worker(conn, export_id: str) -> None:
    """QUEUED → PROCESSING → 120 of 300 rows → COMPLETED, each a change a stream carries."""
    batch_exports.mark_processing(conn, export_id)
    batch_exports.record_progress(conn, export_id, 120, 300)
    complete_as_a_worker(conn, export_id)
