"""verify's view of the manifests: each manifest's distinct chunk ids, ascending, in a
temporary file (32 bytes each), merged into one ascending stream of the chunks named, who
names them and what their counts should be (repo_verify.py)."""

from __future__ import annotations

import heapq
import itertools
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from snapstore.chunkset import ChunkIdSet
from snapstore.errors import translate_os_error
from snapstore.model import ChunkId, SnapshotId

# How far a snapshot is counted (the counted table): whole or not, or (sign, last chunk id done)
CountState = tuple[int, bytes] | bool


class ManifestRuns:
    """Each manifest's distinct chunk ids, ascending, in a temporary file (32 bytes each)."""

    def __init__(self) -> None:
        self.files: list[tuple[BinaryIO, SnapshotId, bool, CountState]] = []

    def __enter__(self) -> ManifestRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        for f, _, _, _ in self.files:
            f.close()

    def add(self, ids: ChunkIdSet, sid: SnapshotId, published: bool, state: CountState) -> None:
        try:
            f = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
            f.write(ids.packed)
            f.seek(0)
        except OSError as exc:
            raise translate_os_error(exc, "a temporary file") from exc
        self.files.append((f, sid, published, state))

    def merged(self) -> Iterator[tuple[ChunkId, int]]:
        """(chunk id, run number), ascending by chunk id."""
        return heapq.merge(*(_read_run(f, i) for i, (f, _, _, _) in enumerate(self.files)))


def _read_run(f: BinaryIO, i: int) -> Iterator[tuple[ChunkId, int]]:
    f.seek(0)
    while chunk_id := f.read(32):  # a buffered file
        yield ChunkId(chunk_id), i


def counts(state: CountState, chunk_id: ChunkId) -> bool:
    """Whether a snapshot in this state of the counted table has this chunk's reference counted."""
    if isinstance(state, bool):
        return state
    sign, last = state
    return chunk_id <= last if sign > 0 else chunk_id > last


def grouped(runs: ManifestRuns) -> Iterator[tuple[ChunkId, tuple[SnapshotId, ...], int, int]]:
    """Each chunk the manifests name: the published snapshots naming it, its expected count
    and its expected owners (the XOR of the counted snapshots' ids, as an integer)."""
    for chunk_id, group in itertools.groupby(runs.merged(), key=lambda item: item[0]):
        users = []
        expected = owners = 0
        for _, i in group:
            _, sid, published, state = runs.files[i]
            if published:
                users.append(sid)
            if counts(state, chunk_id):
                expected += 1
                owners ^= int.from_bytes(sid, "little")
        yield chunk_id, tuple(users), expected, owners
