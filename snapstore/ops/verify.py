"""verify: check the repository's structure and, optionally, every stored byte.

Structure: every manifest parses and matches its id; every chunk it names is in the index;
each index entry's record header in its pack is intact and agrees with the entry; reference
counts agree with the manifests. ``read_data`` (or a seeded ``sample`` fraction) also reads,
decodes and hashes chunks. Each problem names the snapshots it affects.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from snapstore.errors import SnapstoreError
from snapstore.model import ChunkId, ChunkRef, SnapshotId
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository


@dataclass(frozen=True)
class Problem:
    kind: str  # manifest | missing-chunk | pack | refcount | data
    detail: str
    snapshots: tuple[SnapshotId, ...] = ()


@dataclass(frozen=True)
class VerifyReport:
    snapshots: int
    chunks: int
    chunks_read: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    repo: Repository,
    *,
    read_data: bool = False,
    sample: float | None = None,
    seed: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> VerifyReport:
    problems: list[Problem] = []
    counts: Counter[ChunkId] = Counter()
    users: dict[ChunkId, list[SnapshotId]] = defaultdict(list)
    snapshot_ids = repo.snapshots.list_ids()
    for sid in snapshot_ids:
        try:
            distinct = {r.chunk_id for r in repo.iter_records(sid) if isinstance(r, ChunkRef)}
        except SnapstoreError as exc:
            problems.append(Problem("manifest", exc.message, (sid,)))
            continue
        for cid in distinct:
            counts[cid] += 1
            users[cid].append(sid)
    bad: dict[ChunkId, str] = {}
    with repo.index.read() as r:
        indexed = {cid: loc for cid, loc in r.iter_locations()}
    for cid in counts:
        if cid not in indexed:
            bad[cid] = "missing-chunk"
            problems.append(
                Problem("missing-chunk", f"chunk {cid.hex()[:16]} is not in the index", tuple(users[cid]))
            )
    for cid, loc in indexed.items():
        if loc.refcount != counts.get(cid, 0):
            problems.append(
                Problem(
                    "refcount",
                    f"chunk {cid.hex()[:16]} counted {loc.refcount}, "
                    f"referenced by {counts.get(cid, 0)} snapshots",
                    tuple(users[cid]),
                )
            )
    to_read = _choose(sorted(indexed), read_data, sample, seed)
    progress.start(sum(indexed[c].raw_size for c in to_read) if to_read else len(indexed), "verify")
    for cid, loc in indexed.items():
        try:
            payload = repo.packs.read_record(loc, cid)
            if cid in to_read:
                repo.decode_chunk(cid, loc, payload)
                progress.advance(loc.raw_size)
            elif not to_read:
                progress.advance(1)
        except SnapstoreError as exc:
            kind = "data" if cid in to_read else "pack"
            bad[cid] = kind
            problems.append(Problem(kind, exc.message, tuple(users.get(cid, ()))))
    progress.finish()
    return VerifyReport(len(snapshot_ids), len(indexed), len(to_read), tuple(problems))


def _choose(
    chunk_ids: list[ChunkId], read_data: bool, sample: float | None, seed: int | None
) -> set[ChunkId]:
    if sample is not None:
        k = round(len(chunk_ids) * max(0.0, min(100.0, sample)) / 100)
        return set(random.Random(seed).sample(chunk_ids, k))
    return set(chunk_ids) if read_data else set()


def affected(problems: Iterable[Problem]) -> set[SnapshotId]:
    return {sid for p in problems for sid in p.snapshots}
