"""Repository totals: logical, unique, stored and on-disk sizes."""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.model import SnapshotInfo
from snapstore.repo import Repository
from snapstore.repo_space import DeltaTotals


@dataclass(frozen=True)
class RepoStats:
    snapshots: int
    logical_bytes: int  # sum of snapshot sizes
    chunks: int  # chunks in the index
    live_chunks: int  # chunks some snapshot references
    raw_bytes: int  # plaintext of live chunks
    stored_bytes: int  # pack bytes of live chunks (headers included)
    garbage_bytes: int  # pack bytes of unreferenced chunks (gc frees them)
    disk_bytes: int  # allocated blocks of the whole repository (du)
    deltas: DeltaTotals | None = None  # live chunks stored full and as deltas (snap init --delta)

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.raw_bytes if self.raw_bytes else 0.0

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0


def repo_stats(repo: Repository, snapshots: list[SnapshotInfo]) -> RepoStats:
    """Sizes of the repository (``snap stats``): raw, stored and live bytes of its chunks,
    its garbage, and the dedup and compression ratios over ``snapshots``."""
    totals = repo.space_totals()
    return RepoStats(
        snapshots=len(snapshots),
        logical_bytes=sum(s.size for s in snapshots),
        chunks=totals.chunks,
        live_chunks=totals.live_chunks,
        raw_bytes=totals.raw_bytes,
        stored_bytes=totals.stored_bytes,
        garbage_bytes=totals.garbage_bytes,
        disk_bytes=repo.disk_usage(),
        deltas=repo.delta_totals(),
    )
