"""The attacker's view: an API served as in production, two tenants (victim and attacker), and checks that nothing leaks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
import redis as redis_lib
from psycopg import sql
from psycopg.types.json import Jsonb

from devstack.servers import LocalPostgres, free_port
from rpc.errors import ERROR_CODES
from tests.support.world import Project

# Text that only a crash, a stack trace or a leaked internal can put into a reply.
LEAK_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    "site-packages",
    "psycopg.",
    "jsonrpcserver",
    "pydantic_core",
)


WIRE_ERRORS = {(row.code, row.data_code, row.http_status) for row in ERROR_CODES.values()}


INTERNAL = ERROR_CODES["INTERNAL_SERVER_ERROR"].code


@dataclass
class ServedApi:
    """A running `batch-export serve` process, its log, and the secrets it was given."""

    url: str
    process: subprocess.Popen
    log_path: Path
    secrets: dict[str, str]
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def memory_kib(self, field_name: str = "VmRSS") -> int:
        """Resident memory of the server process (VmHWM: its peak so far)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.process.pid}/status")

    def reset_peak_memory(self) -> None:
        # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def post(
        self, body: bytes, *, token: str | None = None, timeout: float = 30, headers: dict | None = None
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return self.http.post(f"{self.url}/rpc", content=body, headers=sent, timeout=timeout)

    def healthy(self) -> bool:
        """The process lives and serves (GET /healthz)."""
        try:
            return self.http.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """Its Postgres, Redis and storage answer (GET /readyz): what a test needs before its first call."""
        try:
            return self.http.get(f"{self.url}/readyz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


def add_password_user_to_postgres(server: LocalPostgres, user: str, password: str) -> str:
    """A superuser who must authenticate with a password over TCP; returns its DATABASE_URL."""
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
        )
        hba = server.data_dir / "pg_hba.conf"
        # The first matching line wins: this user gets a password check, everybody else keeps trust.
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        admin.execute("SELECT pg_reload_conf()")
    return f"postgresql://{user}:{password}@127.0.0.1:{server.port}/{server.database}"


def add_password_user_to_redis(redis_url: str, user: str, password: str) -> str:
    """A Redis ACL user with a password (the default user is left as it is); returns its REDIS_URL."""
    client = redis_lib.Redis.from_url(redis_url)
    client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    client.close()
    parsed = urlparse(redis_url)
    return f"redis://{user}:{password}@{parsed.hostname}:{parsed.port}{parsed.path}"


@contextlib.contextmanager
def serve_api(
    env: dict[str, str], folder: Path, secret_values: dict[str, str], *, access_log: bool = False
) -> Iterator[ServedApi]:
    """`batch-export serve` with `env` on a free port (`--access-log`: a line per request); its stdout
    and stderr go to one log file."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "api.log"
    env = {**os.environ, **env, "PUBLIC_BASE_URL": url, "SMTP_URL": ""}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port), *(["--access-log"] if access_log else [])],
            env=env,
            cwd=folder,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    served = ServedApi(url, process, log_path, secret_values)
    try:
        deadline = time.monotonic() + 60
        while not served.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the abuse API did not start:\n{served.log()[-3000:]}")
            time.sleep(0.1)
        yield served
    finally:
        served.http.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_no_leak(text: str, sent: bytes | str = b"", secret_values: dict[str, str] | None = None) -> None:
    """No stack trace or internal name in `text`, unless the request itself carried it; no secret at all."""
    sent_text = sent.decode("utf-8", "replace") if isinstance(sent, bytes) else sent
    for marker in LEAK_MARKERS:
        if marker not in sent_text:
            assert marker not in text, f"reply leaks {marker!r}: {text[:2000]}"
    for name, value in (secret_values or {}).items():
        assert value not in text, f"reply contains the {name}"


def assert_error_object(error: Any, *, allow_internal: bool = False) -> None:
    """DESIGN.md's error shape, with a (code, data.code, httpStatus) row of the error table."""
    assert isinstance(error, dict), error
    assert type(error.get("code")) is int and isinstance(error.get("message"), str) and error["message"], error
    data = error.get("data")
    assert isinstance(data, dict), error
    assert (error["code"], data.get("code"), data.get("httpStatus")) in WIRE_ERRORS, error
    assert "path" in data and (data["path"] is None or isinstance(data["path"], str)), error
    if not allow_internal:
        assert error["code"] != INTERNAL, f"internal error: {error}"


def assert_reply(reply: Any, *, request_id: Any = ..., allow_internal: bool = False) -> None:
    """One JSON-RPC 2.0 response object: exactly one of result / error, and the request's id."""
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert set(reply) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), reply
    if request_id is not ...:
        assert reply["id"] == request_id, reply
    if "error" in reply:
        assert_error_object(reply["error"], allow_internal=allow_internal)


def json_body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


CANARY = "VICTIM-CANARY-7f3a"  # in the victim's rows; must never reach the attacker


@dataclass
class Arena:
    """The victim's project is seeded (every table, every awkward value) and has a finished export;
    the attacker owns a project with a few rows of its own."""

    victim: Project
    attacker: Project
    victim_owner: str
    attacker_owner: str
    victim_export: dict[str, Any]
    attacker_trace_ids: list[str]
    storage_root: Path

    def file(self, object_key: str) -> bytes:
        return (self.storage_root / object_key).read_bytes()


def insert_attacker_rows(conn: psycopg.Connection, project_id: str) -> list[str]:
    ids = [f"mine-{i}" for i in range(1, 6)]
    for i, trace_id in enumerate(ids, 1):
        conn.execute(
            """INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, tags, environment, input, metadata)
               VALUES (%s, %s, now() - %s * interval '1 minute', %s, %s, %s, %s, %s, %s, %s)""",
            (
                trace_id,
                project_id,
                i,
                f"mine trace {i}",
                f"mine-user-{i % 2}",
                "mine-session",
                ["mine"],
                "production",
                Jsonb("hello"),
                Jsonb({"tier": "gold"}),
            ),
        )
        conn.execute(
            """INSERT INTO observations (id, project_id, trace_id, start_time, name, input)
               VALUES (%s, %s, %s, now() - interval '1 minute', %s, %s)""",
            (f"mine-obs-{i}", project_id, trace_id, f"mine span {i}", Jsonb({"q": "hi"})),
        )
    return ids


def table_fingerprints(conn: psycopg.Connection, *, except_project: str) -> dict[str, Any]:
    """Every table's columns, row count and a checksum of its rows (the rows `except_project` may
    legitimately add to batch_exports, their changes and audit_logs left out): any write an attack
    slipped in changes it."""
    columns_of = {
        r["name"]: tuple(r["columns"])
        for r in conn.execute(
            """SELECT c.relname::text AS name, array_agg(a.attname::text ORDER BY a.attnum) AS columns
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') GROUP BY c.relname"""
        )
    }
    prints: dict[str, Any] = {}
    for table, columns in sorted(columns_of.items()):
        where = (
            sql.SQL("WHERE project_id IS DISTINCT FROM {}").format(sql.Literal(except_project))
            if table in ("batch_exports", "batch_export_changes", "audit_logs")
            else sql.SQL("")
        )
        row = conn.execute(
            sql.SQL("SELECT count(*) AS n, sum(hashtextextended(t::text, 0)) AS h FROM {} t {}").format(
                sql.Identifier(table), where
            )
        ).fetchone()
        prints[table] = (tuple(columns), row["n"], row["h"])
    return prints
