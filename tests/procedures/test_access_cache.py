"""The session/role cache never lets a revoked token or a lowered role through for long.

Each test first makes a call that puts the caller's answer in the API's cache (and checks it is
there), then changes access in Postgres the way an operator would, and calls again. The change
reaches the API as a Postgres notification, milliseconds later; on a loaded machine the very next
call can still beat it, so the tests call until the change shows, and fail if it has not shown
within the cache's lifetime (5 s), the most any change can take.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from db import access
from procedures.access_cache import AccessCache
from tests.support.rpc_client import create_params


@pytest.fixture
def cache(api) -> AccessCache:
    cache = api.server.config.app.state.resources.access_cache
    _wait_for(lambda: cache.enabled, "the access cache's LISTEN connection")
    return cache


def _wait_for(predicate, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _error_code_soon(client, method: str, params: dict, token: str, expected: str, cache: AccessCache) -> dict:
    """The error `expected`, once the change has reached the API: within the cache's lifetime."""
    deadline = time.monotonic() + cache.ttl_seconds + 1
    while True:
        reply = client.call(method, params, token=token)
        error = reply.get("error")
        if error is not None and error["data"]["code"] == expected:
            return error
        assert time.monotonic() < deadline, f"still {reply} after the cache's lifetime"
        time.sleep(0.01)


def _call_until_cached(client, cache: AccessCache, token: str, project_id: str) -> None:
    """Creating the member notified the API too; once that has landed, a call's answer is kept."""
    _wait_for(
        lambda: (
            "result" in client.call("batchExport.all", {"projectId": project_id}, token=token)
            and _cached(cache, token, project_id)
        ),
        "the caller's answer to be cached",
    )


def _cached(cache: AccessCache, token: str, project_id: str) -> bool:
    return cache.get((access.hash_token(token), project_id)) is not None


def test_answers_are_cached_per_token_and_project(client, project, cache):
    token = project.member("MEMBER")
    assert not _cached(cache, token, project.id)
    _call_until_cached(client, cache, token, project.id)
    assert not _cached(cache, token, "another-project")


def test_revoked_token_is_refused_on_the_next_call(client, project, cache):
    token = project.member("OWNER")
    _call_until_cached(client, cache, token, project.id)

    access.revoke_session(project.conn, token)
    _error_code_soon(client, "batchExport.all", {"projectId": project.id}, token, "UNAUTHORIZED", cache)
    assert not _cached(cache, token, project.id)


def test_lowered_project_role_takes_effect_on_the_next_call(client, project, cache):
    token = project.member("OWNER")
    client.result("batchExport.all", {"projectId": project.id}, token=token)
    user_id = project.conn.execute(
        "SELECT user_id FROM auth_sessions WHERE token_hash = %s", (access.hash_token(token),)
    ).fetchone()["user_id"]

    access.set_project_role(project.conn, project.id, user_id, "VIEWER")
    error = _error_code_soon(client, "batchExport.all", {"projectId": project.id}, token, "FORBIDDEN", cache)
    assert "VIEWER" in error["message"]


def test_mutations_and_download_links_never_take_a_cached_answer(client, project, cache, owner_token):
    """No waiting for the notification here: create, cancel and downloadUrl ask Postgres every time."""
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    for _ in range(20):
        token = project.member("OWNER")
        _call_until_cached(client, cache, token, project.id)
        access.revoke_session(project.conn, token)
        for method, params in [
            ("batchExport.create", create_params(project.id)),
            ("batchExport.cancel", {"projectId": project.id, "batchExportId": export["id"]}),
            ("batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}),
        ]:
            assert client.error(method, params, token=token)["data"]["code"] == "UNAUTHORIZED", method


def test_removed_membership_and_new_overriding_membership_take_effect(client, project, cache):
    # An org ADMIN with no project membership: the org role applies until a project role overrides it.
    token = project.member(None, org_role="ADMIN")
    client.result("batchExport.all", {"projectId": project.id}, token=token)
    user_id = project.conn.execute(
        "SELECT user_id FROM auth_sessions WHERE token_hash = %s", (access.hash_token(token),)
    ).fetchone()["user_id"]

    params = {"projectId": project.id}
    access.set_project_role(project.conn, project.id, user_id, "NONE")  # an INSERT, not an UPDATE
    _error_code_soon(client, "batchExport.all", params, token, "FORBIDDEN", cache)

    project.conn.execute("DELETE FROM project_memberships WHERE user_id = %s", (user_id,))
    _wait_for(lambda: "result" in client.call("batchExport.all", params, token=token), "the org role to apply again")
    project.conn.execute("DELETE FROM organization_memberships WHERE user_id = %s", (user_id,))
    _error_code_soon(client, "batchExport.all", params, token, "FORBIDDEN", cache)


def test_an_answer_never_outlives_its_session(client, project, cache):
    token = project.member("OWNER", ttl=timedelta(seconds=1.5))
    _call_until_cached(client, cache, token, project.id)
    time.sleep(1.6)
    assert client.error("batchExport.all", {"projectId": project.id}, token=token)["data"]["code"] == "UNAUTHORIZED"


def test_cache_is_off_while_its_listener_is_disconnected(client, project, cache, conn):
    token = project.member("OWNER")
    client.result("batchExport.all", {"projectId": project.id}, token=token)

    # Kill the API's LISTEN connection, the way a Postgres restart or a network cut would.
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = %s",
        (cache.connection_name,),
    ).fetchone()["n"]
    assert killed == 1
    _wait_for(lambda: not cache.enabled, "the cache to switch itself off")
    assert not _cached(cache, token, project.id)

    # A change made while nobody listens is still seen: the call goes to Postgres.
    access.revoke_session(project.conn, token)
    assert client.error("batchExport.all", {"projectId": project.id}, token=token)["data"]["code"] == "UNAUTHORIZED"

    # The listener reconnects by itself and the cache works again.
    _wait_for(lambda: cache.enabled, "the listener to reconnect")
    fresh = project.member("OWNER")
    _call_until_cached(client, cache, fresh, project.id)


def test_unknown_tokens_are_not_cached(client, project, cache):
    before = len(cache._entries)
    for n in range(20):
        client.error("batchExport.all", {"projectId": project.id}, token=f"bx_guess-{n}")
    assert len(cache._entries) == before
