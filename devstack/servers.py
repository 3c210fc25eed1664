"""Local Postgres and Redis servers for the demo and the test suite, started from the machine's binaries.

Postgres refuses to run as root, so when we are root the server runs as the `postgres` system user
on a data folder it owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql


class LocalServiceError(RuntimeError):
    """A local server could not be installed, started or reached; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise LocalServiceError(f"`{name}` not found: install PostgreSQL (apt-get install postgresql)")


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside the network namespace `netns` (`ip netns exec`, which execs it: same pid), or as is."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def postgres_can_reach(folder: Path) -> bool:
    """Whether Postgres's system user can enter `folder` (or, if it does not exist yet, its
    nearest existing parent). Running as root, a clone under a private folder such as /root or a
    mktemp directory is out of its reach, and initdb there fails."""
    if os.geteuid() != 0:
        return True
    existing = folder
    while not existing.exists():
        existing = existing.parent
    return subprocess.run(_as_postgres_user(["test", "-x", str(existing)]), capture_output=True).returncode == 0


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    database: str = "batch_export"
    # Tests trade durability for speed; the demo keeps Postgres's defaults.
    fast_unsafe: bool = False
    # The address it listens on, and the network namespace it runs in (devstack.cluster's data host).
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> list[str]:
        return in_netns(self.netns, _as_postgres_user([_find_binary("pg_ctl"), "-D", str(self.data_dir), *args]))

    def initialize(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        result = subprocess.run(
            _as_postgres_user(
                [
                    _find_binary("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    # Byte-order collation: text keys compare without the locale library, which makes
                    # bulk loads and id ordering faster; character classes stay UTF-8 aware for ILIKE.
                    "--lc-collate=C",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalServiceError(f"initdb failed in {self.data_dir}: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        self.initialize()
        if not self.is_running():
            # Room for bulk loads (the seed, big exports) beyond Postgres's tiny defaults.
            options = (
                f"-p {self.port} -h {self.host} -k {self.data_dir}"
                " -c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min"
                " -c maintenance_work_mem=256MB -c work_mem=64MB"
            )
            if self.fast_unsafe:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            result = subprocess.run(
                self._pg_ctl("-l", str(self.data_dir / "server.log"), "-o", options, "-w", "-t", "60", "start"),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                log = (
                    (self.data_dir / "server.log").read_text(errors="replace")[-1000:]
                    if (self.data_dir / "server.log").exists()
                    else ""
                )
                raise LocalServiceError(f"Postgres did not start on port {self.port}: {result.stderr.strip()} {log}")
        self._create_database()

    def is_running(self) -> bool:
        result = subprocess.run(self._pg_ctl("status"), capture_output=True)
        return result.returncode == 0

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(self.database)))

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "PG_VERSION").exists() and self.is_running():
            subprocess.run(self._pg_ctl("-m", mode, "-w", "stop"), capture_output=True)


@dataclass
class LocalRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, *, detach: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalServiceError("`redis-server` not found: install it (apt-get install redis-server)")
        if port_open(self.port, self.host):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            # Bound to one address of our choosing: protected mode would refuse every other host's clients.
            "--protected-mode",
            "yes" if self.host.startswith("127.") else "no",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if detach:
            argv += ["--daemonize", "yes", "--pidfile", str(self.data_dir / "redis.pid")]
            subprocess.run(in_netns(self.netns, argv), check=True)
        else:
            self.process = subprocess.Popen(
                in_netns(self.netns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while not port_open(self.port, self.host):
            if self.process is not None and self.process.poll() is not None:
                self.process = None
                raise LocalServiceError(
                    f"Redis exited at start on port {self.port} (is the port taken?); see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                raise LocalServiceError(f"Redis did not start on port {self.port}; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            return
        pidfile = self.data_dir / "redis.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
            deadline = time.monotonic() + 10
            while port_open(self.port, self.host) and time.monotonic() < deadline:
                time.sleep(0.05)
