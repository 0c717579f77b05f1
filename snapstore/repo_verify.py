"""Verifying a local repository (Repository.verify): its structure and, optionally, every
stored byte. The operation (ops/verify.py) and the CLI report what this finds.

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

import heapq
import itertools
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from snapstore import codec, recovery
from snapstore.chunkset import ChunkIdSet
from snapstore.errors import CorruptError, IntegrityError, SnapstoreError, translate_os_error
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import Buffer, ChunkId, ChunkLocation, PackId, SnapshotId
from snapstore.progress import Progress
from snapstore.repo_keptsizes import KeptSizes
from snapstore.storage.index import Index
from snapstore.storage.packstore import PackStore
from snapstore.storage.snapshots import PENDING, TRASH, SnapshotStore

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


@dataclass(frozen=True)
class _Stores:
    index: Index
    index_problem: str | None
    packs: PackStore
    snapshots: SnapshotStore


def decode_chunk(chunk_id: ChunkId, loc: ChunkLocation, payload: Buffer) -> Buffer:
    """A chunk's plaintext from its stored payload, checked against its id."""
    data = codec.decode(loc.codec, payload, loc.raw_size)
    actual = hash_chunk(data)
    if actual != chunk_id:
        raise IntegrityError(f"chunk {chunk_id.hex()[:16]}", chunk_id.hex(), actual.hex())
    return data


def verify(
    index: Index,
    index_problem: str | None,
    packs: PackStore,
    snapshots: SnapshotStore,
    *,
    read_data: bool,
    sample: float | None,
    seed: int | None,
    progress: Progress,
) -> VerifyReport:
    """One streaming pass (memory: one manifest's chunk ids, 32 bytes each, at a time; the
    manifests' sorted chunk ids wait in temporary files and are merged with the index's own
    ascending order)."""
    repo = _Stores(index, index_problem, packs, snapshots)
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
    on_disk = set(repo.packs.iter_pack_ids())
    index, temporary = _usable_index(repo, on_disk, problems, everyone)
    try:
        with index.read() as r:
            counted = {sid: r.count_state(sid) for sid in r.iter_counted()}
            lost = dict(r.iter_lost())
        with _ManifestRuns() as runs:
            _read_manifests(repo, snapshot_ids, counted, runs, problems)
            eligible, raw_total = _eligible(index, on_disk)
            chooser = _Chooser(eligible, read_data, sample, seed)
            if chooser.share is None:
                progress.start(eligible, "verify")
            else:
                progress.start(round(raw_total * chooser.share), "verify")
            checked = _check_all(repo, index, runs, lost, on_disk, chooser, problems, progress)
            progress.finish()
        _check_pack_headers(repo, on_disk, problems)
    finally:
        if temporary is not None:
            index.close()
            shutil.rmtree(temporary, ignore_errors=True)
    return VerifyReport(len(snapshot_ids), checked, chooser.chosen, tuple(problems))


def _usable_index(
    repo: _Stores, on_disk: set[PackId], problems: list[Problem], everyone: tuple[SnapshotId, ...]
) -> tuple[Index, Path | None]:
    """The repository's index, or, if it breaks while it is read through, a temporary one
    rebuilt from the packs (the problem is reported)."""
    try:
        _eligible(repo.index, on_disk)
        with repo.index.read() as r:
            for _ in r.iter_counted():
                pass
            for _ in r.iter_lost():
                pass
        return repo.index, None
    except CorruptError as exc:
        problems.append(
            Problem("index", f"{exc.message}; checked against an index rebuilt from the packs", everyone)
        )
    index, path, _ = recovery.temporary_index(repo.packs, repo.snapshots)
    return index, path


def _eligible(index: Index, on_disk: set[PackId]) -> tuple[int, int]:
    """How many entries decode and point into a pack on disk (the chunks that can be read),
    and their raw bytes."""
    n = raw = 0
    with index.read() as r:
        for _, entry in r.iter_entries():
            if not isinstance(entry, CorruptError) and entry.pack_id in on_disk:
                n += 1
                raw += entry.raw_size
    return n, raw


class _ManifestRuns:
    """Each manifest's distinct chunk ids, ascending, in a temporary file (32 bytes each)."""

    def __init__(self) -> None:
        self.files: list[tuple[BinaryIO, SnapshotId, bool, CountState]] = []

    def __enter__(self) -> _ManifestRuns:
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


CountState = tuple[int, bytes] | bool


