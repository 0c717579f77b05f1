"""Sizes a local repository reports (Repository.space_totals, Repository.freed_by_removing),
from its index's reference counts and the removed snapshots' own manifests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from snapstore import recovery
from snapstore.gcplan import record_span
from snapstore.model import SnapshotId
from snapstore.storage.index import Index
from snapstore.storage.snapshots import SnapshotStore


@dataclass(frozen=True)
class SpaceTotals:
    chunks: int  # chunks in the index
    live_chunks: int  # chunks some snapshot references
    raw_bytes: int  # plaintext of live chunks
    stored_bytes: int  # pack bytes of live chunks (headers included)
    garbage_bytes: int  # pack bytes of unreferenced chunks (gc frees them)


def space_totals(index: Index) -> SpaceTotals:
    chunks = live = raw = stored = garbage = 0
    with index.read() as r:
        for _, loc in r.iter_locations():
            chunks += 1
            size = record_span(loc)
            if loc.refcount:
                live += 1
                raw += loc.raw_size
                stored += size
            else:
                garbage += size
    return SpaceTotals(chunks, live, raw, stored, garbage)


def freed_by_removing(
    index: Index, snapshots: SnapshotStore, snapshot_ids: Iterable[SnapshotId]
) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn. Memory: one
    manifest's chunk ids (32 bytes each) at a time, plus the simulated count of each chunk
    that more than one of the removed snapshots names."""
    remaining: dict[bytes, int] = {}  # chunk id -> simulated refcount, while it stays above 0
    freed = 0
    with index.read() as r:
        for sid in snapshot_ids:
            for chunk_id in recovery.chunk_set(snapshots, sid):
                loc = r.get(chunk_id)
                if loc is None:
                    continue
                refs = remaining.pop(chunk_id, loc.refcount) - 1
                if refs > 0:
                    remaining[chunk_id] = refs
                elif refs == 0:
                    freed += record_span(loc)
            yield freed
