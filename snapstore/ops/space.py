"""What removing snapshots would free, from reference counts: one pass over the removed
snapshots' own manifests, never over the others (the repository computes it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from snapstore.model import SnapshotId
from snapstore.repo import Repository


def freed_by_removing(repo: Repository, snapshot_ids: Iterable[SnapshotId]) -> Iterator[int]:
    """Cumulative pack bytes freed after removing each snapshot in turn (lazy)."""
    return repo.freed_by_removing(snapshot_ids)


def exclusive_bytes(repo: Repository, snapshot_id: SnapshotId) -> int:
    """Pack bytes that only this snapshot references (what removing it alone frees)."""
    return next(repo.freed_by_removing([snapshot_id]), 0)
