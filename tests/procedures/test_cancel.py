"""batchExport.cancel: queued and running exports stop; finished ones are left alone."""

import pytest
from rq.exceptions import NoSuchJobError
from rq.job import Job

from tests.support.rpc_client import create_params
from workers.queue import export_queue


def _cancel(client, project, token, export_id):
    return client.call("batchExport.cancel", {"projectId": project.id, "batchExportId": export_id}, token=token)


def test_cancel_a_queued_export_removes_its_job(client, project, owner_token, redis_client):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    cancelled = _cancel(client, project, owner_token, export["id"])["result"]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["finishedAt"] is not None
    assert export_queue(redis_client).get_job_ids() == []
    with pytest.raises(NoSuchJobError):
        Job.fetch(export["id"], connection=redis_client)


def test_cancel_a_processing_export_marks_it_cancelled(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute("UPDATE batch_exports SET status = 'PROCESSING' WHERE id = %s", (export["id"],))
    assert _cancel(client, project, owner_token, export["id"])["result"]["status"] == "CANCELLED"
    assert (
        conn.execute("SELECT status FROM batch_exports WHERE id = %s", (export["id"],)).fetchone()["status"]
        == "CANCELLED"
    )


def test_cancel_is_idempotent(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    first = _cancel(client, project, owner_token, export["id"])["result"]
    second = _cancel(client, project, owner_token, export["id"])["result"]
    assert first["status"] == second["status"] == "CANCELLED"
    assert first["finishedAt"] == second["finishedAt"]
    audits = conn.execute(
        "SELECT count(*) AS n FROM audit_logs WHERE resource_id = %s AND action = 'cancel'", (export["id"],)
    ).fetchone()
    assert audits["n"] == 1


@pytest.mark.parametrize("final", ["COMPLETED", "FAILED"])
def test_cancel_a_finished_export_is_refused_and_changes_nothing(client, project, owner_token, conn, final):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute("UPDATE batch_exports SET status = %s WHERE id = %s", (final, export["id"]))
    error = _cancel(client, project, owner_token, export["id"])["error"]
    assert error["data"]["code"] == "PRECONDITION_FAILED"
    assert conn.execute("SELECT status FROM batch_exports WHERE id = %s", (export["id"],)).fetchone()["status"] == final


def test_cancel_writes_an_audit_entry_with_before_and_after(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    _cancel(client, project, owner_token, export["id"])
    entry = conn.execute(
        "SELECT * FROM audit_logs WHERE resource_id = %s AND action = 'cancel'", (export["id"],)
    ).fetchone()
    assert entry["before"]["status"] == "QUEUED"
    assert entry["after"]["status"] == "CANCELLED"
    assert entry["resource_type"] == "batchExport"


def test_cancel_unknown_id_is_not_found(client, project, owner_token):
    error = _cancel(client, project, owner_token, "00000000-0000-0000-0000-000000000000")["error"]
    assert error["data"]["code"] == "NOT_FOUND"


def test_a_member_can_cancel_an_export_someone_else_created(client, project, owner_token):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    member = project.member("MEMBER")
    assert _cancel(client, project, member, export["id"])["result"]["status"] == "CANCELLED"
