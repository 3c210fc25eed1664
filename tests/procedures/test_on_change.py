"""batchExport.onChange over HTTP: the project's exports pushed as they change, resumed, and closed when access goes.

The exports move through the same transitions a worker makes (db.batch_exports), written straight
into Postgres, so each change happens exactly when the test says; tests/faults/test_live_progress.py
follows a real worker's export.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from db import access, batch_exports, export_changes
from procedures.app import create_app
from tests.support.event_streams import FILE_BYTES, SHA256, LiveStream, StreamEvent, run_as_a_worker
from tests.support.rpc_client import create_params
from tests.support.servers import ServerThread
from tests.support.world import new_project


def open_stream(api, params: dict, token: str | None, last_event_id: str | None = None) -> LiveStream:
    """The stream, open: from here on no change can be missed (the API follows before it answers)."""
    return LiveStream(api.url, "batchExport.onChange", params, token=token, last_event_id=last_event_id)


def status_and_rows(event: StreamEvent) -> tuple[str, int, int | None]:
    export = event.result
    return export["status"], export["progress"]["rowsExported"], export["progress"]["rowsTotal"]


def test_an_export_is_pushed_from_creation_through_progress_to_completion(api, client, project, owner_token, conn):
    with open_stream(api, {"projectId": project.id}, owner_token) as stream:
        created = client.result("batchExport.create", create_params(project.id), token=owner_token)
        run_as_a_worker(conn, created["id"])

        events = [stream.next() for _ in range(4)]

    assert [status_and_rows(e) for e in events] == [
        ("QUEUED", 0, None),
        ("PROCESSING", 0, None),
        ("PROCESSING", 120, 300),
        ("COMPLETED", 300, 300),
    ]
    assert {e.result["id"] for e in events} == {created["id"]}
    # Each event is the BatchExport the other procedures return, with an id that only grows.
    assert events[0].result == created
    completed = events[-1].result
    assert completed["isDownloadable"] and completed["fileBytes"] == FILE_BYTES and completed["sha256"] == SHA256
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert events[0].data["method"] == "batchExport.onChange" and events[0].data["params"]["subscription"] == 1


def test_a_write_that_changes_nothing_visible_sends_nothing(api, project, owner_token, conn):
    export_id = project.new_export(conn)
    batch_exports.mark_processing(conn, export_id)
    with open_stream(api, {"projectId": project.id, "batchExportId": export_id}, owner_token) as stream:
        assert status_and_rows(stream.next()) == ("PROCESSING", 0, None)  # where it stands now
        batch_exports.record_progress(conn, export_id, 0, None)  # a progress tick with no new rows
        batch_exports.record_progress(conn, export_id, 10, None)

        assert status_and_rows(stream.next()) == ("PROCESSING", 10, None)


def test_updated_at_moves_forward_in_commit_order_even_for_a_transaction_that_began_first(
    api, project, owner_token, conn, database_url
):
    """A client keeps the newer of two states by updatedAt: a write from a transaction that began before
    another one's, and committed after it, must still carry the later time."""
    export_id = project.new_export(conn)
    batch_exports.mark_processing(conn, export_id)
    with (
        open_stream(api, {"projectId": project.id, "batchExportId": export_id}, owner_token) as stream,
        psycopg.connect(database_url) as early,
    ):
        stream.next()
        early.execute("SELECT now()")  # this transaction's now() is fixed from here
        batch_exports.record_progress(conn, export_id, 5, 10)  # another one, begun and committed later
        batch_exports.record_progress(early, export_id, 10, 10)
        early.commit()
        first, second = stream.next(), stream.next()
    assert [e.result["progress"]["rowsExported"] for e in (first, second)] == [5, 10]
    assert second.result["updatedAt"] > first.result["updatedAt"]


