"""The commit pipeline: one input file cut into chunks as a single byte stream.

A reader thread (ops/reader.py) reads the file's data into recycled blocks ahead of the
chunker and feeds the whole-file digest; holes are never read: they are zeros. The main
thread cuts chunks and submits each to a worker, which hashes it, recognises zero chunks
and chunks already stored, and compresses and stores new ones (blake3, zstd and the C
scanner release the GIL, so all of this runs in parallel). Outcomes are taken back in
stream order, so the snapshot's records are appended by the main thread alone.

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

This module holds the main loop and the chunker's part; the other parts are ops/commitstate.py
(the shared state), ops/inflight.py, ops/cursor.py, ops/confirm.py, ops/workers.py and
ops/commitstats.py.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from snapstore.chunker import iter_cuts, zero_period
from snapstore.directio import PAGE
from snapstore.ops.blocks import BlockPool
from snapstore.ops.commitstate import Batch
from snapstore.ops.commitstats import CommitStats
from snapstore.ops.confirm import Confirmation
from snapstore.ops.hints import HintCursor
from snapstore.ops.reader import Data, InputReader
from snapstore.ops.streams import STREAM_END, DigestWorker, InputFile, InputStream, Layout, Segment
from snapstore.ops.workers import ChunkWorker
from snapstore.progress import Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import PieceSink

READ_SIZE = 8 * 1024 * 1024  # bytes read into a block at a time
BLOCKS = 8  # blocks in the pool at most
POOL_BYTES = BLOCKS * (4 * 1024 * 1024 + READ_SIZE)  # the pool's size with the default chunker
MIN_BLOCKS = 3  # one being cut, one being read, one for the chunks still in flight


class CommitPipeline(Confirmation):
    """Cuts one file, appends its records to ``builder`` and stores its new chunks."""

    def __init__(
        self,
        repo: Repository,
        builder: PieceSink,
        progress: Progress,
        hints: HintCursor | None,
        threads: int,
    ) -> None:
        self.repo = repo
        self.threads = threads
        self.builder = builder
        self.progress = progress
        self.hints = hints
        self.params = repo.config.chunker
        self.max_size = self.params.max_size
        self.period = zero_period(self.params)
        self.zero_run = self.params.zero_run  # 0: zeros are chunked like any bytes
        self.seg_final = False  # the data held ends where a zero run or the input ends
        self.worker = ChunkWorker(repo, self.params, repo.config.codec.level)
        # Blocks hold up to max_size bytes not cut yet, then what is read (or zeros of a hole).
        self.read_size = max(READ_SIZE, self.max_size)
        block_size = self.max_size + self.read_size
        self.blocks = BlockPool(block_count(block_size), block_size)
        self.hole_blocks = BlockPool(2, 2 * self.max_size)
        self.inflight = deque()
        self.inflight_bytes = 0
        self.hint_failed_at = -1
        # (offset, length, id) of the bytes a failed confirmation hashed: an in-place change
        # seldom moves the cut, and then the chunker's chunk needs no second hashing.
        self.hashed = None
        self.cut_in_a_row = 0  # chunks cut since the last confirmed one
        # Chunks cut out of step, to be looked up among the previous ones once hashed.
        self.candidates = deque()
        self.zero_pending = 0
        self.pushback = []
        self.stats = CommitStats()

    # -- the main loop --------------------------------------------------------------------------

    def run(self, fd: int | InputStream, size: int, path: Path) -> bytes:
        """Cut the whole file (or stream: read to its end, its size then in ``self.size``);
        returns its BLAKE3 digest."""
        if isinstance(fd, InputStream):
            self.size = STREAM_END
            self.layout = Layout(-1, STREAM_END)
            self.source: InputFile | InputStream = fd
        else:
            self.size = size
            self.layout = Layout(fd, size, self.zero_run)
            # Direct reads land behind the carry area: it must keep them page-aligned.
            self.source = InputFile(fd, path, direct=self.max_size % PAGE == 0)
        self.segment = Segment(0, 0, False)
        self.digest = DigestWorker()
        self.reader = InputReader(
            self.source,
            self.size,
            self.layout,
            self.blocks,
            self.max_size,
            self.read_size,
            self.digest,
            self.zero_run,
        )
        self.pos = 0
        self.hole = None
        first = self.hole_blocks.try_take()
        assert first is not None
        first.start, first.end = -self.max_size, 0
        self.cur = first
        # Confirmations have their own workers: the main thread waits for them, and they must
        # not queue behind compression.
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="commit")
        self.confirm_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="confirm")
        self.batch = Batch(self.pool, self.worker.process_all)
        self.confirm_batch = Batch(self.confirm_pool, self.worker.confirm_all)
        try:
            while True:
                self._consume(final=False)
                self._step_over_hole()
                if not self._advance():
                    break
            self.size = self.reader.size  # a stream's, now that its end is read
            self._consume(final=True)
            while self.inflight:
                self._drain_one()
            self._flush_zeros()
            self.stats.read_bytes = self.reader.read_bytes
            self.reader.close()
            return self.digest.digest()
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Cancel what is still in flight (after an error) and stop the helper threads."""
        for job in self.inflight:
            if job.batch is not None and job.batch.future is not None:
                job.batch.future.cancel()
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

    # -- cutting --------------------------------------------------------------------------------

    def _consume(self, final: bool) -> None:
        """Cut chunks from the current position while their cut is certain (or ``final``:
        the data held ends there)."""
        self.seg_final = final
        while self.pos < self.cur.end:
            if self.hints is not None and self.pos != self.hint_failed_at and self._confirm():
                continue
            if not self._cut(final):
                break
        self._submit_queued()

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
            if hints.at(self.pos) is None and job.batch is not None and _due(self.cut_in_a_row):
                self.candidates.append((at, length, job))
                self._submit_queued()  # looked up as soon as it is hashed
            self._reanchor()
            if hints.at(self.pos) is not None:
                self.cut_in_a_row = 0
                self.candidates.clear()
                break  # back in step with the previous snapshot
        self.stats.chunked_bytes += self.pos - start
        return self.pos != start


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
