"""Where the previous snapshot of a file had its chunks and zero runs (pure).

A file is chunked as one byte stream (holes are zeros), and each cut depends only on the
bytes from its chunk's start to the cut. So a chunk that starts at a chunk boundary and
whose bytes are unchanged ends where it ended before, and can be confirmed by hashing the
same byte range instead of running the chunker. A zero run is a sequence of whole zero
chunks: where the same range is all zeros again (a hole, known without reading it), it
ends at a chunk boundary again and is confirmed without even hashing. The one exception is
the file's last piece, which the end of the file may have cut short: it is offered only
when the file has the same size as before (the end of the file cuts it in the same place).

With zero runs (docs/FORMAT.md "chunker") the data between two runs is chunked on its own,
so a chunk may also end because a run begins after it (``before_zeros``): the commit
confirms such a chunk where a run begins there again, or once its worker has checked that
the chunker cuts there anyway. The runs themselves are found in the bytes, not confirmed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from snapstore.model import ChunkId, ChunkRef, EntryEnd, ManifestRecord, ZeroRun


@dataclass(frozen=True, slots=True)
class PrevChunk:
    offset: int
    length: int
    chunk_id: ChunkId | None  # None: a zero run
    before_zeros: bool = False  # a chunk the previous snapshot had a zero run right after

    @property
    def end(self) -> int:
        return self.offset + self.length


def confirmable_chunks(records: Iterable[ManifestRecord], size: int = -1) -> Iterator[PrevChunk]:
    """Chunks and zero runs of the (first) entry in ``records`` that may be confirmed in
    place in a file of ``size`` bytes, in order: all but the entry's last piece, and that
    one too if the entry had the same size."""
    offset = 0
    held: PrevChunk | None = None
    for record in records:
        if isinstance(record, ChunkRef | ZeroRun):
            if held is not None:
                if isinstance(record, ZeroRun) and held.chunk_id is not None:
                    held = PrevChunk(held.offset, held.length, held.chunk_id, True)
                yield held
            if isinstance(record, ChunkRef):
                held = PrevChunk(offset, record.raw_size, record.chunk_id)
            else:
                held = PrevChunk(offset, record.length, None)
            offset += held.length
        elif isinstance(record, EntryEnd):
            if held is not None and record.size == size:
                yield held
            return


class HintCursor:
    r"""Walks the previous chunks forward as the commit advances (bounded memory: only the
    chunks looked ahead at, and the last :data:`BEHIND` passed, are held).

    Offsets are the current file's: a previous chunk at ``offset`` is offered at ``offset +
    shift``. The shift starts at 0 and changes when the commit :meth:`reanchor`\s after bytes
    were inserted or removed: a chunk it has just cut at a true boundary, whose bytes equal a
    previous chunk's, ends where that chunk ended (the module's argument), and so do the
    previous chunks after it wherever their bytes are unchanged."""

    BEHIND = 256  # previous chunks kept after they are passed: insertions this far back are found
    AHEAD = 256  # previous chunks looked ahead at for a deletion

    def __init__(self, chunks: Iterable[PrevChunk]) -> None:
        self._chunks = iter(chunks)
        self._ahead: deque[PrevChunk] = deque()  # in previous offsets
        self._behind: deque[PrevChunk] = deque(maxlen=self.BEHIND)
        self.shift = 0
        self._passed = 0  # chunks moved behind since mark()

    def _fill(self, n: int) -> bool:
        while len(self._ahead) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                return False
            self._ahead.append(nxt)
        return True

    def _moved(self, c: PrevChunk) -> PrevChunk:
        return c if not self.shift else PrevChunk(c.offset + self.shift, c.length, c.chunk_id, c.before_zeros)

    def at(self, offset: int) -> PrevChunk | None:
        """The previous chunk starting exactly at ``offset``, if any (drops those before)."""
        offset -= self.shift
        while self._fill(1) and self._ahead[0].offset < offset:
            self._behind.append(self._ahead.popleft())
            self._passed += 1
        if self._ahead and self._ahead[0].offset == offset:
            return self._moved(self._ahead[0])
        return None

    def mark(self) -> int:
        """A point to :meth:`restore` the cursor to: the chunks passed after it (up to BEHIND
        of them) are offered again. No :meth:`reanchor` may come in between."""
        self._passed = 0
        return self.shift

    def restore(self, shift: int) -> None:
        """Offer again the chunks passed since :meth:`mark`, with the shift of then."""
        for _ in range(min(self._passed, len(self._behind))):
            self._ahead.appendleft(self._behind.pop())
        self.shift = shift

    def run(self, offset: int, accept: Callable[[PrevChunk], bool], limit: int) -> list[PrevChunk]:
        """Back-to-back previous pieces from ``offset`` that ``accept`` takes (the run stops
        at the first it refuses, or once it holds ``limit`` bytes), without dropping them."""
        if self.at(offset) is None:
            return []
        out: list[PrevChunk] = []
        pos, i = offset, 0
        while self._fill(i + 1):
            c = self._moved(self._ahead[i])
            if c.offset != pos or pos - offset >= limit or not accept(c):
                break
            out.append(c)
            pos += c.length
            i += 1
        return out

    def reanchor(self, offset: int, length: int, chunk_id: ChunkId) -> bool:
        """The commit cut the chunk ``chunk_id`` of ``length`` bytes at ``offset`` (a true
        boundary). If a previous chunk near the cursor has the same id, shift so that the
        chunks after it are offered next; returns whether one was found. The nearest in the
        stream wins (an unchanged stretch is most likely where it was)."""
        self._fill(self.AHEAD)
        held = [*self._behind, *self._ahead]
        best: tuple[int, int] | None = None  # (distance, index into held)
        for i, c in enumerate(held):
            if c.chunk_id == chunk_id and c.length == length:
                distance = abs(offset - (c.offset + self.shift))
                if best is None or distance < best[0]:
                    best = (distance, i)
        if best is None:
            return False
        found = held[best[1]]
        self._behind = deque(held[: best[1] + 1], maxlen=self.BEHIND)
        self._ahead = deque(held[best[1] + 1 :])
        self.shift = offset - found.offset
        return True
