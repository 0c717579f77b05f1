"""The commit's jobs in flight: chunks queued to the workers (ops/workers.py) and zero runs,
taken back in stream order into the snapshot being built, so that the snapshot's records are
appended by the main thread alone. Adjacent zeros become one zero run."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait

from snapstore.model import ChunkId
from snapstore.ops.commitstate import Batch, CommitState, Job
from snapstore.ops.workers import ZEROS, Kind

MAX_INFLIGHT_BYTES = 64 * 1024 * 1024  # of chunks queued before the oldest are taken back
MAX_INFLIGHT = 1 << 16  # jobs queued before the oldest are taken back (zero runs included)


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
        known = None
        if self.hashed is not None and self.hashed[:2] == (start, length):
            known = self.hashed[2]  # the same bytes as a failed confirmation's
        if expected is None or expected is ZEROS:
            batch = self.batch
            index = batch.add((block.slice(start, start + length), expected, known), length)
        else:  # with the byte after it, if held: enough to tell whether it still ends there
            window = block.slice(start, min(start + length + 1, block.end))
            final = self._ends_data(start + length) if self.zero_run else start + length == self.size
            batch = self.confirm_batch
            index = batch.add((window, length, expected, known, final, check_cut), length)
        if batch.full():
            self._submit(batch)
        job = Job(length, block, batch, index)
        self.inflight.append(job)
        self.inflight_bytes += length
        if drain:
            while self.inflight_bytes > MAX_INFLIGHT_BYTES or len(self.inflight) > MAX_INFLIGHT:
                self._drain_one()
        return job

    def _submit(self, batch: Batch) -> None:
        """Hand ``batch`` to its workers; chunks queued next go into a new batch."""
        batch.submit()
        if batch is self.batch:
            self.batch = Batch(batch.pool, batch.fn)
        elif batch is self.confirm_batch:
            self.confirm_batch = Batch(batch.pool, batch.fn)

    def _submit_queued(self) -> None:
        """Hand every chunk queued so far to the workers (before the main thread waits)."""
        if self.batch.args:
            self._submit(self.batch)
        if self.confirm_batch.args:
            self._submit(self.confirm_batch)

    def _queue_zeros(self, length: int) -> Job:
        job = Job(length, None, None)
        self.inflight.append(job)
        return job

    def _retract(self, count: int) -> None:
        """Take back the last ``count`` jobs queued: they were not chunks after all (a new
        chunk one of them stored stays stored: gc frees it if nothing needs it). A batch
        taken back whole is cancelled if it has not started; a chunk's block stays pinned
        until its worker is done with it."""
        taken: list[Job] = []
        for _ in range(count):
            job = self.inflight.pop()
            batch = job.batch
            if batch is None or job.block is None:
                continue
            self.inflight_bytes -= job.length
            if batch.future is None:  # not submitted: the chunk was the last one queued in it
                assert job.index == len(batch.args) - 1
                batch.args.pop()
                batch.nbytes -= job.length
                job.block.unpin()
            else:
                taken.append(job)
        whole = {id(job.batch) for job in taken if job.index == 0}
        for job in taken:
            assert job.batch is not None and job.batch.future is not None and job.block is not None
            if not (id(job.batch) in whole and job.batch.future.cancel()):
                self.stats.count_new(job.outcome(), job.length)
            job.block.unpin()

    def _drain_while(self, job: Job, older: int) -> None:
        """Until ``job`` is done, take in the outcomes of the ``older`` jobs queued before
        it as they come: their blocks go back to the reader now, not when the main thread
        next needs one (measured: v2 and v3 commits 3-4% faster)."""
        assert job.batch is not None
        if not job.done():
            self._submit_queued()
        while older > 0 and not job.done():
            head = self.inflight[0]
            if head.batch is not None and not head.done():
                assert head.batch.future is not None and job.batch.future is not None
                wait((job.batch.future, head.batch.future), return_when=FIRST_COMPLETED)
                if not head.done():
                    return
            self._drain_one()
            older -= 1

    def _drain_one(self) -> None:
        """Take the oldest job's outcome into the snapshot (its new chunk is in a pack)."""
        job = self.inflight.popleft()
        if job.batch is None:
            self._zeros(job.length)
            return
        assert job.block is not None
        self.inflight_bytes -= job.length
        try:
            outcome = job.outcome()
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
