"""What every benchmark shares: its own servers, the machine's description, medians, and RESULTS.md.

Benchmarks run on shared, noisy machines, so each one measures its baseline in the same run,
interleaved with the thing measured, and reports ratios of medians.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

import db
from db import access
from devstack.servers import LocalPostgres, LocalRedis, free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"


# --- servers ----------------------------------------------------------------------------------------


@dataclass
class Servers:
    postgres: LocalPostgres
    redis: LocalRedis
    folder: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        return self.redis.url


@contextlib.contextmanager
def local_servers(reuse: Path | None = None) -> Iterator[Servers]:
    """A Postgres (durable defaults, as in production) and a Redis of the benchmark's own, on free ports.

    With `reuse`, Postgres keeps its data folder there between runs (to skip a seed while iterating);
    otherwise everything lives in a temporary folder removed at the end.
    """
    folder = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="bx-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    postgres = LocalPostgres(folder / "pg", free_port())
    redis_server = LocalRedis(Path(tempfile.mkdtemp(prefix="bx-bench-redis-")), free_port())
    try:
        postgres.start()
        db.migrate(postgres.url)
        redis_server.start()
        yield Servers(postgres, redis_server, folder)
    finally:
        redis_server.stop()
        shutil.rmtree(redis_server.data_dir, ignore_errors=True)
        postgres.stop(mode="fast")
        if not reuse:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Caller:
    project_id: str
    user_id: str
    token: str


def project_with_member(conn: psycopg.Connection, name: str, role: str = "MEMBER") -> Caller:
    """A project and a user holding `role` in it, with a session token: who the benchmark acts as."""
    from datetime import timedelta

    project = access.create_project(conn, name)
    user = access.upsert_user(conn, f"{name.replace(' ', '-')}@bench.invalid", name)
    access.set_org_role(conn, project["org_id"], user["id"], "NONE")
    access.set_project_role(conn, project["id"], user["id"], role)
    token = access.create_session(conn, user["id"], timedelta(days=1))
    conn.commit()
    return Caller(project["id"], user["id"], token)


# --- processes -------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def peak_rss_kib(pid: int) -> int | None:
    """The process's high-water resident set (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_for_port(port: int, timeout: float = 30) -> None:
    from devstack.servers import port_open

    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- figures and the results file ------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.1f} GiB RAM, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}; load average at the start {load}"
    )


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [
        line[3:]
        for line in git("status", "--porcelain", "--", "rpc", "procedures", "workers", "db", "schemas").splitlines()
    ]
    return commit + (f" (plus uncommitted changes to {', '.join(dirty)})" if dirty else "")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


class Report:
    """Collects a benchmark's header, tables and notes; prints them and appends them to RESULTS.md."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.started = datetime.now(UTC)
        self.machine = machine()
        self.commit = git_commit()
        self.command = command_line()
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        print(text, flush=True)

    def save(self) -> None:
        header = (
            f"## {self.title}: {self.started:%Y-%m-%d %H:%M} UTC\n\n"
            f"- command: `{self.command}`\n"
            f"- commit: {self.commit}\n"
            f"- machine: {self.machine}\n"
            f"- wall time: {(datetime.now(UTC) - self.started).total_seconds():.0f} s\n"
        )
        text = header + "\n" + "\n\n".join(self.parts) + "\n\n"
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Benchmark results\n\n"
                "Appended by `bench/*.py` (`make bench-export`, `make bench-memory`, `make bench-rpc`), newest last.\n"
                "Every figure that matters is a ratio against a baseline measured in the same run, interleaved,\n"
                "because these machines are shared and noisy.\n\n"
            )
        with RESULTS.open("a") as f:
            f.write(text)
        print(f"appended to {os.path.relpath(RESULTS, REPO)}")
