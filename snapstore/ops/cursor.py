"""The commit's read cursor: where the next chunk starts (``pos``) and the block holding the
bytes from there (``cur``), moved along the stream piece by piece as the reader
(ops/reader.py) hands pieces over: data, zero runs and holes.

Moving into the next block carries the bytes not cut yet along (a block has room for them
before its data). With zero runs off, a hole is materialised stretch by stretch (at most
``max_size`` zeros at a time, enough to cut every chunk that starts before them), and the
middle of a long hole is stepped over: there every chunk is ``period`` zeros long.
"""

from __future__ import annotations

import queue

from snapstore.ops.blocks import Block
from snapstore.ops.inflight import InFlight
from snapstore.ops.reader import Data, Failed, Hole, Piece, Run
from snapstore.ops.streams import Segment


class Cursor(InFlight):
    def _advance(self) -> bool:
        """Move on to the next stretch of the stream: more of the hole being materialised,
        or the reader's next piece. The bytes not cut yet go along. False at the end."""
        old = self.cur
        if self.hole is not None and max(old.end, self.pos) < self.hole.end:
            self._materialise(old)
            return True
        self.hole = None
        piece = self._next_piece()
        if piece is None:
            return False
        if isinstance(piece, Failed):
            raise piece.error
        if isinstance(piece, Run):
            self._consume(final=True)  # the data before the run ends there
            assert self.pos == piece.start, "runs lie between data"
            self._queue_zeros(piece.end - piece.start)
            self.pos = piece.end
            self.progress.advance(piece.end - piece.start)
            return True
        if isinstance(piece, Hole):
            self.hole = piece.segment
            self.progress.skip(self.hole.end - self.hole.start)  # not read: no time
            self._materialise(old)
            return True
        carried_from = self.pos
        self._enter(piece, old)
        self._leave(old, piece, carried_from)
        return True

    def _enter(self, piece: Data, old: Block) -> None:
        """Make ``piece``'s block the current one, the bytes not cut yet carried over (a
        block may come in several pieces, its zero runs between them)."""
        self._carry(piece.block, old, piece.offset)
        self.cur = piece.block
        self.cur.end = piece.offset + piece.length

    def _leave(self, old: Block, piece: Data, carried_from: int) -> None:
        """Let go of the block moved out of (for good): its pin, the layout before it."""
        old.unpin()
        self.progress.advance(piece.length)
        self.layout.forget(carried_from)

    def _materialise(self, old: Block) -> None:
        """Zeros of the current hole, up to max_size of them, after the bytes not cut yet:
        enough to cut every chunk starting before them; the middle of a long hole is then
        stepped over. A hole block's second half is zeros from its allocation and is never
        written (the carry goes into its first half), so nothing needs filling."""
        assert self.hole is not None
        start = max(old.end, self.pos)
        end = min(self.hole.end, start + self.max_size)
        new = self._take_hole_block()
        new.start = start - self.max_size
        self._carry(new, old, start)
        new.end = end
        self.cur = new
        old.unpin()

    def _carry(self, new: Block, old: Block, at: int) -> None:
        """Copy the bytes not cut yet (``[pos, old.end)``) into ``new``, just before ``at``."""
        if self.pos < old.end:
            assert old.end == at, "the stream is contiguous"
            new.slice(self.pos, at)[:] = old.slice(self.pos, at)

    def _next_piece(self) -> Piece:
        """The reader's next piece; while waiting, outcomes are taken in (freeing blocks)."""
        if self.pushback:
            return self.pushback.pop()
        while True:
            piece = self.reader.next(timeout=0 if self.inflight else 0.05)
            if piece is not queue.Empty:
                return piece  # type: ignore[return-value]
            if self.inflight:
                self._drain_one()

    def _take_hole_block(self) -> Block:
        while True:
            block = self.hole_blocks.try_take()
            if block is not None:
                return block
            if self.inflight:
                self._drain_one()
            else:
                self.hole_blocks.wait()

    def _step_over_hole(self) -> None:
        """Inside a hole with at least max_size zeros ahead, every chunk is ``period``
        zeros long: step over them without materialising them."""
        if self.zero_run:
            return  # holes are zero runs: the reader hands them over as such
        hole = self._hole_at(self.pos)
        if hole is None or self.pos + self.max_size > hole.end:
            return
        steps = (hole.end - self.max_size - self.pos) // self.period + 1
        self._skip_zeros(steps * self.period, hole)

    def _skip_zeros(self, length: int, hole: Segment) -> None:
        """Record ``length`` zeros of ``hole`` from the current position, unread (the
        position may move past what is held: the next stretch starts there)."""
        self._queue_zeros(length)
        self.pos += length
