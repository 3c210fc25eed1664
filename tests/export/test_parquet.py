"""Parquet files: typed columns from the table definitions, the CSV export's values, and the readers data teams use."""

from __future__ import annotations

import hashlib
import io
import json
import math
import subprocess
import sys
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from db import batch_exports
from schemas.settings import get_settings
from tests.export.test_formats import file_keys, iso, neutralized
from tests.support.rpc_client import create_params
from tests.support.s3 import stored_object
from tests.support.world import new_project
from workers.batch_export import ExportFailed, run_batch_export
from workers.tables import TABLES

# What a user's tool sees of each kind of column: the types the issue and docs/COLUMNS.md promise.
EXPECTED_TYPES = {
    "text": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "json": pa.json_(pa.string()),
    "array": pa.list_(pa.string()),
}


def read(data: bytes | None) -> pa.Table:
    assert data is not None
    return pq.read_table(io.BytesIO(data))


def csv_cell(value: Any, arrow_type: pa.DataType) -> str:
    """The CSV export's text for a Parquet value, where the CSV text is canonical (timestamps, text, booleans)."""
    if value is None:
        return ""
    if pa.types.is_timestamp(arrow_type):
        return iso(value.astimezone(UTC))
    if pa.types.is_boolean(arrow_type):
        return "true" if value else "false"
    return neutralized(value)  # text: the CSV neutralizes formulas, Parquet keeps the value verbatim


def same_value(value: Any, cell: str, arrow_type: pa.DataType) -> bool:
    """Whether a Parquet value and the CSV cell of the same row and column say the same thing."""
    if isinstance(arrow_type, pa.JsonType):
        return value is None and cell == "" or json.loads(value) == json.loads(cell)
    if pa.types.is_list(arrow_type):
        return value is None and cell == "" or value == json.loads(cell)
    if pa.types.is_int64(arrow_type):
        return value is None and cell == "" or Decimal(cell) == value
    if pa.types.is_float64(arrow_type):
        if value is None:
            return cell == ""
        return math.isnan(value) and cell == "NaN" or float(cell) == value
    return csv_cell(value, arrow_type) == cell


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_writes_the_documented_types(export_table, seeded, table):
    result = export_table(seeded, {"tableName": table}, "PARQUET")
    assert result.row["status"] == "COMPLETED", result.row["log"]
    assert result.row["object_key"].endswith("/my_export.parquet")
    schema = read(result.data).schema
    assert schema.names == file_keys(table)
    definition = TABLES[table]
    for column in definition.exported_columns:
        assert schema.field(column.key).type == EXPECTED_TYPES[column.kind], column.key
    for name in schema.names[len(definition.exported_columns) :]:
        # The seeded scores: `quality` is numeric, `relevance` categorical.
        assert schema.field(name).type == (pa.float64() if name == "quality" else pa.string())


def test_traces_columns_have_the_types_data_teams_expect(export_table, seeded):
    schema = read(export_table(seeded, {"tableName": "traces"}, "PARQUET").data).schema
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("inputTokens").type == pa.int64()
    assert schema.field("errorCount").type == pa.int64()
    assert schema.field("totalCost").type == pa.float64()
    assert schema.field("latency").type == pa.float64()
    assert schema.field("bookmarked").type == pa.bool_()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert isinstance(schema.field("metadata").type, pa.JsonType)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_rows_equal_the_csv_export_of_the_same_query_value_for_value(export_table, seeded, table):
    query = {"tableName": table}
    parquet = read(export_table(seeded, query, "PARQUET").data)
    rows = export_table(seeded, query, "CSV").csv_rows()
    assert parquet.num_rows == len(rows) > 0
    types = {f.name: f.type for f in parquet.schema}
    for value_row, cell_row in zip(parquet.to_pylist(), rows):
        # Same order, same keys (the CSV header neutralizes nothing here: no key starts with a formula sign).
        assert list(value_row) == list(cell_row)
        for key, value in value_row.items():
            assert same_value(value, cell_row[key], types[key]), (table, value_row["id"], key, value, cell_row[key])


