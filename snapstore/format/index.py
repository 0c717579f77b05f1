"""Records of the LMDB index (docs/FORMAT.md, "index"). The index is derived data: it can be
rebuilt from the packs and manifests alone.

Every decoder checks what it reads before returning it: a damaged entry is a CorruptError,
never a location that would make a reader allocate or seek to what a flipped bit says.
"""

from __future__ import annotations

import struct

from snapstore.chunker import MAX_CHUNK_SIZE
from snapstore.codec import CODEC_NAMES, CODEC_NONE
from snapstore.errors import CorruptError
from snapstore.format.pack import PACK_HEADER_SIZE, RECORD_HEADER_SIZE
from snapstore.model import ChunkLocation

INDEX_VERSION = 1
_LOCATION = struct.Struct("<16sQIIBI")  # pack id, offset, stored, raw, codec, refcount
LOCATION_SIZE = _LOCATION.size  # 37
_GARBAGE_KEY = struct.Struct("<16sQ")  # pack id, offset
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
MAX_FILE_OFFSET = (1 << 63) - 1  # the largest offset a file can have (off_t)
REPAIR_HINT = "the index is derived data: 'snap repair' rebuilds it from the packs"
# A value of the counted table: empty when the snapshot's references are counted; while a
# count runs in batches, a sign and the last chunk id (in ascending order) it was applied to.
COUNTED = b""
_ADDING, _SUBTRACTING = b"+", b"-"
RECOUNT = b"recount"  # meta key: present while every count is being recomputed


def _corrupt(detail: str) -> CorruptError:
    return CorruptError("index", detail, hint=REPAIR_HINT)


def encode_location(loc: ChunkLocation) -> bytes:
    return _LOCATION.pack(loc.pack_id, loc.offset, loc.stored_size, loc.raw_size, loc.codec, loc.refcount)


def decode_location(data: bytes) -> ChunkLocation:
    if len(data) != _LOCATION.size:
        raise _corrupt(f"chunk entry of {len(data)} bytes")
    pack_id, offset, stored, raw, codec, refs = _LOCATION.unpack(data)
    if codec not in CODEC_NAMES:
        raise _corrupt(f"chunk entry with unknown codec {codec}")
    if not (0 < raw <= MAX_CHUNK_SIZE and 0 < stored <= raw) or (codec == CODEC_NONE and stored != raw):
        raise _corrupt(f"chunk entry with implausible sizes raw={raw} stored={stored}")
    if offset < PACK_HEADER_SIZE:
        raise _corrupt(f"chunk entry at offset {offset}, inside the pack header")
    if offset + RECORD_HEADER_SIZE + stored > MAX_FILE_OFFSET:
        raise _corrupt(f"chunk entry at offset {offset}, beyond any file's end")
    return ChunkLocation(pack_id, offset, stored, raw, codec, refs)


def encode_garbage_key(pack_id: bytes, offset: int) -> bytes:
    return _GARBAGE_KEY.pack(pack_id, offset)


def decode_garbage_key(data: bytes) -> tuple[bytes, int]:
    if len(data) != _GARBAGE_KEY.size:
        raise _corrupt(f"garbage key of {len(data)} bytes")
    pack_id, offset = _GARBAGE_KEY.unpack(data)
    if not PACK_HEADER_SIZE <= offset <= MAX_FILE_OFFSET:
        raise _corrupt(f"garbage key at offset {offset}, outside any pack's records")
    return pack_id, offset


def encode_u64(n: int) -> bytes:
    return _U64.pack(n)


def decode_u64(data: bytes) -> int:
    if len(data) != _U64.size:
        raise _corrupt(f"a u64 of {len(data)} bytes")
    return int(_U64.unpack(data)[0])


def encode_u32(n: int) -> bytes:
    return _U32.pack(n)


def decode_u32(data: bytes) -> int:
    if len(data) != _U32.size:
        raise _corrupt(f"a u32 of {len(data)} bytes")
    return int(_U32.unpack(data)[0])


def encode_counting(sign: int, last: bytes) -> bytes:
    """The counted value of a count under way: ``sign`` +1 (the references of the chunk ids
    up to ``last`` are added, the others not) or -1 (those up to ``last`` are subtracted,
    the others still counted)."""
    return (_ADDING if sign > 0 else _SUBTRACTING) + last


def decode_counted(data: bytes) -> tuple[int, bytes] | None:
    """None for a counted snapshot, or (sign, last chunk id) of a count under way."""
    if not data:
        return None
    if len(data) != 33 or data[:1] not in (_ADDING, _SUBTRACTING):
        raise _corrupt(f"counted value of {len(data)} bytes")
    return (1 if data[:1] == _ADDING else -1), bytes(data[1:])
