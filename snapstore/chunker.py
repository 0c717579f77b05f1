"""Content-defined (FastCDC) and fixed-size chunking (the only fastcdc importer).

Pure: cut points depend only on the bytes and the :class:`ChunkerParams`. A moved cut point
silently ruins dedup against existing repositories, so tests pin golden cut points.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator
from types import ModuleType

import fastcdc
from fastcdc import fastcdc_py

from snapstore.chunkparams import ALGORITHMS as ALGORITHMS
from snapstore.chunkparams import MAX_CHUNK_SIZE as MAX_CHUNK_SIZE
from snapstore.chunkparams import MIN_ZERO_RUN as MIN_ZERO_RUN
from snapstore.chunkparams import parse_spec as parse_spec
from snapstore.chunkparams import validate as validate
from snapstore.model import ChunkerParams


def _load_scanner() -> ModuleType | None:
    """The optional C scanner (setup.py): fastcdc's cut rule without the GIL, zero runs
    skipped; None where it was not built."""
    try:
        scanner = importlib.import_module("snapstore._cdc")
    except ImportError:  # pragma: no cover - depends on the build
        return None
    return scanner if scanner.set_gear(fastcdc_py.GEAR) else None


_cdc = _load_scanner()


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
    if _cdc is None:  # pragma: no cover - depends on the build
        return [(0, len(data))] if len(data) else []
    runs: list[tuple[int, int]] = []
    pos = 0
    for start, end in _cdc.zero_runs(data, min_zeros):
        if end - start >= min_zeros:
            if start > pos:
                runs.append((pos, start))
            pos = end
    if pos < len(data):
        runs.append((pos, len(data)))
    return runs


def zero_runs(data: bytes | bytearray | memoryview, min_zeros: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the maximal runs of zero bytes in ``data`` that are at least
    ``min_zeros`` long, and of those touching either end of ``data`` whatever their length
    (they may go on beyond it), in order."""
    if _cdc is not None:
        runs: list[tuple[int, int]] = _cdc.zero_runs(data, min_zeros)
        return runs
    return zero_runs_py(data, min_zeros)  # pragma: no cover - depends on the build


def zero_runs_py(data: bytes | bytearray | memoryview, min_zeros: int) -> list[tuple[int, int]]:
    """:func:`zero_runs` without the C scanner (slower: it copies the data)."""
    raw = bytes(data)
    out = [(m.start(), m.end()) for m in re.finditer(b"\\x00{%d,}" % max(1, min_zeros), raw)]
    lead = len(raw) - len(raw.lstrip(b"\0"))
    if lead and (not out or out[0][0] != 0):
        out.insert(0, (0, lead))
    trail = len(raw) - len(raw.rstrip(b"\0"))
    if trail and (not out or out[-1][1] != len(raw)):
        out.append((len(raw) - trail, len(raw)))
    return out


def stream_pieces(params: ChunkerParams, data: bytes | memoryview) -> list[tuple[int, bool]]:
    """The whole of ``data`` as the pieces a commit records, in order: ``(length, True)``
    for a zero run, ``(length, False)`` for a chunk (adjacent zero runs and all-zero chunks
    merged into one run, as a manifest holds them). The reference that the commit
    pipeline's streaming must reproduce."""
    view = memoryview(data)
    bounds: list[tuple[int, int, bool]] = []  # (start, end, is a zero run)
    pos = 0
    if params.zero_run:
        for start, end in zero_runs(view, params.zero_run):
            if end - start >= params.zero_run:
                if start > pos:
                    bounds.append((pos, start, False))
                bounds.append((start, end, True))
                pos = end
    if pos < len(view):
        bounds.append((pos, len(view), False))
    pieces: list[tuple[int, bool]] = []

    def add(length: int, zeros: bool) -> None:
        if zeros and pieces and pieces[-1][1]:
            pieces[-1] = (pieces[-1][0] + length, True)
        else:
            pieces.append((length, zeros))

    for start, end, run in bounds:
        if run:
            add(end - start, True)
            continue
        at = start
        for length in iter_cuts(params, view[start:end], True):
            add(length, is_zero(view[at : at + length]))
            at += length
    return pieces


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
