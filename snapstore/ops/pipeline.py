"""The commit pipeline: one input file cut into chunks as a single byte stream.

A reader thread (ops/reader.py) reads the file's data into recycled blocks ahead of the
chunker and feeds the whole-file digest; holes are never read: they are zeros. The main
thread cuts chunks and submits each to a worker, which hashes it, recognises zero chunks
and chunks already stored, and compresses and stores new ones (blake3, zstd and the C
scanner release the GIL, so all of this runs in parallel). Outcomes are taken back in
stream order, so the manifest is written by the main thread alone.

Two shortcuts keep the work proportional to what changed:

- Unchanged pieces: where the previous snapshot of the file had a chunk or a zero run
  starting at the current position, its byte range is checked instead of running the
  chunker: a chunk by hashing it, a zero run by its being a hole (ops/hints.py explains why
  that gives the same chunk list). A changed chunk whose cut did not move (its worker checks
  with the byte after it) is simply a new chunk; where the cut moved the chunker takes over
  until a cut lands on a previous boundary again. The main thread waits for a block's
  confirmations only after queueing the next block's (taken back if the first fail), so
  the workers always have hashing to do.
- Zero runs (``chunker.zero_run``, on by default): the reader hands over every run of that
  many zero bytes or more (holes included) as a :class:`Run`, never as data; the data before
  it is cut to its end, the run recorded, and the data after it cut from its first byte. No
  chunk carries a hole's zeros, and none of them is hashed or compressed.
- Holes with zero runs off: each cut depends only on the ``max_size`` bytes after its
  chunk's start, so inside a hole the cuts repeat with a fixed period
  (chunker.zero_period). Only a hole's first and last ``max_size`` bytes are materialised;
  its middle is stepped over.

Memory is bounded by the block pools (whatever the file size, the thread count and the chunk
size): every chunk in flight lives in a pinned block, and the pool is sized in bytes.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from snapstore import codec
from snapstore.chunker import cut_at, is_zero, iter_cuts, zero_period
from snapstore.hashing import chunk_id
from snapstore.model import ChunkId, ChunkRef, ZeroRun
from snapstore.ops.blocks import Block, BlockPool
from snapstore.ops.hints import HintCursor, PrevChunk
from snapstore.ops.reader import Data, Failed, Hole, InputReader, Piece, Run
from snapstore.ops.streams import DigestWorker, InputFile, Layout, Segment
from snapstore.progress import Progress
from snapstore.repo import Repository
from snapstore.storage.fsio import PAGE
from snapstore.storage.snapshots import ManifestWriter

READ_SIZE = 8 * 1024 * 1024  # bytes read into a block at a time
BLOCKS = 8  # blocks in the pool at most
POOL_BYTES = BLOCKS * (4 * 1024 * 1024 + READ_SIZE)  # the pool's size with the default chunker
MIN_BLOCKS = 3  # one being cut, one being read, one for the chunks still in flight
ZEROS = b"zeros"  # what a confirmation expects of a previous zero run


class Kind(enum.Enum):
    MISMATCH = 0  # not the expected chunk, and not cut where it ended (a confirmation failed)
    ZERO = 1  # all zero bytes: recorded as a zero run
    KNOWN = 2  # already stored (or being stored by another worker)
    NEW = 3  # stored by this commit: ``stored`` bytes in a pack
    RECUT = 4  # not the expected chunk, but cut where it ended: a new chunk, not stored yet


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    chunk_id: ChunkId = b""  # of a MISMATCH too, when its bytes were hashed
    stored: int = 0
    recut: bool = False  # a confirmation whose bytes changed but whose cut did not


@dataclass(slots=True)
class _Job:
    length: int
    block: Block | None  # None: a zero run (no bytes, no worker)
    future: Future[Outcome] | None


@dataclass(slots=True)
class _Ahead:
    """A move into the next block made before the current block's run was settled."""

    left: Block  # the block moved out of, still pinned
    piece: Data  # the block moved into, as the reader handed it over
    carried_from: int  # the stream offset from which bytes were carried over
    mark: int  # the hint cursor's, to take the move back
    run: list[PrevChunk]  # the next block's run, queued
    jobs: list[_Job]


