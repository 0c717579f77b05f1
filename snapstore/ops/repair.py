"""repair: rebuild the index from the packs alone, then check what the manifests still have.

Pack data is never deleted here: a chunk record that cannot be proven unreferenced stays
(duplicates go on gc's garbage list only once another copy was read back good). With
``read_data``, chunks whose bytes do not match their id are dropped from the index, so no
new snapshot can dedup against them (committing the same data again stores a good copy and
heals the snapshots that name it); the snapshots that needed them are named. A damaged pack
header, whose 16 bytes are the same in every pack, is written again.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapstore import recovery
from snapstore.errors import SnapstoreError
from snapstore.model import ChunkRef, PackId, SnapshotId
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Mode, Repository


@dataclass(frozen=True)
class RepairReport:
    chunks_indexed: int
    duplicate_records: int
    dropped_corrupt: int
    damaged_snapshots: tuple[SnapshotId, ...]  # lost data: a chunk is missing or corrupt
    damaged_manifests: tuple[SnapshotId, ...] = ()  # the manifest itself cannot be read whole
    rewritten_pack_headers: tuple[PackId, ...] = ()


def repair(repo: Repository, *, read_data: bool = False, progress: Progress = NULL_PROGRESS) -> RepairReport:
    """``repo`` must have been opened EXCLUSIVE with ``rebuild_index=True`` (the index is
    then already rebuilt from the packs, in a temporary directory and moved into place)."""
    if repo.mode is not Mode.EXCLUSIVE or repo.rebuild_report is None:
        raise AssertionError("repair needs the repository opened EXCLUSIVE with rebuild_index")
    rebuilt = repo.rebuild_report
    rewritten = []
    for pack_id in repo.packs.iter_pack_ids():
        try:
            repo.packs.check_header(pack_id)
        except SnapstoreError:
            repo.packs.rewrite_header(pack_id)
            rewritten.append(pack_id)
    dropped = 0
    if read_data:
        with repo.index.read() as r:
            entries = list(r.iter_locations())
        progress.start(sum(loc.raw_size for _, loc in entries), "repair")
        for cid, loc in entries:
            try:
                repo.decode_chunk(cid, loc, repo.packs.read_record(loc, cid))
            except SnapstoreError:
                with repo.index.write() as w:
                    w.drop(cid)
                dropped += 1
            progress.advance(loc.raw_size)
        progress.finish()
    damaged = []
    for sid in repo.snapshots.list_ids():
        try:
            if any(
                isinstance(rec, ChunkRef) and not repo.has_chunk(rec.chunk_id)
                for rec in repo.iter_records(sid)
            ):
                damaged.append(sid)
        except SnapstoreError:
            damaged.append(sid)
    if dropped:
        recovery.recount(repo.index, repo.snapshots)
    return RepairReport(
        rebuilt.chunks,
        rebuilt.duplicates,
        dropped,
        tuple(damaged),
        rebuilt.damaged_manifests,
        tuple(rewritten),
    )
