"""Joins Parquet files of one schema into one: their row groups' bytes copied verbatim, one merged footer.

A Parquet file is `PAR1`, the row groups (and any page indexes or bloom filters, which sit between
the row groups and the footer), the footer (a Thrift compact-encoded `FileMetaData`), the footer's
length as 4 little-endian bytes, and `PAR1`. Every position the footer records is an absolute file
offset, so a file made of `PAR1` + each input's bytes between its magic and its footer, in order,
is valid once the footer lists every input's row groups with their offsets shifted by where that
input's bytes now sit. No data page is read or re-encoded: joining costs one copy of the bytes and
the decoding of a few kilobytes of metadata per input, whatever the size of the inputs.

The caller does the copying (local files, S3 ranges, a multipart upload): this module only says
which byte range of each input to copy (`data_range`) and what to write after them
(`joined_footer`). It needs nothing but the standard library, so the code that joins need not load
pyarrow. Field ids are those of parquet.thrift (apache/parquet-format).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

MAGIC = b"PAR1"
_ENCRYPTED_FOOTER_MAGIC = b"PARE"
_TAIL = 8  # footer length (4 bytes) + magic


class NotJoinable(ValueError):
    """An input cannot be joined; `code` says why ("not_parquet", "corrupt_footer", "schema_mismatch", "unsupported")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- the Thrift compact protocol ---------------------------------------------------------------------

# Compact type codes: the low nibble of a field header, the element type of a list, set or map.
# A bool field has no value bytes: its type nibble is BOOL_TRUE or BOOL_FALSE.
BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
_INT_BITS = {BYTE: 8, I16: 16, I32: 32, I64: 64}


@dataclass
class ThriftField:
    id: int
    type: int  # a compact type code
    value: Value


@dataclass
class ThriftStruct:
    """A decoded struct: every field, known to this module or not, in the order it was written."""

    fields: list[ThriftField]

    def get(self, field_id: int) -> Value | None:
        return next((f.value for f in self.fields if f.id == field_id), None)

    def set(self, field_id: int, value: Value) -> None:
        """Replaces the value of a field the struct has (its type and position stay)."""
        for f in self.fields:
            if f.id == field_id:
                f.value = value
                return
        raise KeyError(field_id)


@dataclass
class ThriftList:
    element_type: int
    items: list[Value]
    kind: int = LIST  # LIST or SET: the same bytes but for the field's type nibble


@dataclass
class ThriftMap:
    key_type: int
    value_type: int
    items: list[tuple[Value, Value]]


Value = bool | int | float | bytes | ThriftList | ThriftMap | ThriftStruct


