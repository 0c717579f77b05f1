"""Fault sweeps on the in-memory backend (issue 12, "Done when" 1): tests/test_faults.py's
suite, where a backend call fails instead of a system call.

gc (as planned by default, and repacking every pack with a dead record), prune (keep rules,
and a quota), rm, repair, verify and, on the backend declaring no capability, commit run
through a :class:`FaultyBackend` whose Nth call fails with EIO or ENOSPC, is torn (a put gets
half its data, then fails) or crashes (it and every later call fail: the process "died").
Each run ends in success or in the documented error of that fault (exit 8 for ENOSPC, 11
otherwise), never in another exception. Afterwards a restart (the dead process's lock
objects deleted by hand, as docs/BACKENDS.md says) finds: verify --read-data clean, every
snapshot the operation was not removing reading back identical, no unknown snapshot; the
next writer's recovery leaves no ``tmp/`` or lock object; and the operation, run again,
succeeds and finishes the job.

The sweep samples about ``POINTS`` calls of each operation per fault kind; the slow variant
(in CI) about ``SLOW_POINTS``, and every call with ``SNAP_EVERY_CALL=1`` (about 30 min on a
loaded 2-core machine: too long for CI). Both backends run: the memory backend appends packs
with checkpoints, the put-only one builds each pack in memory and puts it whole. (A repository over a backend
never punches holes: gc repacks, see Maintenance.can_punch.)

Checkout under read faults: a get that returns one byte short or a flipped bit (the backend
breaking its interface) never makes checkout write wrong bytes: it fails with the exit code
of damage (4 or 5), leaving no output, or succeeds byte for byte.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import snapstore
from snapstore import KeepPolicy, Mode
from snapstore.backends import Backend, Fault, FaultyBackend
from snapstore.errors import SnapstoreError
from snapstore.model import ChunkId, ChunkRef, SnapshotId
from snapstore.ops import gc
from snapstore.ops.repair import repair
from snapstore.ops.verify import VerifyReport
from tests.backend_repos import MemRepo, check, sha, two_disks_and_scratch
from tests.helpers import file_sha

POINTS = 5
SLOW_POINTS = 20  # per operation and fault kind, in the slow variant
KINDS = ("eio", "enospc", "torn", "crash")
EXIT = {"eio": 11, "enospc": 8, "torn": 11, "crash": 11}
LATER = datetime.now(UTC) + timedelta(days=1)


@dataclass
class Base:
    repo: MemRepo
    new_content: bytes  # what the commit operation commits
    quota: int  # a quota that only dropping disk[0] meets

    @property
    def disk(self) -> list[SnapshotId]:
        return self.repo.names["disk"]

    @property
    def scratch(self) -> SnapshotId:
        return self.repo.names["scratch"][0]


def _remove(repo: MemRepo, *sids: SnapshotId) -> None:
    with repo.open(Mode.WRITE) as r:
        for sid in sids:
            r.remove_snapshot(sid)


@dataclass(frozen=True)
class Operation:
    run: Callable[[MemRepo, Backend, Base], object]  # under faults, through the backend given
    removes: Callable[[Base], set[SnapshotId]]
    prepare: Callable[[MemRepo, Base], None] = lambda repo, base: None  # before, not under fault
    rerun_while: Callable[[set[SnapshotId], Base], bool] = lambda listed, base: True


def _gc(**kwargs: Any) -> Callable[[MemRepo, Backend, Base], object]:
    def run(repo: MemRepo, backend: Backend, base: Base) -> object:
        with repo.open(Mode.EXCLUSIVE, backend) as r:
            return snapstore.gc(r, **kwargs)

    return run


def _rm(repo: MemRepo, backend: Backend, base: Base) -> None:
    with repo.open(Mode.WRITE, backend) as r:
        r.remove_snapshot(base.disk[0])


def _prune(policy: KeepPolicy, quota: bool) -> Callable[[MemRepo, Backend, Base], object]:
    def run(repo: MemRepo, backend: Backend, base: Base) -> object:
        with repo.open(Mode.EXCLUSIVE, backend) as r:
            return snapstore.prune(r, policy, now=LATER, quota_bytes=base.quota if quota else None)

    return run


def _repair(repo: MemRepo, backend: Backend, base: Base) -> object:
    with repo.open(Mode.EXCLUSIVE, backend, rebuild_index=True) as r:
        return repair(r, read_data=True)


def _verify(repo: MemRepo, backend: Backend, base: Base) -> object:
    with repo.open(Mode.CHECK, backend) as r:
        return snapstore.verify(r, read_data=True)


def _commit(repo: MemRepo, backend: Backend, base: Base) -> object:
    src = repo.cache.parent / "new.img"
    src.write_bytes(base.new_content)
    with repo.open(Mode.WRITE, backend) as r:
        return snapstore.commit_file(r, src, name="disk")


def _two_removed(repo: MemRepo, base: Base) -> None:
    _remove(repo, base.disk[0], base.scratch)


OPERATIONS = {
    "gc": Operation(_gc(), lambda b: {b.disk[0], b.scratch}, _two_removed),
    "gc-repack": Operation(_gc(repack_threshold=1.0), lambda b: {b.disk[0], b.scratch}, _two_removed),
    "rm": Operation(_rm, lambda b: {b.disk[0]}, rerun_while=lambda listed, b: b.disk[0] in listed),
    "prune": Operation(_prune(KeepPolicy(last=1), False), lambda b: {b.disk[0]}),
    "prune-quota": Operation(_prune(KeepPolicy(), True), lambda b: {b.disk[0]}),
    "repair": Operation(_repair, lambda b: set()),
    "verify": Operation(_verify, lambda b: set()),
    "commit": Operation(_commit, lambda b: set()),
}
CASES = [
    (op, kind) for op in OPERATIONS for kind in ("memory", "put-only") if (op, kind) != ("commit", "memory")
]
# A repository of deltas (issue 15): what writes, moves or drops delta records and their bases.
DELTA_CASES = [(op, "delta") for op in ("gc-repack", "prune-quota", "repair", "commit")]
DELTA_POINTS = 3  # (the sweeps of every kind of repository cover the rest)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Base]:
    """The base repository of each backend kind (built on first use)."""
    built: dict[str, Base] = {}

    def get(kind: str) -> Base:
        if kind not in built:
            repo, new_content = two_disks_and_scratch(kind, tmp_path_factory.mktemp(f"faults-{kind}"))
            with repo.open(Mode.EXCLUSIVE) as r:
                disk = r.disk_usage()
                freed = next(r.freed_by_removing([repo.names["disk"][0]]))
                quota = disk - gc.garbage_bytes(r) - freed // 2
            built[kind] = Base(repo, new_content, quota)
        return built[kind]

    return get


def _case(base: Base, op: Operation, tmp: Path) -> MemRepo:
    repo = base.repo.copy(tmp / "cache")
    op.prepare(repo, base)
    return repo


def _check_all(op_name: str, repo: MemRepo, base: Base, keep: set[SnapshotId], when: str) -> set[SnapshotId]:
    """``check``; after a commit, a snapshot we do not know must hold the new content."""
    if op_name == "commit":
        with repo.open() as r:
            for s in r.list_snapshots():
                repo.digests.setdefault(s.id, sha(base.new_content))  # checked by content
    return check(repo, keep, when)


class Naming(FaultyBackend):
    """Remembers which call the fault hit (its operation and object name)."""

    hit: tuple[str, str] | None = None

    def _enter(self, op: str, name: str) -> Fault | None:
        before = len(self.injected)
        try:
            return super()._enter(op, name)
        finally:
            if len(self.injected) > before:
                self.hit = (op, name)


def _best_effort(hit: tuple[str, str] | None) -> bool:
    """A call whose failure an operation may shrug off: releasing a lock object (it is then
    stale, deleted by hand)."""
    return hit is not None and hit[0] == "delete" and hit[1].startswith("locks/")


def sweep(op_name: str, kind: str, base: Base, tmp: Path, points: int | None) -> Counter[str]:
    op = OPERATIONS[op_name]
    keep = set(base.repo.digests) - op.removes(base)
    counted = FaultyBackend((ref := _case(base, op, tmp)).backend)
    op.run(ref, counted, base)
    _check_all(op_name, ref, base, keep, f"{op_name} unfailed")
    total = counted.calls["*"]
    assert total >= 10, counted.calls
    step = 1 if points is None else max(1, total // points)
    outcomes: Counter[str] = Counter()
    for fault_kind in KINDS:
        for nth in range(1, total + 1, step):
            repo = _case(base, op, tmp)
            faulty = Naming(repo.backend, [Fault("*", nth, fault_kind)])  # type: ignore[arg-type]
            when = f"{op_name} on {kind}, {fault_kind} at call {nth}/{total}"
            try:
                result = op.run(repo, faulty, base)
                if isinstance(result, VerifyReport) and not _best_effort(faulty.hit):
                    assert not result.ok, f"{when}: verify said ok though {faulty.hit} failed"
                outcomes["tolerated" if faulty.injected else "not reached"] += 1
            except SnapstoreError as exc:
                assert faulty.injected, f"{when}: failed before the fault: {exc}"
                assert exc.exit_code == EXIT[fault_kind], f"{when}: {type(exc).__name__} {exc}"
                outcomes["failed cleanly"] += 1
            repo.restart()
            _check_all(op_name, repo, base, keep, when)
            with repo.open(Mode.WRITE):
                pass  # the next writer's recovery
            assert repo.leftovers() == [], f"{when}: left {repo.leftovers()}"
            listed = _check_all(op_name, repo, base, keep, f"{when}, after recovery")
            if op.rerun_while(listed, base):
                op.run(repo, repo.backend, base)
                listed = _check_all(op_name, repo, base, keep, f"{when}, rerun")
                assert not listed & op.removes(base), f"{when}: the rerun did not finish the job"
                assert repo.leftovers() == [], f"{when}, rerun: left {repo.leftovers()}"
    if op_name != "verify":  # verify reports what it could not read, as problems
        assert outcomes["failed cleanly"] >= sum(outcomes.values()) // 2, outcomes
    return outcomes


@pytest.mark.parametrize(("op_name", "kind"), CASES + DELTA_CASES)
def test_every_nth_backend_call_fails(
    op_name: str, kind: str, bases: Callable[[str], Base], tmp_path: Path, report_count: Any
) -> None:
    outcomes = sweep(op_name, kind, bases(kind), tmp_path, DELTA_POINTS if kind == "delta" else POINTS)
    report_count("faults", f"{op_name} on {kind} (backend calls sampled x {len(KINDS)} kinds)", **outcomes)


@pytest.mark.slow
@pytest.mark.parametrize(("op_name", "kind"), CASES)
def test_each_backend_call_fails(
    op_name: str, kind: str, bases: Callable[[str], Base], tmp_path: Path, report_count: Any
) -> None:
    points = None if os.environ.get("SNAP_EVERY_CALL") else SLOW_POINTS
    outcomes = sweep(op_name, kind, bases(kind), tmp_path, points)
    shown = "every backend call" if points is None else f"~{points} backend calls"
    report_count("faults", f"{op_name} on {kind} ({shown} x {len(KINDS)} kinds)", **outcomes)


def test_the_sweeps_exercise_what_they_name(bases: Callable[[str], Base], tmp_path: Path) -> None:
    """The unfailed runs do the work the sweeps are about: gc frees a pack, the repacking gc
    repacks, the quota prune drops exactly the oldest disk."""
    base = bases("put-only")
    for name, attr in (("gc", "delete_packs"), ("gc-repack", "repack")):
        repo = _case(base, OPERATIONS[name], tmp_path)
        result = OPERATIONS[name].run(repo, repo.backend, base)
        assert isinstance(result, gc.GcResult)
        assert getattr(result.plan, attr), (name, result.plan)
    repo = _case(base, OPERATIONS["prune-quota"], tmp_path)
    pruned = OPERATIONS["prune-quota"].run(repo, repo.backend, base)
    assert isinstance(pruned, snapstore.PruneResult)
    assert [s.id for s in pruned.plan.drop] == [base.disk[0]] and pruned.plan.by_quota == (base.disk[0],)


def _deltas(r: snapstore.Repository, sid: SnapshotId) -> dict[ChunkId, ChunkId]:
    """The snapshot's chunks stored as deltas, with their bases."""
    found = {}
    for rec in r.iter_records(sid):
        if isinstance(rec, ChunkRef):
            loc = r.get_location(rec.chunk_id)
            if loc is not None and loc.base is not None:
                found[rec.chunk_id] = loc.base
    return found


