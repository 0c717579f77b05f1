"""Verifying a local repository (Repository.verify): its structure and, optionally, every
stored byte. The operation (ops/verify.py) and the CLI report what this finds.

Structure: the index opens and every entry decodes; every manifest parses and matches its
id; every chunk it names is in the index; every pack an entry points into exists and has a
valid header; each entry's record header in its pack is intact and agrees with the entry, and
the pack's trailer (format 2) lists it there; reference counts agree with the manifests.
``read_data`` (or a seeded ``sample`` percentage) also reads, decodes and hashes chunks. Each
problem names the snapshots it affects. Pack-level checks are in repo_verify_packs.py, the
manifests' sorted chunk ids in repo_verify_runs.py.

What a killed command leaves behind and recovery handles (a pending or trashed manifest that
is still counted, unfinished manifests, unindexed packs, the garbage list) is not a problem:
verify accepts every state between two steps of the write order in docs/FORMAT.md.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from snapstore import codec, recovery, repo_index
from snapstore.chunkset import ChunkIdSet
from snapstore.errors import CorruptError, IntegrityError, SnapstoreError
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import Buffer, ChunkId, ChunkLocation, PackId, SnapshotId
from snapstore.progress import Progress
from snapstore.repo_delta import PayloadDecoder
from snapstore.repo_keptsizes import KeptSizes
from snapstore.repo_trees import tree_loader
from snapstore.repo_verify_packs import Trailers, damaged_headers
from snapstore.repo_verify_runs import CountState, ManifestRuns, grouped
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, Snapshots
from snapstore.storage.snapshots import PENDING, TRASH

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
    packs: Packs
    snapshots: Snapshots


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
    packs: Packs,
    snapshots: Snapshots,
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
    repo = replace(repo, index=index)  # (a delta's base is looked up in the index checked)
    loader = repo.snapshots.load_tree
    if temporary is not None:  # tree objects are found through the index checked against
        repo.snapshots.load_tree = tree_loader(index, repo.packs)
    try:
        with index.read() as r:
            counted = {sid: r.count_state(sid) for sid in r.iter_counted()}
            lost = dict(r.iter_lost())
        with ManifestRuns() as runs:
            _read_manifests(repo, snapshot_ids, counted, runs, problems)
            eligible, raw_total = _eligible(index, on_disk)
            chooser = _Chooser(eligible, read_data, sample, seed)
            if chooser.share is None:
                progress.start(eligible, "verify")
            else:
                progress.start(round(raw_total * chooser.share), "verify")
            checked = _check_all(repo, index, runs, lost, on_disk, chooser, problems, progress)
            progress.finish()
        problems.extend(Problem("pack", detail) for detail in damaged_headers(repo.packs, on_disk))
    finally:
        repo.snapshots.load_tree = loader
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
    index, path, _ = repo_index.temporary_index(repo.packs, repo.snapshots)
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


def _read_manifests(
    repo: _Stores,
    snapshot_ids: list[SnapshotId],
    counted: dict[SnapshotId, CountState],
    runs: ManifestRuns,
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
    for prefix, ids in ((PENDING, repo.snapshots.list_pending()), (TRASH, repo.snapshots.list_trash())):
        for sid in ids:
            if sid in counted and sid not in published:
                where = repo.snapshots.where(prefix, sid)
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
    return recovery.with_bases(repo.index, ids)  # a snapshot needs the bases of its deltas


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
    runs: ManifestRuns,
    lost: dict[ChunkId, int],
    on_disk: set[PackId],
    chooser: _Chooser,
    problems: list[Problem],
    progress: Progress,
) -> int:
    """One pass over the index entries and the manifests' chunks, both ascending: damaged
    entries, chunks the manifests name that are not indexed, wrong counts (of the chunks
    indexed and of those in the lost table), missing packs (one problem each), each entry's
    record (read, and decoded and hashed when chosen) and its place in its pack's trailer
    (one problem per pack). Returns the entries seen."""
    missing: dict[PackId, tuple[int, set[SnapshotId]]] = {}
    entries = 0
    sizes = KeptSizes()
    trailers = Trailers(repo.packs, sorted(on_disk))
    with index.read() as r:
        decoder = PayloadDecoder(r.get, repo.packs.read_record)
        kept = r.sizes_ready()  # owners and sizes are kept (not in an index of version 1)
        named = grouped(runs)
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
            _check_record(repo, chunk_id, entry, decode, users, problems, decoder)
            trailers.check(chunk_id, entry, users)
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
    problems.extend(Problem("pack", detail, users) for detail, users in trailers.report())
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
    decoder: PayloadDecoder,
) -> None:
    try:
        payload = repo.packs.read_record(loc, chunk_id)
        if decode:
            decoder(chunk_id, loc, payload)
    except SnapstoreError as exc:
        kind = "data" if isinstance(exc, IntegrityError) else "pack"
        problems.append(Problem(kind, exc.message, users))
