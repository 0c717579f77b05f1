"""Appending new chunks to packs, indexing them only once they are durable.

The write order of docs/FORMAT.md, without making the writers wait for the disk: chunk
records are appended to the open pack (by any thread, one at a time); every
CHECKPOINT_BYTES, and when the pack reaches its target size and is sealed, a background
thread fsyncs the pack and only then puts the chunks appended before that point into the
index, in one transaction. Until they are indexed, chunks are found in ``pending``, so no
chunk is stored twice. A failure on the background thread is raised by the next append or
flush.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING

from snapstore.model import Buffer, ChunkId, ChunkLocation
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, PackWriting

if TYPE_CHECKING:  # imported when the first pack is sealed: readers (snap log) never need it
    from concurrent.futures import Future, ThreadPoolExecutor

CHECKPOINT_BYTES = 16 * 1024 * 1024  # index the open pack this often (resumable commits)
_MAX_QUEUED = 2  # durability steps waiting: bounds the bytes not yet durable


class PackAppender:
    def __init__(self, packs: Packs, index: Index, pack_target_size: int) -> None:
        self._packs = packs
        self._index = index
        self._target = pack_target_size
        self._lock = threading.Lock()
        self._pack: PackWriting | None = None
        self._checkpointed = 0  # size of the open pack at its last checkpoint
        self._unindexed: list[ChunkId] = []  # appended to the open pack since then
        self.pending: dict[ChunkId, ChunkLocation] = {}  # appended, not yet indexed
        self._worker: ThreadPoolExecutor | None = None
        self._steps: deque[Future[None]] = deque()

    def get(self, chunk_id: ChunkId) -> ChunkLocation | None:
        return self.pending.get(chunk_id)

    def append(self, chunk_id: ChunkId, codec: int, raw_size: int, payload: Buffer) -> int:
        """Append one encoded chunk unless it is pending already; returns the bytes stored."""
        with self._lock:
            self._check_steps(wait=len(self._steps) >= _MAX_QUEUED)
            if chunk_id in self.pending:
                return 0
            if self._pack is None:
                self._pack = self._packs.create()
                self._checkpointed = 0
            loc = self._pack.append(chunk_id, codec, raw_size, payload)
            self.pending[chunk_id] = loc
            self._unindexed.append(chunk_id)
            if self._pack.size >= self._target:
                self._schedule(seal=True)
            elif self._pack.checkpoints and self._pack.size - self._checkpointed >= CHECKPOINT_BYTES:
                self._schedule(seal=False)
            return loc.stored_size

    def flush(self) -> None:
        """Seal the open pack and wait until everything appended is durable and indexed."""
        with self._lock:
            if self._pack is not None:
                self._schedule(seal=True)
        while True:
            with self._lock:
                if not self._steps:
                    return
                step = self._steps[0]
            step.result()
            with self._lock:
                if self._steps and self._steps[0] is step:
                    self._steps.popleft()

    def abort(self) -> None:
        """Drop what is not durable and indexed (a failed commit): wait for the steps under
        way (their chunks stay indexed, a retry reuses them), then drop the open pack, or
        after a checkpoint only the records appended since."""
        for step in list(self._steps):
            with suppress(Exception):
                step.result()
        with self._lock:
            self._steps.clear()
            if self._pack is not None:
                self._pack.abort()
                self._pack = None
            self._unindexed = []
            self.pending.clear()

    def close(self) -> None:
        self.abort()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    # -- under the lock -------------------------------------------------------------------------

    def _schedule(self, *, seal: bool) -> None:
        pack = self._pack
        assert pack is not None
        ids, self._unindexed = self._unindexed, []
        upto = self._checkpointed = pack.size
        if seal:
            self._pack = None
        if self._worker is None:
            from concurrent.futures import ThreadPoolExecutor

            self._worker = ThreadPoolExecutor(1, thread_name_prefix="snap-durable")
        self._steps.append(self._worker.submit(self._make_durable, pack, ids, upto, seal))

    def _check_steps(self, *, wait: bool) -> None:
        """Raise a background failure; with ``wait``, wait for the oldest step first."""
        while self._steps and (wait or self._steps[0].done()):
            self._steps.popleft().result()
            wait = False

    # -- on the background thread ---------------------------------------------------------------

    def _make_durable(self, pack: PackWriting, ids: list[ChunkId], upto: int, seal: bool) -> None:
        if seal:
            try:
                pack.seal()
            except BaseException:
                pack.abort()  # keep only what the index points at (frees a full disk)
                raise
        else:
            pack.sync(upto)
        with self._index.write() as w:
            for chunk_id in ids:
                loc = self.pending[chunk_id]
                old = w.get(chunk_id)  # stored again: its old pack could not be read
                w.put(chunk_id, loc if old is None else replace(loc, refcount=old.refcount))
        pack.indexed_size = max(pack.indexed_size, upto)  # what an abort must keep
        for chunk_id in ids:
            self.pending.pop(chunk_id, None)