def test_the_delta_sweeps_exercise_deltas(bases: Callable[[str], Base], tmp_path: Path) -> None:
    """In the delta base, disk[1]'s changed chunks are deltas with bases only disk[0] names:
    gc, after disk[0] is removed, keeps them (needed as bases) and the repacking gc moves
    them; the commit stores deltas against disk[1]'s keyframes."""
    base = bases("delta")
    with base.repo.open() as r:
        needed = set(_deltas(r, base.disk[1]).values())
        named = {rec.chunk_id for rec in r.iter_records(base.disk[1]) if isinstance(rec, ChunkRef)}
    assert len(needed - named) >= 5, needed
    for name in ("gc", "gc-repack"):
        repo = _case(base, OPERATIONS[name], tmp_path)
        result = OPERATIONS[name].run(repo, repo.backend, base)
        assert isinstance(result, gc.GcResult), result
        assert result.plan.dead_chunks, (name, result.plan)
        with repo.open() as r:
            assert all(r.get_location(b) is not None for b in needed), name
    repo = _case(base, OPERATIONS["commit"], tmp_path)
    committed = OPERATIONS["commit"].run(repo, repo.backend, base)
    assert isinstance(committed, snapstore.CommitResult)
    with repo.open() as r:
        assert len(_deltas(r, committed.snapshot.id)) >= 5


