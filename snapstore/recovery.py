"""Bringing the index in line with packs and manifests after a crash (docs/FORMAT.md,
"recovery"): reference counts in batches, leftovers of killed commands, recounts. Recovery
runs under the write lock, at the start of every writing command; opening and rebuilding the
index is repo_index.py's."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from snapstore import chunkset
from snapstore.chunkset import ChunkIdSet
from snapstore.errors import CorruptError, IntegrityError, translate_os_error
from snapstore.format import index as fmt
from snapstore.format.tree import tree_chunk_ids
from snapstore.model import ChunkId, ChunkRef, SnapshotId, TreeRoot
from snapstore.storage import fsio
from snapstore.storage.index import Index
from snapstore.storage.kinds import Snapshots
from snapstore.storage.snapshots import PENDING, TRASH

log = logging.getLogger(__name__)
INDEX_BUILD = "index-"  # tmp/index-<random>/: an index being built, moved to index/ when whole


BATCH = 50_000  # chunk ids per index transaction: far from LMDB's limit of dirty pages


def chunk_set(
    snapshots: Snapshots, snapshot_id: SnapshotId, where: str = "", *, damaged_ok: bool = False
) -> ChunkIdSet:
    """The distinct chunk ids a manifest names (memory: 32 bytes per chunk, see chunkset).

    With ``damaged_ok`` a damaged manifest gives the chunks named before the damage instead
    of an error: counting them keeps gc from freeing what it may still need."""
    ids, damage = read_chunk_set(snapshots, snapshot_id, where)
    if damage is not None:
        if not damaged_ok:
            raise damage
        log.warning("%s; counting the %d chunks it names before the damage", damage.message, len(ids))
    return ids


def read_chunk_set(
    snapshots: Snapshots, snapshot_id: SnapshotId, where: str = ""
) -> tuple[ChunkIdSet, CorruptError | IntegrityError | None]:
    """The chunks a manifest names (before the damage, if any) and the damage. A tree
    snapshot names its tree objects and every chunk they name (docs/FORMAT.md, "trees"): they
    are read through ``snapshots.load_tree``; one that cannot be read is damage."""
    damage: CorruptError | IntegrityError | None = None
    what = f"manifest {snapshot_id.hex()[:12]}"

    def upto_damage() -> Iterator[ChunkId]:
        nonlocal damage
        try:
            for record in snapshots.iter_records(snapshot_id, where=where):
                if isinstance(record, ChunkRef):
                    yield record.chunk_id
                elif isinstance(record, TreeRoot):
                    if snapshots.load_tree is None:
                        raise CorruptError(what, "a tree snapshot, and its tree objects cannot be read")
                    yield from tree_chunk_ids(record.entry, snapshots.load_tree, what)
        except (CorruptError, IntegrityError) as exc:
            damage = exc

    ids = chunkset.collect(upto_damage())
    return ids, damage


def count(
    index: Index, snapshot_id: SnapshotId, ids: ChunkIdSet, counted: bool, *, strict: bool = False
) -> None:
    """Make the snapshot's references counted (``counted``) or not, in batched transactions
    (docs/FORMAT.md, "index"): each adds or subtracts one batch of ``ids`` (ascending) and
    records in the counted table how far it got, so that a count killed half way is taken
    up where it stopped, in either direction, by whoever counts the snapshot next.

    ``strict``: a chunk missing from the index is an error (a commit counting what it
    stored); otherwise its count is kept in the lost table."""
    ids = with_bases(index, ids)
    with index.read() as r:
        state = r.count_state(snapshot_id)
    # (sign, done): the first ``done`` ids have had ``sign`` applied to a base state, which
    # is "not counted" for +1 and "counted" for -1.
    if state is True:
        sign, done = -1, 0
    elif state is False:
        sign, done = 1, 0
    else:
        sign, last = state
        done = ids.position(last)
        done += done < len(ids) and ids[done] == last
    if (sign > 0) == counted:  # forward: apply ``sign`` to the rest
        final = counted
        while True:
            stop = min(len(ids), done + BATCH)
            with index.write() as w:
                w.add_refs(ids.iter_from(done, stop), sign, snapshot_id, strict=strict)
                if stop == len(ids):
                    w.set_counted(snapshot_id, final)
                else:
                    w.set_counting(snapshot_id, sign, ids[stop - 1])
            if stop == len(ids):
                return
            done = stop
    while done > 0:  # backward: undo what was applied, the last batch first
        begin = max(0, done - BATCH)
        with index.write() as w:
            w.add_refs(ids.iter_from(begin, done), -sign, snapshot_id, strict=strict)
            if begin == 0:
                w.set_counted(snapshot_id, counted)
            else:
                w.set_counting(snapshot_id, sign, ids[begin - 1])
        done = begin


def with_bases(index: Index, ids: ChunkIdSet) -> ChunkIdSet:
    """``ids`` and the base of each delta among them (docs/FORMAT.md, "delta records"): a
    snapshot counts the bases of its deltas as if it named them, so that a base stays while
    any live delta needs it, and exclusive sizes and quota plans account for it. An index
    that never held a delta is not looked into."""
    with index.read() as r:
        if r.get_meta(fmt.DELTAS) is None:
            return ids
        bases = [loc.base for loc in map(r.get, ids) if loc is not None and loc.base is not None]
    return chunkset.collect(itertools.chain(ids, bases)) if bases else ids


def recover(index: Index, snapshots: Snapshots, tmp: Path) -> None:
    """Finish or roll back what a killed command left half done.

    - ``tmp/pending-<id>``: a commit died before publishing; its counts are rolled back.
    - ``tmp/trash-<id>``: a removal died after unpublishing; its counts are dropped.
    - a recount that did not finish is done again.
    - a published manifest that is not counted (index lost an update), or whose count was
      killed half way: it is counted. One that cannot be read whole is counted as far as it
      reads and listed in the damaged table (gc frees nothing meanwhile); one listed there
      that reads whole again (restored) makes all counts be recomputed.
    - a counted snapshot with no manifest anywhere: reference counts are recounted.
    - ``tmp/part-*``: manifests a commit never finished; ``tmp/index-*``: index builds that
      never finished; deleted.
    """
    snapshots.tidy()
    for prefix, ids in ((PENDING, snapshots.list_pending()), (TRASH, snapshots.list_trash())):
        for sid in ids:
            with index.read() as r:
                counted = r.is_counted(sid)
            if counted:
                refs = chunk_set(snapshots, sid, where=snapshots.where(prefix, sid), damaged_ok=True)
                count(index, sid, refs, False)
            if prefix == PENDING:
                snapshots.discard_pending(sid)
            else:
                snapshots.purge_trash(sid)
    remove_leftovers(tmp)
    published = set(snapshots.list_ids())
    with index.read() as r:
        counted_ids = set(r.iter_counted())
        unfinished = r.get_meta(fmt.RECOUNT) is not None
        damaged = set(r.iter_damaged())
    if unfinished or counted_ids - published:
        log.warning("index counts snapshots that no longer exist; recounting references")
        recount(index, snapshots)
        return
    if index.version < fmt.INDEX_VERSION:
        log.info("upgrading the index to version %d (a recount of every reference)", fmt.INDEX_VERSION)
        recount(index, snapshots)
        return
    for sid in sorted(damaged & published):
        if read_chunk_set(snapshots, sid)[1] is None:
            log.warning("manifest %s reads whole again; recounting references", sid.hex()[:12])
            recount(index, snapshots)
            return
    if damaged - published:
        with index.write() as w:
            for sid in damaged - published:
                w.set_damaged(sid, False)
    with index.read() as r:
        whole = {sid for sid in published if r.count_state(sid) is True}
    for sid in sorted(published - whole):
        _count_published(index, snapshots, sid)


def _count_published(
    index: Index, snapshots: Snapshots, sid: SnapshotId, *, warn: bool = True
) -> SnapshotId | None:
    """Count a published manifest as far as it reads; one that does not read whole is listed
    in the damaged table (and returned; ``warn``: with a warning)."""
    refs, damage = read_chunk_set(snapshots, sid)
    if damage is not None and warn:
        log.warning(
            "%s; counting the %d chunks it names before the damage; gc is blocked until it is "
            "restored or removed",
            damage.message,
            len(refs),
        )
    if damage is not None:
        with index.write() as w:
            w.set_damaged(sid, True)
    count(index, sid, refs, True)
    return None if damage is None else sid


def remove_leftovers(tmp: Path) -> None:
    """Delete unfinished manifests (``part-*``) and index builds (``index-*``) in ``tmp/``
    (only entries of ``tmp/`` itself: a link there is removed, never followed)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # pinned (storage/dirs.py)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise translate_os_error(exc, fsio.shown(tmp)) from exc
    try:
        for name in os.listdir(fd):
            if name.startswith(("part-", INDEX_BUILD)):
                remove_entry(fd, name)
    except OSError as exc:
        raise translate_os_error(exc, fsio.shown(tmp)) from exc
    finally:
        os.close(fd)


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` from the directory open as ``dir_fd``: a directory with what it holds
    (descending by descriptor, following no link), anything else itself."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def recount(index: Index, snapshots: Snapshots) -> tuple[SnapshotId, ...]:
    """Recompute every reference count from the published manifests, in batched transactions
    (a mark in the index makes recovery start again if this is killed); return the manifests
    that are damaged (counted as far as they could be read, and listed in the damaged table:
    the caller reports them)."""
    with index.write() as w:
        w.put_meta(fmt.RECOUNT, b"\x01")
        w.clear_counted()
        w.clear_lost()
        w.clear_damaged()
    start: bytes | None = b""
    while start is not None:
        with index.write() as w:
            start = w.zero_refcounts(start, BATCH)
    with index.write() as w:
        w.reset_sizes()
    damaged = []
    for sid in snapshots.list_ids():
        if _count_published(index, snapshots, sid, warn=False) is not None:
            damaged.append(sid)
    with index.write() as w:
        w.delete_meta(fmt.RECOUNT)
        w.put_meta(b"version", fmt.encode_u64(fmt.INDEX_VERSION))  # an index of version 1 is upgraded
    index.version = fmt.INDEX_VERSION
    return tuple(damaged)
