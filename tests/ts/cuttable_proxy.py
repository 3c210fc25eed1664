"""A TCP proxy in front of the API whose open connections a test can cut, and whose new ones it can hold back.

A client following a subscription through it sees what a network cut looks like (its stream stops
mid-body); while `held()`, a reconnecting client's connection is accepted but nothing reaches the
API, so whatever the test commits meanwhile happens, for certain, while the client is away.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_CHUNK = 64 * 1024


class CuttableProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._let_through = threading.Event()
        self._let_through.set()
        threading.Thread(target=self._accept, name="cuttable-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Ends every open connection at once, both ways, as a network cut does."""
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _shut(sock)

    @contextmanager
    def held(self) -> Iterator[None]:
        """New connections wait, accepted but not forwarded, until the block ends."""
        self._let_through.clear()
        try:
            yield
        finally:
            self._let_through.set()

    def close(self) -> None:
        self._let_through.set()
        self._listener.close()
        self.cut()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._link, args=(client,), daemon=True).start()

    def _link(self, client: socket.socket) -> None:
        self._let_through.wait()
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            _shut(client)
            return
        with self._lock:
            if client not in self._open:  # cut while it was held
                _shut(upstream)
                return
            self._open.add(upstream)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(_CHUNK):
            target.sendall(chunk)
    except OSError:
        pass
    _shut(source)
    _shut(target)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
