"""What removing snapshots would free, from reference counts: one pass over the removed
snapshots' own manifests, never over the others."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from snapstore import recovery
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import SnapshotId
from snapstore.repo import Repository


def freed_by_removing(repo: Repository, snapshot_ids: Iterable[SnapshotId]) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn. Memory: one
    manifest's chunk ids (32 bytes each) at a time, plus the simulated count of each chunk
    that more than one of the removed snapshots names."""
    remaining: dict[bytes, int] = {}  # chunk id -> simulated refcount, while it stays above 0
    freed = 0
    with repo.index.read() as r:
        for sid in snapshot_ids:
            for chunk_id in recovery.chunk_set(repo.snapshots, sid):
                loc = r.get(chunk_id)
                if loc is None:
                    continue
                refs = remaining.pop(chunk_id, loc.refcount) - 1
                if refs > 0:
                    remaining[chunk_id] = refs
                elif refs == 0:
                    freed += RECORD_HEADER_SIZE + loc.stored_size
            yield freed


def exclusive_bytes(repo: Repository, snapshot_id: SnapshotId) -> int:
    """Pack bytes that only this snapshot references (what removing it alone frees)."""
    return next(freed_by_removing(repo, [snapshot_id]))
