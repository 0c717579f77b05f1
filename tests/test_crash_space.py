"""Crash safety of gc, prune and rm: killed at any point, no kept snapshot loses a byte, and
a rerun finishes the job (garbage list empty, every dead record freed, counts right).

Two ways of killing:
- real ``snap`` subprocesses get SIGKILL at many moments spread over their working time
  (measured from when they take the repository lock to when an unkilled run exits);
- in process, a simulated death (an exception nothing catches) is raised before each durable
  step in turn: every index transaction, hole punch, pack removal, manifest rename/deletion.
  After such a death the removed versions are committed again before the rerun, so chunks
  that gc had half dealt with are brought back to life: they must survive the rerun.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snapstore import Mode, Repository, checkout, commit_file, repo_gc
from snapstore.model import SnapshotId
from snapstore.ops import gc, prune
from snapstore.recovery import chunk_set
from snapstore.retention import KeepPolicy
from snapstore.storage import fsio
from tests.conftest import SMALL_CHUNKER, SNAP
from tests.helpers import content_sha, copy_repository, file_sha
from tests.helpers import start_holding_lock as start
from tests.test_gc import du, make_base, rewrite

pytestmark = pytest.mark.slow
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what a healthy, finished repository looks like -------------------------------------------------


def assert_intact(
    repo: Path, expected: dict[str, str], scratch: Path, when: str, *, full: bool = True
) -> None:
    """Every snapshot in ``expected`` (id -> sha256 of its content) is listed and checks out
    (``full``: with a real checkout to a file; else read back and hashed)."""
    out = scratch / "checkout.out"
    with Repository.open(repo, Mode.READ) as r:
        listed = {s.hex: s for s in r.list_snapshots()}
        for sid, digest in expected.items():
            assert sid in listed, f"{when}: kept snapshot {sid[:12]} is gone"
            try:
                if full:
                    checkout(r, listed[sid], str(out), force=True)
                    actual = file_sha(out)
                else:
                    actual = content_sha(r, listed[sid].id)
            except Exception as exc:
                raise AssertionError(f"{when}: kept snapshot {sid[:12]} does not check out: {exc}") from exc
            assert actual == digest, f"{when}: kept snapshot {sid[:12]} checks out different bytes"
    out.unlink(missing_ok=True)


def verified(repo: Path, when: str) -> None:
    """``snap verify --read-data`` finds nothing wrong (what a kill leaves is not damage)."""
    res = snap("verify", "--read-data", "-r", str(repo))
    assert res.returncode == 0, f"{when}: verify: {res.stdout.decode()}{res.stderr.decode()}"


def assert_finished(repo: Path, when: str) -> None:
    """No gc work left: empty garbage list and tmp/, counts equal to what the manifests say,
    no dead chunk indexed, and no allocated record in any pack that the index does not own."""
    with Repository.open(repo, Mode.READ) as r:
        published = r._snapshots.list_ids()
        expected: Counter[bytes] = Counter()
        for sid in published:
            expected.update(chunk_set(r._snapshots, sid))
        with r._index.read() as t:
            garbage = list(t.iter_garbage())
            counted = set(t.iter_counted())
            locations = dict(t.iter_locations())
        assert not garbage, f"{when}: {len(garbage)} ranges left on the garbage list"
        assert counted == set(published), f"{when}: counted snapshots differ from the manifests"
        wrong = {
            cid: (loc.refcount, expected[cid])
            for cid, loc in locations.items()
            if loc.refcount != expected[cid]
        }
        assert not wrong, f"{when}: {len(wrong)} wrong reference counts, e.g. {next(iter(wrong.values()))}"
        assert set(expected) <= set(locations), f"{when}: a referenced chunk is not indexed"
        leaked = 0
        for pack_id in r._packs.iter_pack_ids():
            for offset, header in r._packs.scan(pack_id):
                loc = locations.get(header.chunk_id)
                if loc is None or (loc.pack_id, loc.offset) != (pack_id, offset):
                    leaked += header.record_size
        assert leaked == 0, f"{when}: {leaked} bytes of dead records are still allocated in packs"
    leftovers = os.listdir(repo / "tmp")
    assert not leftovers, f"{when}: tmp/ still holds {leftovers}"


# -- the history every crash test starts from --------------------------------------------------------


@dataclass
class Base:
    path: Path  # pristine repository: 8 versions of 'disk' and 2 of 'scratch'
    disk: list[str]  # ids, oldest first
    scratch: list[str]
    digests: dict[str, str]  # id -> sha256 of the content
    sources: dict[str, bytes] = field(default_factory=dict)  # id -> content (for recommits)


def build_history(
    path: Path, *, seed: int, size: int, versions: int, pieces: int, scratch_at: tuple[int, ...], scratch: int
) -> Base:
    """Versions of a 'disk' image, each rewriting ``pieces`` scattered 2 KiB pieces (dead
    chunks between live ones: gc punches many ranges), with versions of 'scratch' made at
    ``scratch_at`` (packs of their own that die whole). Small chunks and 1 MiB packs: many
    chunks, packs and fsyncs."""
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    data = make_base(seed, size)
    rng = random.Random(seed + 1)
    src = path.parent / f"{path.name}-src"
    base = Base(path, [], [], {})
    with Repository.open(path, Mode.WRITE) as r:
        for i in range(versions):
            if i:
                rewrite(data, 10 * seed + 20 + i, pieces, 2048)
            if i in scratch_at:
                content = rng.randbytes(scratch)
                src.write_bytes(content)
                s = commit_file(r, src, name="scratch").snapshot
                base.scratch.append(s.hex)
                base.digests[s.hex] = sha(content)
                base.sources[s.hex] = content
            src.write_bytes(data)
            s = commit_file(r, src, name="disk").snapshot
            base.disk.append(s.hex)
            base.digests[s.hex] = sha(bytes(data))
            base.sources[s.hex] = bytes(data)
    src.unlink()
    return base


def build_base(root: Path) -> Base:
    """8 versions of 16 MiB, 100 rewritten pieces each, 2 of 'scratch'."""
    return build_history(
        root / "base", seed=3, size=16 * MiB, versions=8, pieces=100, scratch_at=(0, 4), scratch=3 * MiB // 2
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return build_base(tmp_path_factory.mktemp("crash-base"))


def snap(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    return subprocess.run([*SNAP, *args], env=env, capture_output=True, timeout=300, check=False)


def snap_ok(*args: str) -> None:
    res = snap(*args)
    assert res.returncode == 0, f"snap {args[0]} failed ({res.returncode}): {res.stderr.decode()}"


# -- SIGKILL of real subprocesses ----------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    prepare: Callable[[Path], None]  # run on the fresh copy before the command
    command: list[str]  # snap arguments (without -r)
    keep: list[str]  # ids that must survive
    gone: list[str]  # ids the command removes
    rerun: Callable[[Path], None]  # finish the job after a kill


def state(repo: Path) -> tuple[Any, ...]:
    """A coarse fingerprint: which snapshots, tmp files, garbage, chunks and pack blocks."""
    with Repository.open(repo, Mode.READ) as r:
        with r._index.read() as t:
            garbage = len(list(t.iter_garbage()))
            chunks = t.chunk_count()
            counted = len(list(t.iter_counted()))
        packs = tuple(sorted((p.hex(), r._packs.path(p).stat().st_blocks) for p in r._packs.iter_pack_ids()))
        snaps = tuple(sorted(s.hex for s in r.list_snapshots()))
    return snaps, tuple(sorted(os.listdir(repo / "tmp"))), garbage, chunks, counted, packs


def run_kill_points(base: Base, sc: Scenario, points: int, scratch: Path) -> dict[str, int]:
    expected = {sid: base.digests[sid] for sid in sc.keep}
    # Calibrate on an unkilled run: how long the work takes once the lock is held, and the end state.
    ref = copy_repository(base.path, scratch / "ref")
    sc.prepare(ref)
    du_start = du(ref)
    before_state = state(ref)
    proc, locked = start(sc.command, ref)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()  # type: ignore[union-attr]
    work = time.monotonic() - locked
    sc.rerun(ref)
    assert_intact(ref, expected, scratch, f"{sc.name} unkilled")
    assert_finished(ref, f"{sc.name} unkilled")
    du_end = du(ref)
    final_state = state(ref)
    assert du_end < du_start - MiB, f"{sc.name}: the unkilled run freed almost nothing"

    tally = Counter({"killed": 0, "mid-run": 0, "unchanged": 0, "finished before the kill": 0})
    for i in range(points):
        fraction = (i + 0.5) / points
        for _attempt in range(4):
            repo = copy_repository(base.path, scratch / "work")
            sc.prepare(repo)
            proc, locked = start(sc.command, repo)
            time.sleep(max(0.0, locked + fraction * work - time.monotonic()))
            proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=60)
            if code == -signal.SIGKILL:
                break
            assert code == 0, proc.stderr.read()  # type: ignore[union-attr]
            tally["finished before the kill"] += 1
            fraction /= 2
        else:
            raise AssertionError(f"{sc.name}: could not kill the command while it ran")
        when = f"{sc.name} killed at {fraction:.2f} of {work * 1000:.0f} ms"
        tally["killed"] += 1
        now = state(repo)
        tally["unchanged" if now == before_state else "mid-run" if now != final_state else "done"] += 1
        assert_intact(repo, expected, scratch, when)
        verified(repo, when)
        sc.rerun(repo)
        assert_intact(repo, expected, scratch, f"{when}, after the rerun", full=False)
        assert_finished(repo, f"{when}, after the rerun")
        with Repository.open(repo, Mode.READ) as r:
            listed = {s.hex for s in r.list_snapshots()}
        assert listed.isdisjoint(sc.gone), f"{when}: the rerun left a snapshot it should remove"
        assert listed >= set(sc.keep)
        usage = du(repo)
        assert usage <= du_end + 512 * 1024, f"{when}: {usage} B after the rerun, {du_end} B unkilled"
        assert usage < du_start - MiB
    print(f"\n{sc.name}: work {work * 1000:.0f} ms, kill points: {dict(tally)}")
    # Most kills must land while the command is changing things, or this test proves little.
    assert tally["mid-run"] >= points // 3, (
        f"{sc.name}: only {tally['mid-run']} of {points} kills landed mid-run"
    )
    return dict(tally)


def test_sigkill_commit(base: Base, tmp_path: Path, report_count: Any) -> None:
    """A commit of a new version (scattered rewrites and new data over several packs) killed
    at fractions of its measured run: every earlier snapshot survives, the repository
    verifies, and a rerun commits the version byte-identical."""
    data = bytearray(base.sources[base.disk[-1]])
    rewrite(data, 777, 200, 4096)
    data += random.Random(778).randbytes(6 * MiB)
    src = tmp_path / "new.img"
    src.write_bytes(data)
    digest = sha(bytes(data))
    ref = copy_repository(base.path, tmp_path / "ref")
    before = state(ref)
    proc, locked = start(["commit", str(src), "--name", "new"], ref)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()  # type: ignore[union-attr]
    work = time.monotonic() - locked
    points = 30
    tally = Counter({"killed": 0, "mid-run": 0})
    for i in range(points):
        fraction = (i + 0.5) / points
        for _attempt in range(4):
            repo = copy_repository(base.path, tmp_path / "work")
            proc, locked = start(["commit", str(src), "--name", "new"], repo)
            time.sleep(max(0.0, locked + fraction * work - time.monotonic()))
            proc.send_signal(signal.SIGKILL)
            if proc.wait(timeout=60) == -signal.SIGKILL:
                break
            fraction /= 2
        else:
            raise AssertionError("could not kill the commit while it ran")
        when = f"commit killed at {fraction:.2f} of {work * 1000:.0f} ms"
        tally["killed"] += 1
        with Repository.open(repo, Mode.READ) as r:
            published = any(s.name == "new" for s in r.list_snapshots())
        tally["mid-run" if state(repo) != before and not published else "other"] += 1
        assert_intact(repo, base.digests, tmp_path, when)
        verified(repo, when)
        res = snap("commit", str(src), "--name", "new", "-r", str(repo))
        assert res.returncode == 0, f"{when}, rerun: {res.stderr.decode()}"
        new = res.stdout.decode().strip()
        assert_intact(repo, {**base.digests, new: digest}, tmp_path, f"{when}, after the rerun", full=False)
        assert os.listdir(repo / "tmp") == [], f"{when}: the rerun left {os.listdir(repo / 'tmp')}"
    print(f"\ncommit: work {work * 1000:.0f} ms, kill points: {dict(tally)}")
    assert tally["mid-run"] >= points // 2, f"only {tally['mid-run']} of {points} kills landed mid-run"
    report_count("crash", "commit 22 MiB (SIGKILL)", **points_counts(tally))


def rm_in_process(repo: Path, ids: list[str]) -> None:
    with Repository.open(repo, Mode.WRITE) as r:
        for sid in ids:
            r.remove_snapshot(SnapshotId(bytes.fromhex(sid)))


def points_counts(tally: dict[str, int]) -> dict[str, int]:
    return {"kill_points": tally["killed"], "landed_mid_run": tally["mid-run"]}


def test_sigkill_gc(base: Base, tmp_path: Path, report_count: Any) -> None:
    removed = [*base.disk[:4], base.scratch[0]]
    keep = [*base.disk[4:], base.scratch[1]]
    sc = Scenario(
        "gc",
        prepare=lambda repo: rm_in_process(repo, removed),
        command=["gc"],
        keep=keep,
        gone=removed,
        rerun=lambda repo: snap_ok("gc", "-r", str(repo)),
    )
    report_count("crash", "gc (SIGKILL)", **points_counts(run_kill_points(base, sc, 24, tmp_path)))


def test_sigkill_prune(base: Base, tmp_path: Path, report_count: Any) -> None:
    pinned = base.disk[2]
    keep = [pinned, base.disk[-1], base.scratch[1]]
    sc = Scenario(
        "prune --keep-last 1",
        prepare=lambda repo: snap_ok("pin", pinned, "-r", str(repo)),
        command=["prune", "--keep-last", "1"],
        keep=keep,
        gone=[s for s in [*base.disk, *base.scratch] if s not in keep],
        rerun=lambda repo: snap_ok("prune", "--keep-last", "1", "-r", str(repo)),
    )
    tally = run_kill_points(base, sc, 24, tmp_path)
    report_count("crash", "prune --keep-last 1 (SIGKILL)", **points_counts(tally))


def test_sigkill_rm(base: Base, tmp_path: Path, report_count: Any) -> None:
    targets = [*base.disk[:6], base.scratch[0]]

    def rerun(repo: Path) -> None:
        with Repository.open(repo, Mode.READ) as r:
            listed = {s.hex for s in r.list_snapshots()}
        left = [t for t in targets if t in listed]
        if left:  # the kill came before some removals: rm them again
            snap_ok("rm", *left, "-r", str(repo))
        snap_ok("gc", "-r", str(repo))

    sc = Scenario(
        "rm",
        prepare=lambda repo: None,
        command=["rm", *targets],
        keep=[*base.disk[6:], base.scratch[1]],
        gone=targets,
        rerun=rerun,
    )
    report_count("crash", "rm (SIGKILL)", **points_counts(run_kill_points(base, sc, 16, tmp_path)))


# -- simulated death before each durable step, in process ------------------------------------------


class Killed(BaseException):
    """Not an Exception: no handler in snapstore catches it, like a SIGKILL."""


@contextmanager
def die_at(repo: Repository, step: int | None) -> Iterator[Counter[str]]:
    """Count the durable steps ``repo`` takes; raise Killed just before step number ``step``."""
    seen: Counter[str] = Counter()
    targets: list[tuple[Any, str]] = [
        (repo._index, "write"),
        (repo._packs, "_retable"),  # a pack's trailer written again, before its ranges are punched
        (fsio, "punch_hole"),  # each range punched
        (repo._packs, "delete"),
        (repo._snapshots, "trash"),
        (repo._snapshots, "purge_trash"),
        (repo._pins, "unpin"),
    ]
    originals = []
    for obj, name in targets:
        real = getattr(obj, name)
        originals.append((obj, name, real))

        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen["total"] += 1
            seen[_name] += 1
            if step is not None and seen["total"] == step:
                raise Killed(f"before {_name} (step {step})")
            return _real(*args, **kwargs)

        setattr(obj, name, wrapper)
    try:
        yield seen
    finally:  # the module's function is shared by the whole process
        for obj, name, real in originals:
            if obj is fsio:
                setattr(obj, name, real)


def small_base(root: Path) -> Base:
    """A smaller history for in-process crashes: 4 versions of 3 MiB, 2 of 'scratch'."""
    return build_history(
        root / "small", seed=8, size=3 * MiB, versions=4, pieces=40, scratch_at=(0, 2), scratch=MiB
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return small_base(tmp_path_factory.mktemp("crash-small"))


Operation = Callable[[Repository], object]


def in_process_crashes(
    small: Base,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    prepare: Callable[[Path], None],
    operation: Operation,
    keep: list[str],
    removed: list[str],
    max_points: int = 25,
) -> int:
    """Kill ``operation`` before each of its durable steps (up to ``max_points`` of them,
    evenly spread), recommit the removed versions, rerun gc, and check everything."""
    monkeypatch.setattr(repo_gc, "_BATCH", 16)  # many small transactions: kills between batches
    expected = {sid: small.digests[sid] for sid in keep}
    ref = copy_repository(small.path, tmp_path / "ref")
    prepare(ref)
    with Repository.open(ref, Mode.EXCLUSIVE) as r, die_at(r, None) as seen:
        operation(r)
    steps = seen["total"]
    assert seen["punch_hole"] > 20, f"too few punches to test: {dict(seen)}"
    points = sorted({1 + (i * (steps - 1)) // max(1, max_points - 1) for i in range(max_points)})
    for step in points:
        when = f"killed before durable step {step} of {steps}"
        repo = copy_repository(small.path, tmp_path / "work")
        prepare(repo)
        with pytest.raises(Killed), Repository.open(repo, Mode.EXCLUSIVE) as r, die_at(r, step):
            operation(r)
        assert_intact(repo, expected, tmp_path, when, full=False)
        # Bring the removed versions back (their dead chunks may be half collected: a commit
        # reuses every chunk still indexed), pinned and under their own name so that the
        # rerun keeps them; then rerun and finish.
        src = tmp_path / "src"
        revived: dict[str, str] = {}
        with Repository.open(repo, Mode.WRITE) as r:
            for sid in removed:
                src.write_bytes(small.sources[sid])
                new = commit_file(r, src, name="revived").snapshot
                r.pin(new.id)
                revived[new.hex] = small.digests[sid]
        assert_intact(repo, revived, tmp_path, f"{when}, recommitted", full=False)
        with Repository.open(repo, Mode.EXCLUSIVE) as r:
            operation(r)
            gc.collect(r)
        assert_intact(repo, {**expected, **revived}, tmp_path, f"{when}, after the rerun", full=False)
        assert_finished(repo, f"{when}, after the rerun")
    return len(points)


def test_gc_dies_before_each_durable_step(
    small: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    removed = [*small.disk[:2], small.scratch[0]]
    n = in_process_crashes(
        small,
        tmp_path,
        monkeypatch,
        prepare=lambda repo: rm_in_process(repo, removed),
        operation=gc.collect,
        keep=[*small.disk[2:], small.scratch[1]],
        removed=removed,
    )
    assert n >= 20


def test_prune_dies_before_each_durable_step(
    small: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    def operation(r: Repository) -> object:
        p = prune.plan(r, KeepPolicy(last=1), datetime.now(UTC))
        return prune.apply(r, p)

    keep = [small.disk[-1], small.scratch[-1]]
    n = in_process_crashes(
        small,
        tmp_path,
        monkeypatch,
        prepare=lambda repo: None,
        operation=operation,
        keep=keep,
        removed=[s for s in [*small.disk, *small.scratch] if s not in keep],
    )
    assert n >= 20
