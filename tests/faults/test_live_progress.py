"""batchExport.onChange against the deployed processes: a real worker's export followed live, and a
stream that survives the restart of the API serving it."""

from __future__ import annotations

import os
import signal

import pytest

from db import batch_exports
from devstack.servers import free_port
from tests.support.event_streams import LiveStream, StreamEvent
from tests.support.faults import FaultStack
from tests.support.processes import ApiProcess
from tests.support.rpc_client import RpcClient, create_params
from tests.support.world import Project

pytestmark = pytest.mark.slow


def described(event: StreamEvent) -> str:
    export = event.result
    return f"{export['status']} {export['progress']['rowsExported']}"


def test_a_workers_export_is_followed_from_queued_through_progress_to_completed(stack: FaultStack, big_tenant: Project):
    api = stack.api()  # before the gate: the API talks to Postgres directly
    gate = stack.stream_gate()
    gate.hold()  # the worker's row stream stops a few MB in, until the test lets go
    worker = stack.worker()
    with LiveStream(api.url, "batchExport.onChange", {"projectId": big_tenant.id}, token=big_tenant.token) as stream:
        created = RpcClient(api.url).result(
            "batchExport.create", create_params(big_tenant.id, name="followed"), token=big_tenant.token
        )
        queued = stream.next()
        # Held mid-stream, the job's progress thread still records the rows written so far each second.
        moving = stream.until(lambda e: e.result["progress"]["rowsExported"] > 0)
        gate.release()
        done = stream.until(lambda e: e.result["status"] != "PROCESSING", timeout=150)
    assert worker.alive(), worker.log()

    assert (queued.result["id"], described(queued)) == (created["id"], "QUEUED 0")
    assert [e.result["status"] for e in moving] == ["PROCESSING"] * len(moving)
    rows = [e.result["progress"]["rowsExported"] for e in [*moving, *done[:-1]]]
    assert rows == sorted(rows), "progress only goes forward"
    finished = done[-1].result
    assert finished["status"] == "COMPLETED", finished["log"]
    assert finished["progress"]["rowsExported"] == stack.load(created["id"])["rows_exported"] > 0
    assert finished["isDownloadable"] and finished["sha256"]
    ids = [int(e.id) for e in [queued, *moving, *done]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_sigterm_ends_the_apis_streams_at_once_and_the_client_resumes_on_another_api_missing_nothing(
    stack: FaultStack, small_tenant: Project, conn
):
    # A grace period and heartbeats far apart: a stream the API did not end itself would stay open.
    stack.configure(API_SHUTDOWN_GRACE_SECONDS=600, SUBSCRIPTION_HEARTBEAT_SECONDS=600)
    first = stack.api("api-1")
    port = free_port()
    second = ApiProcess("api-2", stack.env(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}"), stack.folder, port).start()
    stack.processes.append(second)
    export_id = small_tenant.new_export(conn, name="across a restart")
    params = {"projectId": small_tenant.id, "batchExportId": export_id}

    with LiveStream(first.url, "batchExport.onChange", params, token=small_tenant.token) as stream:
        seen = stream.next()
        assert first.process is not None
        os.kill(first.pid, signal.SIGTERM)
        # It simply ends (no error, no "return"): the client's cue to reconnect.
        assert stream.rest() == [], "the stream ends with no final event"
    assert first.process.wait(timeout=60) in (0, -signal.SIGTERM), first.log()

    batch_exports.mark_processing(conn, export_id)  # while the client is between servers
    batch_exports.mark_failed(conn, export_id, "the disk is full")

    with LiveStream(
        second.url, "batchExport.onChange", params, token=small_tenant.token, last_event_id=seen.id
    ) as again:
        missed = again.until(lambda e: e.result["status"] == "FAILED")
    assert described(seen) == "QUEUED 0"
    assert [described(e) for e in missed] == ["PROCESSING 0", "FAILED 0"]
    assert missed[-1].result["log"] == "the disk is full"
    assert "SIGTERM: ending the open event streams" in first.log()
