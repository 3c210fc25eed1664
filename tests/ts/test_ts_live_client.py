"""The compiled TypeScript client against the real service: a Node script drives it over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.ts.client_package import CLIENT_DIR
from workers.batch_export import run_batch_export


def start_scenario(compiled: Path, scenario: str, api, project, token: str) -> subprocess.Popen:
    env = {**os.environ, "RPC_URL": f"{api.url}/rpc", "TOKEN": token, "PROJECT_ID": project.id}
    return subprocess.Popen(
        ["node", str(compiled / "test" / "live.js"), scenario],
        cwd=CLIENT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    return json.loads(stdout.strip().splitlines()[-1])


def exports_by_id(client, project, token) -> dict[str, dict]:
    listed = client.result("batchExport.all", {"projectId": project.id, "limit": 100}, token=token)
    return {export["id"]: export for export in listed["exports"]}


def test_create_all_download_url_and_cancel_through_the_typescript_client(compiled, api, client, project, owner_token):
    process = start_scenario(compiled, "flow", api, project, owner_token)
    try:
        created = json.loads(process.stdout.readline())["created"]
        run_batch_export(created)  # the worker's job, here, so the script sees the export complete
        seen = finish(process)
    finally:
        process.kill()
    exports = exports_by_id(client, project, owner_token)
    assert exports[seen["completed"]]["status"] == "COMPLETED"
    assert exports[seen["cancelled"]]["status"] == "CANCELLED"
    assert seen["totalCount"] == 2


def test_server_errors_reach_typescript_as_rpc_errors_with_data_code(compiled, api, project, owner_token):
    seen = finish(start_scenario(compiled, "errors", api, project, owner_token))
    assert seen["codes"] == ["BAD_REQUEST", "UNAUTHORIZED", "NOT_FOUND", "PRECONDITION_FAILED"]


def test_a_typescript_batch_sends_several_calls_in_one_http_request(compiled, api, client, project, owner_token):
    seen = finish(start_scenario(compiled, "batch", api, project, owner_token))
    assert seen["requests"] == 3
    assert exports_by_id(client, project, owner_token)[seen["cancelled"]]["status"] == "CANCELLED"
