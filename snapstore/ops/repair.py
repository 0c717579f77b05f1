"""repair: rebuild the index from the packs alone, then check what the manifests still have.

Pack data is never deleted here: a chunk record that cannot be proven unreferenced stays
(duplicates go on gc's garbage list only once another copy was read back good). With
``read_data``, chunks whose bytes do not match their id are dropped from the index, so no
new snapshot can dedup against them (committing the same data again stores a good copy and
heals the snapshots that name it); the snapshots that needed them are named. A damaged pack
header, whose 16 bytes are the same in every pack, is written again; so is, from a scan of
its pack and before the rebuild reads it, a trailer that omits a record the old index
pointed at.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.errors import SnapstoreError
from snapstore.model import PackId, SnapshotId
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
    rewritten_pack_trailers: tuple[PackId, ...] = ()  # omitted records the old index pointed at


def repair(repo: Repository, *, read_data: bool = False, progress: Progress = NULL_PROGRESS) -> RepairReport:
    """``repo`` must have been opened EXCLUSIVE with ``rebuild_index=True`` (the index is
    then already rebuilt from the packs, in a temporary directory and moved into place)."""
    if repo.mode is not Mode.EXCLUSIVE or repo.rebuild_report is None:
        raise AssertionError("repair needs the repository opened EXCLUSIVE with rebuild_index")
    rebuilt = repo.rebuild_report
    rewritten = repo.rewrite_damaged_pack_headers()
    dropped = repo.drop_corrupt_chunks(progress) if read_data else 0
    damaged = []  # a manifest that cannot be read whole, or a chunk it names is not stored
    for sid in repo.snapshot_ids():
        try:
            chunks = next(repo.snapshot_chunk_sets([sid]))
        except SnapstoreError:
            damaged.append(sid)
            continue
        if not all(repo.has_chunks(chunks)):
            damaged.append(sid)
    return RepairReport(
        rebuilt.chunks,
        rebuilt.duplicates,
        dropped,
        tuple(damaged),
        rebuilt.damaged_manifests,
        rewritten,
        rebuilt.rewritten_trailers,
    )
