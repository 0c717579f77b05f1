"""Sizes a local repository reports (Repository.space_totals, Repository.freed_by_removing):
what the index keeps (docs/FORMAT.md, "kept sizes"), else its reference counts and the
removed snapshots' own manifests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from snapstore import recovery
from snapstore.gcplan import record_span
from snapstore.model import SnapshotId
from snapstore.storage.index import Index
from snapstore.storage.kinds import Snapshots


@dataclass(frozen=True)
class SpaceTotals:
    chunks: int  # chunks in the index
    live_chunks: int  # chunks some snapshot references
    raw_bytes: int  # plaintext of live chunks
    stored_bytes: int  # pack bytes of live chunks (headers included)
    garbage_bytes: int  # pack bytes of unreferenced chunks (gc frees them)


@dataclass(frozen=True)
class DeltaTotals:
    """Live chunks by how they are stored (a repository of format 3)."""

    full_chunks: int
    full_raw_bytes: int
    full_stored_bytes: int  # pack bytes (headers included)
    delta_chunks: int
    delta_raw_bytes: int
    delta_stored_bytes: int

    @property
    def saved_bytes(self) -> int:
        """About what the deltas saved: their plaintext at the full records' compression
        ratio, less what they take."""
        if not self.full_raw_bytes:
            return 0
        as_full = self.delta_raw_bytes * self.full_stored_bytes / self.full_raw_bytes
        return max(0, round(as_full) - self.delta_stored_bytes)


def delta_totals(index: Index) -> DeltaTotals:
    """One walk of the chunk table (not kept: read only where deltas are on)."""
    sums = [0, 0, 0, 0, 0, 0]
    with index.read() as r:
        for _, loc in r.iter_locations():
            if loc.refcount:
                at = 3 if loc.base is not None else 0
                sums[at] += 1
                sums[at + 1] += loc.raw_size
                sums[at + 2] += record_span(loc)
    return DeltaTotals(*sums)


def space_totals(index: Index) -> SpaceTotals:
    with index.read(chunks=False) as r:
        chunks = r.chunk_count()
        kept = r.totals() if r.sizes_ready() else None
    if kept is not None:  # kept up to date as snapshots come and go
        return SpaceTotals(chunks, *kept)
    with index.read() as r:
        live = raw = stored = garbage = 0  # an index of version 1, or a recount under way
        for _, loc in r.iter_locations():
            size = record_span(loc)
            if loc.refcount:
                live += 1
                raw += loc.raw_size
                stored += size
            else:
                garbage += size
    return SpaceTotals(chunks, live, raw, stored, garbage)


def freed_by_removing(
    index: Index, snapshots: Snapshots, snapshot_ids: Iterable[SnapshotId]
) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn. The first is the
    snapshot's exclusive size, which the index keeps; each one after that reads the removed
    snapshots' manifests (lazily: only when asked for). Memory: one manifest's chunk ids (32
    bytes each) at a time, plus the simulated count of each chunk that more than one of the
    removed snapshots names."""
    ids = iter(snapshot_ids)
    first = next(ids, None)
    if first is None:
        return
    with index.read(chunks=False) as r:
        known = r.exclusive(first) if r.sizes_ready() else None
    if known is not None:
        yield known
    remaining: dict[bytes, int] = {}  # chunk id -> simulated refcount, while it stays above 0
    freed = 0
    with index.read() as r:
        for n, sid in enumerate(itertools.chain([first], ids)):
            for chunk_id in recovery.with_bases(index, recovery.chunk_set(snapshots, sid)):
                loc = r.get(chunk_id)
                if loc is None:
                    continue
                refs = remaining.pop(chunk_id, loc.refcount) - 1
                if refs > 0:
                    remaining[chunk_id] = refs
                elif refs == 0:
                    freed += record_span(loc)
            if n or known is None:
                yield freed