def _read_run(f: BinaryIO, i: int) -> Iterator[tuple[ChunkId, int]]:
    f.seek(0)
    while chunk_id := f.read(32):  # a buffered file
        yield ChunkId(chunk_id), i


def _counts(state: CountState, chunk_id: ChunkId) -> bool:
    """Whether a snapshot in this state of the counted table has this chunk's reference counted."""
    if isinstance(state, bool):
        return state
    sign, last = state
    return chunk_id <= last if sign > 0 else chunk_id > last


def _read_manifests(
    repo: _Stores,
    snapshot_ids: list[SnapshotId],
    counted: dict[SnapshotId, CountState],
    runs: _ManifestRuns,
    problems: list[Problem],
) -> None:
    """Every published manifest's chunks, and those of pending or trashed manifests that
    are (still) counted after a kill: they count but name no chunk for a snapshot."""
    for sid in snapshot_ids:
        state = counted.get(sid, False)
        runs.add(_chunks_of(repo, sid, "", problems), sid, True, state)
        if state is False:
            problems.append(Problem("refcount", f"snapshot {sid.hex()[:12]} is not counted", (sid,)))
    published = set(snapshot_ids)
    tmp = repo.snapshots.tmp_dir
    for prefix, ids in ((PENDING, repo.snapshots.list_pending()), (TRASH, repo.snapshots.list_trash())):
        for sid in ids:
            if sid in counted and sid not in published:
                where = str(tmp / f"{prefix}{sid.hex()}")
                runs.add(_chunks_of(repo, sid, where, problems), sid, False, counted[sid])
                published.add(sid)
    for sid in sorted(counted.keys() - published):
        detail = f"the index counts snapshot {sid.hex()[:12]}, which has no manifest"
        problems.append(Problem("refcount", detail))


def _chunks_of(repo: _Stores, sid: SnapshotId, where: str, problems: list[Problem]) -> ChunkIdSet:
    """The distinct chunks a manifest names; if it is damaged, those named before the damage."""
    ids, damage = recovery.read_chunk_set(repo.snapshots, sid, where)
    if damage is not None:
        problems.append(Problem("manifest", f"{damage.message}; {MANIFEST_ADVICE}", (sid,)))
    return ids


def _grouped(runs: _ManifestRuns) -> Iterator[tuple[ChunkId, tuple[SnapshotId, ...], int, int]]:
    """Each chunk the manifests name: the published snapshots naming it, its expected count
    and its expected owners (the XOR of the counted snapshots' ids, as an integer)."""
    for chunk_id, group in itertools.groupby(runs.merged(), key=lambda item: item[0]):
        users = []
        expected = owners = 0
        for _, i in group:
            _, sid, published, state = runs.files[i]
            if published:
                users.append(sid)
            if _counts(state, chunk_id):
                expected += 1
                owners ^= int.from_bytes(sid, "little")
        yield chunk_id, tuple(users), expected, owners


class _Chooser:
    """Which readable chunks to read and hash: all (``read_data``), none, or exactly
    ``round(n * sample%)`` of them chosen by a seeded selection sampling as they stream by."""

    def __init__(self, eligible: int, read_data: bool, sample: float | None, seed: int | None) -> None:
        self.left = eligible
        self.chosen = 0
        if sample is not None:
            self.share: float | None = max(0.0, min(100.0, sample)) / 100
            self.wanted = round(eligible * self.share)
        else:
            self.share = 1.0 if read_data else None
            self.wanted = eligible if read_data else 0
        self._rng = random.Random(seed)

    def take(self) -> bool:
        if self.left <= 0:
            return False
        pick = self.wanted > self.chosen and (
            self.share == 1.0 or self._rng.random() * self.left < self.wanted - self.chosen
        )
        self.left -= 1
        self.chosen += pick
        return pick


