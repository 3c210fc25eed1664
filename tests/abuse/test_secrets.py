"""No secret ever reaches a log, a reply, an export's log or an email: not a bearer token, not SECRET_KEY,
not the database's or Redis's password, not a download link's signature (in the logs).

A deployment of its own (Postgres and Redis that require passwords, `batch-export serve` and
`batch-export worker` as operators run them, with LOG_FORMAT=json and the API's access log on) is
driven through everything that makes it talk: bad tokens, bad params, a completed and a failed
export, a download, Redis down, Postgres down, bad configuration. Then every byte it wrote is
searched for every secret, and every line the API and the worker (with its work horses) logged
must be one JSON object carrying the ids of the request or export it is about.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import redis as redis_lib

import db
from db import access, batch_exports
from tests.support.abuse import (
    ServedApi,
    add_password_user_to_postgres,
    add_password_user_to_redis,
    assert_reply,
    serve_api,
)
from tests.support.servers import running_postgres, running_redis
from workers.queue import enqueue_export

pytestmark = pytest.mark.slow


def _rpc(api: ServedApi, method: str, params, token: str | None, said: list[str], timeout: float = 30) -> dict:
    response = api.post(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        token=token,
        timeout=timeout,
    )
    said.append(response.text)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert_reply(reply, allow_internal=True)
    return reply


def _cli(
    args: list[str], env: dict[str, str], cwd: Path, said: list[str], timeout: float = 120
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    said.extend([result.stdout, result.stderr])
    return result


def test_no_secret_in_any_log_reply_export_log_or_email(tmp_path, settings):
    said: list[str] = []  # every reply body and every line any process printed
    values = {
        "database password": "pgpw-" + secrets.token_hex(12),
        "redis password": "rdpw-" + secrets.token_hex(12),
        "SECRET_KEY": "sk-" + secrets.token_hex(20),
    }
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(running_postgres("bx-secrets-pg-"))
        redis_server = stack.enter_context(running_redis("bx-secrets-redis-"))
        storage = tmp_path / "exports"
        env = {
            "DATABASE_URL": add_password_user_to_postgres(postgres, "bx_app", values["database password"]),
            "REDIS_URL": add_password_user_to_redis(redis_server.url, "bx_app", values["redis password"]),
            "SECRET_KEY": values["SECRET_KEY"],
            "EXPORT_STORAGE_URL": storage.as_uri(),
            "BATCH_EXPORT_JOB_RETRIES": "0",
            "SMTP_URL": "",
            "OUTBOX_DIR": str(tmp_path / "outbox"),
            "LOG_FORMAT": "json",
        }
        conn = stack.enter_context(db.connect(postgres.url, autocommit=True))
        project = access.create_project(conn, "secrets")
        user = access.upsert_user(conn, "owner@example.com", "Owner")
        access.set_project_role(conn, project["id"], user["id"], "OWNER")
        token = access.create_session(conn, user["id"], timedelta(hours=1))
        revoked = access.create_session(conn, user["id"], timedelta(hours=1))
        access.revoke_session(conn, revoked)
        values["bearer token"] = token.removeprefix("bx_")
        values["revoked bearer token"] = revoked.removeprefix("bx_")
        conn.execute(
            "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('t-1', %s, now() - interval '1 minute', 'one')",
            (project["id"],),
        )
        api = stack.enter_context(serve_api(env, tmp_path, values, access_log=True))
        env["PUBLIC_BASE_URL"] = api.url
        pid = project["id"]
        create = {"projectId": pid, "name": "ok", "format": "CSV", "query": {"tableName": "traces"}}

        # Callers getting it wrong.
        for bad in (None, "bx_wrong", revoked, token + "x", token[:-1]):
            _rpc(api, "batchExport.all", {"projectId": pid}, bad, said)
        _rpc(api, "batchExport.all", {"projectId": "not mine"}, token, said)
        _rpc(api, "batchExport.create", {**create, "format": "XLS"}, token, said)
        _rpc(api, "batchExport.nope", {}, token, said)
        said.append(api.post(b"{not json", token=token).text)
        # A caller's own request id is kept, and answered back; one no log should carry is replaced.
        traced = api.post(b"{not json", token=token, headers={"X-Request-ID": "caller-trace-42"})
        assert traced.headers["x-request-id"] == "caller-trace-42"
        forged = api.post(b"{not json", token=token, headers={"X-Request-ID": "x" * 500})
        assert len(forged.headers["x-request-id"]) == 32, forged.headers

        # A completed export, its link and its email; and one that fails for good.
        done = _rpc(api, "batchExport.create", create, token, said)["result"]
        failing = conn.execute(
            batch_exports.INSERT_SQL,
            batch_exports.insert_params(
                project_id=pid,
                user_id=user["id"],
                name="doomed",
                format="CSV",
                query={
                    "tableName": "traces",
                    "filter": [{"column": "gone", "type": "string", "operator": "=", "value": "x"}],
                },
            ),
        ).fetchone()["id"]
        with contextlib.closing(redis_lib.Redis.from_url(env["REDIS_URL"])) as client:
            enqueue_export(client, failing, _settings_for(env), project_id=pid)
        result = _cli(["worker", "--burst"], env, tmp_path, said)
        assert result.returncode == 0, result.stderr[-2000:]
        worker_runs = [result]
        states = {
            r["id"]: r for r in conn.execute("SELECT id, status, log FROM batch_exports WHERE project_id = %s", (pid,))
        }
        assert states[done["id"]]["status"] == "COMPLETED" and states[failing]["status"] == "FAILED", states
        link = _rpc(api, "batchExport.downloadUrl", {"projectId": pid, "batchExportId": done["id"]}, token, said)[
            "result"
        ]["url"]
        assert httpx.get(link, timeout=30).status_code == 200
        # The link is the caller's to see (its reply), never a log's.
        in_logs_only = {"download link signature": parse_qs(urlparse(link).query)["sig"][0]}

        # Redis down: create is still accepted (the sweep enqueues it later), cancel too, readyz says 503.
        # Meanwhile, bad configuration, each with a password in it: one line, naming no secret.
        redis_server.stop()
        broken_url = f"mysql://bx_app:{values['database password']}@127.0.0.1:1/x"
        values["wrong database password"] = "wrongpw-" + secrets.token_hex(8)
        wrong_password = env["DATABASE_URL"].replace(values["database password"], values["wrong database password"])

        def create_and_cancel() -> None:
            accepted = _rpc(api, "batchExport.create", create, token, said)["result"]
            _rpc(api, "batchExport.cancel", {"projectId": pid, "batchExportId": accepted["id"]}, token, said)

        with ThreadPoolExecutor(6) as pool:
            misconfigured = [
                pool.submit(_cli, ["migrate"], {**env, **overrides}, tmp_path, said, 60)
                for overrides in (
                    {"DATABASE_URL": broken_url},
                    {"REDIS_URL": broken_url.replace("mysql", "http")},
                    {"DATABASE_URL": wrong_password},
                )
            ]
            for task in (
                pool.submit(create_and_cancel),
                pool.submit(lambda: said.append(httpx.get(f"{api.url}/readyz", timeout=30).text)),
                # 120 s: a burst worker on this ACL-user Redis sometimes takes 60 s to exit, in RQ's
                # unsubscribe (its pubsub thread waits out its 60 s read); seen before LOG_FORMAT too.
                pool.submit(_cli, ["worker", "--burst"], env, tmp_path, said, 120),
            ):
                if isinstance(outcome := task.result(), subprocess.CompletedProcess):
                    worker_runs.append(outcome)
            assert all(task.result().returncode != 0 for task in misconfigured)
            assert "password authentication failed" in misconfigured[-1].result().stderr
        redis_server.start()
        add_password_user_to_redis(redis_server.url, "bx_app", values["redis password"])  # a restart forgets ACL users

        # Postgres down: every call is an internal error, with nothing about why in the reply.
        postgres.stop(mode="immediate")
        with ThreadPoolExecutor(5) as pool:
            worker = pool.submit(
                _cli, ["worker", "--burst"], env, tmp_path, said, 120
            )  # its sweep meets the dead Postgres
            health = pool.submit(lambda: said.append(httpx.get(f"{api.url}/readyz", timeout=30).text))
            replies = list(
                pool.map(
                    lambda args: _rpc(api, *args, said=said, timeout=60),
                    [
                        ("batchExport.all", {"projectId": pid}, token),
                        ("batchExport.create", create, token),
                        ("batchExport.downloadUrl", {"projectId": pid, "batchExportId": done["id"]}, token),
                    ],
                )
            )
            worker_runs.append(worker.result())
            health.result()
        for reply in replies:
            assert reply["error"]["data"]["code"] == "INTERNAL_SERVER_ERROR", reply
            assert set(reply["error"]["data"]) <= {"code", "httpStatus", "path", "requestId"}, reply
        api_log = api.log()
        stored = [f"{r['status']} {r['log']}" for r in states.values()]

    emails = [p.read_text(errors="replace") for p in tmp_path.rglob("*.eml")]
    assert emails, "the worker should have written the completion and failure emails to its outbox"
    # The outage is logged (by type and request id, procedures.auth.report_database_outages), and
    # so is every unexpected error with its traceback; neither may carry a secret.
    assert "database unavailable" in api_log, "Postgres being down should have been logged"
    for where, text in [
        ("API log", api_log),
        *(("reply or CLI output", t) for t in said),
        *(("export log", t) for t in stored),
        *(("email", t) for t in emails),
    ]:
        for name, value in values.items():
            assert value not in text, f"the {name} appears in a {where}:\n{_around(text, value)}"
    worker_log = "\n".join(run.stdout + run.stderr for run in worker_runs)
    for where, text in [("API log", api_log), ("worker log", worker_log)]:
        for name, value in in_logs_only.items():
            assert value not in text, f"the {name} appears in the {where}:\n{_around(text, value)}"

    _assert_api_lines(
        _json_lines(api_log, "API log"),
        pid,
        caller_id="caller-trace-42",
        outage_ids=[reply["error"]["data"]["requestId"] for reply in replies],
    )
    _assert_worker_lines(_json_lines(worker_log, "worker log"), {done["id"]: pid, failing: pid})


def _json_lines(text: str, where: str) -> list[dict[str, Any]]:
    """Every line of `text` as the JSON object it must be, with the keys every line has."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"a line of the {where} is not JSON: {line[:500]}") from None
        assert isinstance(parsed, dict) and {"timestamp", "level", "logger", "message"} <= parsed.keys(), line
        assert parsed["timestamp"].endswith("+00:00"), line  # UTC
        lines.append(parsed)
    assert lines, f"the {where} is empty"
    return lines


