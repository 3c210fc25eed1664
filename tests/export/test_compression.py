"""Compressed files: gzip and zstd streamed while writing, opened by the standard tools, and checked by size and SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess

import duckdb
import pandas as pd
import pytest
import zstandard

from db import batch_exports
from tests.support.s3 import stored_object
from workers.batch_export import run_batch_export
from workers.tables import TABLES

TEXT_FORMATS = ("CSV", "JSON", "JSONL")
SUFFIX = {"gzip": "gz", "zstd": "zst"}
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"]}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_compressed_file_decompresses_to_the_bytes_of_the_plain_export(export_table, seeded, fmt, compression):
    plain = export_table(seeded, {"tableName": "traces"}, fmt)
    packed = export_table(seeded, {"tableName": "traces"}, fmt, compression=compression)
    assert packed.row["status"] == "COMPLETED", packed.row["log"]
    assert packed.row["object_key"].endswith(f"/my_export.{fmt.lower()}.{SUFFIX[compression]}")
    assert packed.data != plain.data
    # The command-line tool a user has at hand reads it back to exactly the uncompressed export.
    unpacked = subprocess.run(DECOMPRESS[compression], input=packed.data, capture_output=True, check=True).stdout
    assert unpacked == plain.data
    assert packed.row["rows_exported"] == plain.row["rows_exported"] == len(seeded.traces)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_exports_zstd_jsonl_that_decompresses_to_the_plain_file(export_table, seeded, table):
    plain = export_table(seeded, {"tableName": table}, "JSONL")
    packed = export_table(seeded, {"tableName": table}, "JSONL", compression="zstd")
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed.data) == plain.data


def test_a_file_larger_than_the_write_buffer_compresses_in_many_chunks(export_table, big_project):
    plain = export_table(big_project, {"tableName": "traces"}, "CSV")
    packed = export_table(big_project, {"tableName": "traces"}, "CSV", compression="gzip")
    assert len(plain.data) > 10 * 1024 * 1024  # ten and more of the sink's 1 MiB chunks
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data) / 4


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_file_bytes_and_sha256_are_those_of_the_stored_object(export_table, seeded, fmt, compression):
    result = export_table(seeded, {"tableName": "observations"}, fmt, compression=compression)
    assert result.row["file_bytes"] == len(result.data)
    assert result.row["sha256"] == hashlib.sha256(result.data).hexdigest()
    assert result.row["compression"] == compression


def test_zero_rows_compressed_is_still_a_valid_file_with_the_header(export_table, seeded):
    query = {"tableName": "traces", "filter": [{"column": "id", "type": "string", "operator": "=", "value": "none"}]}
    result = export_table(seeded, query, "CSV", compression="zstd")
    assert result.row["rows_exported"] == 0
    text = zstandard.ZstdDecompressor().decompressobj().decompress(result.data).decode()
    assert text.startswith("id,timestamp,name,") and text.count("\r\n") == 1


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pandas_and_duckdb_read_compressed_csv_and_jsonl(export_table, seeded, storage_dir, compression):
    csv_export = export_table(seeded, {"tableName": "scores"}, "CSV", compression=compression)
    jsonl_export = export_table(seeded, {"tableName": "scores"}, "JSONL", compression=compression)
    ids = sorted(s["id"] for s in seeded.scores)

    frame = pd.read_csv(io.BytesIO(csv_export.data), compression=compression, keep_default_na=False)
    assert sorted(frame["id"]) == ids
    frame = pd.read_json(io.BytesIO(jsonl_export.data), lines=True, compression=compression)
    assert sorted(frame["id"]) == ids

    for export in (csv_export, jsonl_export):
        path = storage_dir / export.row["object_key"]
        reader = "read_csv" if export.row["format"] == "CSV" else "read_json"
        rows = duckdb.sql(f"SELECT id FROM {reader}('{path}', compression='{compression}')").fetchall()
        assert sorted(r[0] for r in rows) == ids


def test_compressed_export_to_s3_keeps_the_compressed_bytes_and_their_checksum(
    conn, s3_settings, s3_bucket, s3_endpoint, seeded
):
    export_id = seeded.new_export(conn, {"tableName": "traces"}, "JSONL", compression="gzip")
    run_batch_export(export_id)
    row = batch_exports.load(conn, export_id)
    assert row["status"] == "COMPLETED", row["log"]
    content_type, data = stored_object(s3_endpoint, s3_bucket, row["object_key"])
    assert content_type == "application/gzip"
    assert row["object_key"].endswith(".jsonl.gz")
    assert row["file_bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert gzip.decompress(data).count(b"\n") == len(seeded.traces)
