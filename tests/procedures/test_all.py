"""batchExport.all: the project's exports, newest first, paginated, with their creators."""

import pytest

from tests.support.rpc_client import create_params


def _create(client, project, token, n):
    ids = []
    for i in range(n):
        export = client.result("batchExport.create", create_params(project.id, name=f"export {i}"), token=token)
        client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": export["id"]}, token=token)
        ids.append(export["id"])
    return ids


def test_all_lists_newest_first_with_total_count(client, project, owner_token):
    ids = _create(client, project, owner_token, 5)
    listing = client.result("batchExport.all", {"projectId": project.id}, token=owner_token)
    assert listing["totalCount"] == 5
    assert [e["id"] for e in listing["exports"]] == list(reversed(ids))


def test_all_paginates_with_zero_based_pages(client, project, owner_token):
    ids = list(reversed(_create(client, project, owner_token, 7)))
    pages = [
        client.result("batchExport.all", {"projectId": project.id, "page": p, "limit": 3}, token=owner_token)
        for p in range(4)
    ]
    assert [[e["id"] for e in page["exports"]] for page in pages] == [ids[0:3], ids[3:6], ids[6:7], []]
    assert {page["totalCount"] for page in pages} == {7}


def test_all_defaults_to_fifty_per_page(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute(
        "INSERT INTO batch_exports (project_id, name, format, query, status)"
        " SELECT %s, 'bulk ' || g, 'CSV', query, 'COMPLETED' FROM batch_exports, generate_series(1, 60) g WHERE id = %s",
        (project.id, export["id"]),
    )
    listing = client.result("batchExport.all", {"projectId": project.id}, token=owner_token)
    assert len(listing["exports"]) == 50 and listing["totalCount"] == 61


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_all_rejects_a_limit_outside_1_to_100(client, project, owner_token, limit):
    error = client.error("batchExport.all", {"projectId": project.id, "limit": limit}, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"


def test_all_shows_only_the_requested_projects_exports(client, project, owner_token, conn):
    from tests.support.world import new_project

    other = new_project(conn, "other")
    _create(client, project, owner_token, 2)
    listing = client.result("batchExport.all", {"projectId": other.id}, token=other.member("OWNER"))
    assert listing == {"exports": [], "totalCount": 0}


def test_all_joins_the_creator_and_computes_expiry(client, project, owner_token, conn):
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute(
        "UPDATE batch_exports SET status = 'COMPLETED', object_key = 'k', finished_at = now(),"
        " expires_at = now() - interval '1 minute' WHERE id = %s",
        (export["id"],),
    )
    fresh = client.result("batchExport.create", create_params(project.id), token=owner_token)
    conn.execute(
        "UPDATE batch_exports SET status = 'COMPLETED', object_key = 'k2', finished_at = now(),"
        " expires_at = now() + interval '1 hour' WHERE id = %s",
        (fresh["id"],),
    )
    by_id = {
        e["id"]: e for e in client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["exports"]
    }
    assert by_id[export["id"]]["isExpired"] is True and by_id[export["id"]]["isDownloadable"] is False
    assert by_id[fresh["id"]]["isExpired"] is False and by_id[fresh["id"]]["isDownloadable"] is True
    assert by_id[fresh["id"]]["user"] == {"id": by_id[fresh["id"]]["user"]["id"], "name": "Olive Owner", "image": None}
