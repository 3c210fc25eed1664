"""`batch-export demo`: everything a newcomer needs, on this machine, in one command.

Starts (or reuses) local Postgres and Redis under .data/, migrates, creates a demo project and user,
seeds data, starts the API and workers (two by default) in the background, creates a first export and waits for it.
The servers keep running after the command returns; `batch-export demo --stop` stops them.

The demo talks to the API over HTTP like any client, through the API client it is handed (the
terminal client's, cli.api_client, passed in by `batch-export demo`): devstack never imports cli,
which imports devstack.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import db
from db import access
from devstack.servers import LocalPostgres, LocalRedis, port_open, postgres_can_reach
from schemas import ACTIVE_STATUSES
from schemas.settings import LOCAL_POSTGRES_PORT, LOCAL_REDIS_PORT

DATA = Path(".data").resolve()
STATE_FILE = DATA / "demo.json"
DEMO_WORKER_METRICS_PORT = 9100
RUN = DATA / "run"
LOGS = DATA / "logs"


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _start_background(name: str, argv: list[str], env: dict[str, str]) -> None:
    pidfile = RUN / f"{name}.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 0)
            _say(f"{name} already running (pid {pidfile.read_text().strip()})")
            return
        except (ProcessLookupError, ValueError):
            pass
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
    pidfile.write_text(str(process.pid))
    _say(f"started {name} (pid {process.pid}, log {LOGS / f'{name}.log'})")


def _wait_ready(base_url: str, timeout: float = 30) -> None:
    # /readyz, not /healthz: the demo's first export needs Postgres, Redis and the storage, not only a live process.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API did not become ready at {base_url} (GET /readyz says why); see {LOGS / 'api.log'}")


def _postgres_data_dir() -> Path:
    """`.data/pg`, unless Postgres's user cannot reach the clone (a private folder when running
    as root): then a folder of this clone's own under /var/lib, which it can."""
    if postgres_can_reach(DATA):
        return DATA / "pg"
    digest = hashlib.sha256(str(DATA).encode()).hexdigest()[:12]
    return Path("/var/lib/batch-export-demo") / digest / "pg"


class Api(Protocol):
    """What the demo needs of an API client: one JSON-RPC call, its result or an exception; and a
    subscription's events (a generator the caller may stop taking from)."""

    def call(self, method: str, params: dict[str, Any]) -> Any: ...

    def follow(self, method: str, params: dict[str, Any]) -> Iterator[Any]: ...


