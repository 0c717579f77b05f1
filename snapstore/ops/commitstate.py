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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from snapstore.model import ChunkerParams, ChunkId
from snapstore.ops.blocks import Block, BlockPool
from snapstore.ops.commitstats import CommitStats
from snapstore.ops.hints import HintCursor
from snapstore.ops.reader import InputReader, Piece
from snapstore.ops.streams import DigestWorker, InputFile, InputStream, Layout, Segment
from snapstore.ops.workers import ChunkWorker, Outcome
from snapstore.progress import Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import SnapshotBuilder


@dataclass(slots=True)
class Job:
    """One piece of the stream queued for the snapshot: a chunk (its worker's outcome to come)
    or a zero run."""

    length: int
    block: Block | None  # None: a zero run (no bytes, no worker)
    future: Future[Outcome] | None


class CommitState:
    """Attributes of a commit pipeline (set by CommitPipeline.__init__ and run)."""

    # what the commit is given
    repo: Repository
    builder: SnapshotBuilder
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
    zero_pending: int
    # confirmation
    hint_failed_at: int
    hashed: tuple[int, int, ChunkId] | None
    cut_in_a_row: int
    candidates: deque[tuple[int, int, Future[Outcome]]]
    stats: CommitStats

    def _consume(self, final: bool) -> None:
        """Cut chunks from the current position (ops/pipeline.py)."""
        raise NotImplementedError

    def _hole_at(self, start: int) -> Segment | None:
        """The hole holding ``start``, if it is in one."""
        if start >= self.size:
            return None
        seg = self.layout.at(start)
        return seg if seg.hole else None

    def _in_hole(self, start: int, end: int) -> bool:
        hole = self._hole_at(start)
        return hole is not None and end <= hole.end

    def _ends_data(self, offset: int) -> bool:
        """Whether the data held ends at ``offset`` for certain (a run or the end follows)."""
        return offset == self.cur.end and self.seg_final