def test_one_exports_stream_starts_with_its_state_and_carries_nothing_else(api, project, owner_token, conn):
    watched, other = project.new_export(conn, name="watched"), project.new_export(conn, name="other")
    batch_exports.mark_processing(conn, watched)

    with open_stream(api, {"projectId": project.id, "batchExportId": watched}, owner_token) as stream:
        first = stream.next()
        run_as_a_worker(conn, other)
        batch_exports.record_progress(conn, watched, 5, 10)
        second = stream.next()

    assert (first.result["id"], first.result["status"]) == (watched, "PROCESSING")
    assert (second.result["id"], status_and_rows(second)) == (watched, ("PROCESSING", 5, 10))


def test_reconnecting_with_last_event_id_loses_no_status_change(api, project, owner_token, conn):
    export_id = project.new_export(conn)
    with open_stream(api, {"projectId": project.id, "batchExportId": export_id}, owner_token) as stream:
        seen = stream.next()
    assert seen.result["status"] == "QUEUED"

    run_as_a_worker(conn, export_id)  # everything happens while the client is away

    with open_stream(api, {"projectId": project.id, "batchExportId": export_id}, owner_token, seen.id) as stream:
        missed = stream.until(lambda e: e.result["status"] == "COMPLETED")
    assert [status_and_rows(e) for e in missed] == [
        ("PROCESSING", 0, None),
        ("PROCESSING", 120, 300),
        ("COMPLETED", 300, 300),
    ]


def test_a_stream_that_drops_before_any_event_resumes_from_where_it_started(api, project, owner_token, conn):
    with open_stream(api, {"projectId": project.id}, owner_token) as stream:
        start = stream.checkpoint()  # sent first: an id, no event
    export_id = project.new_export(conn, name="made while the client was away")

    with open_stream(api, {"projectId": project.id}, owner_token, start) as stream:
        missed = stream.next()
    assert (missed.result["id"], missed.result["status"]) == (export_id, "QUEUED")
    assert int(missed.id) > int(start)


def test_a_project_stream_resumes_across_exports_in_commit_order(api, project, owner_token, conn):
    with open_stream(api, {"projectId": project.id}, owner_token) as stream:
        first_id = project.new_export(conn, name="first")
        seen = stream.next()
    assert seen.result["id"] == first_id

    second_id = project.new_export(conn, name="second")
    run_as_a_worker(conn, first_id)
    batch_exports.mark_processing(conn, second_id)

    with open_stream(api, {"projectId": project.id}, owner_token, seen.id) as stream:
        missed = [stream.next() for _ in range(5)]
    assert [(e.result["name"], e.result["status"]) for e in missed] == [
        ("second", "QUEUED"),
        ("first", "PROCESSING"),
        ("first", "PROCESSING"),
        ("first", "COMPLETED"),
        ("second", "PROCESSING"),
    ]


def test_an_id_from_before_the_kept_log_gets_the_current_state_instead(api, project, owner_token, conn):
    export_id = project.new_export(conn)
    with open_stream(api, {"projectId": project.id}, owner_token) as stream:
        batch_exports.mark_processing(conn, export_id)
        old = stream.next()
    run_as_a_worker(conn, export_id)
    export_changes.prune(conn, keep_seconds=-60)  # the whole log is older than "now + 60 s"

    with open_stream(api, {"projectId": project.id}, owner_token, old.id) as stream:
        now = stream.next()
    assert (now.result["id"], now.result["status"]) == (export_id, "COMPLETED")
    assert int(now.id) > int(old.id)


def test_a_bad_last_event_id_is_a_bad_request(api, project, owner_token):
    with open_stream(api, {"projectId": project.id}, owner_token, "tomorrow") as stream:
        refused = stream.next()
    assert refused.event == "error"
    assert refused.error["data"]["code"] == "BAD_REQUEST"
    assert refused.error["data"]["issues"][0]["loc"] == ["lastEventId"]


