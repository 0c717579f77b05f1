"""What removing snapshots would free, from reference counts: one pass over the removed
snapshots' own manifests, never over the others."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from snapstore import recovery
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import SnapshotId
from snapstore.repo import Repository


def freed_by_removing(repo: Repository, snapshot_ids: Iterable[SnapshotId]) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn. The first is the
    snapshot's exclusive size, which the index keeps; each one after that reads the removed
    snapshots' manifests (lazily: only when asked for). Memory: one manifest's chunk ids (32
    bytes each) at a time, plus the simulated count of each chunk that more than one of the
    removed snapshots names."""
    ids = iter(snapshot_ids)
    first = next(ids, None)
    if first is None:
        return
    with repo.index.read() as r:
        known = r.exclusive(first) if r.sizes_ready() else None
    if known is not None:
        yield known
    remaining: dict[bytes, int] = {}  # chunk id -> simulated refcount, while it stays above 0
    freed = 0
    with repo.index.read() as r:
        for n, sid in enumerate(itertools.chain([first], ids)):
            for chunk_id in recovery.chunk_set(repo.snapshots, sid):
                loc = r.get(chunk_id)
                if loc is None:
                    continue
                refs = remaining.pop(chunk_id, loc.refcount) - 1
                if refs > 0:
                    remaining[chunk_id] = refs
                elif refs == 0:
                    freed += RECORD_HEADER_SIZE + loc.stored_size
            if n or known is None:
                yield freed


def exclusive_bytes(repo: Repository, snapshot_id: SnapshotId) -> int:
    """Pack bytes that only this snapshot references (what removing it alone frees)."""
    return next(freed_by_removing(repo, [snapshot_id]), 0)
