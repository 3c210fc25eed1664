"""Joining Parquet files by copying their row groups: what pyarrow and DuckDB read back, and the footer's Thrift."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.parquet_concat import (
    BINARY,
    BOOL_FALSE,
    BOOL_TRUE,
    BYTE,
    DOUBLE,
    I16,
    I32,
    I64,
    LIST,
    MAGIC,
    MAP,
    SET,
    STRUCT,
    NotJoinable,
    ParquetPiece,
    ThriftField,
    ThriftList,
    ThriftMap,
    ThriftStruct,
    data_range,
    decode_struct,
    encode_struct,
    joined_footer,
    read_footer,
    unzigzag,
    zigzag,
)

SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("n", pa.int64()),
        ("x", pa.float64()),
        ("ok", pa.bool_()),
        ("tags", pa.list_(pa.string())),
        ("name", pa.string()),
        ("attrs", pa.json_(pa.string())),
    ]
)


def rows(start: int, count: int) -> pa.Table:
    """`count` rows numbered from `start`, with nulls, repeats (for the dictionaries) and unicode."""
    numbers = range(start, start + count)
    epoch = datetime(2024, 5, 1, tzinfo=UTC)
    return pa.table(
        {
            "ts": [epoch + timedelta(microseconds=7 * i) for i in numbers],
            "n": [None if i % 11 == 0 else i for i in numbers],
            "x": [i / 3 for i in numbers],
            "ok": [None if i % 7 == 0 else i % 2 == 0 for i in numbers],
            "tags": [[f"t{i % 3}", "ünï"][: i % 3] if i % 5 else None for i in numbers],
            "name": [f"name {i % 13} ✓" for i in numbers],
            "attrs": [f'{{"i": {i}, "s": "é"}}' if i % 4 else None for i in numbers],
        },
        schema=SCHEMA,
    )


def write(path: Path, groups: Sequence[pa.Table], **options: Any) -> Path:
    """A file as the export writes it: one ParquetWriter, one row group per table."""
    with pq.ParquetWriter(path, SCHEMA, **options) as writer:
        for group in groups:
            writer.write_table(group)
    return path


def piece(path: Path) -> ParquetPiece:
    size = path.stat().st_size
    with path.open("rb") as f:

        def read_range(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        return ParquetPiece(size, read_footer(read_range, size))


def join(sources: Sequence[Path], target: Path) -> Path:
    """The joined file, streamed as the worker does: the magic, each input's data range, the merged footer."""
    pieces = [piece(path) for path in sources]
    with target.open("wb") as out:
        out.write(MAGIC)
        for path, p in zip(sources, pieces):
            offset, length = data_range(p)
            with path.open("rb") as f:
                f.seek(offset)
                while length:
                    chunk = f.read(min(length, 64 * 1024))
                    assert chunk, f"{path} ended early"
                    out.write(chunk)
                    length -= len(chunk)
        out.write(joined_footer(pieces))
    return target


def inputs(folder: Path, **options: Any) -> tuple[list[Path], pa.Table]:
    """Three inputs of several row groups and an empty one, and the table their concatenation holds."""
    layout = [[rows(0, 50), rows(50, 120), rows(170, 1)], [], [rows(171, 300)], [rows(471, 40), rows(511, 9)]]
    paths = [write(folder / f"in{i}.parquet", groups, **options) for i, groups in enumerate(layout)]
    return paths, pa.concat_tables([g for groups in layout for g in groups])


def duckdb_rows(path: Path) -> list[tuple[Any, ...]]:
    return duckdb.connect().execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()


def as_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in table.to_pylist()]


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("use_dictionary", [True, False])
def test_joined_file_reads_back_as_the_inputs_concatenated(
    tmp_path: Path, compression: str, use_dictionary: bool
) -> None:
    paths, expected = inputs(tmp_path, compression=compression, use_dictionary=use_dictionary)
    joined = join(paths, tmp_path / "joined.parquet")

    table = pq.read_table(joined)
    assert table.schema == SCHEMA  # the JSON extension type and the time zone come back (ARROW:schema)
    assert table.equals(expected)
    metadata = pq.ParquetFile(joined).metadata
    assert metadata.num_row_groups == 6
    assert [metadata.row_group(i).num_rows for i in range(6)] == [50, 120, 1, 300, 40, 9]
    assert metadata.num_rows == expected.num_rows == 520
    assert duckdb_rows(joined) == as_rows(expected)


