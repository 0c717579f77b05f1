"""Bringing the index in line with packs and manifests after a crash (docs/FORMAT.md,
"recovery"). Runs under the write lock, at the start of every writing command."""

from __future__ import annotations

import logging
from dataclasses import replace

from snapstore.model import ChunkId, ChunkLocation, ChunkRef, SnapshotId
from snapstore.storage.index import Index
from snapstore.storage.packstore import PackStore
from snapstore.storage.snapshots import PENDING, TRASH, SnapshotStore

log = logging.getLogger(__name__)


def chunk_set(snapshots: SnapshotStore, snapshot_id: SnapshotId, where: str = "") -> set[ChunkId]:
    """The distinct chunk ids a manifest names (memory: ~90 bytes per distinct chunk)."""
    return {r.chunk_id for r in snapshots.iter_records(snapshot_id, where=where) if isinstance(r, ChunkRef)}


def recover(index: Index, snapshots: SnapshotStore) -> None:
    """Finish or roll back what a killed command left half done.

    - ``tmp/pending-<id>``: a commit died before publishing; its counts are rolled back.
    - ``tmp/trash-<id>``: a removal died after unpublishing; its counts are dropped.
    - a published manifest that is not counted (index lost an update): it is counted.
    - a counted snapshot with no manifest anywhere: reference counts are recounted.
    - ``tmp/part-*``: manifests a commit never finished; deleted.
    """
    tmp = snapshots.tmp_dir
    for prefix, ids in ((PENDING, snapshots.list_pending()), (TRASH, snapshots.list_trash())):
        for sid in ids:
            with index.read() as r:
                counted = r.is_counted(sid)
            if counted:
                refs = chunk_set(snapshots, sid, where=str(tmp / f"{prefix}{sid.hex()}"))
                with index.write() as w:
                    w.add_refs(refs, -1, strict=False)
                    w.set_counted(sid, False)
            if prefix == PENDING:
                snapshots.discard_pending(sid)
            else:
                snapshots.purge_trash(sid)
    for part in tmp.glob("part-*"):
        part.unlink(missing_ok=True)
    published = set(snapshots.list_ids())
    with index.read() as r:
        counted_ids = set(r.iter_counted())
    if counted_ids - published:
        log.warning("index counts snapshots that no longer exist; recounting references")
        recount(index, snapshots)
        return
    for sid in sorted(published - counted_ids):
        refs = chunk_set(snapshots, sid)
        with index.write() as w:
            w.add_refs(refs, +1, strict=False)
            w.set_counted(sid, True)


def recount(index: Index, snapshots: SnapshotStore) -> None:
    """Recompute every reference count from the published manifests."""
    with index.write() as w:
        for chunk_id, loc in list(w.iter_locations()):
            if loc.refcount:
                w.put(chunk_id, replace(loc, refcount=0))
        for sid in list(w.iter_counted()):
            w.set_counted(sid, False)
    for sid in snapshots.list_ids():
        refs = chunk_set(snapshots, sid)
        with index.write() as w:
            w.add_refs(refs, +1, strict=False)
            w.set_counted(sid, True)


def rebuild(index: Index, packs: PackStore, snapshots: SnapshotStore) -> tuple[int, int]:
    """Rebuild the whole index from the packs alone, then count references from manifests.

    A chunk found in more than one pack keeps its first location; the other copies are put
    on the garbage list for gc. Returns (chunks indexed, duplicate records)."""
    with index.write() as w:
        w.clear()
    chunks = duplicates = 0
    for pack_id in packs.iter_pack_ids():
        with index.write() as w:
            for offset, header in packs.scan(pack_id):
                if w.get(header.chunk_id) is not None:
                    w.put_garbage(pack_id, offset, header.record_size)
                    duplicates += 1
                    continue
                w.put(
                    header.chunk_id,
                    ChunkLocation(pack_id, offset, header.stored_size, header.raw_size, header.codec, 0),
                )
                chunks += 1
    recount(index, snapshots)
    return chunks, duplicates
