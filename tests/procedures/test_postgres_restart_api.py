"""A Postgres restart between calls costs the API nothing: pooled connections that died are replaced
before a request gets them, and the access cache reconnects its listener by itself."""

from __future__ import annotations

import time

import pytest

from db import access
from procedures.app import create_app
from tests.support.rpc_client import RpcClient, create_params
from tests.support.servers import ServerThread, running_postgres
from tests.support.world import new_project

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_first_call_after_a_postgres_restart_succeeds(settings, mode):
    import db

    with running_postgres("bx-test-pg-api-restart-") as server:
        own = settings.model_copy(update={"DATABASE_URL": server.url})
        with db.connect(server.url, autocommit=True) as conn, ServerThread(create_app(own)) as api:
            project = new_project(conn, "restart project")
            token = project.member("OWNER")
            client = RpcClient(api.url)
            # Fill the pool with several open connections, all of which the restart will kill.
            for _ in range(5):
                client.result("batchExport.create", create_params(project.id), token=token)
            cache = api.server.config.app.state.resources.access_cache

            server.stop(mode=mode)
            server.start()

            # Every call right after the restart works: no request is handed a dead connection.
            # (The test server runs without fsync, so an immediate stop may lose the last commits.)
            with db.connect(server.url) as fresh:
                stored = fresh.execute("SELECT count(*) AS n FROM batch_exports").fetchone()["n"]
            for _ in range(5):
                assert client.result("batchExport.all", {"projectId": project.id}, token=token)["totalCount"] == stored
            deadline = time.monotonic() + 30
            while not cache.enabled:
                assert time.monotonic() < deadline, "the access cache's listener did not reconnect"
                time.sleep(0.05)
            with db.connect(server.url, autocommit=True) as fresh:
                access.revoke_session(fresh, token)
            # The revocation reaches the API as a notification, a moment later; within the cache's
            # lifetime at the latest (a few seconds more for a loaded machine's scheduling).
            deadline = time.monotonic() + cache.ttl_seconds + 5
            while "result" in (reply := client.call("batchExport.all", {"projectId": project.id}, token=token)):
                assert time.monotonic() < deadline, "a revoked token still works after the cache's lifetime"
                time.sleep(0.02)
            assert reply["error"]["data"]["code"] == "UNAUTHORIZED"
            client.http.close()
