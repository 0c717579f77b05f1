"""Records of the LMDB index (docs/FORMAT.md, "index"). The index is derived data: it can be
rebuilt from the packs and manifests alone."""

from __future__ import annotations

import struct

from snapstore.errors import CorruptError
from snapstore.model import ChunkLocation

INDEX_VERSION = 1
_LOCATION = struct.Struct("<16sQIIBI")  # pack id, offset, stored, raw, codec, refcount
_GARBAGE_KEY = struct.Struct("<16sQ")  # pack id, offset
_U64 = struct.Struct("<Q")


def encode_location(loc: ChunkLocation) -> bytes:
    return _LOCATION.pack(loc.pack_id, loc.offset, loc.stored_size, loc.raw_size, loc.codec, loc.refcount)


def decode_location(data: bytes) -> ChunkLocation:
    if len(data) != _LOCATION.size:
        raise CorruptError("index", f"chunk record of {len(data)} bytes")
    pack_id, offset, stored, raw, codec, refs = _LOCATION.unpack(data)
    return ChunkLocation(pack_id, offset, stored, raw, codec, refs)


def encode_garbage_key(pack_id: bytes, offset: int) -> bytes:
    return _GARBAGE_KEY.pack(pack_id, offset)


def decode_garbage_key(data: bytes) -> tuple[bytes, int]:
    pack_id, offset = _GARBAGE_KEY.unpack(data)
    return pack_id, offset


def encode_u64(n: int) -> bytes:
    return _U64.pack(n)


def decode_u64(data: bytes) -> int:
    return int(_U64.unpack(data)[0])