def test_inputs_written_with_different_codecs_and_encodings_join(tmp_path: Path) -> None:
    variants: list[dict[str, Any]] = [
        {"compression": "zstd"},
        {"compression": "gzip", "use_dictionary": False},
        {"compression": "none"},
    ]
    paths = [write(tmp_path / f"in{i}.parquet", [rows(100 * i, 100)], **o) for i, o in enumerate(variants)]
    joined = join(paths, tmp_path / "joined.parquet")

    expected = rows(0, 300)
    assert pq.read_table(joined).equals(expected)
    assert duckdb_rows(joined) == as_rows(expected)


def test_joining_only_empty_inputs_gives_an_empty_file_with_their_schema(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"in{i}.parquet", []) for i in range(3)]
    joined = join(paths, tmp_path / "joined.parquet")

    assert pq.read_table(joined).equals(SCHEMA.empty_table())
    assert pq.ParquetFile(joined).metadata.num_row_groups == 0
    assert duckdb_rows(joined) == []


def test_joining_one_input_gives_its_bytes(tmp_path: Path) -> None:
    for name, groups in [("full", [rows(0, 10), rows(10, 5)]), ("empty", [])]:
        source = write(tmp_path / f"{name}.parquet", groups)
        assert join([source], tmp_path / f"{name}-joined.parquet").read_bytes() == source.read_bytes()


def test_page_indexes_and_bloom_filters_are_found_where_they_moved(tmp_path: Path) -> None:
    options: dict[str, Any] = {"write_page_index": True, "bloom_filter_options": {"n": True}, "max_rows_per_page": 16}
    paths = [
        write(tmp_path / f"in{i}.parquet", [rows(200 * i, 120), rows(200 * i + 120, 80)], **options) for i in range(3)
    ]
    joined = join(paths, tmp_path / "joined.parquet")

    # Every index and filter the joined footer points at holds the bytes the input's footer pointed at.
    joined_bytes = joined.read_bytes()
    joined_chunks = chunks(decode_struct(piece(joined).footer))
    source_chunks = [(path.read_bytes(), c) for path in paths for c in chunks(decode_struct(piece(path).footer))]
    assert len(joined_chunks) == len(source_chunks) == 3 * 2 * len(SCHEMA)
    located = 0
    for new, (source_bytes, old) in zip(joined_chunks, source_chunks):
        meta, old_meta = new.get(3), old.get(3)
        assert isinstance(meta, ThriftStruct) and isinstance(old_meta, ThriftStruct)
        for owner, old_owner, offset_id, length_id in [(new, old, 4, 5), (new, old, 6, 7), (meta, old_meta, 14, 15)]:
            offset, length, old_offset = owner.get(offset_id), owner.get(length_id), old_owner.get(offset_id)
            if offset is None:
                continue
            assert isinstance(offset, int) and isinstance(length, int) and isinstance(old_offset, int)
            assert joined_bytes[offset : offset + length] == source_bytes[old_offset : old_offset + length]
            located += 1
    assert located >= 3 * 2 * (2 * len(SCHEMA) + 1)  # an offset index and a column index per chunk, a filter on n
    assert pq.read_table(joined).equals(rows(0, 600))
    # A point query lets DuckDB skip row groups by their statistics and bloom filters: moved ones must still be found.
    found = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?) WHERE n = 555", [str(joined)]).fetchone()
    assert found == (1,)


def test_row_group_ordinals_are_renumbered_across_inputs(tmp_path: Path) -> None:
    # pyarrow writes no RowGroup.ordinal (field 7); give each input's row groups ordinals 0, 1, … as other writers do.
    paths = []
    for i in range(3):
        written = write(tmp_path / f"written{i}.parquet", [rows(30 * i, 10), rows(30 * i + 10, 20)])
        p, data = piece(written), written.read_bytes()
        metadata = decode_struct(p.footer)
        for ordinal, group in enumerate(row_groups(metadata)):
            group.fields.append(ThriftField(7, I16, ordinal))
        footer = encode_struct(metadata)
        offset, length = data_range(p)
        paths.append(tmp_path / f"in{i}.parquet")
        paths[-1].write_bytes(
            MAGIC + data[offset : offset + length] + footer + len(footer).to_bytes(4, "little") + MAGIC
        )
    joined = join(paths, tmp_path / "joined.parquet")

    assert [g.get(7) for g in row_groups(decode_struct(piece(joined).footer))] == list(range(6))
    assert pq.read_table(joined).equals(rows(0, 90))
    assert duckdb_rows(joined) == as_rows(rows(0, 90))


