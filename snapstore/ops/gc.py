"""gc: free the space of chunks no snapshot references, with no scratch space.

Plan (pure, from the index and the pack list) then apply, in the order docs/FORMAT.md gives:
1. one index transaction per batch deletes dead chunk entries and records the byte ranges of
   exactly those entries on the garbage list (so nothing can dedup against them any more, and
   a rerun knows what to punch; a range is never listed while its chunk is still indexed,
   where a commit could bring it back to life);
2. packs with no live chunk left are removed whole;
3. dead ranges in the other packs are hole-punched (fallocate), then struck off the list.
Killed at any point, a rerun finishes the job; a kept snapshot never loses a chunk. While a
published manifest cannot be read whole, gc frees nothing (it may name any chunk).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from snapstore.errors import DamagedManifestsError
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkLocation, PackId
from snapstore.repo import Mode, Repository

_BATCH = 5000


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


@dataclass(frozen=True)
class GcResult:
    plan: GcPlan
    disk_before: int
    disk_after: int

    @property
    def freed_bytes(self) -> int:
        return self.disk_before - self.disk_after


def plan(
    locations: Iterable[tuple[ChunkId, ChunkLocation]],
    garbage: Iterable[tuple[PackId, int, int]],
    pack_sizes: dict[PackId, int],
    pack_lengths: dict[PackId, int],
) -> GcPlan:
    """Pure planning: index entries, the garbage list and the packs on disk (id -> allocated
    bytes, and id -> length) in; what to delete, punch, truncate and remove out.

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
            end = loc.offset + RECORD_HEADER_SIZE + loc.stored_size
            live_end[loc.pack_id] = max(live_end[loc.pack_id], end)
        else:
            dead.append(chunk_id)
            ranges[loc.pack_id].append((loc.offset, RECORD_HEADER_SIZE + loc.stored_size))
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
        for off, length in _merge(ranges[pack_id])
        if off < live_end[pack_id]
    )
    freed = sum(r.length for r in (*punch, *truncate)) + sum(pack_sizes[p] for p in delete)
    return GcPlan(tuple(dead), punch, delete, freed, truncate)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for off, length in sorted(set(ranges)):
        if merged and merged[-1][0] + merged[-1][1] >= off:
            start, prev = merged[-1]
            merged[-1] = (start, max(prev, off + length - start))
        else:
            merged.append((off, length))
    return merged


def refuse_while_damaged(repo: Repository) -> None:
    """DamagedManifestsError while a published manifest cannot be read whole (the index's
    damaged table): it may name any chunk, so nothing may be freed."""
    damaged = repo.damaged_manifests()
    if damaged:
        raise DamagedManifestsError(damaged)


def plan_for(repo: Repository) -> GcPlan:
    """The plan for the repository as it is. While a published manifest cannot be read whole
    (the index's damaged table), nothing is planned: DamagedManifestsError."""
    refuse_while_damaged(repo)
    sizes, lengths = {}, {}
    for pack_id in repo.packs.iter_pack_ids():
        sizes[pack_id], lengths[pack_id] = repo.packs.sizes(pack_id)
    with repo.index.read() as r:
        return plan(r.iter_locations(), list(r.iter_garbage()), sizes, lengths)


def apply(repo: Repository, gc_plan: GcPlan) -> None:
    """Carry out a plan (the repository must be opened EXCLUSIVE)."""
    if repo.mode is not Mode.EXCLUSIVE:
        raise AssertionError("gc needs the repository opened EXCLUSIVE")
    refuse_while_damaged(repo)
    punch_by_pack: dict[PackId, list[PackRange]] = defaultdict(list)
    for rng in gc_plan.punch:
        punch_by_pack[rng.pack_id].append(rng)
    # 1. Unindex dead chunks and list their ranges, in the same transaction, batch by batch
    #    (ranges already on the list stay there). Ranges in packs about to be removed are
    #    listed too: if gc dies before removing such a pack, a commit may revive another of
    #    its chunks, and the pack then stays and has these ranges punched.
    dead = gc_plan.dead_chunks
    for start in range(0, len(dead), _BATCH):
        with repo.index.write() as w:
            listed: dict[PackId, list[tuple[int, int]]] = defaultdict(list)
            for chunk_id in dead[start : start + _BATCH]:
                loc = w.get(chunk_id)
                if loc is not None and loc.refcount == 0:
                    w.delete(chunk_id)
                    listed[loc.pack_id].append((loc.offset, RECORD_HEADER_SIZE + loc.stored_size))
            for pack_id, pack_ranges in listed.items():
                for offset, length in _merge(pack_ranges):
                    w.put_garbage(pack_id, offset, length)
    # 2. Remove packs no live chunk needs; cut the others back to their last indexed record.
    for pack_id in gc_plan.delete_packs:
        repo.packs.delete(pack_id)
    for rng in gc_plan.truncate:
        repo.packs.truncate(rng.pack_id, rng.offset)
    # 3. Punch dead ranges, then strike them (and ranges of removed packs) off the list.
    for pack_id, ranges in punch_by_pack.items():
        repo.packs.punch(pack_id, [(rng.offset, rng.length) for rng in ranges])
    with repo.index.read() as r:
        done = list(r.iter_garbage())
    for start in range(0, len(done), _BATCH):
        with repo.index.write() as w:
            for pack_id, offset, _ in done[start : start + _BATCH]:
                w.delete_garbage(pack_id, offset)


def collect(repo: Repository) -> GcResult:
    """Plan and apply gc; the reserve file gives the index room on a full disk."""
    before = repo.disk_usage()
    repo.release_reserve()
    try:
        gc_plan = plan_for(repo)
        apply(repo, gc_plan)
    finally:
        repo.restore_reserve()
    return GcResult(gc_plan, before, repo.disk_usage())
