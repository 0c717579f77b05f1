"""Pack files: a header, then chunk records appended one after another (docs/FORMAT.md, "packs").

A chunk record is a 52-byte header followed by ``stored_size`` payload bytes. The header
carries the chunk id, so the index can be rebuilt from the packs alone, and a CRC-32 of its
own bytes, so a scanner can tell a real record from torn or zeroed (hole-punched) bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from snapstore.chunker import MAX_CHUNK_SIZE
from snapstore.codec import CODEC_NAMES, CODEC_NONE
from snapstore.errors import CorruptError
from snapstore.format import FORMAT_VERSION

PACK_MAGIC = b"SNAPPACK"
PACK_HEADER = struct.Struct("<8sII")  # magic, format version, reserved (0)
PACK_HEADER_SIZE = PACK_HEADER.size  # 16
RECORD_MAGIC = b"SNCK"
_RECORD = struct.Struct("<4s32sB3xII")  # magic, chunk id, codec, pad, raw_size, stored_size
_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = _RECORD.size + _CRC.size  # 52


@dataclass(frozen=True)
class RecordHeader:
    chunk_id: bytes
    codec: int
    raw_size: int
    stored_size: int

    @property
    def record_size(self) -> int:
        return RECORD_HEADER_SIZE + self.stored_size


def encode_pack_header() -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, FORMAT_VERSION, 0)


def check_pack_header(data: bytes, what: str) -> None:
    if len(data) < PACK_HEADER_SIZE:
        raise CorruptError(what, "shorter than a pack header")
    magic, version, reserved = PACK_HEADER.unpack_from(data)
    if magic != PACK_MAGIC:
        raise CorruptError(what, "bad pack magic")
    if version != FORMAT_VERSION:
        raise CorruptError(what, f"pack format version {version}")
    if reserved:
        raise CorruptError(what, "reserved bytes of the pack header are not 0")


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
    return RecordHeader(chunk_id, codec, raw_size, stored_size)


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
