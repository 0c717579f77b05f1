"""Chunker parameters: their bounds, checking them, and the ``--chunker`` spec (pure; the
chunker itself, and its fastcdc import, are in snapstore.chunker: reading a repository's
config or a manifest does not need them)."""

from __future__ import annotations

import dataclasses

from snapstore.errors import UsageError
from snapstore.model import ChunkerParams
from snapstore.units import parse_size

__all__ = ["ALGORITHMS", "MAX_CHUNK_SIZE", "MIN_ZERO_RUN", "parse_spec", "validate"]

MAX_CHUNK_SIZE = 64 * 1024 * 1024
MIN_ZERO_RUN = 4096
ALGORITHMS = ("fastcdc", "fixed")


def validate(params: ChunkerParams) -> ChunkerParams:
    """Raise UsageError unless the parameters can be used; return them."""
    if params.algorithm not in ALGORITHMS:
        raise UsageError(f"unknown chunker {params.algorithm!r}", hint="use fastcdc or fixed:SIZE")
    if params.algorithm == "fixed":
        if not 4096 <= params.avg_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"fixed chunk size must be 4 KiB..64 MiB, not {params.avg_size}")
        return dataclasses.replace(params, zero_run=0) if params.zero_run else params
    if not (64 <= params.min_size <= params.avg_size <= params.max_size <= MAX_CHUNK_SIZE):
        raise UsageError("fastcdc needs 64 <= min <= avg <= max <= 64 MiB")
    if params.avg_size < 256 or params.max_size < 1024:
        raise UsageError("fastcdc needs avg >= 256 and max >= 1024")
    if params.zero_run and not MIN_ZERO_RUN <= params.zero_run <= MAX_CHUNK_SIZE:
        raise UsageError(f"a zero run must be 0 (off) or 4 KiB..64 MiB, not {params.zero_run}")
    return params


def parse_spec(spec: str) -> ChunkerParams:
    """``fastcdc``, ``fastcdc:MIN:AVG:MAX[:ZERORUN]`` or ``fixed:SIZE`` (sizes in bytes or
    with K/M; ZERORUN 0 turns zero runs off)."""
    name, _, rest = spec.partition(":")
    if name == "fastcdc":
        if not rest:
            return validate(ChunkerParams())
        parts = rest.split(":")
        if len(parts) not in (3, 4):
            raise UsageError(f"{spec!r}: write fastcdc:MIN:AVG:MAX or fastcdc:MIN:AVG:MAX:ZERORUN")
        sizes = [parse_size(p) for p in parts]
        zero_run = sizes[3] if len(sizes) == 4 else ChunkerParams().zero_run
        return validate(ChunkerParams("fastcdc", sizes[0], sizes[1], sizes[2], zero_run))
    if name == "fixed" and rest:
        size = parse_size(rest)
        return validate(ChunkerParams("fixed", size, size, size))
    raise UsageError(f"unknown chunker {spec!r}", hint="use fastcdc, fastcdc:MIN:AVG:MAX or fixed:SIZE")
