"""A Postgres restart between calls costs the API nothing: pooled connections that died are replaced
before a request gets them, and the access cache reconnects its listener by itself."""

from __future__ import annotations

import time

import pytest

from db import access
from procedures.app import create_app
from tests.conftest import Project, RpcClient, ServerThread, running_postgres
from tests.procedures.helpers import create_params

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_first_call_after_a_postgres_restart_succeeds(settings, mode):
    import db

    with running_postgres("bx-test-pg-api-restart-") as server:
        own = settings.model_copy(update={"DATABASE_URL": server.url})
        with db.connect(server.url, autocommit=True) as conn, ServerThread(create_app(own)) as api:
            created = access.create_project(conn, "restart project")
            project = Project(id=created["id"], org_id=created["org_id"], conn=conn)
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
            deadline = time.monotonic() + 10
            while not cache.enabled:
                assert time.monotonic() < deadline, "the access cache's listener did not reconnect"
                time.sleep(0.05)
            with db.connect(server.url, autocommit=True) as fresh:
                access.revoke_session(fresh, token)
            assert (
                client.error("batchExport.all", {"projectId": project.id}, token=token)["data"]["code"]
                == "UNAUTHORIZED"
            )
            client.http.close()
