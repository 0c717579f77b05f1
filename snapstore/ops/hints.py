"""Where the previous snapshot of a file had its chunks and zero runs (pure).

A file is chunked as one byte stream (holes are zeros), and each cut depends only on the
bytes from its chunk's start to the cut. So a chunk that starts at a chunk boundary and
whose bytes are unchanged ends where it ended before, and can be confirmed by hashing the
same byte range instead of running the chunker. A zero run is a sequence of whole zero
chunks: where the same range is all zeros again (a hole, known without reading it), it
ends at a chunk boundary again and is confirmed without even hashing. The one exception is
the file's last piece, which the end of the file may have cut short: it is offered only
when the file has the same size as before (the end of the file cuts it in the same place).
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
    """Walks the previous chunks forward as the commit advances (bounded memory: only the
    chunks looked ahead at are held)."""

    def __init__(self, chunks: Iterable[PrevChunk]) -> None:
        self._chunks = iter(chunks)
        self._ahead: deque[PrevChunk] = deque()

    def _fill(self, n: int) -> bool:
        while len(self._ahead) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                return False
            self._ahead.append(nxt)
        return True

    def at(self, offset: int) -> PrevChunk | None:
        """The previous chunk starting exactly at ``offset``, if any (drops those before)."""
        while self._fill(1) and self._ahead[0].offset < offset:
            self._ahead.popleft()
        if self._ahead and self._ahead[0].offset == offset:
            return self._ahead[0]
        return None

    def run(self, offset: int, accept: Callable[[PrevChunk], bool], limit: int) -> list[PrevChunk]:
        """Back-to-back previous pieces from ``offset`` that ``accept`` takes (the run stops
        at the first it refuses, or once it holds ``limit`` bytes), without dropping them."""
        if self.at(offset) is None:
            return []
        out: list[PrevChunk] = []
        pos, i = offset, 0
        while self._fill(i + 1):
            c = self._ahead[i]
            if c.offset != pos or pos - offset >= limit or not accept(c):
                break
            out.append(c)
            pos += c.length
            i += 1
        return out
