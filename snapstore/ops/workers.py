"""What the commit's workers do with one chunk, on a thread pool: classify it (zeros,
already stored, new), hash it, and compress and store a new one; or confirm that a byte
range is still a previous snapshot's chunk (docs/FORMAT.md, "confirmation").

blake3, zstd and the C scanner release the GIL, so workers run in parallel. A worker only
reads its chunk's bytes (in a pinned block) and returns an :class:`Outcome`; the main thread
takes outcomes back in stream order (ops/inflight.py). Chunks come in batches
(ops/commitstate.py, Batch): a batch's chunks are looked up in the index in one transaction.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

from snapstore import codec
from snapstore.chunker import cut_at, is_zero
from snapstore.hashing import chunk_id
from snapstore.model import ChunkerParams, ChunkId
from snapstore.repo import Repository

ZEROS = ChunkId(b"zeros")  # what a confirmation expects of a previous zero run
NO_ID = ChunkId(b"")  # an outcome whose bytes were not hashed


# The arguments of one chunk's confirm_chunk: window, length, expected, known, final, check_cut.
ConfirmCall = tuple[memoryview, int, ChunkId, ChunkId | None, bool, bool]


class Kind(enum.Enum):
    MISMATCH = 0  # not the expected chunk, and not cut where it ended (a confirmation failed)
    ZERO = 1  # all zero bytes: recorded as a zero run
    KNOWN = 2  # already stored (or being stored by another worker)
    NEW = 3  # stored by this commit: ``stored`` bytes in a pack
    RECUT = 4  # not the expected chunk, but cut where it ended: a new chunk, not stored yet


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    chunk_id: ChunkId = NO_ID  # of a MISMATCH too, when its bytes were hashed
    stored: int = 0
    recut: bool = False  # a confirmation whose bytes changed but whose cut did not


class Claims:
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


class ChunkWorker:
    """The work done on a worker thread for one chunk (shared by every worker of a commit)."""

    def __init__(self, repo: Repository, params: ChunkerParams, level: int) -> None:
        self.repo = repo
        self.params = params
        self.level = level
        self.claims = Claims()

    def process_all(self, calls: list[tuple[memoryview, ChunkId | None, ChunkId | None]]) -> list[Outcome]:
        """:meth:`process` for each chunk of a batch, in order: the chunks are looked up in
        the index in one transaction (a lookup per chunk costs twice as much as hashing a
        4 KiB chunk)."""
        return self._finish_all([view for view, _, _ in calls], [self._identify(*call) for call in calls])

    def process_changed(self, calls: list[tuple[memoryview, ChunkId, ChunkId]]) -> list[Outcome]:
        """Store each changed chunk of a batch (its id ``known``) that stands where the
        previous snapshot had ``prev``: tried as a delta against ``prev``'s keyframe where
        the repository stores deltas (docs/FORMAT.md, "delta records")."""
        found = self.repo.has_chunks([known for _, known, _ in calls])
        return [
            self._finish(view, known, indexed, prev)
            for (view, known, prev), indexed in zip(calls, found, strict=True)
        ]

    def confirm_all(self, calls: list[ConfirmCall]) -> list[Outcome]:
        """:meth:`confirm_chunk` for each chunk of a batch, in order (one index lookup)."""
        views = [window[:length] for window, length, *_ in calls]
        found = [self._identify(view, call[2], call[3]) for view, call in zip(views, calls, strict=True)]
        outcomes = self._finish_all(views, found)
        return [
            self._confirmed(window, length, final, check_cut, outcome)
            for (window, length, _, _, final, check_cut), outcome in zip(calls, outcomes, strict=True)
        ]

    def _finish_all(self, views: list[memoryview], found: list[Outcome | ChunkId]) -> list[Outcome]:
        cids = [f for f in found if not isinstance(f, Outcome)]
        stored = iter(self.repo.has_chunks(cids) if cids else ())
        return [
            f if isinstance(f, Outcome) else self._finish(view, f, next(stored))
            for view, f in zip(views, found, strict=True)
        ]

    def confirm_chunk(
        self,
        window: memoryview,
        length: int,
        expected: ChunkId,
        known: ChunkId | None,
        final: bool,
        check_cut: bool,
    ) -> Outcome:
        """Confirm that the ``length`` bytes at the start of ``window`` are the previous
        chunk ``expected``. If not, whether they still end at a cut (then they are the chunk
        the chunker would cut there: ``recut``); ``final``: they end the data.
        ``check_cut``: the same bytes confirm only if they end at a cut too (the previous
        chunk ended at a zero run, which is gone)."""
        outcome = self.process(window[:length], expected, known)
        return self._confirmed(window, length, final, check_cut, outcome)

    def _confirmed(
        self, window: memoryview, length: int, final: bool, check_cut: bool, outcome: Outcome
    ) -> Outcome:
        """:meth:`confirm_chunk`, given what :meth:`process` made of the chunk's bytes."""
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

    def process(self, view: memoryview, expected: ChunkId | None, known: ChunkId | None = None) -> Outcome:
        """Classify one chunk (zeros are not hashed); hash it, and encode and store it if it
        is new. ``expected``: ZEROS or the chunk id it must have; ``known``: its id, already
        computed from these very bytes."""
        found = self._identify(view, expected, known)
        if isinstance(found, Outcome):
            return found
        return self._finish(view, found, False)

    def _identify(
        self, view: memoryview, expected: ChunkId | None, known: ChunkId | None
    ) -> Outcome | ChunkId:
        """The outcome of a chunk that is zeros or not the one expected; else its id."""
        if view[0] == 0 and view[-1] == 0 and is_zero(view):
            return Outcome(Kind.ZERO if expected in (None, ZEROS) else Kind.MISMATCH)
        if expected is ZEROS:
            return Outcome(Kind.MISMATCH)
        cid = known or chunk_id(view)
        if expected is not None and cid != expected:
            return Outcome(Kind.MISMATCH, cid)
        return cid

    def _finish(self, view: memoryview, cid: ChunkId, indexed: bool, prev: ChunkId | None = None) -> Outcome:
        """Store the chunk ``cid`` unless it is stored (``indexed``: found by a batch's lookup;
        if not, it is looked up again, as another worker may have stored it since).
        ``prev``: the previous snapshot's chunk at its place, if known."""
        if indexed or self.repo.has_chunk(cid) or not self.claims.claim(cid):
            return Outcome(Kind.KNOWN, cid)
        try:
            if prev is not None and self.repo.deltas:
                codec_id, payload = self.repo.encode_changed(cid, view, self.level, prev)
            else:
                codec_id, payload = codec.encode(view, self.level)
            stored = self.repo.put_encoded(cid, codec_id, len(view), payload)
        finally:
            self.claims.release(cid)
        return Outcome(Kind.NEW, cid, stored)
