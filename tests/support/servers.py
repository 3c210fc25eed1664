"""Real servers for tests: Postgres, Redis, S3 (moto) and Azurite of their own on free ports, and the app served
by uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import uvicorn

import db
from devstack.servers import (
    LocalAzurite,
    LocalPostgres,
    LocalRedis,
    LocalS3,
    LocalServiceError,
    azurite_blob_binary,
    free_port,
)


def _start_on_a_free_port(server: LocalPostgres | LocalRedis | LocalS3 | LocalAzurite, attempts: int = 3) -> None:
    """Starts the server; when another process took its port meanwhile, tries again on another one."""
    for attempt in range(attempts):
        try:
            server.start()
            return
        except LocalServiceError:
            if attempt == attempts - 1:
                raise
            server.port = free_port()


@contextlib.contextmanager
def running_postgres(prefix: str = "bx-test-pg-") -> Iterator[LocalPostgres]:
    """A migrated Postgres of its own, on a free port, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = LocalPostgres(folder / "data", free_port(), fast_unsafe=True)
    _start_on_a_free_port(server)
    try:
        db.migrate(server.url)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)


# The servers that live in a temporary folder of their own and stop with a plain stop().
_FolderServer = TypeVar("_FolderServer", LocalRedis, LocalS3, LocalAzurite)


@contextlib.contextmanager
def _running_in_a_folder(make: Callable[[Path, int], _FolderServer], prefix: str) -> Iterator[_FolderServer]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = make(folder, free_port())
    _start_on_a_free_port(server)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def running_redis(prefix: str = "bx-test-redis-") -> contextlib.AbstractContextManager[LocalRedis]:
    """A Redis server of its own, on a free port, removed afterwards."""
    return _running_in_a_folder(LocalRedis, prefix)


def running_s3(prefix: str = "bx-test-s3-") -> contextlib.AbstractContextManager[LocalS3]:
    """moto's S3 with IAM credentials checked, on a free port, stopped afterwards."""
    return _running_in_a_folder(LocalS3, prefix)


def running_azurite(prefix: str = "bx-test-azurite-") -> contextlib.AbstractContextManager[LocalAzurite]:
    """Azurite's blob service on a free port, its blobs in a folder removed afterwards."""
    azurite_blob_binary()  # installed once, before any retry on another port
    return _running_in_a_folder(LocalAzurite, prefix)


class ServerThread:
    """A real uvicorn server on a free loopback port, in a thread of the test process."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        # Open event streams would hold uvicorn's drain up: the app ends them first, as on SIGTERM.
        end_streams = getattr(getattr(self.server.config.app, "state", None), "end_streams", None)
        if end_streams is not None:
            end_streams()
        self.server.should_exit = True
        self.thread.join(timeout=10)