def zigzag(n: int) -> int:
    """A signed integer as the unsigned one the compact protocol writes as a varint: 0, -1, 1, -2 → 0, 1, 2, 3."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"a varint is unsigned, not {n}")
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError("past the end of the struct")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

    def value(self, type_: int) -> Value:
        if type_ in (BOOL_TRUE, BOOL_FALSE):  # an element of a collection: one byte, 1 for true
            return self.byte() == BOOL_TRUE
        if type_ == BYTE:
            return int.from_bytes(self.take(1), "little", signed=True)
        if type_ in (I16, I32, I64):
            return unzigzag(self.varint())
        if type_ == DOUBLE:
            return float(struct.unpack("<d", self.take(8))[0])
        if type_ == BINARY:
            return self.take(self.varint())
        if type_ in (LIST, SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            element_type = header & 0x0F
            return ThriftList(element_type, [self.value(element_type) for _ in range(size)], type_)
        if type_ == MAP:
            size = self.varint()
            types = self.byte() if size else 0
            key_type, value_type = types >> 4, types & 0x0F
            return ThriftMap(
                key_type, value_type, [(self.value(key_type), self.value(value_type)) for _ in range(size)]
            )
        if type_ == STRUCT:
            return self.read_struct()
        raise ValueError(f"unknown compact type {type_}")

    def read_struct(self) -> ThriftStruct:
        fields: list[ThriftField] = []
        last_id = 0
        while (header := self.byte()) != 0:
            type_, delta = header & 0x0F, header >> 4
            field_id = last_id + delta if delta else unzigzag(self.varint())
            value: Value = type_ == BOOL_TRUE if type_ in (BOOL_TRUE, BOOL_FALSE) else self.value(type_)
            fields.append(ThriftField(field_id, type_, value))
            last_id = field_id
        return ThriftStruct(fields)


def decode_struct(data: bytes) -> ThriftStruct:
    """The struct `data` holds, every byte of it accounted for."""
    reader = _Reader(data)
    try:
        decoded = reader.read_struct()
    except (IndexError, ValueError, struct.error) as e:
        raise NotJoinable("corrupt_footer", f"not a Thrift compact struct: {e}") from e
    if reader.pos != len(data):
        raise NotJoinable("corrupt_footer", f"{len(data) - reader.pos} bytes follow the end of the struct")
    return decoded


def _write_value(out: bytearray, type_: int, value: Value) -> None:
    if type_ in (BOOL_TRUE, BOOL_FALSE):
        out.append(BOOL_TRUE if value else BOOL_FALSE)
    elif type_ in _INT_BITS:
        assert isinstance(value, int)
        bits = _INT_BITS[type_]
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ValueError(f"{value} does not fit in {bits} bits")
        out += struct.pack("<b", value) if type_ == BYTE else encode_varint(zigzag(value))
    elif type_ == DOUBLE:
        assert isinstance(value, float)
        out += struct.pack("<d", value)
    elif type_ == BINARY:
        assert isinstance(value, bytes)
        out += encode_varint(len(value)) + value
    elif type_ in (LIST, SET):
        assert isinstance(value, ThriftList)
        size = len(value.items)
        out += bytes([size << 4 | value.element_type]) if size < 15 else bytes([0xF0 | value.element_type])
        if size >= 15:
            out += encode_varint(size)
        for item in value.items:
            _write_value(out, value.element_type, item)
    elif type_ == MAP:
        assert isinstance(value, ThriftMap)
        out += encode_varint(len(value.items))
        if value.items:
            out.append(value.key_type << 4 | value.value_type)
        for k, v in value.items:
            _write_value(out, value.key_type, k)
            _write_value(out, value.value_type, v)
    elif type_ == STRUCT:
        assert isinstance(value, ThriftStruct)
        _write_struct(out, value)
    else:
        raise ValueError(f"unknown compact type {type_}")


def _write_struct(out: bytearray, value: ThriftStruct) -> None:
    last_id = 0
    for f in value.fields:
        type_ = (BOOL_TRUE if f.value else BOOL_FALSE) if f.type in (BOOL_TRUE, BOOL_FALSE) else f.type
        delta = f.id - last_id
        if 0 < delta <= 15:
            out.append(delta << 4 | type_)
        else:  # the long form: the type, then the id itself
            out.append(type_)
            out += encode_varint(zigzag(f.id))
        if type_ not in (BOOL_TRUE, BOOL_FALSE):  # a bool field is all in its header
            _write_value(out, type_, f.value)
        last_id = f.id
    out.append(0)


def encode_struct(value: ThriftStruct) -> bytes:
    """The compact encoding of `value`: the bytes `decode_struct` read it from, when nothing was changed."""
    out = bytearray()
    _write_struct(out, value)
    return bytes(out)


# --- Parquet ---------------------------------------------------------------------------------------------

# parquet.thrift's field ids, for the fields joining reads or rewrites.
_FILE_SCHEMA, _FILE_NUM_ROWS, _FILE_ROW_GROUPS, _FILE_ENCRYPTION = 2, 3, 4, 8
_GROUP_COLUMNS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 5, 7
_CHUNK_FILE_PATH, _CHUNK_FILE_OFFSET, _CHUNK_META_DATA = 1, 2, 3
_CHUNK_OFFSETS = (4, 6)  # offset_index_offset, column_index_offset
_META_OFFSETS = (9, 10, 11, 14)  # data_page, index_page, dictionary_page, bloom_filter
_MAX_ORDINAL = (1 << 15) - 1  # RowGroup.ordinal is an i16


@dataclass(frozen=True)
class ParquetPiece:
    """One input to join, known by its length and its footer: all joining needs besides its data range."""

    size: int  # the input file's total byte length
    footer: bytes  # its FileMetaData bytes (what read_footer returns)


def read_footer(read_range: Callable[[int, int], bytes], size: int) -> bytes:
    """The FileMetaData bytes of a Parquet file of `size` bytes, read through read_range(offset, length); checks both magics."""
    if size < len(MAGIC) + _TAIL:
        raise NotJoinable("not_parquet", f"{size} bytes is too short for a Parquet file")
    head, tail = bytes(read_range(0, len(MAGIC))), bytes(read_range(size - _TAIL, _TAIL))
    if tail[4:] == _ENCRYPTED_FOOTER_MAGIC:
        raise NotJoinable("unsupported", "the file's footer is encrypted; encrypted files cannot be joined")
    if head != MAGIC or tail[4:] != MAGIC:
        raise NotJoinable("not_parquet", f"not a Parquet file: it starts with {head!r} and ends with {tail[4:]!r}")
    length = int.from_bytes(tail[:4], "little")
    if length > size - len(MAGIC) - _TAIL:
        raise NotJoinable("corrupt_footer", f"the footer claims {length} bytes, more than the file's {size}")
    return bytes(read_range(size - _TAIL - length, length))


def data_range(piece: ParquetPiece) -> tuple[int, int]:
    """(offset, length) of the piece's row-group bytes, to copy verbatim into the joined file."""
    length = piece.size - len(MAGIC) - len(piece.footer) - _TAIL
    if length < 0:
        raise NotJoinable(
            "corrupt_footer", f"a footer of {len(piece.footer)} bytes does not fit a {piece.size}-byte file"
        )
    return len(MAGIC), length


