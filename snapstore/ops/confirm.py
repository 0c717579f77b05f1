"""Confirmation against the previous snapshot (ops/hints.py explains why it gives the chunk
list a full chunking gives): where the previous snapshot had a chunk or a zero run starting
at the current position, its byte range is checked instead of running the chunker, a chunk
by hashing it, a zero run by its being a hole.

A *run* here is a list of back-to-back previous pieces queued for confirmation at once. The
main thread waits for a block's run only after queueing the next block's (the look-ahead),
so the workers always have hashing to do; a failure takes back what was queued after it
(the undo), and the chunker takes over where it failed. A changed chunk whose cut did not
move (its worker checks with the byte after it) is simply a new chunk. Out of step, the
chunks cut since are looked up among the previous ones (reanchoring).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

from snapstore.ops.blocks import Block
from snapstore.ops.commitstate import Batch, Job
from snapstore.ops.cursor import Cursor
from snapstore.ops.hints import PrevChunk
from snapstore.ops.reader import Data, Piece
from snapstore.ops.workers import ZEROS, Kind


@dataclass(slots=True)
class Ahead:
    """A move into the next block made before the current block's run was settled."""

    left: Block  # the block moved out of, still pinned
    piece: Data  # the block moved into, as the reader handed it over
    carried_from: int  # the stream offset from which bytes were carried over
    mark: int  # the hint cursor's, to take the move back
    run: list[PrevChunk]  # the next block's run, queued
    jobs: list[Job]