def row_groups(file_metadata: ThriftStruct) -> list[ThriftStruct]:
    groups = file_metadata.get(4)
    assert isinstance(groups, ThriftList)
    return [g for g in groups.items if isinstance(g, ThriftStruct)]


def chunks(file_metadata: ThriftStruct) -> list[ThriftStruct]:
    found = []
    for group in row_groups(file_metadata):
        columns = group.get(1)
        assert isinstance(columns, ThriftList)
        found += [c for c in columns.items if isinstance(c, ThriftStruct)]
    return found


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zstd", "use_dictionary": False},
        {"write_statistics": False},
        {"data_page_version": "2.0", "write_page_checksum": True},
        {"sorting_columns": [pq.SortingColumn(1, descending=True, nulls_first=True), pq.SortingColumn(0)]},
        {"write_page_index": True, "bloom_filter_options": {"name": True}},
    ],
    ids=["default", "plain-zstd", "no-statistics", "v2-pages", "sorted", "indexes"],
)
def test_thrift_round_trip_of_real_footers_is_byte_exact(tmp_path: Path, options: dict[str, Any]) -> None:
    for name, groups in [("full", [rows(0, 100), rows(100, 30)]), ("empty", [])]:
        footer = piece(write(tmp_path / f"{name}.parquet", groups, **options)).footer
        assert encode_struct(decode_struct(footer)) == footer


def test_a_schema_mismatch_is_refused(tmp_path: Path) -> None:
    first = write(tmp_path / "a.parquet", [rows(0, 10)])
    other = tmp_path / "b.parquet"
    pq.write_table(rows(0, 10).cast(SCHEMA.set(1, pa.field("n", pa.int32()))), other)

    with pytest.raises(ValueError, match="piece 1's Parquet schema differs") as refused:
        joined_footer([piece(first), piece(other)])
    assert isinstance(refused.value, NotJoinable) and refused.value.code == "schema_mismatch"


@pytest.mark.parametrize("damage", ["head", "tail", "short"])
def test_a_file_whose_magic_is_wrong_is_refused(tmp_path: Path, damage: str) -> None:
    data = write(tmp_path / "a.parquet", [rows(0, 10)]).read_bytes()
    damaged = {"head": b"PAR0" + data[4:], "tail": data[:-4] + b"PAR0", "short": b"PAR1PAR1"}[damage]

    with pytest.raises(ValueError, match="Parquet file") as refused:
        read_footer(lambda offset, length: damaged[offset : offset + length], len(damaged))
    assert isinstance(refused.value, NotJoinable) and refused.value.code == "not_parquet"


def test_a_footer_that_is_not_file_metadata_is_refused(tmp_path: Path) -> None:
    good = piece(write(tmp_path / "a.parquet", [rows(0, 10)]))
    truncated = ParquetPiece(good.size, good.footer[:-5])
    no_row_groups = ParquetPiece(good.size, encode_struct(ThriftStruct([ThriftField(2, BINARY, b"x")])))

    for bad in (truncated, no_row_groups):
        with pytest.raises(NotJoinable) as refused:
            joined_footer([bad])
        assert refused.value.code == "corrupt_footer"


