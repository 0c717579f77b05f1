"""Repacking (Repository.apply_gc with a plan of ``repack``): gc where packs are not changed
in place. Each chosen pack in turn, in the order docs/FORMAT.md gives:

1. its indexed records are copied, raw (no decoding, no recompression), into a new pack,
   which is sealed: trailer written, file and directory fsynced;
2. one index transaction moves their entries to the new pack (counts and owners kept);
3. the old pack is removed.

At most one new pack exists beside the packs it replaces (scratch space: one pack). Killed
at any point, no chunk is lost: before step 2 the new pack is an orphan no index entry points
into, after it the old pack is one; the next gc removes either. A rebuild of the index meets
the moved chunks twice and keeps one copy of each (docs/FORMAT.md, "packs").
"""

from __future__ import annotations

import logging
from collections import defaultdict

from snapstore.errors import CorruptError
from snapstore.gcplan import Repack
from snapstore.model import ChunkId, ChunkLocation, PackId
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs

log = logging.getLogger(__name__)

_Moves = list[tuple[ChunkId, ChunkLocation]]


def apply(index: Index, packs: Packs, repacks: tuple[Repack, ...]) -> list[PackId]:
    """Repack each pack of ``repacks`` in turn; the packs removed. A pack one of whose
    records cannot be read is left as it is (with a warning: ``snap verify`` reports it)."""
    if not repacks:
        return []
    wanted = {r.pack_id for r in repacks}
    indexed: dict[PackId, _Moves] = defaultdict(list)
    with index.read() as r:  # one pass over the index: the entries of every chosen pack
        for chunk_id, loc in r.iter_locations():
            if loc.pack_id in wanted:
                indexed[loc.pack_id].append((chunk_id, loc))
    removed = []
    for repack in repacks:
        entries = sorted(indexed.pop(repack.pack_id, []), key=lambda e: e[1].offset)
        if entries and not _move(index, packs, repack.pack_id, entries):
            continue
        packs.delete(repack.pack_id)
        removed.append(repack.pack_id)
    return removed


def _move(index: Index, packs: Packs, pack_id: PackId, entries: _Moves) -> bool:
    """Copy the records of ``entries`` to a new sealed pack and point their index entries at
    it (one transaction); False if a record could not be read (nothing changed)."""
    writer = packs.create()
    moved = []
    try:
        for chunk_id, loc in entries:
            try:
                payload = packs.read_record(loc, chunk_id)
            except CorruptError as exc:
                log.warning("pack %s not repacked: %s", pack_id.hex(), exc.message)
                writer.abort()
                return False
            moved.append((chunk_id, loc, writer.append(chunk_id, loc.codec, loc.raw_size, payload)))
        writer.seal()
    except BaseException:
        writer.abort()
        raise
    with index.write() as w:
        for chunk_id, old, new in moved:
            now = w.get(chunk_id)
            if now is not None and (now.pack_id, now.offset) == (old.pack_id, old.offset):
                w.put(chunk_id, new)  # keeps its count and owners
    return True
