"""diff: the byte ranges that changed between two snapshots of a file, from their chunk
lists (snapstore/changes.py plans; this module only reads the two manifests)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from snapstore.changes import ChangedRange, Piece, changed_ranges
from snapstore.errors import UsageError
from snapstore.model import ChunkRef, SnapshotInfo, ZeroRun
from snapstore.repo import Repository


@dataclass(frozen=True)
class DiffResult:
    old: SnapshotInfo
    new: SnapshotInfo
    ranges: list[ChangedRange]

    @property
    def changed_bytes(self) -> int:
        return sum(r.length for r in self.ranges)


def pieces(repo: Repository, snapshot: SnapshotInfo) -> Iterator[Piece]:
    """A file snapshot's chunks and zero runs as ``(length, chunk id or None)``, in order."""
    for record in repo.iter_records(snapshot.id):
        if isinstance(record, ChunkRef):
            yield record.raw_size, record.chunk_id
        elif isinstance(record, ZeroRun):
            yield record.length, None


def diff(repo: Repository, old: SnapshotInfo, new: SnapshotInfo) -> DiffResult:
    """The merged byte ranges where ``new`` may differ from ``old`` (both file snapshots of
    one entry); no chunk is read. Raises UsageError for a snapshot of several entries."""
    for s in (old, new):
        if s.entries != 1:
            raise UsageError(f"snapshot {s.hex[:12]} is not a single file ({s.entries} entries)")
    return DiffResult(old, new, list(changed_ranges(pieces(repo, old), pieces(repo, new))))
