"""Where the previous snapshot of a file had its chunks (pure).

A file is chunked as one byte stream (holes are zeros), and each cut depends only on the
bytes from its chunk's start. So a chunk that starts at a chunk boundary and whose bytes
are unchanged ends where it ended before, and can be confirmed by hashing the same byte
range instead of running the chunker. The one exception is the file's last chunk, which
the end of the file may have cut short: it is never offered for confirmation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from snapstore.model import ChunkId, ChunkRef, ManifestRecord, ZeroRun


@dataclass(frozen=True)
class PrevChunk:
    offset: int
    length: int
    chunk_id: ChunkId


def confirmable_chunks(records: Iterable[ManifestRecord]) -> Iterator[PrevChunk]:
    """Chunks of the (first) entry in ``records`` that may be confirmed in place, in order."""
    offset = 0
    held: PrevChunk | None = None
    for record in records:
        if isinstance(record, ChunkRef):
            if held is not None:
                yield held
            held = PrevChunk(offset, record.raw_size, record.chunk_id)
            offset += record.raw_size
        elif isinstance(record, ZeroRun):
            offset += record.length
        elif offset or held is not None:
            return  # EntryEnd: the last chunk may have been cut by the end of the file


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

    def run(self, offset: int, end: int, limit: int) -> list[PrevChunk]:
        """Back-to-back previous chunks from ``offset`` that end by ``end`` (at most
        ``limit`` bytes), without dropping them."""
        if self.at(offset) is None:
            return []
        out: list[PrevChunk] = []
        pos, i = offset, 0
        while self._fill(i + 1):
            c = self._ahead[i]
            if c.offset != pos or c.offset + c.length > end or pos - offset >= limit:
                break
            out.append(c)
            pos += c.length
            i += 1
        return out
