"""Delta records (pure; docs/FORMAT.md, "delta records"): a chunk stored as a zstd frame
compressed with a *base* chunk's plaintext as a raw-content dictionary ("patch-from").

The payload of a delta record is the base's chunk id (32 bytes) followed by one zstd frame
that declares its content size. The base is always a chunk stored full (a keyframe), never
another delta, so a reader reads at most two records per chunk.

A delta is kept only when it pays: smaller than :data:`KEEP_BELOW` of what storing the chunk
full would take. Measured on 1 MiB chunks of the benchmark's real-data image with four
scattered 4 KiB blocks rewritten: full (zstd 3) 405 KB, delta 16.7 KB (4%); on data that
does not compress at all (stored raw, 1 MiB) the delta is 17.5 KB. Changes accumulate
against a keyframe day after day; past half the full size a delta saves little and costs a
second read, so the chunk is stored full and becomes the next keyframe.

zstd reaches into a dictionary only within its window and finds matches there only through
its hash table: the window is sized to hold the base and the chunk, and the table to an
eighth of the base's bytes. Measured on a 2 MiB chunk with 28 scattered 4 KiB blocks
changed (full at level 3: 426 KB in 11 ms): level 3 with its default table 274 KB in 7 ms;
level 1 with a table of 2^19 entries 112 KB in 6 ms; level 3 with 2^21, 111 KB in 55 ms. So a
delta is compressed at level 1 (zstd's "fast" strategy) with that table, whatever the
repository's level; its changed bytes are few. Over 12 changed 2 MiB chunks of the
benchmark's real-data image (v1 -> v2) a table of an entry per 8 bytes takes half the time
of one per 4 bytes for the same size (40 ms and 23.4 KB in all); one per 16 bytes makes
deltas 14x larger.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from snapstore.errors import DamagedChunkError
from snapstore.model import Buffer, ChunkId

if TYPE_CHECKING:
    import zstandard

BASE_ID_SIZE = 32
KEEP_BELOW = 0.5  # a delta is kept when smaller than this fraction of the full payload
LEVEL = 1  # see above
TABLE_SHIFT = 3  # the hash table has an entry per 2^TABLE_SHIFT bytes of the base
MAX_TABLE_LOG = 24  # at most 2^24 entries (64 MiB)
_local = threading.local()


def _zstd() -> None:
    global zstandard
    import zstandard


def _dictionary(base: Buffer) -> zstandard.ZstdCompressionDict:
    _zstd()
    return zstandard.ZstdCompressionDict(bytes(base), dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def window_log(base_size: int, size: int) -> int:
    """The window that holds the whole base and the whole chunk (log2, at least 2^10)."""
    return max(10, (base_size + size - 1).bit_length())


def encode(data: Buffer, base_id: bytes, base: Buffer) -> bytes:
    """The payload of ``data`` as a delta against ``base`` (whose id is ``base_id``)."""
    _zstd()
    table_log = min(MAX_TABLE_LOG, max(10, (len(base) - 1).bit_length() - TABLE_SHIFT))
    params = zstandard.ZstdCompressionParameters.from_level(
        LEVEL,
        source_size=len(data),
        window_log=window_log(len(base), len(data)),
        hash_log=table_log,
        write_content_size=1,
        write_checksum=0,
        write_dict_id=0,
    )
    compressor = zstandard.ZstdCompressor(dict_data=_dictionary(base), compression_params=params)
    return bytes(base_id) + compressor.compress(data)


def pays(delta_size: int, full_size: float) -> bool:
    """Whether a delta of ``delta_size`` bytes is worth keeping over ``full_size``."""
    return delta_size < full_size * KEEP_BELOW


def base_of(payload: Buffer) -> ChunkId:
    """The base chunk id a delta payload names."""
    if len(payload) <= BASE_ID_SIZE:
        raise DamagedChunkError("stored chunk", "delta payload shorter than its base id")
    return ChunkId(bytes(payload[:BASE_ID_SIZE]))


def decode(payload: Buffer, base: Buffer, raw_size: int) -> bytes:
    """The plaintext of a delta payload, given its base's plaintext (verified by the caller);
    raises DamagedChunkError when it does not decode to ``raw_size`` bytes."""
    base_of(payload)
    frame = memoryview(payload)[BASE_ID_SIZE:]
    _zstd()
    try:
        declared = zstandard.frame_content_size(frame)
        if declared != raw_size:
            raise DamagedChunkError("stored chunk", f"delta frame of {declared} bytes, expected {raw_size}")
        params = zstandard.ZstdDecompressor(dict_data=_dictionary(base), max_window_size=1 << 31)
        data = params.decompress(frame, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise DamagedChunkError("stored chunk", f"zstd delta: {exc}") from exc
    if len(data) != raw_size:
        raise DamagedChunkError("stored chunk", f"decoded {len(data)} bytes, expected {raw_size}")
    return data