def wait_for_export(api: Api, project_id: str, export: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """`export` once it is no longer active, or as it stood when it had not moved (status, rows, parts)
    for `timeout` seconds: a 10,000,000-row export is waited for as long as it makes progress. Its
    changes are pushed by the API (batchExport.onChange), read here in a thread so a stall can time out."""
    changes: queue.Queue[dict[str, Any]] = queue.Queue()

    def follow() -> None:
        for changed in api.follow("batchExport.onChange", {"projectId": project_id, "batchExportId": export["id"]}):
            changes.put(changed)
            if changed["status"] not in ACTIVE_STATUSES:
                return

    threading.Thread(target=follow, name="demo-follow", daemon=True).start()
    while export["status"] in ACTIVE_STATUSES:
        try:
            export = changes.get(timeout=timeout)
        except queue.Empty:
            break  # no change for `timeout` seconds: stuck (the thread ends with the process)
    return export


def run_demo(*, traces: int, port: int, api_client: Callable[[str, str], Api], workers: int = 2) -> None:
    """`api_client(base_url, token)` is the client the demo's first export goes through."""
    postgres = LocalPostgres(_postgres_data_dir(), LOCAL_POSTGRES_PORT)
    redis_server = LocalRedis(DATA / "redis", LOCAL_REDIS_PORT)
    _say(f"Postgres on 127.0.0.1:{postgres.port} (data in {postgres.data_dir})")
    postgres.start()
    _say(f"Redis on 127.0.0.1:{redis_server.port}")
    redis_server.start(detach=True)
    db.migrate(postgres.url)

    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "EXPORT_STORAGE_URL": (DATA / "exports").as_uri(),
        "PUBLIC_BASE_URL": base_url,
    }

    state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    with db.connect(postgres.url) as conn:
        if not state.get("project_id") or access.project_org_id(conn, state["project_id"]) is None:
            project = access.create_project(conn, "Demo project", "Demo organization")
            state = {"project_id": project["id"], "seeded": False}
            STATE_FILE.write_text(json.dumps(state))
        project_id = state["project_id"]
        user = access.upsert_user(conn, "demo@example.com", "Demo User")
        org_id = access.project_org_id(conn, project_id)
        assert org_id is not None, "the project was checked or created above"
        access.set_org_role(conn, org_id, user["id"], "OWNER")
        # A fresh token each run: tokens are stored hashed, so an old one cannot be shown again.
        token = access.create_session(conn, user["id"], timedelta(days=7))
    if not state.get("seeded"):
        from devstack.seed import seed

        _say(f"seeding {traces} traces and their observations, scores, sessions, datasets ...")
        with db.connect(postgres.url) as conn:
            seed(conn, project_id, traces=traces)
        state["seeded"] = True
        STATE_FILE.write_text(json.dumps(state))

    cli = [sys.executable, "-m", "cli"]
    if not port_open(port):
        _start_background("api", [*cli, "serve", "--port", str(port)], env)
    # Several workers, so that a large export's parts run at once (one per core is a good start).
    # Each serves its own metrics, on 9101, 9102 ... (a port already taken: that worker serves none).
    for n in range(1, workers + 1):
        metrics_port = DEMO_WORKER_METRICS_PORT + n
        worker_env = env if port_open(metrics_port) else {**env, "WORKER_METRICS_PORT": str(metrics_port)}
        _start_background(f"worker-{n}", [*cli, "worker"], worker_env)
    # RQ's cron scheduler: it plans the runs of scheduled exports, which the workers then run.
    _start_background("scheduler", [*cli, "scheduler"], env)
    _wait_ready(base_url)
    _say(
        f"metrics: {base_url}/metrics (the API), "
        + ", ".join(f"http://127.0.0.1:{DEMO_WORKER_METRICS_PORT + n}/metrics" for n in range(1, workers + 1))
        + " (the workers)"
    )

    api = api_client(base_url, token)
    export = api.call(
        "batchExport.create",
        {
            "projectId": project_id,
            "name": "Demo: traces of the last 30 days",
            "format": "CSV",
            "query": {"tableName": "traces", "filter": [], "orderBy": {"column": "timestamp", "order": "DESC"}},
        },
    )
    _say(f"created export {export['id']}; waiting for the worker ...")
    # A large export plans and sorts its parts before its first rows move: allow minutes without progress.
    export = wait_for_export(api, project_id, export, timeout=600)
    progress = export["progress"]
    took = ""
    if export.get("finishedAt"):
        seconds = (
            datetime.fromisoformat(export["finishedAt"]) - datetime.fromisoformat(export["createdAt"])
        ).total_seconds()
        took = f" in {seconds:.1f} s"
    _say(
        f"export {export['id']} is {export['status']}: {progress['rowsExported']:,} rows,"
        f" {progress['partsDone']} of {progress['partsTotal']} parts{took}"
    )

    create_params = json.dumps(
        {
            "projectId": project_id,
            "name": "my traces",
            "format": "JSONL",
            "query": {"tableName": "traces", "filter": [], "orderBy": None},
        }
    )
    # The token rides in the fragment, which the browser keeps to itself; the page stores it and drops it from the URL.
    page_url = f"{base_url}/#token={token}&project={project_id}"
    print(
        f"""
The demo is running (stop it with `batch-export demo --stop`).

  page:     {page_url}   (the exports page; the link signs you in)
  API:      {base_url}/rpc   (OpenRPC document: {base_url}/rpc/openrpc.json)
  project:  {project_id}
  token:    {token}

Create an export:

  curl -s {base_url}/rpc -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"jsonrpc":"2.0","id":1,"method":"batchExport.create","params":{create_params}}}'

List exports:

  curl -s {base_url}/rpc -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"jsonrpc":"2.0","id":2,"method":"batchExport.all","params":{{"projectId":"{project_id}"}}}}'

From the terminal, with a progress bar:

  export BATCH_EXPORT_API_URL={base_url} BATCH_EXPORT_PROJECT={project_id} BATCH_EXPORT_TOKEN={token}
  .venv/bin/batch-export export --table traces --format CSV --wait --output traces.csv
  .venv/bin/batch-export exports list
"""
    )
    print(page_url)


def stop_demo() -> None:
    for pidfile in [RUN / "scheduler.pid", *sorted(RUN.glob("worker*.pid")), RUN / "api.pid"]:
        name = pidfile.stem
        if pidfile.exists():
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGTERM)
                _say(f"stopped {name}")
            except (ProcessLookupError, ValueError):
                pass
            pidfile.unlink()
    LocalRedis(DATA / "redis", LOCAL_REDIS_PORT).stop()
    LocalPostgres(_postgres_data_dir(), LOCAL_POSTGRES_PORT).stop()
    _say("stopped Redis and Postgres")