def test_an_unknown_export_is_not_found(api, project, owner_token):
    with open_stream(api, {"projectId": project.id, "batchExportId": "no-such-export"}, owner_token) as stream:
        refused = stream.next()
    assert refused.event == "error"
    assert refused.error["data"]["code"] == "NOT_FOUND"


def test_a_revoked_session_ends_the_stream_with_unauthorized(api, project, conn):
    token = project.member("MEMBER")
    with open_stream(api, {"projectId": project.id}, token) as stream:
        access.revoke_session(conn, token)
        ended = stream.next()
        assert stream.rest() == []  # the error is the stream's last event
    assert ended.event == "error"
    assert ended.error["data"]["code"] == "UNAUTHORIZED"


def test_a_lowered_role_ends_the_stream_with_forbidden(api, project, conn):
    token = project.member("MEMBER")
    user_id = conn.execute(
        "SELECT user_id FROM auth_sessions WHERE token_hash = %s", (access.hash_token(token),)
    ).fetchone()["user_id"]
    with open_stream(api, {"projectId": project.id}, token) as stream:
        access.set_project_role(conn, project.id, user_id, "VIEWER")
        ended = stream.next()
    assert ended.event == "error"
    assert ended.error["data"]["code"] == "FORBIDDEN"
    assert "VIEWER" in ended.error["message"]


def test_an_unrelated_access_change_leaves_the_stream_open(api, project, owner_token, conn):
    with open_stream(api, {"projectId": project.id}, owner_token) as stream:
        project.member("VIEWER")  # someone else joins: access changed, but not this caller's
        export_id = project.new_export(conn)
        event = stream.next()
    assert (event.event, event.result["id"]) == ("message", export_id)


@pytest.mark.parametrize("role", ["VIEWER", "NONE"])
def test_a_role_without_read_access_is_refused(api, project, role):
    with open_stream(api, {"projectId": project.id}, project.member(role)) as stream:
        refused = stream.next()
    assert refused.error["data"]["code"] == "FORBIDDEN"


def test_a_member_of_another_project_is_forbidden_and_sees_nothing(api, project, conn):
    outsider = new_project(conn, "elsewhere", role="MEMBER")
    with open_stream(api, {"projectId": project.id}, outsider.token) as stream:
        refused = stream.next()
    assert refused.event == "error"
    assert refused.error["data"]["code"] == "FORBIDDEN"
    assert refused.error["message"] == "You do not have access to this project, or it does not exist."


def test_no_token_is_unauthorized(api, project):
    with open_stream(api, {"projectId": project.id}, None) as stream:
        refused = stream.next()
    assert refused.error["data"]["code"] == "UNAUTHORIZED"


def test_a_user_may_hold_only_so_many_streams_and_a_closed_one_frees_its_place(settings, conn):
    project = new_project(conn, "stream cap", role="MEMBER")
    capped = settings.model_copy(update={"SUBSCRIPTION_MAX_STREAMS_PER_USER": 2})
    with ServerThread(create_app(capped)) as server:
        first = open_stream(server, {"projectId": project.id}, project.token)
        second = open_stream(server, {"projectId": project.id}, project.token)
        with open_stream(server, {"projectId": project.id}, project.token) as third:
            refused = third.next()
        assert refused.error["data"]["code"] == "TOO_MANY_REQUESTS"
        assert "the limit is 2" in refused.error["message"]

        first.close()
        streams = server.server.config.app.state.resources.streams
        deadline = time.monotonic() + 30
        while streams.per_user[project.user_id] > 1:
            assert time.monotonic() < deadline, "the closed stream still counts"
            time.sleep(0.01)
        with open_stream(server, {"projectId": project.id}, project.token) as again:
            export_id = project.new_export(conn)
            assert again.next().result["id"] == export_id
        second.close()


def test_a_subscription_over_plain_json_rpc_says_how_to_subscribe(client, project, owner_token):
    error = client.error("batchExport.onChange", {"projectId": project.id}, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert "Accept: text/event-stream" in error["message"]
