"""Which byte ranges differ between two snapshots of a file, from their chunk lists alone
(pure: pieces in, ranges out; nothing is read).

A piece is a chunk (its id) or a zero run (no id), in stream order from offset 0. Two
snapshots agree on a stretch of bytes where both have the same chunk id at the same offset
and length (ids are hashes of the bytes), or where both have zero runs (which need not start
or end at the same offsets). Everywhere else the stretch is reported as changed, without
reading data: a changed range may hold bytes that happen to be equal (a chunk whose bytes
differ only in part, a stretch chunked differently after an edit, the data chunk before a
zero run that grew or shrank), so a range overshoots the bytes that truly differ by about one
chunk at each end (plus one zero run before). Bytes one snapshot has past the
other's end are changed. Ranges are merged (two changed ranges never touch) and come in
order; memory is bounded (both lists are walked once, side by side).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from snapstore.model import ChunkId

Piece = tuple[int, ChunkId | None]  # (length, chunk id), None: a zero run


@dataclass(frozen=True, slots=True)
class ChangedRange:
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class _At:
    start: int
    end: int
    chunk_id: ChunkId | None


def _placed(pieces: Iterable[Piece]) -> Iterator[_At]:
    offset = 0
    for length, chunk_id in pieces:
        if length > 0:
            yield _At(offset, offset + length, chunk_id)
            offset += length


def _same(a: _At, b: _At) -> bool:
    if a.chunk_id is None or b.chunk_id is None:
        return a.chunk_id is None and b.chunk_id is None
    return a.chunk_id == b.chunk_id and a.start == b.start and a.end == b.end


def changed_ranges(a: Iterable[Piece], b: Iterable[Piece]) -> Iterator[ChangedRange]:
    """The merged ranges where snapshot ``a``'s bytes and snapshot ``b``'s may differ."""
    left, right = _placed(a), _placed(b)
    pa, pb = next(left, None), next(right, None)
    pos = 0
    open_at: int | None = None  # start of the changed range being grown
    while pa is not None and pb is not None:
        end = min(pa.end, pb.end)
        if _same(pa, pb):
            if open_at is not None:
                yield ChangedRange(open_at, pos)
                open_at = None
        elif open_at is None:
            open_at = pos
        pos = end
        if pa.end == end:
            pa = next(left, None)
        if pb.end == end:
            pb = next(right, None)
    rest = pa or pb
    tail = right if pa is None else left
    if rest is not None:  # one snapshot goes on past the other's end
        last = rest.end
        for piece in tail:
            last = piece.end
        if open_at is None:
            open_at = pos
        pos = last
    if open_at is not None and pos > open_at:
        yield ChangedRange(open_at, pos)