def test_an_index_rebuild_never_leaves_out_a_delta_it_could_not_read(
    bases: Callable[[str], Base], tmp_path: Path
) -> None:
    """Gets of an index rebuild (repair) of the delta base fail in turn with EIO (every third,
    which meets reads of a delta record's base id): the rebuild fails (exit 11) or succeeds
    whole, never leaving out a delta record whose base id it could not read (such a chunk
    was once left out as if damaged: its snapshot then lost it)."""
    base = bases("delta")

    def rebuild(repo: MemRepo, backend: Backend) -> None:
        with repo.open(Mode.EXCLUSIVE, backend, rebuild_index=True):
            pass

    counted = FaultyBackend(base.repo.backend)
    rebuild(base.repo, counted)
    outcomes: Counter[str] = Counter()
    for nth in range(2, counted.calls["get"] + 1, 3):
        repo = base.repo.copy(tmp_path / "cache")
        try:
            rebuild(repo, FaultyBackend(repo.backend, [Fault("get", nth, "eio")]))
            outcomes["tolerated"] += 1
        except SnapstoreError as exc:
            assert exc.exit_code == 11, f"get {nth}: {type(exc).__name__} {exc}"
            outcomes["failed cleanly"] += 1
        repo.restart()
        check(repo, set(repo.digests), f"index rebuild, EIO at get {nth}")
    assert outcomes["failed cleanly"] >= 5, outcomes


