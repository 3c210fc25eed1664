"""Requests as Langfuse's own frontend sends them, through HTTP and a real worker, to the file they download."""

import csv
import io

import httpx

from devstack.seed import seed
from tests.procedures.test_download import run_worker_until_idle, wait_for_status
from tests.support.rpc_client import create_params

# Langfuse's traces table, as its filter builder and column headers leave the state: display names,
# `"key": ""` on filters that take no key, a score filter by name, a search in inputs only.
LANGFUSE_QUERY = {
    "tableName": "traces",
    "filter": [
        {"column": "Timestamp", "type": "datetime", "operator": ">=", "value": "2026-01-01T00:00:00.000Z", "key": ""},
        {"column": "Environment", "type": "stringOptions", "operator": "none of", "value": ["staging"], "key": ""},
        {"column": "Scores (numeric)", "type": "numberObject", "key": "helpfulness", "operator": ">=", "value": 0},
        {"column": "Error Level Count", "type": "number", "operator": ">=", "value": 0, "key": ""},
    ],
    "searchQuery": "risks",
    "searchType": ["input"],
    "orderBy": {"column": "Total Cost ($)", "order": "DESC"},
}


def _download_csv(client, project, token, export_id) -> list[dict[str, str]]:
    link = client.result("batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export_id}, token=token)
    response = httpx.get(link["url"], timeout=30)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline="")))


def test_a_langfuse_frontend_request_is_exported_with_langfuses_rows_and_score_columns(
    client, project, owner_token, conn
):
    seed(conn, project.id, traces=600, rng_seed=5)
    export = client.result("batchExport.create", create_params(project.id, query=LANGFUSE_QUERY), token=owner_token)
    run_worker_until_idle()
    finished = wait_for_status(client, project.id, owner_token, export["id"])
    assert finished["status"] == "COMPLETED", finished["log"]
    rows = _download_csv(client, project, owner_token, export["id"])

    # The same selection, written against the tables: trace-level scores named helpfulness, any value.
    expected = conn.execute(
        """SELECT t.id FROM traces t
           WHERE t.project_id = %(p)s AND t.timestamp >= '2026-01-01' AND t.environment <> 'staging'
             AND EXISTS (SELECT FROM scores s WHERE s.project_id = t.project_id AND s.trace_id = t.id
                         AND s.observation_id IS NULL AND s.name = 'helpfulness' AND s.data_type = 'NUMERIC')
             AND strpos(lower(t.input::text), 'risks') > 0""",
        {"p": project.id},
    ).fetchall()
    assert expected, "the seed should give the request rows to find"
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in expected)
    costs = [float(r["totalCost"]) for r in rows if r["totalCost"]]
    assert costs == sorted(costs, reverse=True)
    names = [r["name"] for r in conn.execute("SELECT DISTINCT name FROM scores WHERE project_id = %s", (project.id,))]
    header = list(rows[0])
    assert sorted(header[-len(names) :]) == sorted(names) and "helpfulness" in header
    assert all(r["helpfulness"] != "" for r in rows)


def test_a_key_on_a_filter_that_takes_none_is_refused_in_words_and_creates_nothing(client, project, owner_token):
    query = {
        "tableName": "traces",
        "filter": [{"column": "name", "type": "string", "operator": "=", "value": "x", "key": "customer"}],
    }
    error = client.error("batchExport.create", create_params(project.id, query=query), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert "key" in error["message"], error
    listed = client.result("batchExport.all", {"projectId": project.id}, token=owner_token)
    assert listed["exports"] == []


def test_a_trace_position_without_its_number_is_refused_in_words(client, project, owner_token):
    query = {
        "tableName": "observations",
        "filter": [{"column": "positionInTrace", "type": "positionInTrace", "operator": "=", "key": "nthFromStart"}],
    }
    error = client.error("batchExport.create", create_params(project.id, query=query), token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert "nthFromStart" in error["message"] and "1 or more" in error["message"], error
