"""gc's plan: pure planning from what the repository reports (its index entries, its garbage
list and its packs' sizes) to what to unindex, remove, cut back and punch. The operation
(ops/gc.py) computes it; the repository applies it (Repository.apply_gc)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from snapstore.format.pack import FOOTER_SIZE, PACK_HEADER_SIZE, RECORD_HEADER_SIZE, TABLE_ENTRY_SIZE
from snapstore.model import ChunkId, ChunkLocation, PackId


@dataclass(frozen=True)
class PackRange:
    pack_id: PackId
    offset: int
    length: int


DEFAULT_REPACK_THRESHOLD = 0.5  # packs less than half live are repacked (gc --repack)


@dataclass(frozen=True)
class Repack:
    """A pack whose live records are copied to a new pack, after which it is removed."""

    pack_id: PackId
    live_bytes: int  # bytes of its live records (headers included): written to the new pack
    live_records: int
    pack_bytes: int  # its allocated bytes, freed when it is removed

    @property
    def new_pack_bytes(self) -> int:
        """At most what the new pack takes: header, records and (format 2) trailer."""
        return PACK_HEADER_SIZE + self.live_bytes + self.live_records * TABLE_ENTRY_SIZE + FOOTER_SIZE


@dataclass(frozen=True)
class GcPlan:
    dead_chunks: tuple[ChunkId, ...]  # index entries with no reference
    punch: tuple[PackRange, ...]  # dead byte ranges in packs that keep live chunks
    delete_packs: tuple[PackId, ...]  # packs with no live chunk (including orphans)
    freed_bytes: int  # estimate: punched bytes + allocated size of removed packs - new packs
    truncate: tuple[PackRange, ...] = ()  # unindexed tails (a killed commit's last records)
    repack: tuple[Repack, ...] = ()  # packs to copy (their live records) and remove, in order
    repack_threshold: float | None = None  # set: packs are repacked, never punched or cut

    @property
    def empty(self) -> bool:
        return not (self.dead_chunks or self.punch or self.delete_packs or self.truncate or self.repack)

    @property
    def repack_bytes(self) -> int:
        """Bytes written to new packs by the repack."""
        return sum(r.new_pack_bytes for r in self.repack)

    @property
    def scratch_bytes(self) -> int:
        """Space needed beyond what is freed as it goes: one new pack at a time (each old
        pack is removed once its new pack is durable and indexed)."""
        return max((r.new_pack_bytes for r in self.repack), default=0)


def record_span(loc: ChunkLocation) -> int:
    """The bytes a chunk's record takes in its pack (header included)."""
    return RECORD_HEADER_SIZE + loc.stored_size


def plan(
    locations: Iterable[tuple[ChunkId, ChunkLocation]],
    garbage: Iterable[tuple[PackId, int, int]],
    pack_sizes: dict[PackId, int],
    pack_lengths: dict[PackId, int],
    *,
    repack_threshold: float | None = None,
) -> GcPlan:
    """Index entries, the garbage list and the packs (id -> allocated bytes, and id ->
    length) in; what to delete, punch, truncate and remove out.

    A pack that keeps live chunks is cut back to the end of its last live record: what lies
    beyond is dead records (they would be punched) or what a commit killed after its last
    checkpoint appended (nothing points at it).

    With ``repack_threshold`` nothing is punched or cut: a pack whose live fraction is below
    it is repacked instead (see :func:`plan_repack`)."""
    live_packs: set[PackId] = set()
    dead: list[ChunkId] = []
    ranges: dict[PackId, list[tuple[int, int]]] = defaultdict(list)
    live_end: dict[PackId, int] = defaultdict(int)
    live_bytes: dict[PackId, int] = defaultdict(int)
    live_records: dict[PackId, int] = defaultdict(int)
    for chunk_id, loc in locations:
        if loc.refcount > 0:
            live_packs.add(loc.pack_id)
            live_end[loc.pack_id] = max(live_end[loc.pack_id], loc.offset + record_span(loc))
            live_bytes[loc.pack_id] += record_span(loc)
            live_records[loc.pack_id] += 1
        else:
            dead.append(chunk_id)
            ranges[loc.pack_id].append((loc.offset, record_span(loc)))
    for pack_id, offset, length in garbage:
        ranges[pack_id].append((offset, length))
    delete = tuple(sorted(p for p in pack_sizes if p not in live_packs))
    if repack_threshold is not None:
        live = {p: (live_bytes[p], live_records[p]) for p in live_packs if p in pack_sizes}
        repack = plan_repack(live, pack_sizes, pack_lengths, repack_threshold)
        freed = sum(pack_sizes[p] for p in delete)
        freed += sum(max(0, r.pack_bytes - r.new_pack_bytes) for r in repack)
        return GcPlan(tuple(dead), (), delete, freed, (), repack, repack_threshold)
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


def live_fraction(live_bytes: int, allocated: int, length: int) -> float:
    """The share of a pack's record bytes that live records take: its records lie in its
    first ``length`` bytes (a trailer's table offset), of which at most ``allocated`` are
    stored (punched holes are not)."""
    records = min(allocated, length) - PACK_HEADER_SIZE
    return 1.0 if records <= 0 else live_bytes / records


def plan_repack(
    live: dict[PackId, tuple[int, int]],
    pack_sizes: dict[PackId, int],
    pack_lengths: dict[PackId, int],
    threshold: float,
) -> tuple[Repack, ...]:
    """The packs to repack, ascending by id: those holding live records (``live``: pack id ->
    (live record bytes, live records)) whose live fraction is below ``threshold`` and whose
    new pack would be smaller than the old one's allocated bytes."""
    chosen = []
    for pack_id in sorted(live):
        nbytes, nrecords = live[pack_id]
        allocated = pack_sizes.get(pack_id, 0)
        if live_fraction(nbytes, allocated, pack_lengths.get(pack_id, 0)) >= threshold:
            continue
        repack = Repack(pack_id, nbytes, nrecords, allocated)
        if repack.new_pack_bytes < allocated:
            chosen.append(repack)
    return tuple(chosen)


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
