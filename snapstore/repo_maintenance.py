"""The repository's maintenance interface: what gc, prune, stats, verify and repair ask of
it (batched and streamed, no file paths: a remote repository implements the same methods),
kept apart from the chunk and snapshot methods in repo.py."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from snapstore import repo_gc, repo_repair, repo_space, repo_verify
from snapstore.gcplan import GcPlan
from snapstore.model import ChunkId, ChunkLocation, Config, PackId, SnapshotId
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo_index import RebuildReport
from snapstore.repo_space import DeltaTotals, SpaceTotals
from snapstore.repo_verify import VerifyReport
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, Snapshots


class Maintenance:
    """Mixed into Repository, which sets these attributes and ``_require_exclusive``."""

    _index: Index
    _packs: Packs
    _snapshots: Snapshots
    config: Config
    index_problem: str | None
    rebuild_report: RebuildReport | None

    def _require_exclusive(self) -> None:
        raise NotImplementedError

    # -- gc ------------------------------------------------------------------------------------

    def chunk_locations(self) -> Iterator[tuple[ChunkId, ChunkLocation]]:
        """Every index entry, ascending by chunk id, streamed (one read transaction)."""
        with self._index.read() as r:
            yield from r.iter_locations()

    def garbage_ranges(self) -> list[tuple[PackId, int, int]]:
        """The garbage list: (pack id, offset, length) of dead records not punched yet."""
        with self._index.read(chunks=False) as r:
            return list(r.iter_garbage())

    def pack_sizes(self) -> dict[PackId, tuple[int, int]]:
        """Every pack: (allocated bytes, length)."""
        return {pid: (allocated, length) for pid, allocated, length in repo_gc.pack_sizes(self._packs)}

    def can_punch(self) -> bool:
        """Whether gc may punch holes in packs and cut them back (a local disk can; where
        packs cannot be changed in place, gc repacks them: an object is put back whole, so
        zeroing part of it frees nothing)."""
        return self._packs.local

    def apply_gc(self, plan: GcPlan) -> None:
        """Carry out a gc plan (opened EXCLUSIVE): unindex, remove, cut back or repack,
        punch, in the order docs/FORMAT.md gives (see repo_gc.py and repo_repack.py)."""
        self._require_exclusive()
        repo_gc.apply(self._index, self._packs, plan)

    # -- sizes ---------------------------------------------------------------------------------

    def space_totals(self) -> SpaceTotals:
        """Chunks and their bytes, live and garbage, from the index."""
        return repo_space.space_totals(self._index)

    def delta_totals(self) -> DeltaTotals | None:
        """Live chunks stored full and as deltas, in a repository that stores deltas (one walk
        of the chunk table), else None."""
        return repo_space.delta_totals(self._index) if self.config.delta else None

    def freed_by_removing(self, snapshot_ids: Iterable[SnapshotId]) -> Iterator[int]:
        """Cumulative pack bytes freed after removing each snapshot in turn (lazy)."""
        return repo_space.freed_by_removing(self._index, self._snapshots, snapshot_ids)

    # -- checks and repairs --------------------------------------------------------------------

    def verify(
        self,
        *,
        read_data: bool = False,
        sample: float | None = None,
        seed: int | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> VerifyReport:
        """Check structure (index, manifests, packs, counts) and, with ``read_data`` or a
        ``sample`` percentage, stored bytes (see repo_verify.py)."""
        return repo_verify.verify(
            self._index,
            self.index_problem,
            self._packs,
            self._snapshots,
            read_data=read_data,
            sample=sample,
            seed=seed,
            progress=progress,
        )

    def rewrite_damaged_pack_headers(self) -> tuple[PackId, ...]:
        """Write again every damaged pack header: those an index rebuild of this opening
        found (each header is checked once), else every one that does not check."""
        self._require_exclusive()
        found = None if self.rebuild_report is None else self.rebuild_report.damaged_pack_ids
        return repo_repair.rewrite_damaged_headers(self._packs, found)

    def drop_corrupt_chunks(self, progress: Progress = NULL_PROGRESS) -> int:
        """Unindex chunks whose bytes do not match their id (counts are then recomputed)."""
        self._require_exclusive()
        return repo_repair.drop_corrupt(self._index, self._packs, self._snapshots, progress)