class Confirmation(Cursor):
    def _confirmable(self, prev: PrevChunk) -> bool:
        """A previous zero run can be confirmed where it is a hole, or once its bytes are
        held (hashed: are they still zeros?); a previous chunk once its bytes are held,
        unless they are a hole (zeros never match a stored chunk).

        With zero runs on, the reader finds the runs: only chunks are confirmed, and a chunk
        that had a run after it only where a run follows again or once the byte after it is
        held (its worker checks that the chunker would cut there without the run)."""
        if self.zero_run:
            if prev.chunk_id is None or prev.end > self.cur.end:
                return False
            return not (prev.before_zeros and prev.end == self.cur.end and not self.seg_final)
        if self._in_hole(prev.offset, prev.end):
            return prev.chunk_id is None
        return prev.end <= self.cur.end

    def _confirm(self) -> bool:
        """Confirm the previous snapshot's pieces from the current position. Returns whether
        any was. While one block's run is hashed, the next block's is queued too when the
        first run reaches the end of its block and the reader has the next block ready:
        taken back if the first run fails."""
        assert self.hints is not None
        start = self.pos
        pending = self._submit_run()
        if pending is None:
            return False
        while True:
            ahead = self._look_ahead()
            if not self._settle(*pending, ahead) or ahead is None:
                return self.pos != start
            pending = ahead.run, ahead.jobs

    def _submit_run(self) -> tuple[list[PrevChunk], list[Job]] | None:
        """Queue the confirmation of every previous piece held from the current position."""
        assert self.hints is not None
        run = self.hints.run(self.pos, self._confirmable, self.blocks.size)
        if not run:
            return None
        jobs: list[Job] = []
        for prev in run:
            if prev.chunk_id is None and self._in_hole(prev.offset, prev.end):
                jobs.append(self._queue_zeros(prev.length))
                self.pos += prev.length
            else:
                expected = ZEROS if prev.chunk_id is None else prev.chunk_id
                check = prev.before_zeros and self.zero_run > 0 and not self._ends_data(prev.end)
                jobs.append(self._queue_chunk(prev.length, expected, drain=False, check_cut=check))
        self._submit_queued()
        return run, jobs

    def _look_ahead(self) -> Ahead | None:
        """If the run just queued leaves nothing else to do in the current block (the next
        previous chunk is only partly held) and the reader's next block follows it, move into
        that block for now and queue its run. Settling the first run makes the move final or
        takes it back."""
        assert self.hints is not None
        old = self.cur
        if self.hole is not None or old.end - self.pos >= self.max_size:
            return None
        mark = self.hints.mark()  # the run just queued may fail: its chunks stay on offer
        nxt = self.hints.at(self.pos)
        needs_more = nxt is not None and nxt.end > old.end and not self._in_hole(nxt.offset, nxt.end)
        piece = self._next_block_now(old) if needs_more else None
        if piece is None:
            self.hints.restore(mark)
            return None
        ahead = Ahead(old, piece, self.pos, mark, [], [])
        self._enter(piece, old)
        queued = self._submit_run()
        if queued is None:  # cannot happen (the next chunk is held now), but stay safe
            self._undo_ahead(ahead)
            return None
        ahead.run, ahead.jobs = queued
        return ahead

    def _next_block_now(self, old: Block) -> Data | None:
        """The reader's next piece if it is ready and is the data right after ``old``; else
        None (a piece taken is kept to be taken again)."""
        taken = self.pushback.pop() if self.pushback else self.reader.next(timeout=0)
        if taken is queue.Empty:
            return None
        piece: Piece = taken  # type: ignore[assignment]
        if isinstance(piece, Data) and piece.offset == old.end:
            return piece
        self.pushback.append(piece)
        return None

    def _undo_ahead(self, ahead: Ahead) -> None:
        """Take back a move into the next block: its queued jobs, the cursor, the piece (the
        reader's order is kept: it is taken again next)."""
        assert self.hints is not None
        self._retract(len(ahead.jobs))
        self.hints.restore(ahead.mark)
        self.cur = ahead.left
        self.cur.end = ahead.piece.offset  # the same block, when it came in two pieces
        self.pos = ahead.carried_from
        self.pushback.append(ahead.piece)

    def _settle(self, run: list[PrevChunk], jobs: list[Job], ahead: Ahead | None) -> bool:
        """Wait for ``run``'s confirmations. All good: a move ahead becomes final, and True.
        A failure: it and what was queued after it are taken back, the chunker takes over
        there, and False."""
        pending = len(jobs) + (len(ahead.jobs) if ahead is not None else 0)
        for i, job in enumerate(jobs):
            if job.batch is not None and not job.done():
                self._drain_while(job, len(self.inflight) - pending)
            outcome = job.outcome() if job.batch is not None else None
            if outcome is not None and outcome.kind is Kind.MISMATCH:
                if outcome.chunk_id:
                    self.hashed = (run[i].offset, run[i].length, outcome.chunk_id)
                if ahead is not None:
                    self._undo_ahead(ahead)
                self._retract(len(jobs) - i)
                self.pos = self.hint_failed_at = run[i].offset  # the chunker takes over here
                return False
            if outcome is not None and outcome.recut:
                # Changed, but cut in the same place: a chunk the chunker would have cut too,
                # and the pieces after it are still in step.
                self.stats.chunked_bytes += run[i].length
                if outcome.kind is Kind.RECUT:
                    view = job.block.slice(run[i].offset, run[i].end)  # type: ignore[union-attr]
                    prev = run[i].chunk_id
                    if prev is None or not self.worker.repo.deltas:
                        job.batch = Batch(self.pool, self.worker.process_all)
                        job.index = job.batch.add((view, None, outcome.chunk_id), run[i].length)
                    else:  # stored as a delta against what stood here, where that pays
                        job.batch = Batch(self.pool, self.worker.process_changed)
                        job.index = job.batch.add((view, outcome.chunk_id, prev), run[i].length)
                    job.batch.submit()
            else:
                self.stats.confirmed += 1
            self.cut_in_a_row = 0
            self.candidates.clear()
        if ahead is not None:
            self._leave(ahead.left, ahead.piece, ahead.carried_from)
        return True

    def _reanchor(self) -> None:
        """Out of step with the previous snapshot: look up the chunks cut since among the
        previous chunks near the cursor, as their workers have hashed them. One found, the
        cursor shifts past the bytes inserted or removed, and the chunk cut next is in step
        (it starts at a true boundary, where the previous chunks go on)."""
        assert self.hints is not None
        while self.candidates and self.candidates[0][2].done():
            at, length, job = self.candidates.popleft()
            outcome = job.outcome()
            if outcome.kind is not Kind.ZERO and self.hints.reanchor(at, length, outcome.chunk_id):
                self.candidates.clear()
