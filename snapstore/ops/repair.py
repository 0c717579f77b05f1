"""repair: rebuild the index from the packs alone, then check what the manifests still have.

Pack data is never deleted here: a chunk record that cannot be proven unreferenced stays.
With ``read_data``, chunks whose bytes do not match their id are dropped from the index (so
no new snapshot can dedup against them) and the snapshots that needed them are named.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapstore import recovery
from snapstore.errors import SnapstoreError
from snapstore.model import ChunkRef, SnapshotId
from snapstore.repo import Mode, Repository


@dataclass(frozen=True)
class RepairReport:
    chunks_indexed: int
    duplicate_records: int
    dropped_corrupt: int
    damaged_snapshots: tuple[SnapshotId, ...]


def repair(repo: Repository, *, read_data: bool = False) -> RepairReport:
    if repo.mode is not Mode.EXCLUSIVE:
        raise AssertionError("repair needs the repository opened EXCLUSIVE")
    chunks, duplicates = recovery.rebuild(repo.index, repo.packs, repo.snapshots)
    dropped = 0
    if read_data:
        with repo.index.read() as r:
            entries = list(r.iter_locations())
        for cid, loc in entries:
            try:
                repo.decode_chunk(cid, loc, repo.packs.read_record(loc, cid))
            except SnapstoreError:
                with repo.index.write() as w:
                    w.delete(cid)
                dropped += 1
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
    return RepairReport(chunks, duplicates, dropped, tuple(damaged))
