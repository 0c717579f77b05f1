"""gc's plan: pure planning from what the repository reports (its index entries, its garbage
list and its packs' sizes) to what to unindex, remove, cut back and punch. The operation
(ops/gc.py) computes it; the repository applies it (Repository.apply_gc)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkLocation, PackId


@dataclass(frozen=True)
class PackRange:
    pack_id: PackId
    offset: int
    length: int


@dataclass(frozen=True)
class GcPlan:
    dead_chunks: tuple[ChunkId, ...]  # index entries with no reference
    punch: tuple[PackRange, ...]  # dead byte ranges in packs that keep live chunks
    delete_packs: tuple[PackId, ...]  # packs with no live chunk (including orphans)
    freed_bytes: int  # estimate: punched bytes + allocated size of removed packs
    truncate: tuple[PackRange, ...] = ()  # unindexed tails (a killed commit's last records)

    @property
    def empty(self) -> bool:
        return not (self.dead_chunks or self.punch or self.delete_packs or self.truncate)


def record_span(loc: ChunkLocation) -> int:
    """The bytes a chunk's record takes in its pack (header included)."""
    return RECORD_HEADER_SIZE + loc.stored_size


def plan(
    locations: Iterable[tuple[ChunkId, ChunkLocation]],
    garbage: Iterable[tuple[PackId, int, int]],
    pack_sizes: dict[PackId, int],
    pack_lengths: dict[PackId, int],
) -> GcPlan:
    """Index entries, the garbage list and the packs (id -> allocated bytes, and id ->
    length) in; what to delete, punch, truncate and remove out.

    A pack that keeps live chunks is cut back to the end of its last live record: what lies
    beyond is dead records (they would be punched) or what a commit killed after its last
    checkpoint appended (nothing points at it)."""
    live_packs: set[PackId] = set()
    dead: list[ChunkId] = []
    ranges: dict[PackId, list[tuple[int, int]]] = defaultdict(list)
    live_end: dict[PackId, int] = defaultdict(int)
    for chunk_id, loc in locations:
        if loc.refcount > 0:
            live_packs.add(loc.pack_id)
            live_end[loc.pack_id] = max(live_end[loc.pack_id], loc.offset + record_span(loc))
        else:
            dead.append(chunk_id)
            ranges[loc.pack_id].append((loc.offset, record_span(loc)))
    for pack_id, offset, length in garbage:
        ranges[pack_id].append((offset, length))
    delete = tuple(sorted(p for p in pack_sizes if p not in live_packs))
    truncate = tuple(
        PackRange(pack_id, live_end[pack_id], pack_lengths[pack_id] - live_end[pack_id])
        for pack_id in sorted(live_packs)
        if pack_lengths.get(pack_id, 0) > live_end[pack_id]
    )
    punch = tuple(  # what the cut removes needs no punching
        PackRange(pack_id, off, min(length, live_end[pack_id] - off))
        for pack_id in sorted(ranges)
        if pack_id in live_packs
        for off, length in merge(ranges[pack_id])
        if off < live_end[pack_id]
    )
    freed = sum(r.length for r in (*punch, *truncate)) + sum(pack_sizes[p] for p in delete)
    return GcPlan(tuple(dead), punch, delete, freed, truncate)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) ranges, overlapping or touching ones merged, ascending."""
    merged: list[tuple[int, int]] = []
    for off, length in sorted(set(ranges)):
        if merged and merged[-1][0] + merged[-1][1] >= off:
            start, prev = merged[-1]
            merged[-1] = (start, max(prev, off + length - start))
        else:
            merged.append((off, length))
    return merged
