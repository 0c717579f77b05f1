"""Where a file's data is: SEEK_DATA/SEEK_HOLE (holes are never read)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

# Holes shorter than this are read as data: tiny holes would only fragment chunking.
MIN_HOLE = 1024 * 1024


def data_extents(fd: int, size: int, min_hole: int = MIN_HOLE) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the data regions of an open file, in order; the gaps between
    them are holes of at least ``min_hole`` bytes that read as zeros."""
    start: int | None = None
    end = 0
    for off, length in raw_extents(fd, 0, size):
        if start is None:
            start, end = off, off + length
        elif off - end < min_hole:
            end = off + length
        else:
            yield start, end - start
            start, end = off, off + length
    if start is not None:
        yield start, end - start


def raw_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the data between ``start`` and ``end`` as SEEK_DATA/SEEK_HOLE
    tell it, unmerged. Where they cannot tell (no hole support, an error), the rest is data:
    it is read, never taken for zeros."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:  # ENXIO: only a hole remains; EINVAL: no hole support
            if exc.errno != errno.ENXIO or not _supports_holes(fd):
                yield pos, end - pos
            return
        if data >= end:
            return
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            hole = end
        hole = min(hole, end)
        yield data, hole - data
        pos = hole


def _supports_holes(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
        return True
    except OSError:
        return False
