"""Content-defined (FastCDC) and fixed-size chunking (the only fastcdc importer).

Pure: cut points depend only on the bytes and the :class:`ChunkerParams`. A moved cut point
silently ruins dedup against existing repositories, so tests pin golden cut points.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from types import ModuleType

import fastcdc
from fastcdc import fastcdc_py

from snapstore.errors import UsageError
from snapstore.model import ChunkerParams
from snapstore.units import parse_size


def _load_scanner() -> ModuleType | None:
    """The optional C scanner (setup.py): fastcdc's cut rule without the GIL, zero runs
    skipped; None where it was not built."""
    try:
        scanner = importlib.import_module("snapstore._cdc")
    except ImportError:  # pragma: no cover - depends on the build
        return None
    return scanner if scanner.set_gear(fastcdc_py.GEAR) else None


_cdc = _load_scanner()

MAX_CHUNK_SIZE = 64 * 1024 * 1024
ALGORITHMS = ("fastcdc", "fixed")


def validate(params: ChunkerParams) -> ChunkerParams:
    """Raise UsageError unless the parameters can be used; return them."""
    if params.algorithm not in ALGORITHMS:
        raise UsageError(f"unknown chunker {params.algorithm!r}", hint="use fastcdc or fixed:SIZE")
    if params.algorithm == "fixed":
        if not 4096 <= params.avg_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"fixed chunk size must be 4 KiB..64 MiB, not {params.avg_size}")
        return params
    if not (64 <= params.min_size <= params.avg_size <= params.max_size <= MAX_CHUNK_SIZE):
        raise UsageError("fastcdc needs 64 <= min <= avg <= max <= 64 MiB")
    if params.avg_size < 256 or params.max_size < 1024:
        raise UsageError("fastcdc needs avg >= 256 and max >= 1024")
    return params


def parse_spec(spec: str) -> ChunkerParams:
    """``fastcdc``, ``fastcdc:MIN:AVG:MAX`` or ``fixed:SIZE`` (sizes in bytes or with K/M)."""
    name, _, rest = spec.partition(":")
    if name == "fastcdc":
        if not rest:
            return validate(ChunkerParams())
        parts = rest.split(":")
        if len(parts) != 3:
            raise UsageError(f"{spec!r}: write fastcdc:MIN:AVG:MAX")
        lo, avg, hi = (parse_size(p) for p in parts)
        return validate(ChunkerParams("fastcdc", lo, avg, hi))
    if name == "fixed" and rest:
        size = parse_size(rest)
        return validate(ChunkerParams("fixed", size, size, size))
    raise UsageError(f"unknown chunker {spec!r}", hint="use fastcdc, fastcdc:MIN:AVG:MAX or fixed:SIZE")


def cut(params: ChunkerParams, buf: bytes | memoryview, final: bool) -> list[int]:
    """Lengths of the chunks at the start of ``buf`` whose cut points are certain.

    Without ``final`` a cut is certain only when the whole window it searched (``max_size``
    bytes from the chunk's start) lies inside ``buf``; the rest waits for more data. With
    ``final`` the lengths cover all of ``buf``.
    """
    return list(iter_cuts(params, buf, final))


def iter_cuts(
    params: ChunkerParams, buf: bytes | bytearray | memoryview, final: bool, *, accelerated: bool = True
) -> Iterator[int]:
    """:func:`cut`, lazily: a caller may stop early and pay only for the chunks it took.
    ``accelerated=False`` uses the fastcdc package even where the C scanner is built."""
    size = len(buf)
    if params.algorithm == "fixed":
        step = params.avg_size
        yield from [step] * (size // step)
        if final and size % step:
            yield size % step
        return
    if _cdc is None or not accelerated:
        for c in fastcdc.fastcdc(buf, params.min_size, params.avg_size, params.max_size, fat=False):
            if not final and c.offset + params.max_size > size:
                return
            yield c.length
        return
    args = _scan_args(params)
    pos = 0
    while pos < size and (final or pos + params.max_size <= size):
        length = _cdc.next_cut(buf, pos, size, *args)
        yield length
        pos += length


def cut_at(
    params: ChunkerParams, buf: bytes | bytearray | memoryview, length: int, final: bool
) -> bool | None:
    """Whether the chunk starting at ``buf[0]`` ends after ``length`` bytes: True or False, or
    None when ``buf`` does not tell. ``buf`` holds those bytes and, unless they end the data
    (``final``), at least the byte after them, which decides whether the cut is there or
    later."""
    if final:
        if len(buf) < length:
            return None
        buf = memoryview(buf)[:length]
    elif len(buf) <= length:
        return None
    else:
        buf = memoryview(buf)[: length + 1]
    return next(iter_cuts(params, buf, True)) == length


def _scan_args(params: ChunkerParams) -> tuple[int, int, int, int, int]:
    """fastcdc's derived values: (min, max, centre size, mask before it, mask after it)."""
    bits = round(math.log2(params.avg_size))
    centre = min(params.avg_size, params.min_size + -(-params.min_size // 2))
    cs = min(params.avg_size - centre, params.max_size)
    return params.min_size, params.max_size, cs, 2 ** (bits + 1) - 1, 2 ** (bits - 1) - 1


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """Whether every byte is zero (a zero chunk is recorded as a zero run, never stored)."""
    if _cdc is not None:
        return bool(_cdc.is_zero(data))
    return bytes(data) == bytes(len(data))  # pragma: no cover - depends on the build


def data_runs(data: bytes | bytearray | memoryview, min_zeros: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the parts of ``data`` between its zero runs of at least
    ``min_zeros`` bytes (a checkout leaves those as holes). Without the C scanner: all of it."""
    if _cdc is not None:
        runs: list[tuple[int, int]] = _cdc.data_runs(data, min_zeros)
        return runs
    return [(0, len(data))] if len(data) else []  # pragma: no cover - depends on the build


def accelerated() -> bool:
    """Whether the C scanner is in use (it gives the same cut points, faster)."""
    return _cdc is not None


def zero_period(params: ChunkerParams) -> int:
    """The length of every chunk cut from a run of zeros at least ``max_size`` long.

    Each cut depends only on the bytes from its chunk's start, so inside a long run of zeros
    the cuts repeat with this period: a chunker can step over a hole without reading it."""
    return next(iter_cuts(params, bytes(params.max_size), True))


class Splitter:
    """Streams blocks of one byte sequence into chunks, holding at most one chunk back."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        self._carry = b""

    def feed(self, block: bytes) -> Iterator[memoryview]:
        buf = self._carry + block if self._carry else block
        yield from self._emit(buf, final=False)

    def finish(self) -> Iterator[memoryview]:
        buf, self._carry = self._carry, b""
        if buf:
            yield from self._emit(buf, final=True)

    def _emit(self, buf: bytes, final: bool) -> Iterator[memoryview]:
        view = memoryview(buf)
        pos = 0
        for length in cut(self.params, view, final):
            yield view[pos : pos + length]
            pos += length
        self._carry = bytes(view[pos:]) if not final else b""


def split(params: ChunkerParams, data: bytes) -> list[bytes]:
    """Split a whole buffer at once (for tests and small inputs)."""
    s = Splitter(params)
    return [bytes(c) for c in (*s.feed(data), *s.finish())]