def _check_all(
    repo: _Stores,
    index: Index,
    runs: _ManifestRuns,
    lost: dict[ChunkId, int],
    on_disk: set[PackId],
    chooser: _Chooser,
    problems: list[Problem],
    progress: Progress,
) -> int:
    """One pass over the index entries and the manifests' chunks, both ascending: damaged
    entries, chunks the manifests name that are not indexed, wrong counts (of the chunks
    indexed and of those in the lost table), missing packs (one problem each), and each
    entry's record (read, and decoded and hashed when chosen). Returns the entries seen."""
    missing: dict[PackId, tuple[int, set[SnapshotId]]] = {}
    entries = 0
    sizes = KeptSizes()
    with index.read() as r:
        kept = r.sizes_ready()  # owners and sizes are kept (not in an index of version 1)
        named = _grouped(runs)
        lost_left = iter(sorted(lost.items()))
        for chunk_id, entry, users, expected, owners, in_lost in _union(r.iter_entries(), named, lost_left):
            if entry is not None:
                entries += 1
            if isinstance(entry, CorruptError):
                detail = f"entry of chunk {chunk_id.hex()[:16]}: {entry.detail}"
                problems.append(Problem("index", detail, users))
                continue
            if entry is None:
                if users:
                    detail = f"chunk {chunk_id.hex()[:16]} is not in the index"
                    problems.append(Problem("missing-chunk", detail, users))
                if (in_lost or 0) != expected:
                    problems.append(
                        Problem(
                            "refcount",
                            f"lost chunk {chunk_id.hex()[:16]} counted {in_lost or 0}, "
                            f"referenced by {expected} snapshots",
                            users,
                        )
                    )
                continue
            if entry.refcount != expected:
                problems.append(
                    Problem(
                        "refcount",
                        f"chunk {chunk_id.hex()[:16]} counted {entry.refcount}, "
                        f"referenced by {expected} snapshots",
                        users,
                    )
                )
            elif kept and int.from_bytes(entry.owners, "little") != owners:
                detail = f"chunk {chunk_id.hex()[:16]}: its owners do not match the snapshots naming it"
                problems.append(Problem("refcount", detail, users))
            sizes.add(entry, expected, owners)
            if entry.pack_id not in on_disk:
                count, hit = missing.get(entry.pack_id, (0, set()))
                missing[entry.pack_id] = (count + 1, hit | set(users))
                continue
            decode = chooser.take()
            _check_record(repo, chunk_id, entry, decode, users, problems)
            if chooser.share is None:
                progress.advance(1)
            elif decode:
                progress.advance(entry.raw_size)
        counted = [sid for _, sid, _, state in runs.files if state is True]
        for detail, sid in sizes.mismatches(r, counted):
            problems.append(Problem("refcount", detail, () if sid is None else (sid,)))
    for pack_id in sorted(missing):
        count, hit = missing[pack_id]
        detail = f"pack {pack_id.hex()} is missing ({count} chunks)"
        problems.append(Problem("pack", detail, tuple(sorted(hit))))
    return entries


# (chunk id, index entry or None, users, expected count, expected owners, lost count or None)
_Row = tuple[ChunkId, ChunkLocation | CorruptError | None, tuple[SnapshotId, ...], int, int, int | None]


def _union(
    entries: Iterator[tuple[ChunkId, ChunkLocation | CorruptError]],
    named: Iterator[tuple[ChunkId, tuple[SnapshotId, ...], int, int]],
    lost: Iterator[tuple[ChunkId, int]],
) -> Iterator[_Row]:
    """Merge three ascending streams by chunk id: (id, index entry or None, users, expected
    count, expected owners, count in the lost table or None)."""
    end = (ChunkId(b"\xff" * 33),)
    e = next(entries, None) or (end[0], None)
    n = next(named, None) or (end[0], (), 0, 0)
    k = next(lost, None) or (end[0], None)
    while min(e[0], n[0], k[0]) != end[0]:
        key = min(e[0], n[0], k[0])
        entry = e[1] if e[0] == key else None
        users, expected, owners = (n[1], n[2], n[3]) if n[0] == key else ((), 0, 0)
        in_lost = k[1] if k[0] == key else None
        yield key, entry, users, expected, owners, in_lost
        if e[0] == key:
            e = next(entries, None) or (end[0], None)
        if n[0] == key:
            n = next(named, None) or (end[0], (), 0, 0)
        if k[0] == key:
            k = next(lost, None) or (end[0], None)


def _check_record(
    repo: _Stores,
    chunk_id: ChunkId,
    loc: ChunkLocation,
    decode: bool,
    users: tuple[SnapshotId, ...],
    problems: list[Problem],
) -> None:
    try:
        payload = repo.packs.read_record(loc, chunk_id)
        if decode:
            decode_chunk(chunk_id, loc, payload)
    except SnapstoreError as exc:
        kind = "data" if isinstance(exc, IntegrityError) else "pack"
        problems.append(Problem(kind, exc.message, users))


def _check_pack_headers(repo: _Stores, on_disk: set[PackId], problems: list[Problem]) -> None:
    """Damaged pack headers (the chunks stay readable: each record carries its own checksum)."""
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
