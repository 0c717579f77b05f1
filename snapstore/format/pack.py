"""Pack files: a header, then chunk records appended one after another, and in format 2 a
trailer (docs/FORMAT.md, "packs").

A chunk record is a 52-byte header followed by ``stored_size`` payload bytes. The header
carries the chunk id, so the index can be rebuilt from the packs alone, and a CRC-32 of its
own bytes, so a scanner can tell a real record from torn or zeroed (hole-punched) bytes.
The trailer lists every record of the pack, so that the index is rebuilt from a pack's last
bytes instead of from all of them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import blake3

from snapstore.chunkparams import MAX_CHUNK_SIZE
from snapstore.codec import CODEC_DELTA, CODEC_NAMES, CODEC_NONE
from snapstore.errors import CorruptError
from snapstore.format import READABLE_VERSIONS
from snapstore.model import Buffer, ChunkId

PACK_MAGIC = b"SNAPPACK"
PACK_HEADER = struct.Struct("<8sII")  # magic, format version, reserved (0)
PACK_HEADER_SIZE = PACK_HEADER.size  # 16
RECORD_MAGIC = b"SNCK"
_RECORD = struct.Struct("<4s32sB3xII")  # magic, chunk id, codec, pad, raw_size, stored_size
_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = _RECORD.size + _CRC.size  # 52
DELTA_BASE_SIZE = 32  # a delta record's payload starts with its base's chunk id


@dataclass(frozen=True)
class RecordHeader:
    chunk_id: ChunkId
    codec: int
    raw_size: int
    stored_size: int

    @property
    def record_size(self) -> int:
        return RECORD_HEADER_SIZE + self.stored_size


def encode_pack_header(version: int) -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, version, 0)


def check_pack_header(data: bytes, what: str, *, repo_version: int) -> int:
    """The pack's format version, after checking its header: a repository of format N holds
    packs of versions 1..N."""
    if len(data) < PACK_HEADER_SIZE:
        raise CorruptError(what, "shorter than a pack header")
    magic, version, reserved = PACK_HEADER.unpack_from(data)
    if magic != PACK_MAGIC:
        raise CorruptError(what, "bad pack magic")
    if version not in READABLE_VERSIONS or version > repo_version:
        raise CorruptError(what, f"pack format version {version}")
    if reserved:
        raise CorruptError(what, "reserved bytes of the pack header are not 0")
    return int(version)


def encode_record_header(chunk_id: bytes, codec: int, raw_size: int, stored_size: int) -> bytes:
    head = _RECORD.pack(RECORD_MAGIC, chunk_id, codec, raw_size, stored_size)
    return head + _CRC.pack(zlib.crc32(head))


def decode_record_header(data: bytes | memoryview, what: str) -> RecordHeader:
    """Parse and check one record header; nothing in it is trusted before the checks pass."""
    if len(data) < RECORD_HEADER_SIZE:
        raise CorruptError(what, "truncated record header")
    head = bytes(data[: _RECORD.size])
    magic, chunk_id, codec, raw_size, stored_size = _RECORD.unpack(head)
    if magic != RECORD_MAGIC:
        raise CorruptError(what, "bad record magic")
    (crc,) = _CRC.unpack_from(data, _RECORD.size)
    if crc != zlib.crc32(head):
        raise CorruptError(what, "record header checksum mismatch")
    if codec not in CODEC_NAMES:
        raise CorruptError(what, f"unknown codec {codec}")
    if raw_size > MAX_CHUNK_SIZE or stored_size > raw_size:
        raise CorruptError(what, f"implausible sizes raw={raw_size} stored={stored_size}")
    if codec == CODEC_NONE and stored_size != raw_size:
        raise CorruptError(what, "raw record with stored_size != raw_size")
    if codec == CODEC_DELTA and stored_size <= DELTA_BASE_SIZE:
        raise CorruptError(what, "delta record shorter than its base id")
    return RecordHeader(ChunkId(chunk_id), codec, raw_size, stored_size)


def delta_base(codec: int, payload: Buffer) -> ChunkId | None:
    """The base chunk id of a delta record's payload (None for a record stored full)."""
    if codec != CODEC_DELTA:
        return None
    if len(payload) <= DELTA_BASE_SIZE:
        raise CorruptError("chunk record", "delta record shorter than its base id")
    return ChunkId(bytes(payload[:DELTA_BASE_SIZE]))