def test_the_module_runs_without_pyarrow() -> None:
    code = "import sys; sys.modules['pyarrow'] = None; import workers.parquet_concat"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_reading_a_footer_reads_the_magics_and_the_footer_only(tmp_path: Path) -> None:
    data = write(tmp_path / "a.parquet", [rows(0, 500)]).read_bytes()
    reads: list[tuple[int, int]] = []

    def read_range(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    footer = read_footer(read_range, len(data))
    assert sum(length for _, length in reads) == 4 + 8 + len(footer)
    assert data_range(ParquetPiece(len(data), footer)) == (4, len(data) - 12 - len(footer))


# --- the Thrift compact protocol, on its own ----------------------------------------------------------


@settings(deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_zigzag_round_trip(n: int) -> None:
    assert unzigzag(zigzag(n)) == n
    assert zigzag(n) >= 0
    encoded = encode_struct(ThriftStruct([ThriftField(1, I64, n)]))
    assert decode_struct(encoded) == ThriftStruct([ThriftField(1, I64, n)])


def test_the_wire_bytes_of_the_compact_protocol() -> None:
    """Known encodings: short and long field headers, bools in the type nibble, long lists, zigzag."""
    cases = [
        (ThriftStruct([ThriftField(1, I32, 2)]), b"\x15\x04\x00"),
        (ThriftStruct([ThriftField(1, BOOL_TRUE, True), ThriftField(2, BOOL_FALSE, False)]), b"\x11\x12\x00"),
        (ThriftStruct([ThriftField(100, I64, -1)]), b"\x06\xc8\x01\x01\x00"),  # long form: id 100 as zigzag varint
        (ThriftStruct([ThriftField(5, I16, 1), ThriftField(3, I16, 1)]), b"\x54\x02\x04\x06\x02\x00"),  # id goes down
        (ThriftStruct([ThriftField(1, BINARY, b"ab")]), b"\x18\x02ab\x00"),
        (ThriftStruct([ThriftField(1, LIST, ThriftList(I32, [0] * 20))]), b"\x19\xf5\x14" + b"\x00" * 20 + b"\x00"),
        (ThriftStruct([ThriftField(1, LIST, ThriftList(BOOL_TRUE, [True, False]))]), b"\x19\x21\x01\x02\x00"),
        (ThriftStruct([ThriftField(1, DOUBLE, 1.0)]), b"\x17" + bytes.fromhex("000000000000f03f") + b"\x00"),
        (ThriftStruct([ThriftField(1, STRUCT, ThriftStruct([]))]), b"\x1c\x00\x00"),
        (ThriftStruct([ThriftField(1, MAP, ThriftMap(0, 0, []))]), b"\x1b\x00\x00"),
    ]
    for value, wire in cases:
        assert encode_struct(value) == wire
        assert decode_struct(wire) == value


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    BOOL_TRUE: st.booleans(),
    BYTE: st.integers(-(2**7), 2**7 - 1),
    I16: st.integers(-(2**15), 2**15 - 1),
    I32: st.integers(-(2**31), 2**31 - 1),
    I64: st.integers(-(2**63), 2**63 - 1),
    DOUBLE: st.floats(allow_nan=False),
    BINARY: st.binary(max_size=20),
}


def values_of(type_: int, depth: int) -> st.SearchStrategy[Any]:
    if type_ in _SCALARS:
        return _SCALARS[type_]
    inner = st.sampled_from([*_SCALARS, *([LIST, SET, MAP, STRUCT] if depth > 1 else [])])
    if type_ in (LIST, SET):
        return inner.flatmap(
            lambda t: st.lists(values_of(t, depth - 1), max_size=18).map(lambda items: ThriftList(t, items, type_))
        )
    if type_ == MAP:
        return st.tuples(inner, inner).flatmap(
            lambda kv: st.lists(st.tuples(values_of(kv[0], depth - 1), values_of(kv[1], depth - 1)), max_size=16).map(
                lambda items: ThriftMap(kv[0], kv[1], items) if items else ThriftMap(0, 0, [])
            )
        )
    field = st.tuples(st.integers(-(2**15), 2**15 - 1), inner).flatmap(
        lambda it: values_of(it[1], depth - 1).map(
            lambda v: ThriftField(it[0], (BOOL_TRUE if v else BOOL_FALSE) if it[1] == BOOL_TRUE else it[1], v)
        )
    )
    return st.lists(field, max_size=8).map(ThriftStruct)


@settings(deadline=None, max_examples=200)
@given(values_of(STRUCT, 4))
def test_any_struct_survives_encode_and_decode(value: ThriftStruct) -> None:
    encoded = encode_struct(value)
    assert decode_struct(encoded) == value
    assert encode_struct(decode_struct(encoded)) == encoded
