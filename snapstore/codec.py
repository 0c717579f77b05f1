"""Chunk compression (the only zstandard importer).

A chunk is stored zstd-compressed unless that saves less than :data:`MIN_SAVING`, in which
case it is stored raw (``CODEC_NONE``): decompressing raw data costs nothing on checkout.
Large chunks are first probed cheaply: if evenly spread samples do not compress at all
(random, encrypted or already compressed data), the chunk is stored raw without being
compressed whole (saves ~95% of the compression time on such data). The probe also picks the
level: at the fast levels (up to :data:`FAST_MAX_LEVEL`, the default 3 included) a chunk whose
samples shrink by less than half (executables, libraries, partly compressed data) is
compressed at level 1, where level 3 would gain ~2% of its size for twice the time; text and
other data that compresses well keeps the repository's level. Measured on the benchmark's
workloads (default chunker, per distinct chunk): the real-data image's chunks take 28% less
zstd time for 1.1% more bytes, a text-heavy tar of /usr/share 18% less for 1.5% more, the
synthetic image 6% less for the same bytes (bench/RESULTS.md). Any level decodes alike: the
choice is not recorded.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from snapstore.errors import DamagedChunkError
from snapstore.model import Buffer

if TYPE_CHECKING:
    import zstandard

CODEC_NONE = 0
CODEC_ZSTD = 1
CODEC_DELTA = 2  # a zstd frame against a base chunk (snapstore/deltacodec.py; format 3)
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd", CODEC_DELTA: "zstd-delta"}
MIN_SAVING = 1 / 32  # store raw unless compression saves at least ~3%
PROBE_FROM = 256 * 1024  # chunks at least this large are probed first
PROBE_SLICES = 4
PROBE_SLICE = 8 * 1024
PROBE_SAVING = 1 / 100  # a probe saving less than this means "incompressible"
FAST_MAX_LEVEL = 3  # up to this level, a chunk that compresses poorly is compressed at level 1
FAST_ABOVE = 0.5  # "poorly": its samples compress to more than this fraction of their size
_local = threading.local()


def _zstd() -> None:
    """Import zstandard, the first time a (de)compressor is made: commands that read no
    chunk (log, show, stats) do not import it."""
    global zstandard
    import zstandard


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    if level not in cache:
        _zstd()
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = _local.__dict__.get("d")
    if d is None:
        _zstd()
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def encode(data: Buffer, level: int) -> tuple[int, Buffer]:
    """Return ``(codec, payload)`` for a chunk's plaintext. A chunk stored raw is returned as
    given (no copy): the caller keeps ``data`` alive until the payload is written."""
    if not data:
        return CODEC_NONE, data
    if len(data) >= PROBE_FROM:
        ratio = sample_ratio(data)
        if ratio > 1 - PROBE_SAVING:
            return CODEC_NONE, data
        level = chunk_level(level, ratio)
    compressed = _compressor(level).compress(data)
    if len(compressed) > len(data) * (1 - MIN_SAVING):
        return CODEC_NONE, data
    return CODEC_ZSTD, compressed


def incompressible(data: Buffer) -> bool:
    """Whether evenly spread samples of ``data`` fail to compress (level 1, ~4% of the cost)."""
    return sample_ratio(data) > 1 - PROBE_SAVING


def sample_ratio(data: Buffer) -> float:
    """Compressed size over size of evenly spread samples of ``data`` (at least
    PROBE_SLICE bytes long), compressed at level 1."""
    step = (len(data) - PROBE_SLICE) // (PROBE_SLICES - 1)
    view = memoryview(data)
    sample = b"".join(view[i * step : i * step + PROBE_SLICE] for i in range(PROBE_SLICES))
    return len(_compressor(1).compress(sample)) / len(sample)


def chunk_level(level: int, ratio: float) -> int:
    """The level a chunk is compressed at, given the repository's ``level`` and the chunk's
    :func:`sample_ratio`."""
    return 1 if level <= FAST_MAX_LEVEL and ratio > FAST_ABOVE else level


def decode(codec: int, payload: Buffer, raw_size: int) -> Buffer:
    """Return the plaintext; raises DamagedChunkError (a CorruptError and an IntegrityError)
    when the payload cannot be decoded to ``raw_size`` bytes."""
    if codec == CODEC_NONE:
        if len(payload) != raw_size:
            detail = f"raw payload of {len(payload)} bytes, expected {raw_size}"
            raise DamagedChunkError("stored chunk", detail)
        return payload
    if codec == CODEC_ZSTD:
        decompressor = _decompressor()  # (zstandard is imported from here on)
        try:
            # Checked first: decompress() allocates what the frame header claims.
            declared = zstandard.frame_content_size(payload)
            if declared not in (-1, raw_size):
                raise DamagedChunkError("stored chunk", f"frame of {declared} bytes, expected {raw_size}")
            data = decompressor.decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise DamagedChunkError("stored chunk", f"zstd: {exc}") from exc
        if len(data) != raw_size:
            raise DamagedChunkError("stored chunk", f"decoded {len(data)} bytes, expected {raw_size}")
        return data
    if codec == CODEC_DELTA:  # (decoded with its base: Repository.get_chunk)
        raise DamagedChunkError("stored chunk", "a delta record is decoded with its base")
    raise DamagedChunkError("stored chunk", f"unknown codec {codec}")
