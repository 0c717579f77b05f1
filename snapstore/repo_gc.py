"""Applying a gc plan to a local repository (Repository.apply_gc), in the order
docs/FORMAT.md gives:

1. one index transaction per batch deletes dead chunk entries and records the byte ranges of
   exactly those entries on the garbage list (so nothing can dedup against them any more, and
   a rerun knows what to punch; a range is never listed while its chunk is still indexed,
   where a commit could bring it back to life);
2. packs with no live chunk left are removed whole, the others cut back to their last live
   record;
3. dead ranges in the other packs are hole-punched (fallocate), then struck off the list.
Killed at any point, a rerun finishes the job; a kept snapshot never loses a chunk.

A plan made with a repack threshold changes no pack in place: step 2 removes packs and then
repacks the chosen ones (repo_repack.py), step 3 punches nothing and strikes off the ranges
of packs that are gone (those of packs kept stay listed: a gc that punches frees them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from snapstore import repo_repack
from snapstore.gcplan import GcPlan, PackRange, merge, record_span
from snapstore.model import PackId
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs

_BATCH = 5000


def pack_sizes(packs: Packs) -> Iterator[tuple[PackId, int, int]]:
    """(pack id, allocated bytes, length) of every pack on disk."""
    for pack_id in packs.iter_pack_ids():
        allocated, length = packs.sizes(pack_id)
        yield pack_id, allocated, length


def apply(index: Index, packs: Packs, gc_plan: GcPlan) -> None:
    punch_by_pack: dict[PackId, list[PackRange]] = defaultdict(list)
    for rng in gc_plan.punch:
        punch_by_pack[rng.pack_id].append(rng)
    # 1. Unindex dead chunks and list their ranges, in the same transaction, batch by batch
    #    (ranges already on the list stay there). Ranges in packs about to be removed are
    #    listed too: if gc dies before removing such a pack, a commit may revive another of
    #    its chunks, and the pack then stays and has these ranges punched.
    dead = gc_plan.dead_chunks
    for start in range(0, len(dead), _BATCH):
        with index.write() as w:
            listed: dict[PackId, list[tuple[int, int]]] = defaultdict(list)
            for chunk_id in dead[start : start + _BATCH]:
                loc = w.get(chunk_id)
                if loc is not None and loc.refcount == 0:
                    w.delete(chunk_id)
                    listed[loc.pack_id].append((loc.offset, record_span(loc)))
            for pack_id, pack_ranges in listed.items():
                for offset, length in merge(pack_ranges):
                    w.put_garbage(pack_id, offset, length)
    # 2. Remove packs no live chunk needs; cut the others back to their last indexed record.
    for pack_id in gc_plan.delete_packs:
        packs.delete(pack_id)
    for rng in gc_plan.truncate:
        packs.truncate(rng.pack_id, rng.offset)
    repo_repack.apply(index, packs, gc_plan.repack)
    # 3. Punch dead ranges, then strike them (and ranges of removed packs) off the list.
    for pack_id, ranges in punch_by_pack.items():  # the pack's trailer first, then its ranges
        packs.punch(pack_id, [(rng.offset, rng.length) for rng in ranges])
    with index.read() as r:
        done = list(r.iter_garbage())
    if gc_plan.repack_threshold is not None:  # only the ranges of packs that are gone
        gone = {p: packs.sizes(p) == (0, 0) for p in {pack_id for pack_id, _, _ in done}}
        done = [entry for entry in done if gone[entry[0]]]
    for start in range(0, len(done), _BATCH):
        with index.write() as w:
            for pack_id, offset, _ in done[start : start + _BATCH]:
                w.delete_garbage(pack_id, offset)
