"""Repository totals: logical, unique, stored and on-disk sizes."""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import SnapshotInfo
from snapstore.repo import Repository


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

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.raw_bytes if self.raw_bytes else 0.0

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0


def repo_stats(repo: Repository, snapshots: list[SnapshotInfo]) -> RepoStats:
    """Sizes of the repository (``snap stats``): raw, stored and live bytes of its chunks,
    its garbage, and the dedup and compression ratios over ``snapshots``."""
    with repo.index.read() as r:
        chunks = r.chunk_count()
        kept = r.totals() if r.sizes_ready() else None
        if kept is not None:  # kept up to date as snapshots come and go
            live, raw, stored, garbage = kept
        else:  # an index of version 1, or a recount under way: one pass over it
            live = raw = stored = garbage = 0
            for _, loc in r.iter_locations():
                size = RECORD_HEADER_SIZE + loc.stored_size
                if loc.refcount:
                    live += 1
                    raw += loc.raw_size
                    stored += size
                else:
                    garbage += size
    return RepoStats(
        snapshots=len(snapshots),
        logical_bytes=sum(s.size for s in snapshots),
        chunks=chunks,
        live_chunks=live,
        raw_bytes=raw,
        stored_bytes=stored,
        garbage_bytes=garbage,
        disk_bytes=repo.disk_usage(),
    )