def test_awkward_text_and_json_survive_verbatim(export_table, seeded, awkward_values):
    traces = read(export_table(seeded, {"tableName": "traces"}, "PARQUET").data).to_pylist()
    by_id = {t["id"]: t for t in seeded.traces}
    names = {row["name"] for row in traces}
    # Formula prefixes, newlines, quotes and unicode: Parquet keeps what was stored, no apostrophe added.
    assert {"=SUM(A1:A9)", "line1\nline2", "emoji 🚀🔥👩\u200d💻", 'double "quotes" inside'} <= names
    for row in traces:
        stored = by_id[row["id"]]
        assert row["name"] == stored["name"]
        assert (json.loads(row["input"]) if row["input"] is not None else None) == stored.get("input")
        assert row["tags"] == stored.get("tags", [])
        assert row["sessionId"] == stored["session_id"]  # a missing session is null, not ""
    assert any(row["sessionId"] is None for row in traces)


def test_null_and_empty_text_stay_apart(export_table, seeded):
    traces = read(export_table(seeded, {"tableName": "traces"}, "PARQUET").data).to_pylist()
    stored = {t["id"]: t.get("name") for t in seeded.traces}
    assert "" in stored.values()
    assert {row["id"]: row["name"] for row in traces} == stored


def test_zero_rows_is_a_valid_file_with_the_schema(export_table, seeded):
    query = {"tableName": "observations", "filter": [{"column": "id", "type": "string", "operator": "=", "value": "x"}]}
    result = export_table(seeded, query, "PARQUET")
    assert result.row["status"] == "COMPLETED" and result.row["rows_exported"] == 0
    table = read(result.data)
    assert table.num_rows == 0
    assert table.schema.names == file_keys("observations")
    assert table.schema.field("startTime").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(("compression", "codec"), [("zstd", "ZSTD"), ("gzip", "GZIP"), ("none", "UNCOMPRESSED")])
def test_compression_picks_the_column_codec(export_table, seeded, compression, codec):
    result = export_table(seeded, {"tableName": "observations"}, "PARQUET", compression=compression)
    assert result.row["object_key"].endswith("/my_export.parquet")  # no .gz / .zst: the file itself is Parquet
    metadata = pq.ParquetFile(io.BytesIO(result.data)).metadata
    codecs = {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)}
    assert codecs == {codec}
    assert read(result.data).num_rows == len(seeded.observations)


def test_create_without_compression_gives_parquet_zstd_and_text_none(client, project, owner_token):
    parquet = client.result("batchExport.create", {**create_params(project.id), "format": "PARQUET"}, token=owner_token)
    assert parquet["format"] == "PARQUET" and parquet["compression"] == "zstd"
    csv_export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    assert csv_export["compression"] == "none"
    explicit = {**create_params(project.id), "format": "PARQUET", "compression": "none"}
    assert client.result("batchExport.create", explicit, token=owner_token)["compression"] == "none"