# Lines the API logs outside any request: start-up and shutdown, its LISTEN connections (the access
# cache's, the export changes'), the open streams' access recheck, and the connection pool's own threads.
_OUTSIDE_REQUESTS = (
    "uvicorn.error",
    "batch-export.serve",
    "procedures.access_cache",
    "procedures.export_changes",
    "procedures.streams",
    "psycopg.pool",
)


def _assert_api_lines(lines: list[dict[str, Any]], project_id: str, caller_id: str, outage_ids: list[str]) -> None:
    for line in lines:
        if line["logger"] not in _OUTSIDE_REQUESTS:
            assert line.get("requestId"), f"an API line without its requestId: {line}"
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line["requestId"] == caller_id for line in access), "the caller's X-Request-ID is not logged"
    assert any("/exports/download?" in line["message"] for line in access), "the download is not logged"
    # The id a caller got for an outage finds the line that says what happened.
    logged = {line["requestId"] for line in lines if "database unavailable" in line["message"]}
    assert set(outage_ids) <= logged, (outage_ids, logged)
    not_enqueued = [line for line in lines if "the sweep will enqueue it" in line["message"]]
    assert not_enqueued and all(line.get("projectId") == project_id for line in not_enqueued), not_enqueued


def _assert_worker_lines(lines: list[dict[str, Any]], projects: dict[str, str]) -> None:
    """Every line about one of the exports carries its exportId and projectId: the job's own lines,
    its helper threads', RQ's in the work horse and the worker's about the running job."""
    about = 0
    for line in lines:
        named = [export_id for export_id in projects if export_id in line["message"]]
        if not named:
            continue
        if line["logger"] == "rq.worker" and ": batch-exports: " in line["message"]:
            continue  # RQ's "dequeued" line, written before the job runs; it names the job itself
        about += 1
        assert line.get("exportId") == named[0] and line.get("projectId") == projects[named[0]], line
    assert about, "no worker line names the exports"
    assert any(line["logger"].startswith("rq.") and line.get("exportId") for line in lines), "RQ's lines lack ids"
    failed = [line for line in lines if line["level"] == "ERROR" and line.get("exception")]
    assert failed, "the failing export's traceback should be logged, as one line"


def _settings_for(env: dict[str, str]):
    from schemas.settings import Settings

    return Settings(**{k: v for k, v in env.items() if k in Settings.model_fields})


def _around(text: str, value: str) -> str:
    at = text.index(value)
    return text[max(0, at - 300) : at + 300]
