"""Pack-level repairs of a local repository (Repository.rewrite_damaged_pack_headers and
Repository.drop_corrupt_chunks); the index itself is rebuilt when the repository is opened
with ``rebuild_index`` (repo_index.py)."""

from __future__ import annotations

from collections.abc import Iterable

from snapstore import recovery
from snapstore.errors import CorruptError, IntegrityError
from snapstore.model import PackId
from snapstore.progress import Progress
from snapstore.repo_delta import PayloadDecoder
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, Snapshots


def rewrite_damaged_headers(packs: Packs, damaged: Iterable[PackId] | None = None) -> tuple[PackId, ...]:
    """Write again every pack header that does not check (its 16 bytes are the same in every
    pack); the packs rewritten. ``damaged``: the packs whose header was found damaged already
    (by an index rebuild), rewritten without checking every header again."""
    if damaged is not None:
        for pack_id in damaged:
            packs.rewrite_header(pack_id)
        return tuple(damaged)
    rewritten = []
    for pack_id in packs.iter_pack_ids():
        try:
            packs.check_header(pack_id)
        except CorruptError:  # damage; a read that fails stops the repair
            packs.rewrite_header(pack_id)
            rewritten.append(pack_id)
    return tuple(rewritten)


def drop_corrupt(index: Index, packs: Packs, snapshots: Snapshots, progress: Progress) -> int:
    """Read, decode and hash every indexed chunk; drop from the index those that fail (so no
    new snapshot can dedup against them), then recount if any was dropped. The number dropped.
    A read that fails (an I/O error, no space) is not damage: it stops the repair, dropping
    nothing more."""
    with index.read() as r:
        entries = list(r.iter_locations())
    progress.start(sum(loc.raw_size for _, loc in entries), "repair")
    dropped = 0
    located = dict(entries)
    decode = PayloadDecoder(located.get, packs.read_record)  # a delta whose base is damaged is too
    for cid, loc in entries:
        try:
            decode(cid, loc, packs.read_record(loc, cid))
        except (CorruptError, IntegrityError):
            with index.write() as w:
                w.drop(cid)
            dropped += 1
        progress.advance(loc.raw_size)
    progress.finish()
    if dropped:
        recovery.recount(index, snapshots)
    return dropped