class _Claims:
    """Chunk ids a worker is compressing, so that a chunk met twice is compressed once."""

    def __init__(self) -> None:
        self._ids: set[ChunkId] = set()
        self._lock = threading.Lock()

    def claim(self, cid: ChunkId) -> bool:
        with self._lock:
            if cid in self._ids:
                return False
            self._ids.add(cid)
            return True

    def release(self, cid: ChunkId) -> None:
        with self._lock:
            self._ids.discard(cid)


class CommitPipeline:
    """Cuts one file and writes its chunk records (manifest) and new chunks (packs)."""

    def __init__(
        self,
        repo: Repository,
        writer: ManifestWriter,
        progress: Progress,
        hints: HintCursor | None,
        threads: int,
    ) -> None:
        self.repo = repo
        self.threads = threads
        self.writer = writer
        self.progress = progress
        self.hints = hints
        self.params = repo.config.chunker
        self.max_size = self.params.max_size
        self.period = zero_period(self.params)
        self.zero_run = self.params.zero_run  # 0: zeros are chunked like any bytes
        self.seg_final = False  # the data held ends where a zero run or the input ends
        self.level = repo.config.codec.level
        # Blocks hold up to max_size bytes not cut yet, then what is read (or zeros of a hole).
        self.read_size = max(READ_SIZE, self.max_size)
        block_size = self.max_size + self.read_size
        self.blocks = BlockPool(block_count(block_size), block_size)
        self.hole_blocks = BlockPool(2, 2 * self.max_size)
        self.claims = _Claims()
        self.inflight: deque[_Job] = deque()
        self.hint_failed_at = -1
        # (offset, length, id) of the bytes a failed confirmation hashed: an in-place change
        # seldom moves the cut, and then the chunker's chunk needs no second hashing.
        self.hashed: tuple[int, int, ChunkId] | None = None
        self.cut_in_a_row = 0  # chunks cut since the last confirmed one
        # Chunks cut out of step, to be looked up among the previous ones once hashed.
        self.candidates: deque[tuple[int, int, Future[Outcome]]] = deque()
        self.zero_pending = 0
        self.pushback: list[Piece] = []  # a piece taken from the reader too early, to take again
        # What the commit reports.
        self.chunk_ids: set[ChunkId] = set()
        self.refs = self.new_chunks = self.new_raw = self.new_stored = 0
        self.zero_bytes = self.confirmed = self.read_bytes = self.chunked_bytes = 0

    # -- the main loop --------------------------------------------------------------------------

    def run(self, fd: int, size: int, path: Path) -> bytes:
        """Cut the whole file; returns its BLAKE3 digest."""
        self.size = size
        self.layout = Layout(fd, size, self.zero_run)
        self.digest = DigestWorker()
        # Direct reads land behind the carry area: it must keep them page-aligned.
        self.source = InputFile(fd, path, direct=self.max_size % PAGE == 0)
        self.reader = InputReader(
            self.source,
            size,
            self.layout,
            self.blocks,
            self.max_size,
            self.read_size,
            self.digest,
            self.zero_run,
        )
        self.pos = 0  # where the next chunk starts; every byte before is accounted for
        self.hole: Segment | None = None  # the hole being materialised, stretch by stretch
        first = self.hole_blocks.try_take()
        assert first is not None
        first.start, first.end = -self.max_size, 0
        self.cur = first
        # Confirmations have their own workers: the main thread waits for them, and they must
        # not queue behind compression.
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="commit")
        self.confirm_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="confirm")
        try:
            while True:
                self._consume(final=False)
                self._step_over_hole()
                if not self._advance():
                    break
            self._consume(final=True)
            while self.inflight:
                self._drain_one()
            self._flush_zeros()
            self.read_bytes = self.reader.read_bytes
            self.reader.close()
            return self.digest.digest()
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Cancel what is still in flight (after an error) and stop the helper threads."""
        for job in self.inflight:
            if job.future is not None:
                job.future.cancel()
        self.inflight.clear()
        for piece in self.pushback:
            if isinstance(piece, Data):
                piece.block.unpin()
        self.pushback.clear()
        self.reader.close()
        self.pool.shutdown(wait=True)
        self.confirm_pool.shutdown(wait=True)
        self.digest.close()
        self.source.close()

    # -- input ----------------------------------------------------------------------------------

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
            self.progress.advance(self.hole.end - self.hole.start)
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

    def _hole_at(self, start: int) -> Segment | None:
        """The hole holding ``start``, if it is in one."""
        if start >= self.size:
            return None
        seg = self.layout.at(start)
        return seg if seg.hole else None

    def _in_hole(self, start: int, end: int) -> bool:
        hole = self._hole_at(start)
        return hole is not None and end <= hole.end

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

    # -- cutting --------------------------------------------------------------------------------

    def _consume(self, final: bool) -> None:
        """Cut chunks from the current position while their cut is certain (or ``final``:
        the data held ends there)."""
        self.seg_final = final
        while self.pos < self.cur.end:
            if self.hints is not None and self.pos != self.hint_failed_at and self._confirm():
                continue
            if not self._cut(final):
                return

    def _cut(self, final: bool) -> bool:
        block = self.cur
        start = self.pos
        hints = self.hints
        for length in iter_cuts(self.params, block.slice(self.pos, block.end), final):
            at = self.pos
            job = self._queue_chunk(length)
            if hints is None:
                continue
            self.cut_in_a_row += 1
            if hints.at(self.pos) is None and job.future is not None and _due(self.cut_in_a_row):
                self.candidates.append((at, length, job.future))
            self._reanchor()
            if hints.at(self.pos) is not None:
                self.cut_in_a_row = 0
                self.candidates.clear()
                break  # back in step with the previous snapshot
        self.chunked_bytes += self.pos - start
        return self.pos != start

    def _reanchor(self) -> None:
        """Out of step with the previous snapshot: look up the chunks cut since among the
        previous chunks near the cursor, as their workers have hashed them. One found, the
        cursor shifts past the bytes inserted or removed, and the chunk cut next is in step
        (it starts at a true boundary, where the previous chunks go on)."""
        assert self.hints is not None
        while self.candidates and self.candidates[0][2].done():
            at, length, future = self.candidates.popleft()
            outcome = future.result()
            if outcome.kind is not Kind.ZERO and self.hints.reanchor(at, length, outcome.chunk_id):
                self.candidates.clear()

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
        """Confirm the previous snapshot's pieces from the current position: chunks by hashing
        their byte ranges, zero runs by their being holes. Returns whether any was.

        While one block's confirmations are hashed, the next block's are queued too when the
        first run reaches the end of its block and the reader has the next block ready (so
        the workers never wait for the main thread): taken back if the first run fails."""
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

    def _submit_run(self) -> tuple[list[PrevChunk], list[_Job]] | None:
        """Queue the confirmation of every previous piece held from the current position."""
        assert self.hints is not None
        run = self.hints.run(self.pos, self._confirmable, self.blocks.size)
        if not run:
            return None
        jobs: list[_Job] = []
        for prev in run:
            if prev.chunk_id is None and self._in_hole(prev.offset, prev.end):
                jobs.append(self._queue_zeros(prev.length))
                self.pos += prev.length
            else:
                expected = ZEROS if prev.chunk_id is None else prev.chunk_id
                check = prev.before_zeros and self.zero_run > 0 and not self._ends_data(prev.end)
                jobs.append(self._queue_chunk(prev.length, expected, drain=False, check_cut=check))
        return run, jobs

    def _look_ahead(self) -> _Ahead | None:
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
        ahead = _Ahead(old, piece, self.pos, mark, [], [])
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

    def _undo_ahead(self, ahead: _Ahead) -> None:
        """Take back a move into the next block: its queued jobs, the cursor, the piece (the
        reader's order is kept: it is taken again next)."""
        assert self.hints is not None
        self._retract(len(ahead.jobs))
        self.hints.restore(ahead.mark)
        self.cur = ahead.left
        self.cur.end = ahead.piece.offset  # the same block, when it came in two pieces
        self.pos = ahead.carried_from
        self.pushback.append(ahead.piece)

    def _settle(
        self,
        run: list[PrevChunk],
        jobs: list[_Job],
        ahead: _Ahead | None,
    ) -> bool:
        """Wait for ``run``'s confirmations. All good: a move ahead becomes final, and True.
        A failure: it and what was queued after it are taken back, the chunker takes over
        there, and False."""
        pending = len(jobs) + (len(ahead.jobs) if ahead is not None else 0)
        for i, job in enumerate(jobs):
            if job.future is not None:
                self._drain_while(job.future, len(self.inflight) - pending)
            outcome = job.future.result() if job.future is not None else None
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
                self.chunked_bytes += run[i].length
                if outcome.kind is Kind.RECUT:
                    view = job.block.slice(run[i].offset, run[i].end)  # type: ignore[union-attr]
                    job.future = self.pool.submit(self._process, view, None, outcome.chunk_id)
            else:
                self.confirmed += 1
            self.cut_in_a_row = 0
            self.candidates.clear()
        if ahead is not None:
            self._leave(ahead.left, ahead.piece, ahead.carried_from)
        return True

    def _retract(self, count: int) -> None:
        """Take back the last ``count`` jobs queued: they were not chunks after all (a new
        chunk one of them stored stays stored: gc frees it if nothing needs it)."""
        for _ in range(count):
            job = self.inflight.pop()
            if job.future is not None and job.block is not None:
                if not job.future.cancel():
                    self._count_new(job.future.result(), job.length)
                job.block.unpin()

    # -- in flight ------------------------------------------------------------------------------

    def _ends_data(self, offset: int) -> bool:
        """Whether the data held ends at ``offset`` for certain (a run or the end follows)."""
        return offset == self.cur.end and self.seg_final

    def _queue_chunk(
        self, length: int, expected: ChunkId | None = None, drain: bool = True, check_cut: bool = False
    ) -> _Job:
        start = self.pos
        self.pos += length
        if self._in_hole(start, start + length):
            return self._queue_zeros(length)
        block = self.cur
        block.pin()
        view = block.slice(start, start + length)
        pool = self.pool if expected is None else self.confirm_pool
        known = None
        if self.hashed is not None and self.hashed[:2] == (start, length):
            known = self.hashed[2]  # the same bytes as a failed confirmation's
        if expected is None or expected is ZEROS:
            future = pool.submit(self._process, view, expected, known)
        else:  # with the byte after it, if held: enough to tell whether it still ends there
            window = block.slice(start, min(start + length + 1, block.end))
            final = self._ends_data(start + length) if self.zero_run else start + length == self.size
            future = pool.submit(self._confirm_chunk, window, length, expected, known, final, check_cut)
        job = _Job(length, block, future)
        self.inflight.append(job)
        if drain:
            while len(self.inflight) > 64:
                self._drain_one()
        return job

    def _queue_zeros(self, length: int) -> _Job:
        job = _Job(length, None, None)
        self.inflight.append(job)
        return job

    def _confirm_chunk(
        self,
        window: memoryview,
        length: int,
        expected: ChunkId,
        known: ChunkId | None,
        final: bool,
        check_cut: bool,
    ) -> Outcome:
        """On a worker: confirm that the ``length`` bytes at the start of ``window`` are the
        previous chunk ``expected``. If not, whether they still end at a cut (then they are
        the chunk the chunker would cut there: ``recut``); ``final``: they end the data.
        ``check_cut``: the same bytes confirm only if they end at a cut too (the previous
        chunk ended at a zero run, which is gone)."""
        outcome = self._process(window[:length], expected, known)
        matched = outcome.kind is not Kind.MISMATCH
        if matched and not check_cut:
            return outcome
        cut = cut_at(self.params, window, length, final) is True
        if matched:
            return outcome if cut else Outcome(Kind.MISMATCH, outcome.chunk_id)
        if not cut:
            return outcome
        if not outcome.chunk_id:  # all zeros
            return Outcome(Kind.ZERO, recut=True)
        return Outcome(Kind.RECUT, outcome.chunk_id, recut=True)

    def _process(self, view: memoryview, expected: ChunkId | None, known: ChunkId | None = None) -> Outcome:
        """On a worker: classify one chunk (zeros are not hashed); hash it, and encode and
        store it if it is new. ``expected``: ZEROS or the chunk id it must have; ``known``:
        its id, already computed from these very bytes."""
        if view[0] == 0 and view[-1] == 0 and is_zero(view):
            return Outcome(Kind.ZERO if expected in (None, ZEROS) else Kind.MISMATCH)
        if expected is ZEROS:
            return Outcome(Kind.MISMATCH)
        cid = known or chunk_id(view)
        if expected is not None and cid != expected:
            return Outcome(Kind.MISMATCH, cid)
        if self.repo.has_chunk(cid) or not self.claims.claim(cid):
            return Outcome(Kind.KNOWN, cid)
        try:
            codec_id, payload = codec.encode(view, self.level)
            stored = self.repo.put_encoded(cid, codec_id, len(view), payload)
        finally:
            self.claims.release(cid)
        return Outcome(Kind.NEW, cid, stored)

    def _drain_while(self, future: Future[Outcome], older: int) -> None:
        """Until ``future`` is done, take in the outcomes of the ``older`` jobs queued before
        it as they come: their blocks go back to the reader now, not when the main thread
        next needs one (measured: v2 and v3 commits 3-4% faster)."""
        while older > 0 and not future.done():
            head = self.inflight[0].future
            if head is not None and not head.done():
                wait((future, head), return_when=FIRST_COMPLETED)
                if not head.done():
                    return
            self._drain_one()
            older -= 1

    def _drain_one(self) -> None:
        """Take the oldest job's outcome into the manifest (and its new chunk into a pack)."""
        job = self.inflight.popleft()
        if job.future is None:
            self._zeros(job.length)
            return
        assert job.block is not None
        try:
            outcome = job.future.result()
            if outcome.kind is Kind.ZERO:
                self._zeros(job.length)
                return
            self._flush_zeros()
            self.writer.add(ChunkRef(outcome.chunk_id, job.length))
            self.refs += 1
            self.chunk_ids.add(outcome.chunk_id)
            self._count_new(outcome, job.length)
        finally:
            job.block.unpin()

    def _count_new(self, outcome: Outcome, raw_size: int) -> None:
        if outcome.kind is Kind.NEW and outcome.stored:
            self.new_chunks += 1
            self.new_raw += raw_size
            self.new_stored += outcome.stored

    def _zeros(self, length: int) -> None:
        self.zero_pending += length
        self.zero_bytes += length

    def _flush_zeros(self) -> None:
        if self.zero_pending:
            self.writer.add(ZeroRun(self.zero_pending))
            self.zero_pending = 0


def block_count(block_size: int) -> int:
    """Blocks in a commit's pool: as many as fit in POOL_BYTES (8 with the default chunker),
    never fewer than MIN_BLOCKS. Every chunk in flight lives in a block, so this bounds the
    memory of a commit in bytes whatever the chunk size (chunks of 64 MiB: 3 blocks of 128
    MiB instead of 8, 478 MiB peak RSS)."""
    return max(MIN_BLOCKS, min(BLOCKS, POOL_BYTES // block_size))


def _due(n: int) -> bool:
    """Whether the ``n``-th chunk cut in a row is looked for among the previous chunks: the
    first four, then every power of two (an edit shows within a few chunks; a file that
    shares nothing with its previous snapshot costs a handful of lookups)."""
    return n <= 4 or n & (n - 1) == 0
