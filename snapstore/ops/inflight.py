"""The commit's jobs in flight: chunks queued to the workers (ops/workers.py) and zero runs,
taken back in stream order into the snapshot being built, so that the snapshot's records are
appended by the main thread alone. Adjacent zeros become one zero run."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait

from snapstore.model import ChunkId
from snapstore.ops.commitstate import CommitState, Job
from snapstore.ops.workers import ZEROS, Kind, Outcome

MAX_INFLIGHT = 64  # jobs queued before the oldest are taken back


class InFlight(CommitState):
    def _queue_chunk(
        self, length: int, expected: ChunkId | None = None, drain: bool = True, check_cut: bool = False
    ) -> Job:
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
            future = pool.submit(self.worker.process, view, expected, known)
        else:  # with the byte after it, if held: enough to tell whether it still ends there
            window = block.slice(start, min(start + length + 1, block.end))
            final = self._ends_data(start + length) if self.zero_run else start + length == self.size
            future = pool.submit(self.worker.confirm_chunk, window, length, expected, known, final, check_cut)
        job = Job(length, block, future)
        self.inflight.append(job)
        if drain:
            while len(self.inflight) > MAX_INFLIGHT:
                self._drain_one()
        return job

    def _queue_zeros(self, length: int) -> Job:
        job = Job(length, None, None)
        self.inflight.append(job)
        return job

    def _retract(self, count: int) -> None:
        """Take back the last ``count`` jobs queued: they were not chunks after all (a new
        chunk one of them stored stays stored: gc frees it if nothing needs it)."""
        for _ in range(count):
            job = self.inflight.pop()
            if job.future is not None and job.block is not None:
                if not job.future.cancel():
                    self.stats.count_new(job.future.result(), job.length)
                job.block.unpin()

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
        """Take the oldest job's outcome into the snapshot (its new chunk is in a pack)."""
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
            self.builder.add_chunk(outcome.chunk_id, job.length)
            self.stats.count_new(outcome, job.length)
        finally:
            job.block.unpin()

    def _zeros(self, length: int) -> None:
        self.zero_pending += length
        self.stats.zero_bytes += length

    def _flush_zeros(self) -> None:
        if self.zero_pending:
            self.builder.add_zeros(self.zero_pending)
            self.zero_pending = 0