# -- checkout under read faults -------------------------------------------------------------------


class FlipMiddle(FaultyBackend):
    """``flip`` at the middle byte of the get instead of its first."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        before = len(self.injected)
        data = super().get(name, offset, length)
        if len(self.injected) > before and data:
            data = bytes([data[0] ^ 1]) + data[1:]  # undo the first byte's flip
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0x80]) + data[mid + 1 :]
        return data


@pytest.mark.parametrize("fault", ["short", "flip", "flip-middle"])
def test_checkout_never_writes_what_a_bad_read_gave(
    fault: str, bases: Callable[[str], Base], tmp_path: Path, report_count: Any
) -> None:
    base = bases("memory")
    repo = base.repo
    sid = base.disk[1]
    out = tmp_path / "out" / "disk.img"
    out.parent.mkdir()

    def run(backend: Backend) -> None:
        with repo.open(Mode.READ, backend) as r:
            snapstore.checkout(r, r.resolve(sid.hex()), str(out), force=True, threads=2)

    counted = FaultyBackend(repo.backend)
    run(counted)
    assert file_sha(out) == repo.digests[sid]
    total = counted.calls["get"]
    assert total > 20, counted.calls
    tally: Counter[str] = Counter()
    for nth in range(1, total + 1):
        out.unlink(missing_ok=True)
        kind = "flip" if fault == "flip-middle" else fault
        wrapper = FlipMiddle if fault == "flip-middle" else FaultyBackend
        faulty = wrapper(repo.backend, [Fault("get", nth, kind)])  # type: ignore[arg-type]
        when = f"{fault} at get {nth}/{total}"
        try:
            run(faulty)
        except SnapstoreError as exc:
            assert exc.exit_code in (4, 5), f"{when}: exit {exc.exit_code}: {type(exc).__name__} {exc}"
            assert not out.exists(), f"{when}: a failed checkout left its output"
            tally["failed cleanly"] += 1
        else:
            assert file_sha(out) == repo.digests[sid], f"{when}: checkout wrote wrong bytes"
            tally["identical" if faulty.injected else "not reached"] += 1
        assert [p.name for p in out.parent.iterdir()] in ([], ["disk.img"]), f"{when}: temp files left"
    assert tally["failed cleanly"] >= total // 2, tally
    report_count("faults", f"checkout under {fault} gets ({total} gets)", **tally)


def test_verify_never_says_ok_when_a_stat_or_list_failed(bases: Callable[[str], Base]) -> None:
    """Each stat and list call of verify fails in turn: verify raises the I/O error or
    reports a problem, never "no problems" over a pack it could not look at (a trailer whose
    read failed was once skipped as if damaged, the record checks then reading fine)."""
    repo = bases("memory").repo
    counted = FaultyBackend(repo.backend)
    _verify(repo, counted, bases("memory"))
    for op in ("stat", "list", "stat_many"):
        for nth in range(1, counted.calls[op] + 1):
            faulty = FaultyBackend(repo.backend, [Fault(op, nth, "eio")])
            try:
                report = _verify(repo, faulty, bases("memory"))
            except SnapstoreError as exc:
                assert exc.exit_code == 11, (op, nth, exc)
            else:
                assert isinstance(report, VerifyReport) and not report.ok, (op, nth)
            repo.restart()