def test_an_unknown_format_is_bad_request_naming_parquet(client, project, owner_token):
    error = client.error("batchExport.create", {**create_params(project.id), "format": "XLSX"}, token=owner_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert "PARQUET" in json.dumps(error["data"]["issues"])


def test_chosen_columns_make_the_schema(export_table, seeded):
    result = export_table(seeded, {"tableName": "traces"}, "PARQUET", columns=["Timestamp", "id", "Total Cost ($)"])
    table = read(result.data)
    assert table.schema.names == ["timestamp", "id", "totalCost"]
    assert table.schema.field("totalCost").type == pa.float64()
    assert sorted(table.column("id").to_pylist()) == sorted(t["id"] for t in seeded.traces)


def test_duckdb_polars_and_pyarrow_read_the_file(export_table, seeded, storage_dir):
    result = export_table(seeded, {"tableName": "observations"}, "PARQUET")
    path = storage_dir / result.row["object_key"]
    ids = sorted(o["id"] for o in seeded.observations)

    assert sorted(pq.read_table(path).column("id").to_pylist()) == ids

    with duckdb.connect() as duck:
        rows = duck.execute(
            "SELECT id, startTime, totalCost, usageDetails FROM read_parquet(?) ORDER BY id", [str(path)]
        ).fetchall()
        assert [r[0] for r in rows] == ids
        generation = next(r for r in rows if r[0] == "obs-001-gen")
        stored = next(o for o in seeded.observations if o["id"] == "obs-001-gen")
        assert generation[1] == stored["start_time"]  # an aware timestamp, to the microsecond
        assert generation[2] == pytest.approx(0.0015)
        assert json.loads(generation[3]) == {"input": 10, "output": 5, "total": 15}

    frame = pl.read_parquet(path)
    assert sorted(frame["id"].to_list()) == ids
    assert frame.schema["startTime"] == pl.Datetime("us", "UTC")
    assert frame.schema["inputUsage"] == pl.Int64
    assert frame.schema["traceTags"] == pl.List(pl.String)


def test_file_bytes_and_sha256_are_those_of_the_stored_file(export_table, seeded):
    result = export_table(seeded, {"tableName": "scores"}, "PARQUET")
    assert result.row["file_bytes"] == len(result.data)
    assert result.row["sha256"] == hashlib.sha256(result.data).hexdigest()


def test_the_row_limit_cuts_a_parquet_file_and_says_so(export_table, seeded, monkeypatch):
    monkeypatch.setenv("BATCH_EXPORT_ROW_LIMIT", "5")
    get_settings.cache_clear()
    result = export_table(seeded, {"tableName": "traces"}, "PARQUET")
    assert result.row["rows_exported"] == 5
    assert read(result.data).num_rows == 5
    assert "export limit of 5" in result.row["log"]


def test_numbers_beyond_the_column_types_export_instead_of_failing(conn, export_table, seeded):
    """A cost too large for float64 and a fractional token count: the text files keep them exact, Parquet
    stores ±infinity and the nearest whole number (as docs/COLUMNS.md says), and the export completes."""
    project = new_project(conn, "hostile numbers")
    conn.execute(
        "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('t-huge', %s, '2025-01-01T00:00:00Z', 'huge')",
        (project.id,),
    )
    conn.execute(
        """INSERT INTO observations (id, project_id, trace_id, type, start_time, name, total_cost,
                                     cost_details, usage_details)
           VALUES ('o-huge', %(p)s, 't-huge', 'GENERATION', '2025-01-01T00:00:00Z', 'g', NULL,
                   '{"total": 1e400, "input": -1e400, "output": 1e-400}', '{"input": 2.5, "output": 7}'),
                  ('o-nan', %(p)s, 't-huge', 'GENERATION', '2025-01-01T00:00:01Z', 'g', 'NaN', '{}', '{}')""",
        {"p": project.id},
    )
    result = export_table(project, {"tableName": "observations"}, "PARQUET")
    assert result.row["status"] == "COMPLETED", result.row["log"]
    rows = {r["id"]: r for r in read(result.data).to_pylist()}
    huge, nan = rows["o-huge"], rows["o-nan"]
    assert huge["totalCost"] == math.inf and huge["inputCost"] == -math.inf and huge["outputCost"] == 0.0
    assert huge["inputUsage"] == 3 and huge["outputUsage"] == 7  # 2.5 rounds away from zero, as Postgres does
    assert math.isnan(nan["totalCost"])
    text = export_table(project, {"tableName": "observations"}, "JSONL").text
    assert "1E+400" in text.upper() or "1" + "0" * 400 in text  # the text export keeps the exact value


def test_a_value_no_column_type_can_hold_fails_with_postgres_words(conn, export_table):
    """A token count beyond int64: the export fails saying why, instead of writing a wrong number."""
    project = new_project(conn, "token overflow")
    conn.execute(
        "INSERT INTO traces (id, project_id, timestamp, name) VALUES ('t-1', %s, '2025-01-01T00:00:00Z', 't')",
        (project.id,),
    )
    conn.execute(
        """INSERT INTO observations (id, project_id, trace_id, type, start_time, name, usage_details)
           VALUES ('o-1', %s, 't-1', 'GENERATION', '2025-01-01T00:00:00Z', 'g', '{"input": 1e30}')""",
        (project.id,),
    )
    export_id = project.new_export(conn, {"tableName": "observations"}, "PARQUET")
    with pytest.raises(ExportFailed) as caught:
        run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "FAILED" and row["object_key"] is None
    assert row["log"] == str(caught.value) == "The database stopped sending the export's rows (bigint out of range)."
    # The same rows as text keep the exact number.
    assert "1000000000000000000000000000000" in export_table(project, {"tableName": "observations"}, "CSV").text


def test_parquet_to_s3_keeps_its_content_type_and_checksum(conn, s3_settings, s3_bucket, s3_endpoint, seeded):
    export_id = seeded.new_export(conn, {"tableName": "sessions"}, "PARQUET")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    content_type, data = stored_object(s3_endpoint, s3_bucket, row["object_key"])
    assert content_type == "application/vnd.apache.parquet"
    assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["file_bytes"]
    assert read(data).num_rows == row["rows_exported"] > 0


def test_the_api_and_the_text_formats_never_load_pyarrow():
    """pyarrow and the driver cost the worker about 70 MB: only a Parquet export may load them."""
    code = (
        "import sys, procedures.app, workers.batch_export, workers.queue\n"
        "loaded = [m for m in ('pyarrow', 'adbc_driver_manager', 'workers.parquet') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
