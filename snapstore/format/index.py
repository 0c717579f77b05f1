"""Records of the LMDB index (docs/FORMAT.md, "index"). The index is derived data: it can be
rebuilt from the packs and manifests alone.

Every decoder checks what it reads before returning it: a damaged entry is a CorruptError,
never a location that would make a reader allocate or seek to what a flipped bit says.
"""

from __future__ import annotations

import struct

from snapstore.chunkparams import MAX_CHUNK_SIZE
from snapstore.codec import CODEC_DELTA, CODEC_NAMES, CODEC_NONE
from snapstore.errors import CorruptError
from snapstore.format.pack import PACK_HEADER_SIZE, RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkLocation, PackId

INDEX_VERSION = 2  # 1: no owners, no exclusive table, no totals (upgraded by a recount)
READABLE_INDEX_VERSIONS = (1, 2)
_LOCATION_V1 = struct.Struct("<16sQIIBI")  # pack id, offset, stored, raw, codec, refcount
_LOCATION = struct.Struct("<16sQIIBI32s")  # ... and owners (XOR of the referring snapshot ids)
LOCATION_SIZE = _LOCATION.size  # 69
_BASE = struct.Struct("<32s")  # after a delta's location: its base's chunk id (101 bytes in all)
DELTAS = b"deltas"  # meta key: present once a delta record has been indexed
_LOST = struct.Struct("<I32s")  # reference count, owners
_TOTALS = struct.Struct("<4q")  # live chunks, their raw bytes, their pack bytes, unreferenced pack bytes
_I64 = struct.Struct("<q")
TOTALS = b"totals"  # meta key
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
SYNCED = b"synced"  # meta key of a cache: the backend generation token it is in step with


def _corrupt(detail: str) -> CorruptError:
    return CorruptError("index", detail, hint=REPAIR_HINT)


def encode_location(loc: ChunkLocation, *, refcount: int | None = None, owners: bytes | None = None) -> bytes:
    """The entry of ``loc``, or of ``loc`` with another count and owners (counting: without
    making a new ChunkLocation per chunk)."""
    value = _LOCATION.pack(
        loc.pack_id,
        loc.offset,
        loc.stored_size,
        loc.raw_size,
        loc.codec,
        loc.refcount if refcount is None else refcount,
        loc.owners if owners is None else owners,
    )
    return value if loc.base is None else value + _BASE.pack(loc.base)


def decode_location(data: bytes) -> ChunkLocation:
    """A chunk entry of index version 2 (a delta's with its base), or of version 1 (its
    owners unknown: zero)."""
    base = None
    if len(data) == _LOCATION.size + _BASE.size:
        pack_id, offset, stored, raw, codec, refs, owners = _LOCATION.unpack_from(data)
        base = ChunkId(bytes(data[_LOCATION.size :]))
    elif len(data) == _LOCATION.size:
        pack_id, offset, stored, raw, codec, refs, owners = _LOCATION.unpack(data)
    elif len(data) == _LOCATION_V1.size:
        pack_id, offset, stored, raw, codec, refs = _LOCATION_V1.unpack(data)
        owners = bytes(32)
    else:
        raise _corrupt(f"chunk entry of {len(data)} bytes")
    if codec not in CODEC_NAMES:
        raise _corrupt(f"chunk entry with unknown codec {codec}")
    if (codec == CODEC_DELTA) != (base is not None):
        raise _corrupt("chunk entry of a delta without its base, or a base without a delta")
    if not (0 < raw <= MAX_CHUNK_SIZE and 0 < stored <= raw) or (codec == CODEC_NONE and stored != raw):
        raise _corrupt(f"chunk entry with implausible sizes raw={raw} stored={stored}")
    if offset < PACK_HEADER_SIZE:
        raise _corrupt(f"chunk entry at offset {offset}, inside the pack header")
    if offset + RECORD_HEADER_SIZE + stored > MAX_FILE_OFFSET:
        raise _corrupt(f"chunk entry at offset {offset}, beyond any file's end")
    return ChunkLocation(pack_id, offset, stored, raw, codec, refs, owners, base)


def encode_garbage_key(pack_id: bytes, offset: int) -> bytes:
    return _GARBAGE_KEY.pack(pack_id, offset)


def decode_garbage_key(data: bytes) -> tuple[PackId, int]:
    if len(data) != _GARBAGE_KEY.size:
        raise _corrupt(f"garbage key of {len(data)} bytes")
    pack_id, offset = _GARBAGE_KEY.unpack(data)
    if not PACK_HEADER_SIZE <= offset <= MAX_FILE_OFFSET:
        raise _corrupt(f"garbage key at offset {offset}, outside any pack's records")
    return PackId(pack_id), offset


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


def encode_lost(count: int, owners: bytes) -> bytes:
    return _LOST.pack(count, owners)


def decode_lost(data: bytes) -> tuple[int, bytes]:
    """(reference count, owners) of a lost chunk; an entry of index version 1 is a bare count."""
    if len(data) == _U32.size:
        return decode_u32(data), bytes(32)
    if len(data) != _LOST.size:
        raise _corrupt(f"lost entry of {len(data)} bytes")
    count, owners = _LOST.unpack(data)
    return int(count), bytes(owners)


def encode_totals(totals: tuple[int, int, int, int]) -> bytes:
    return _TOTALS.pack(*totals)


def decode_totals(data: bytes) -> tuple[int, int, int, int]:
    if len(data) != _TOTALS.size:
        raise _corrupt(f"totals of {len(data)} bytes")
    totals = _TOTALS.unpack(data)
    if min(totals) < 0:
        raise _corrupt("negative totals")
    return totals


def encode_i64(n: int) -> bytes:
    return _I64.pack(n)


def decode_i64(data: bytes) -> int:
    if len(data) != _I64.size:
        raise _corrupt(f"an i64 of {len(data)} bytes")
    return int(_I64.unpack(data)[0])


def xor_id(a: bytes, b: bytes) -> bytes:
    """Owners with one snapshot id added or taken out (XOR is its own inverse)."""
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(32, "little")