def find_record(buf: bytes, start: int) -> int:
    """Offset of the first valid record header in ``buf`` at or after ``start``, or -1.

    Used to resynchronise a scan after zeroed (hole-punched) or damaged bytes.
    """
    pos = start
    while True:
        pos = buf.find(RECORD_MAGIC, pos)
        if pos < 0 or pos + RECORD_HEADER_SIZE > len(buf):
            return -1
        try:
            decode_record_header(memoryview(buf)[pos:], "pack")
        except CorruptError:
            pos += 1
            continue
        return pos


# -- the trailer (format 2) ------------------------------------------------------------------------

TRAILER_MAGIC = b"SNAPTABL"
_ENTRY = struct.Struct("<32sQIIB7x")  # chunk id, record offset, raw size, stored size, codec
TABLE_ENTRY_SIZE = _ENTRY.size  # 56
_FOOTER = struct.Struct("<8sIIQQ32s")  # magic, reserved, reserved, entries, table offset, BLAKE3
FOOTER_SIZE = _FOOTER.size  # 64


@dataclass(frozen=True)
class TableEntry:
    chunk_id: ChunkId
    offset: int  # of the record header
    raw_size: int
    stored_size: int
    codec: int

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + self.stored_size


def encode_table_entry(chunk_id: bytes, offset: int, codec: int, raw_size: int, stored_size: int) -> bytes:
    return _ENTRY.pack(chunk_id, offset, raw_size, stored_size, codec)


def encode_trailer(table: bytes, table_offset: int) -> bytes:
    """The trailer for the encoded entries ``table`` (in record order), to be written at
    ``table_offset``: the table, then the footer that ends the pack."""
    count, rest = divmod(len(table), TABLE_ENTRY_SIZE)
    if rest:
        raise ValueError("a table is whole entries")
    footer = _FOOTER.pack(TRAILER_MAGIC, 0, 0, count, table_offset, blake3.blake3(table).digest())
    return table + footer


def encode_table(entries: Iterable[TableEntry]) -> bytes:
    return b"".join(
        encode_table_entry(e.chunk_id, e.offset, e.codec, e.raw_size, e.stored_size) for e in entries
    )


def decode_footer(data: bytes, file_size: int) -> tuple[int, int, bytes] | None:
    """(entries, table offset, table hash) from a pack's last FOOTER_SIZE bytes, or None when
    they are not a footer that fits a file of ``file_size`` bytes (no trailer: scan the pack)."""
    if len(data) != FOOTER_SIZE:
        return None
    magic, res1, res2, count, table_offset, digest = _FOOTER.unpack(data)
    if magic != TRAILER_MAGIC or res1 or res2:
        return None
    if table_offset < PACK_HEADER_SIZE or table_offset + count * TABLE_ENTRY_SIZE + FOOTER_SIZE != file_size:
        return None
    return count, table_offset, digest


def decode_table(table: bytes, digest: bytes, table_offset: int, what: str) -> list[TableEntry]:
    """The entries of a table whose footer gave ``digest``. A table that does not match its
    hash, or whose records overlap, are out of order or run into the table, is damage
    (CorruptError): the pack is then scanned instead."""
    if blake3.blake3(table).digest() != digest:
        raise CorruptError(what, "pack trailer does not match its hash")
    entries = []
    end = PACK_HEADER_SIZE
    for chunk_id, offset, raw_size, stored_size, codec in _ENTRY.iter_unpack(table):
        entry = TableEntry(ChunkId(chunk_id), offset, raw_size, stored_size, codec)
        if offset < end or entry.end > table_offset:
            raise CorruptError(what, "pack trailer lists records out of place")
        if codec not in CODEC_NAMES or raw_size > MAX_CHUNK_SIZE or stored_size > raw_size:
            raise CorruptError(what, "pack trailer lists an implausible record")
        entries.append(entry)
        end = entry.end
    return entries
