"""Chunk compression (the only zstandard importer).

A chunk is stored zstd-compressed unless that saves less than :data:`MIN_SAVING`, in which
case it is stored raw (``CODEC_NONE``): decompressing raw data costs nothing on checkout.
"""

from __future__ import annotations

import threading

import zstandard

from snapstore.errors import CorruptError

CODEC_NONE = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd"}
MIN_SAVING = 1 / 32  # store raw unless compression saves at least ~3%
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = _local.__dict__.get("d")
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def encode(data: bytes, level: int) -> tuple[int, bytes]:
    """Return ``(codec, payload)`` for a chunk's plaintext."""
    if not data:
        return CODEC_NONE, data
    compressed = _compressor(level).compress(data)
    if len(compressed) > len(data) * (1 - MIN_SAVING):
        return CODEC_NONE, data
    return CODEC_ZSTD, compressed


def decode(codec: int, payload: bytes, raw_size: int) -> bytes:
    """Return the plaintext; raises CorruptError when the payload cannot be decoded."""
    if codec == CODEC_NONE:
        if len(payload) != raw_size:
            raise CorruptError("stored chunk", f"raw payload of {len(payload)} bytes, expected {raw_size}")
        return payload
    if codec == CODEC_ZSTD:
        try:
            data = _decompressor().decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise CorruptError("stored chunk", f"zstd: {exc}") from exc
        if len(data) != raw_size:
            raise CorruptError("stored chunk", f"decoded {len(data)} bytes, expected {raw_size}")
        return bytes(data)
    raise CorruptError("stored chunk", f"unknown codec {codec}")
