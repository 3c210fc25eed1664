"""The real processes fault tests start, break and restart: `batch-export worker` and `batch-export serve`.

Each runs as operators run it (`python -m cli ...`, configured by environment variables
only), in a session of its own, logging to a file the tests read: the worker's
"export <id>: attempt started/ended" lines are how a test counts and times the attempts at an
export, across every worker it ran.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

_ATTEMPT_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO workers\.batch_export: "
    r"export (?P<id>\S+): attempt (?P<what>started|ended) in process (?P<pid>\d+)$",
    re.MULTILINE,
)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *logs: CliProcess, interval: float = 0.2) -> T:
    """Polls until `predicate()` is truthy and returns it; on timeout fails with the processes' log tails."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ---\n{p.log()[-3000:]}" for p in logs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval)
    return value


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid`, however deep."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class CliProcess:
    """`batch-export <argv>` in a session of its own, its output in `<folder>/<name>.log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self) -> CliProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.argv],
                env={**os.environ, **self.env, "PYTHONPATH": str(REPO)},
                cwd=self.folder,  # no stray .env from the repo
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the process and everything it started (RQ's work horse has a process group of its own)."""
        if self.alive():
            _kill([*descendants(self.pid), self.pid], signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a worker finishes its current job first), SIGKILL after `timeout` seconds."""
        if not self.alive():
            return
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        _kill(descendants(self.pid), signal.SIGKILL)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{self.name} has no VmRSS")


class WorkerProcess(CliProcess):
    """`batch-export worker`: RQ's worker with the scheduler (retry backoff) and the sweep."""

    def __init__(self, name: str, env: dict[str, str], folder: Path):
        super().__init__(name, ["worker"], env, folder)

    def horse(self) -> int | None:
        """The work horse running the current job: the child that leads a process group of its own."""
        if not self.alive():
            return None
        for pid in descendants(self.pid):
            fields = _stat(pid)
            if fields and int(fields[1]) == self.pid and int(fields[2]) == pid and fields[0] != "Z":
                return pid
        return None

    def kill_horse(self) -> int:
        """SIGKILL the work horse only, as the kernel's OOM killer would; the worker itself lives on."""
        horse = wait_for(self.horse, 30, f"{self.name}'s work horse", self)
        os.kill(horse, signal.SIGKILL)
        wait_for(lambda: not is_alive(horse), 10, "the work horse to die", self, interval=0.02)
        return horse

    def start(self, wait: bool = True) -> WorkerProcess:
        super().start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> WorkerProcess:
        wait_for(lambda: "*** Listening on" in self.log(), 60, f"{self.name} to listen", self)
        return self


class ApiProcess(CliProcess):
    """`batch-export serve` on a free port (`--workers N` when `workers` is more than one)."""

    def __init__(self, name: str, env: dict[str, str], folder: Path, port: int, workers: int = 1):
        processes = ["--workers", str(workers)] if workers > 1 else []
        super().__init__(name, ["serve", "--port", str(port), *processes], env, folder)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProcess:
        """Returns once the API is ready (GET /readyz): the tests' next calls need its Postgres and Redis."""
        super().start()

        def ready() -> bool:
            assert self.alive(), self.log()
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, f"{self.name} to answer /readyz", self)
        return self


@dataclass(frozen=True)
class Attempt:
    export_id: str
    pid: int
    worker: str
    started: datetime
    ended: datetime | None  # None: the attempt was killed


def attempts(*workers: CliProcess) -> list[Attempt]:
    """Every attempt at every export the workers ran, from their logs, in the order they started."""
    found: list[Attempt] = []
    for worker in workers:
        open_attempts: dict[tuple[str, int], datetime] = {}
        for match in _ATTEMPT_LINE.finditer(worker.log()):
            key = (match["id"], int(match["pid"]))
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
            if match["what"] == "started":
                assert key not in open_attempts, f"two starts without an end for {key} in {worker.name}"
                open_attempts[key] = at
            else:
                found.append(Attempt(key[0], key[1], worker.name, open_attempts.pop(key), at))
        found += [Attempt(k[0], k[1], worker.name, at, None) for k, at in open_attempts.items()]
    return sorted(found, key=lambda a: a.started)


def attempts_of(export_id: str, *workers: CliProcess) -> list[Attempt]:
    return [a for a in attempts(*workers) if a.export_id == export_id]


def overlapping(found: list[Attempt]) -> list[tuple[Attempt, Attempt]]:
    """Pairs of attempts at the same export that ran at the same time (a killed one runs until its next one)."""
    pairs = []
    by_export: dict[str, list[Attempt]] = {}
    for attempt in found:
        by_export.setdefault(attempt.export_id, []).append(attempt)
    for runs in by_export.values():
        for earlier, later in zip(runs, runs[1:]):
            if earlier.ended is not None and earlier.ended > later.started:
                pairs.append((earlier, later))
    return pairs


class TcpProxy:
    """A TCP relay in front of a server, which the test can cut: to its clients, the server is down.

    `cut()` refuses new connections and breaks the open ones mid-request; `restore()` listens again
    on the same port. The server behind it (and its state) is untouched.
    """

    def __init__(self, target_port: int, port: int | None = None):
        from devstack.servers import free_port

        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    restore = start

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            # Closing alone leaves the port listening while the accept thread is blocked on it (so
            # `restore()` could not bind it again at once): shutting it down wakes that thread.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
