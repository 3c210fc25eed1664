"""A choice of columns: by id or display name, in the order given, in every format; filters and order use any column."""

from __future__ import annotations

import pytest

from tests.support.rpc_client import create_params
from workers.tables import TABLES

TEXT_FORMATS = ("CSV", "JSON", "JSONL")


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_chosen_columns_are_written_in_the_order_given(export_table, seeded, fmt):
    result = export_table(seeded, {"tableName": "traces"}, fmt, columns=["timestamp", "id", "name"])
    assert result.row["status"] == "COMPLETED", result.row["log"]
    if fmt == "CSV":
        assert result.csv_header() == ["timestamp", "id", "name"]
        rows = result.csv_rows()
    else:
        rows = result.json_rows()
        assert all(list(row) == ["timestamp", "id", "name"] for row in rows)
    assert sorted(r["id"] for r in rows) == sorted(t["id"] for t in seeded.traces)


def test_columns_may_be_named_by_display_name_or_alias(export_table, seeded):
    result = export_table(seeded, {"tableName": "traces"}, "CSV", columns=["User ID", "Trace Name", "ID"])
    assert result.csv_header() == ["userId", "name", "id"]
    plain = {r["id"]: r for r in export_table(seeded, {"tableName": "traces"}, "CSV").csv_rows()}
    for row in result.csv_rows():
        assert row == {key: plain[row["id"]][key] for key in ("userId", "name", "id")}


def test_filters_and_order_may_use_columns_that_are_not_chosen(export_table, seeded):
    user = next(t["user_id"] for t in seeded.traces if t["user_id"])
    query = {
        "tableName": "traces",
        "filter": [{"column": "userId", "type": "string", "operator": "=", "value": user}],
        "orderBy": {"column": "timestamp", "order": "DESC"},
    }
    result = export_table(seeded, query, "JSONL", columns=["id"])
    expected = sorted(
        (t for t in seeded.traces if t["user_id"] == user), key=lambda t: (t["timestamp"], t["id"]), reverse=True
    )
    assert result.json_rows() == [{"id": t["id"]} for t in expected]


def test_a_choice_of_columns_leaves_out_the_score_columns(export_table, seeded):
    result = export_table(seeded, {"tableName": "observations"}, "CSV", columns=["id", "traceId"])
    assert result.csv_header() == ["id", "traceId"]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_column_of_every_table_can_be_chosen_alone(export_table, seeded, table):
    keys = TABLES[table].keys
    result = export_table(seeded, {"tableName": table}, "JSONL", columns=list(reversed(keys)))
    assert result.row["status"] == "COMPLETED", result.row["log"]
    plain = {r["id"]: r for r in export_table(seeded, {"tableName": table}, "JSONL").json_rows()}
    for row in result.json_rows():
        assert list(row) == list(reversed(keys))
        assert row == {key: plain[row["id"]][key] for key in keys}


# --- what batchExport.create refuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        (["id", "nope"], 'Unknown column "nope" for table traces. Valid columns: id ("ID"), timestamp ("Timestamp")'),
        (["id", "ID"], 'Column "ID" is chosen twice (as "id")'),
        (["name", "traceName"], 'Column "traceName" is chosen twice (as "name")'),
    ],
)
def test_a_bad_choice_of_columns_is_bad_request_naming_the_valid_ones(client, project, owner_token, columns, says):
    params = {**create_params(project.id), "columns": columns}
    error = client.error("batchExport.create", params, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert says in error["message"]


def test_an_empty_choice_of_columns_is_bad_request(client, project, owner_token):
    error = client.error("batchExport.create", {**create_params(project.id), "columns": []}, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert error["data"]["issues"][0]["loc"] == ["columns"]


def test_a_filter_only_column_cannot_be_chosen(client, project, owner_token):
    # traces' `scores_avg` filters by score; the file's score columns are named by score, not by it.
    error = client.error(
        "batchExport.create", {**create_params(project.id), "columns": ["id", "scores_avg"]}, token=owner_token
    )
    assert error["data"]["code"] == "BAD_REQUEST" and 'Unknown column "scores_avg"' in error["message"]


def test_create_returns_and_stores_the_choice_and_the_compression(client, project, owner_token, conn):
    params = {**create_params(project.id), "columns": ["Name", "id"], "compression": "zstd"}
    export = client.result("batchExport.create", params, token=owner_token)
    assert export["columns"] == ["Name", "id"] and export["compression"] == "zstd"
    assert export["fileBytes"] is None and export["sha256"] is None
    listed = client.result("batchExport.all", {"projectId": project.id}, token=owner_token)["exports"]
    assert next(e for e in listed if e["id"] == export["id"])["columns"] == ["Name", "id"]


def test_an_unknown_compression_is_bad_request(client, project, owner_token):
    error = client.error(
        "batchExport.create", {**create_params(project.id), "compression": "brotli"}, token=owner_token
    )
    assert error["data"]["code"] == "BAD_REQUEST"
    assert error["data"]["issues"][0]["loc"] == ["compression"]
