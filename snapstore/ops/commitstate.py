"""The state the parts of the commit pipeline share, and the questions every part asks of it
(where the holes are, where the data held ends).

The pipeline is one object built in layers, one module each (docs/FORMAT.md glossary:
"stream", "block", "piece", "run", "segment", "layout"):

- this module: the state, declared once;
- ops/inflight.py: the jobs in flight, taken back in stream order into the snapshot;
- ops/cursor.py: the read cursor, moving from block to block and through holes;
- ops/confirm.py: confirmation against the previous snapshot, with look-ahead and undo;
- ops/pipeline.py: the main loop and the chunker, building the pipeline from the above.

The work done on each chunk runs on worker threads (ops/workers.py); what is counted for the
commit's report is ops/commitstats.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from snapstore.model import ChunkerParams, ChunkId
from snapstore.ops.blocks import Block, BlockPool
from snapstore.ops.commitstats import CommitStats
from snapstore.ops.hints import HintCursor
from snapstore.ops.reader import InputReader, Piece
from snapstore.ops.streams import DigestWorker, InputFile, InputStream, Layout, Segment
from snapstore.ops.workers import ChunkWorker, Outcome
from snapstore.progress import Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import PieceSink

BATCH_BYTES = 64 * 1024  # a batch is handed to the workers once it holds this many bytes
BATCH_CHUNKS = 256  # or this many chunks


class Batch:
    """Chunks queued together as one task of a worker pool: with small chunks (4 KiB: 256 to
    the MiB) one task and one Future per chunk cost more than hashing the chunk. A batch is
    submitted once full, when the pipeline is about to wait, or when an outcome is asked of
    it; its task returns the outcomes of its chunks in order."""

    __slots__ = ("args", "fn", "future", "nbytes", "outcomes", "pool")

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[[list[Any]], list[Outcome]]) -> None:
        self.pool = pool
        self.fn = fn
        self.args: list[Any] = []  # one tuple of arguments per chunk
        self.nbytes = 0
        self.future: Future[list[Outcome]] | None = None
        self.outcomes: list[Outcome] | None = None  # the task's result, once taken

    def add(self, args: tuple[Any, ...], length: int) -> int:
        """Queue one chunk; returns its index in the batch."""
        self.args.append(args)
        self.nbytes += length
        return len(self.args) - 1

    def full(self) -> bool:
        return self.nbytes >= BATCH_BYTES or len(self.args) >= BATCH_CHUNKS

    def submit(self) -> None:
        if self.future is None and self.args:
            self.future = self.pool.submit(self.fn, self.args)

    def done(self) -> bool:
        return self.outcomes is not None or (self.future is not None and self.future.done())

    def result(self) -> list[Outcome]:
        if self.outcomes is None:
            self.submit()
            assert self.future is not None
            self.outcomes = self.future.result()
        return self.outcomes


@dataclass(slots=True)
class Job:
    """One piece of the stream queued for the snapshot: a chunk (its worker's outcome to come,
    the ``index``-th of ``batch``) or a zero run."""

    length: int
    block: Block | None  # None: a zero run (no bytes, no worker)
    batch: Batch | None
    index: int = 0

    def done(self) -> bool:
        return self.batch is not None and self.batch.done()

    def outcome(self) -> Outcome:
        assert self.batch is not None
        return self.batch.result()[self.index]


class CommitState:
    """Attributes of a commit pipeline (set by CommitPipeline.__init__ and run)."""

    # what the commit is given
    repo: Repository
    builder: PieceSink
    progress: Progress
    hints: HintCursor | None
    threads: int
    params: ChunkerParams
    max_size: int
    period: int  # of the cuts inside a hole, with zero runs off (chunker.zero_period)
    zero_run: int  # 0: zeros are chunked like any bytes
    read_size: int
    # the input
    size: int
    layout: Layout
    segment: Segment  # the last segment of the layout looked at
    digest: DigestWorker
    source: InputFile | InputStream
    reader: InputReader
    blocks: BlockPool
    hole_blocks: BlockPool
    pushback: list[Piece]  # a piece taken from the reader too early, to take again
    # the cursor
    pos: int  # where the next chunk starts; every byte before is accounted for
    cur: Block  # the block being cut
    hole: Segment | None  # the hole being materialised, stretch by stretch
    seg_final: bool  # the data held ends where a zero run or the input ends
    # in flight
    worker: ChunkWorker
    pool: ThreadPoolExecutor
    confirm_pool: ThreadPoolExecutor
    inflight: deque[Job]
    inflight_bytes: int  # of the chunks in flight
    batch: Batch  # chunks being queued for ``pool`` (not submitted yet)
    confirm_batch: Batch  # confirmations being queued for ``confirm_pool``
    zero_pending: int
    # confirmation
    hint_failed_at: int
    hashed: tuple[int, int, ChunkId] | None
    cut_in_a_row: int
    candidates: deque[tuple[int, int, Job]]
    stats: CommitStats

    def _consume(self, final: bool) -> None:
        """Cut chunks from the current position (ops/pipeline.py)."""
        raise NotImplementedError

    def _hole_at(self, start: int) -> Segment | None:
        """The hole holding ``start``, if it is in one."""
        if start >= self.size:
            return None
        seg = self.segment  # asked of the layout (and its lock) once per segment, not per chunk
        if not seg.start <= start < seg.end:
            seg = self.segment = self.layout.at(start)
        return seg if seg.hole else None

    def _in_hole(self, start: int, end: int) -> bool:
        hole = self._hole_at(start)
        return hole is not None and end <= hole.end

    def _ends_data(self, offset: int) -> bool:
        """Whether the data held ends at ``offset`` for certain (a run or the end follows)."""
        return offset == self.cur.end and self.seg_final
