"""What removing snapshots would free, from reference counts: one pass over the removed
snapshots' own manifests, never over the others."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import ChunkRef, SnapshotId
from snapstore.repo import Repository


def freed_by_removing(repo: Repository, snapshot_ids: Iterable[SnapshotId]) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn."""
    remaining: dict[bytes, int] = {}  # chunk id -> simulated refcount
    freed = 0
    with repo.index.read() as r:
        for sid in snapshot_ids:
            seen: set[bytes] = set()
            for record in repo.iter_records(sid):
                if not isinstance(record, ChunkRef) or record.chunk_id in seen:
                    continue
                seen.add(record.chunk_id)
                loc = r.get(record.chunk_id)
                if loc is None:
                    continue
                refs = remaining.get(record.chunk_id, loc.refcount) - 1
                remaining[record.chunk_id] = refs
                if refs == 0:
                    freed += RECORD_HEADER_SIZE + loc.stored_size
            yield freed


def exclusive_bytes(repo: Repository, snapshot_id: SnapshotId) -> int:
    """Pack bytes that only this snapshot references (what removing it alone frees)."""
    return next(freed_by_removing(repo, [snapshot_id]))
