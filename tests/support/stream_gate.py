"""A TCP proxy in front of Postgres that holds an export's row stream mid-way until the test lets it go.

Tests that must catch an export mid-stream (to kill it, cancel it or read its progress) cannot race it:
on a fast machine the whole export is over before a poll sees it start. Pointed at the gate instead of
at Postgres, a job's connections work as usual, except that once `hold()` is on, any connection that has
received more than `after` bytes from the server gets nothing more until `release()`. Only the
connection carrying the export's rows ever gets that far (the job's other connections exchange a few
hundred bytes), so the job stops inside its stream, with part of the file written, its progress
thread and row counter still working, and stays there for as long as the test needs.

The gate also tells when a client sent a cancel request (libpq opens a new connection for it), so a
test can wait for a cancel to have been sent instead of guessing how long it takes.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

_CANCEL_REQUEST = struct.pack("!ii", 16, 80877102)
_CHUNK = 64 * 1024


class StreamGate:
    """Listens on a free loopback port and forwards every connection to Postgres at `upstream`."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        parts = urlsplit(database_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._changed = threading.Condition()
        self._after: int | None = None
        self._held: set[_Link] = set()
        self._ever_held = 0
        self._cancels = 0
        self._links: set[_Link] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="stream-gate", daemon=True).start()

    @property
    def url(self) -> str:
        """`database_url` with its host and port replaced by the gate's."""
        parts = urlsplit(self._database_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- what tests call ------------------------------------------------------------------------------

    def hold(self, after: int = 4 * 1024 * 1024) -> None:
        """From now on, stop each connection's server-to-client bytes once it has received `after` of them."""
        with self._changed:
            self._after = after
            self._changed.notify_all()

    def release(self) -> None:
        """Let every held connection go on, and hold no more."""
        with self._changed:
            self._after = None
            self._changed.notify_all()

    def wait_held(self, total: int = 1, timeout: float = 120) -> None:
        """Until `total` connections have been held since the gate opened (one per attempt at a stream)."""
        self._wait(lambda: self._ever_held >= total, timeout, f"{total} held stream(s)")

    def wait_cancel_request(self, timeout: float = 60) -> None:
        """Until a client has sent Postgres a cancel request through the gate."""
        self._wait(lambda: self._cancels > 0, timeout, "a cancel request")

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._after = None
            links = list(self._links)
            self._changed.notify_all()
        self._listener.close()
        for link in links:
            link.close()

    def __enter__(self) -> StreamGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the proxy ------------------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the stream gate saw no {what} within {timeout:.0f} s")
                self._changed.wait(left)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._changed:
                if self._closed:
                    link.close()
                    return
                self._links.add(link)
            threading.Thread(target=self._upward, args=(link,), daemon=True).start()
            threading.Thread(target=self._downward, args=(link,), daemon=True).start()

    def _upward(self, link: _Link) -> None:
        """Client to server, as it comes; notes cancel requests."""
        opening = 3  # a cancel request may follow an SSL or GSS encryption request on its connection
        try:
            while data := link.client.recv(_CHUNK):
                if opening and data[:8] == _CANCEL_REQUEST:
                    with self._changed:
                        self._cancels += 1
                        self._changed.notify_all()
                opening = max(0, opening - 1)
                link.server.sendall(data)
        except OSError:
            pass
        self._drop(link)

    def _downward(self, link: _Link) -> None:
        """Server to client, stopping at the threshold while the gate holds."""
        try:
            while data := link.server.recv(_CHUNK):
                self._pass(link)
                if link.closed:
                    break
                link.client.sendall(data)
                link.received += len(data)
        except OSError:
            pass
        self._drop(link)

    def _pass(self, link: _Link) -> None:
        with self._changed:
            while not link.closed and self._after is not None and link.received >= self._after:
                if link not in self._held:
                    self._held.add(link)
                    self._ever_held += 1
                    self._changed.notify_all()
                self._changed.wait()
            self._held.discard(link)

    def _drop(self, link: _Link) -> None:
        with self._changed:
            self._links.discard(link)
            self._held.discard(link)
            link.closed = True
            self._changed.notify_all()
        link.close()


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.received = 0
        self.closed = False

    def close(self) -> None:
        for end in (self.client, self.server):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
