"""verify: check the repository's structure and, optionally, every stored byte.

Structure: the index opens and every entry decodes; every manifest parses and matches its
id; every chunk it names is in the index; every pack an entry points into exists and has a
valid header; each entry's record header in its pack is intact and agrees with the entry;
reference counts agree with the manifests. ``read_data`` (or a seeded ``sample`` percentage)
also reads, decodes and hashes chunks. Each problem names the snapshots it affects.

What a killed command leaves behind and recovery handles (a pending or trashed manifest that
is still counted, unfinished manifests, unindexed packs, the garbage list) is not a problem:
verify accepts every state between two steps of the write order in docs/FORMAT.md.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from snapstore import recovery
from snapstore.errors import CorruptError, IntegrityError, SnapstoreError
from snapstore.model import ChunkId, ChunkLocation, ChunkRef, PackId, SnapshotId
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.storage.index import Index
from snapstore.storage.snapshots import PENDING, TRASH

Entries = dict[bytes, ChunkLocation | CorruptError]
MANIFEST_ADVICE = (
    "restore the file if you can, then 'snap repair' (gc frees nothing while a manifest "
    "cannot be read whole), or give the snapshot up with 'snap rm ID'"
)


@dataclass(frozen=True)
class Problem:
    kind: str  # index | manifest | missing-chunk | pack | refcount | data
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
    snapshot_ids = repo.snapshots.list_ids()
    everyone = tuple(snapshot_ids)
    problems: list[Problem] = []
    if repo.index_problem is not None:
        problems.append(
            Problem(
                "index",
                f"{repo.index_problem}; checked against an index rebuilt from the packs (run 'snap repair')",
                everyone,
            )
        )
    entries, counted, lost = _index_entries(repo, problems, everyone)
    users, expected = _read_manifests(repo, snapshot_ids, counted, problems)
    locations = _check_entries(entries, lost, users, expected, problems)
    _check_packs(repo, locations, users, problems)
    to_read = _choose(sorted(locations), read_data, sample, seed)
    _check_records(repo, locations, to_read, users, problems, progress)
    return VerifyReport(len(snapshot_ids), len(entries), len(to_read), tuple(problems))


def _index_entries(
    repo: Repository, problems: list[Problem], everyone: tuple[SnapshotId, ...]
) -> tuple[Entries, set[SnapshotId], dict[ChunkId, int]]:
    """Every index entry, the counted snapshots and the lost table. If the index breaks while it is read,
    the problem is reported and a temporary index rebuilt from the packs is read instead."""
    try:
        return _read_index(repo.index)
    except CorruptError as exc:
        problems.append(
            Problem("index", f"{exc.message}; checked against an index rebuilt from the packs", everyone)
        )
    index, path, _ = recovery.temporary_index(repo.packs, repo.snapshots)
    try:
        return _read_index(index)
    finally:
        index.close()
        shutil.rmtree(path, ignore_errors=True)


def _read_index(index: Index) -> tuple[Entries, set[SnapshotId], dict[ChunkId, int]]:
    with index.read() as r:
        return dict(r.iter_entries()), set(r.iter_counted()), dict(r.iter_lost())


def _read_manifests(
    repo: Repository, snapshot_ids: list[SnapshotId], counted: set[SnapshotId], problems: list[Problem]
) -> tuple[dict[ChunkId, list[SnapshotId]], Counter[ChunkId]]:
    """Which published snapshots name each chunk, and what each chunk's count must be: the
    number of counted snapshots naming it, published or (after a kill) pending or trashed."""
    users: dict[ChunkId, list[SnapshotId]] = defaultdict(list)
    expected: Counter[ChunkId] = Counter()
    for sid in snapshot_ids:
        distinct = _chunks_of(repo, sid, "", problems)
        for cid in distinct:
            users[cid].append(sid)
        if sid in counted:
            expected.update(distinct)
        else:
            problems.append(Problem("refcount", f"snapshot {sid.hex()[:12]} is not counted", (sid,)))
    published = set(snapshot_ids)
    tmp = repo.snapshots.tmp_dir
    for prefix, ids in ((PENDING, repo.snapshots.list_pending()), (TRASH, repo.snapshots.list_trash())):
        for sid in ids:
            if sid in counted and sid not in published:
                expected.update(_chunks_of(repo, sid, str(tmp / f"{prefix}{sid.hex()}"), problems))
                published.add(sid)
    for sid in sorted(counted - published):
        detail = f"the index counts snapshot {sid.hex()[:12]}, which has no manifest"
        problems.append(Problem("refcount", detail))
    return users, expected


def _chunks_of(repo: Repository, sid: SnapshotId, where: str, problems: list[Problem]) -> set[ChunkId]:
    """The distinct chunks a manifest names; if it is damaged, those named before the damage."""
    distinct: set[ChunkId] = set()
    try:
        for record in repo.snapshots.iter_records(sid, where=where):
            if isinstance(record, ChunkRef):
                distinct.add(record.chunk_id)
    except (CorruptError, IntegrityError) as exc:
        problems.append(Problem("manifest", f"{exc.message}; {MANIFEST_ADVICE}", (sid,)))
    return distinct


def _check_entries(
    entries: Entries,
    lost: dict[ChunkId, int],
    users: dict[ChunkId, list[SnapshotId]],
    expected: Counter[ChunkId],
    problems: list[Problem],
) -> dict[ChunkId, ChunkLocation]:
    """Damaged entries, chunks the manifests name that are not indexed, wrong counts (of the
    chunks indexed and of those in the lost table); returns the entries that decode."""
    locations: dict[ChunkId, ChunkLocation] = {}
    for cid, entry in entries.items():
        if isinstance(entry, CorruptError):
            detail = f"entry of chunk {cid.hex()[:16]}: {entry.detail}"
            problems.append(Problem("index", detail, tuple(users.get(cid, ()))))
        else:
            locations[cid] = entry
    for cid, names in users.items():
        if cid not in entries:
            detail = f"chunk {cid.hex()[:16]} is not in the index"
            problems.append(Problem("missing-chunk", detail, tuple(names)))
    for cid in (expected.keys() | lost.keys()) - entries.keys():
        if lost.get(cid, 0) != expected.get(cid, 0):
            problems.append(
                Problem(
                    "refcount",
                    f"lost chunk {cid.hex()[:16]} counted {lost.get(cid, 0)}, "
                    f"referenced by {expected.get(cid, 0)} snapshots",
                    tuple(users.get(cid, ())),
                )
            )
    for cid, loc in locations.items():
        if loc.refcount != expected.get(cid, 0):
            problems.append(
                Problem(
                    "refcount",
                    f"chunk {cid.hex()[:16]} counted {loc.refcount}, "
                    f"referenced by {expected.get(cid, 0)} snapshots",
                    tuple(users.get(cid, ())),
                )
            )
    return locations


def _check_packs(
    repo: Repository,
    locations: dict[ChunkId, ChunkLocation],
    users: dict[ChunkId, list[SnapshotId]],
    problems: list[Problem],
) -> None:
    """Missing packs (one problem each, their chunks then are not read) and damaged pack
    headers (the chunks stay readable: each record carries its own checksum)."""
    on_disk = set(repo.packs.iter_pack_ids())
    by_pack: dict[PackId, list[ChunkId]] = defaultdict(list)
    for cid, loc in locations.items():
        by_pack[loc.pack_id].append(cid)
    for pack_id in sorted(by_pack.keys() - on_disk):
        chunks = by_pack[pack_id]
        hit = sorted({sid for cid in chunks for sid in users.get(cid, ())})
        detail = f"pack {pack_id.hex()} is missing ({len(chunks)} chunks)"
        problems.append(Problem("pack", detail, tuple(hit)))
        for cid in chunks:
            del locations[cid]
    for pack_id in sorted(on_disk):
        try:
            if repo.packs.path(pack_id).stat().st_size == 0:
                continue  # created by a commit killed before it wrote anything; gc removes it
            repo.packs.check_header(pack_id)
        except FileNotFoundError:
            continue
        except SnapstoreError as exc:
            problems.append(
                Problem("pack", f"{exc.message} (its chunks are still readable; 'snap repair' rewrites it)")
            )


def _check_records(
    repo: Repository,
    locations: dict[ChunkId, ChunkLocation],
    to_read: set[ChunkId],
    users: dict[ChunkId, list[SnapshotId]],
    problems: list[Problem],
    progress: Progress,
) -> None:
    progress.start(sum(locations[c].raw_size for c in to_read) if to_read else len(locations), "verify")
    for cid, loc in locations.items():
        try:
            payload = repo.packs.read_record(loc, cid)
            if cid in to_read:
                repo.decode_chunk(cid, loc, payload)
                progress.advance(loc.raw_size)
            elif not to_read:
                progress.advance(1)
        except SnapstoreError as exc:
            kind = "data" if isinstance(exc, IntegrityError) else "pack"
            problems.append(Problem(kind, exc.message, tuple(users.get(cid, ()))))
    progress.finish()


def _choose(
    chunk_ids: list[ChunkId], read_data: bool, sample: float | None, seed: int | None
) -> set[ChunkId]:
    if sample is not None:
        k = round(len(chunk_ids) * max(0.0, min(100.0, sample)) / 100)
        return set(random.Random(seed).sample(chunk_ids, k))
    return set(chunk_ids) if read_data else set()


def affected(problems: Iterable[Problem]) -> set[SnapshotId]:
    return {sid for p in problems for sid in p.snapshots}