def joined_footer(pieces: Sequence[ParquetPiece]) -> bytes:
    """Everything that follows the copied row-group bytes: merged FileMetaData + length + PAR1.
    The joined file = b"PAR1" + data of piece 0 + data of piece 1 + ... + joined_footer(pieces)."""
    if not pieces:
        raise NotJoinable("not_parquet", "there is nothing to join")
    merged = decode_struct(pieces[0].footer)
    schema = merged.get(_FILE_SCHEMA)
    row_groups: list[Value] = []
    num_rows = 0
    shift = 0  # how far the piece's bytes move: the data of the pieces before it now precedes them
    for index, piece in enumerate(pieces):
        meta = merged if index == 0 else decode_struct(piece.footer)
        if meta.get(_FILE_SCHEMA) != schema:
            raise NotJoinable("schema_mismatch", f"piece {index}'s Parquet schema differs from piece 0's")
        if meta.get(_FILE_ENCRYPTION) is not None:
            raise NotJoinable("unsupported", f"piece {index} has encrypted columns, whose metadata cannot be rewritten")
        for item in _as(ThriftList, meta.get(_FILE_ROW_GROUPS), "row groups").items:
            group = _as(ThriftStruct, item, "row group")
            _shift_row_group(group, shift, index)
            if group.get(_GROUP_ORDINAL) is not None:
                if len(row_groups) > _MAX_ORDINAL:
                    raise NotJoinable("unsupported", f"a Parquet file holds at most {_MAX_ORDINAL + 1} row groups")
                group.set(_GROUP_ORDINAL, len(row_groups))
            row_groups.append(group)
        num_rows += _as(int, meta.get(_FILE_NUM_ROWS), "row count")
        shift += data_range(piece)[1]
    merged.set(_FILE_NUM_ROWS, num_rows)
    merged.set(_FILE_ROW_GROUPS, ThriftList(STRUCT, row_groups))
    body = encode_struct(merged)
    return body + len(body).to_bytes(4, "little") + MAGIC


def _shift_row_group(group: ThriftStruct, shift: int, piece: int) -> None:
    _shift(group, (_GROUP_FILE_OFFSET,), shift)
    for item in _as(ThriftList, group.get(_GROUP_COLUMNS), "column chunks").items:
        chunk = _as(ThriftStruct, item, "column chunk")
        if chunk.get(_CHUNK_FILE_PATH):
            raise NotJoinable("unsupported", f"piece {piece} keeps column data in another file")
        # Deprecated, and 0 ("no ColumnMetaData outside the footer") in what pyarrow writes: 0 stays 0.
        if chunk.get(_CHUNK_FILE_OFFSET):
            _shift(chunk, (_CHUNK_FILE_OFFSET,), shift)
        _shift(chunk, _CHUNK_OFFSETS, shift)
        meta = chunk.get(_CHUNK_META_DATA)
        if isinstance(meta, ThriftStruct):
            _shift(meta, _META_OFFSETS, shift)


def _shift(value: ThriftStruct, field_ids: Sequence[int], shift: int) -> None:
    for f in value.fields:
        if f.id in field_ids:
            f.value = _as(int, f.value, f"offset (field {f.id})") + shift


_T = TypeVar("_T")


def _as(kind: type[_T], value: Value | None, what: str) -> _T:
    """`value`, if the footer holds what parquet.thrift says it holds."""
    if not isinstance(value, kind):
        raise NotJoinable("corrupt_footer", f"the footer's {what} is {type(value).__name__}, not {kind.__name__}")
    return value
