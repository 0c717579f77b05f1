"""snap gc end to end on real data with the default chunker (~1 MiB chunks, so the block
granularity of hole punching is negligible next to what is freed).

The yardstick is the filesystem itself: the repository's du (st_blocks * 512 summed over
its files, computed here, not by snapstore) must drop by the exclusive size that
``snap stats --json`` predicted, and the versions that are kept must check out byte for byte.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snapstore import Mode, Repository, checkout, commit_file
from snapstore.format.pack import RECORD_HEADER_SIZE as H
from snapstore.model import ChunkId, ChunkLocation, PackId
from snapstore.ops import gc as gc_ops
from snapstore.storage import appender
from snapstore.units import format_size
from tests.conftest import run_snap

MiB = 1 << 20
TABLE = bytes((i % 16) * 7 for i in range(256))  # 4 bits of entropy per byte: compresses ~2x


def make_base(seed: int, size: int) -> bytearray:
    """Mixed content, MiB by MiB: random, compressible, half zeros + half random."""
    rng = random.Random(seed)
    parts = []
    for i in range(size // MiB):
        block = rng.randbytes(MiB)
        if i % 3 == 1:
            block = block.translate(TABLE)
        elif i % 3 == 2:
            block = bytes(MiB // 2) + block[: MiB // 2]
        parts.append(block)
    return bytearray(b"".join(parts))


def rewrite(data: bytearray, seed: int, regions: int, length: int = MiB) -> bytearray:
    """Rewrite ``regions`` ranges of ``length`` bytes in place with new random bytes."""
    rng = random.Random(seed)
    for _ in range(regions):
        off = rng.randrange(0, len(data) - length)
        data[off : off + length] = rng.randbytes(length)
    return data


def du(path: Path) -> int:
    """Allocated bytes of ``path`` and everything under it, as ``du -sB1`` counts them."""
    total = os.lstat(path).st_blocks * 512
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def snap_ok(*args: str) -> str:
    res = run_snap(*args)
    assert res.returncode == 0, f"snap {' '.join(args)} failed ({res.returncode}): {res.stderr.decode()}"
    return res.stdout.decode()


def snap_json(*args: str) -> Any:
    return json.loads(snap_ok(*args, "--json"))


def tree_state(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file's size, allocated bytes and content, except LMDB's reader table (readers
    write their slot into lock.mdb; that is not repository data)."""
    state = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if name == "lock.mdb":
                continue
            st = path.lstat()
            state[str(path.relative_to(root))] = (st.st_size, st.st_blocks, path.read_bytes())
    return state


def pack_files(root: Path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in (root / "packs").glob("*/*.pack")}


@dataclass
class History:
    files: list[Path]  # v1, v2, v3


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """Three 64 MiB versions of a disk image; each rewrites 4 MiB of the previous in place."""
    d = tmp_path_factory.mktemp("versions")
    data = make_base(1, 64 * MiB)
    files = []
    for i, seed in enumerate((None, 2, 3)):
        if seed is not None:
            rewrite(data, seed, 4)
        path = d / f"v{i + 1}.img"
        path.write_bytes(data)
        files.append(path)
    return History(files)


@dataclass
class Repo:
    path: Path
    ids: list[str]  # snapshot ids, oldest first
    history: History

    def stats(self) -> Any:
        return snap_json("stats", "-r", str(self.path))

    def exclusive(self) -> dict[str, int]:
        return {s["id"]: s["exclusive_bytes"] for s in self.stats()["snapshots"]}

    def assert_checks_out(self, index: int, out_dir: Path) -> None:
        out = out_dir / f"out-{index}-{self.ids[index][:8]}"
        snap_ok("checkout", self.ids[index], "-o", str(out), "-f", "-r", str(self.path))
        assert filecmp.cmp(out, self.history.files[index], shallow=False), f"v{index + 1} differs"
        out.unlink()


@pytest.fixture
def repo3(tmp_path: Path, history: History) -> Iterator[Repo]:
    path = tmp_path / "repo"
    snap_ok("init", str(path))
    ids = [snap_ok("commit", str(f), "--name", "disk", "-r", str(path)).strip() for f in history.files]
    assert len(set(ids)) == 3
    yield Repo(path, ids, history)


def test_rm_and_gc_free_exactly_the_predicted_exclusive_size(repo3: Repo, tmp_path: Path) -> None:
    r = repo3
    predicted = r.exclusive()
    oldest = r.ids[0]
    assert predicted[oldest] > 2 * MiB, "the fixture should give v1 some exclusive data"
    packs_before = pack_files(r.path)
    du_before = du(r.path)

    snap_ok("rm", oldest, "-r", str(r.path))
    assert du(r.path) >= du_before - 8192, "rm alone must not free chunk data"
    gc = snap_json("gc", "-r", str(r.path))
    du_after = du(r.path)

    freed = du_before - du_after
    print(
        f"\nv1 exclusive (predicted) {predicted[oldest]} B, du drop {freed} B, gc says {gc['freed_bytes']} B"
    )
    assert abs(freed - predicted[oldest]) <= 0.05 * predicted[oldest], (
        f"du dropped {freed} B, stats predicted {predicted[oldest]} B"
    )
    assert abs(gc["freed_bytes"] - freed) <= 0.05 * predicted[oldest]
    assert gc["dead_chunks"] > 0

    # in place: no pack was rewritten (same inodes); what stays was punched, not copied
    packs_after = pack_files(r.path)
    assert set(packs_after) <= set(packs_before)
    for name, st in packs_after.items():
        assert st.st_ino == packs_before[name].st_ino, f"pack {name} was replaced"
    holes = [n for n, st in packs_after.items() if st.st_blocks * 512 < st.st_size - 4096]
    assert holes or len(packs_after) < len(packs_before), "gc neither punched nor removed a pack"

    stats = r.stats()
    assert stats["garbage_bytes"] == 0
    assert [s["id"] for s in stats["snapshots"]] == r.ids[1:]
    for i in (1, 2):
        r.assert_checks_out(i, tmp_path)
    snap_ok("verify", "--read-data", "-r", str(r.path))


def test_log_and_stats_agree_on_exclusive_sizes(repo3: Repo) -> None:
    stats = repo3.exclusive()
    log = snap_json("log", "-r", str(repo3.path))
    assert [s["id"] for s in log] == repo3.ids
    assert {s["id"]: s["exclusive_bytes"] for s in log} == stats
    text = snap_ok("log", "-r", str(repo3.path))
    assert "EXCLUSIVE" in text
    for sid, excl in stats.items():
        line = next(line for line in text.splitlines() if line.startswith(sid[:12]))
        assert format_size(excl) in line
    # the newest holds the most recently rewritten data: it has exclusive bytes too
    assert all(v > 0 for v in stats.values())


def test_exclusive_of_identical_snapshots_is_zero(repo3: Repo) -> None:
    again = snap_ok("commit", str(repo3.history.files[2]), "--name", "disk", "-r", str(repo3.path)).strip()
    excl = repo3.exclusive()
    assert excl[again] == 0 and excl[repo3.ids[2]] == 0, "two identical versions share every chunk"
    assert excl[repo3.ids[0]] > 0


def test_gc_dry_run_changes_nothing(repo3: Repo) -> None:
    r = repo3
    predicted = r.exclusive()[r.ids[0]]
    snap_ok("rm", r.ids[0], "-r", str(r.path))
    before = tree_state(r.path)
    du_before = du(r.path)

    plan = snap_json("gc", "--dry-run", "-r", str(r.path))
    text = snap_ok("gc", "-n", "-r", str(r.path))

    assert tree_state(r.path) == before, "gc --dry-run changed a file"
    assert du(r.path) == du_before
    assert plan["dry_run"] is True and plan["freed_bytes"] is None
    assert plan["dead_chunks"] > 0
    assert abs(plan["planned_free_bytes"] - predicted) <= 0.01 * predicted
    assert text.startswith("would free ")

    real = snap_json("gc", "-r", str(r.path))
    assert real["dead_chunks"] == plan["dead_chunks"]
    assert abs((du_before - du(r.path)) - plan["planned_free_bytes"]) <= 0.05 * predicted


def test_second_gc_frees_nothing(repo3: Repo, tmp_path: Path) -> None:
    r = repo3
    snap_ok("rm", r.ids[0], "-r", str(r.path))
    first = snap_json("gc", "-r", str(r.path))
    assert first["freed_bytes"] > MiB
    du_mid = du(r.path)
    second = snap_json("gc", "-r", str(r.path))
    assert (second["dead_chunks"], second["punch_ranges"], second["delete_packs"]) == (0, 0, 0)
    assert second["planned_free_bytes"] == 0
    assert abs(du(r.path) - du_mid) <= 64 * 1024
    r.assert_checks_out(2, tmp_path)


def test_gc_with_nothing_removed_frees_nothing(repo3: Repo, tmp_path: Path) -> None:
    du_before = du(repo3.path)
    res = snap_json("gc", "-r", str(repo3.path))
    assert res["dead_chunks"] == 0 and res["delete_packs"] == 0
    assert abs(du(repo3.path) - du_before) <= 64 * 1024
    for i in range(3):
        repo3.assert_checks_out(i, tmp_path)


def test_removing_every_snapshot_empties_the_packs(repo3: Repo, tmp_path: Path) -> None:
    r = repo3
    snap_ok("rm", *r.ids, "-r", str(r.path))
    assert snap_json("log", "-r", str(r.path)) == []
    res = snap_json("gc", "-r", str(r.path))
    assert res["delete_packs"] >= 1
    packs = pack_files(r.path)
    assert sum(st.st_blocks * 512 for st in packs.values()) <= 4096 * len(packs)
    stats = r.stats()
    assert (stats["chunks"], stats["stored_bytes"], stats["garbage_bytes"]) == (0, 0, 0)
    # what is left: config, index, reserve, empty directories
    assert du(r.path) < 16 * MiB + 1 * MiB
    # and the repository is still good for new snapshots
    new = snap_ok("commit", str(r.history.files[1]), "--name", "disk", "-r", str(r.path)).strip()
    r.ids[1] = new
    r.assert_checks_out(1, tmp_path)


def test_gc_after_removing_the_middle_version(repo3: Repo, tmp_path: Path) -> None:
    r = repo3
    predicted = r.exclusive()[r.ids[1]]
    du_before = du(r.path)
    snap_ok("rm", r.ids[1], "-r", str(r.path))
    snap_ok("gc", "-r", str(r.path))
    freed = du_before - du(r.path)
    assert abs(freed - predicted) <= max(0.05 * predicted, 64 * 1024)
    r.assert_checks_out(0, tmp_path)
    r.assert_checks_out(2, tmp_path)


def test_gc_cuts_the_unindexed_tail_a_killed_commit_left(tmp_path: Path) -> None:
    """A commit killed after a checkpoint leaves records past the last indexed one in its
    pack; its rerun reuses the indexed ones (so the pack stays), nothing points at the rest,
    and gc cuts them off (once: a second gc plans nothing)."""
    repo_path = tmp_path / "repo"
    Repository.init(repo_path, pack_target_size=64 * MiB).close()
    src = tmp_path / "disk.img"
    data = bytes(make_base(3, 24 * MiB))
    src.write_bytes(data)
    with Repository.open(repo_path, Mode.WRITE) as r:
        kept = commit_file(r, src).snapshot
    other = tmp_path / "other.img"
    other.write_bytes(random.Random(4).randbytes(40 * MiB))

    class Killed(BaseException):
        pass

    real_flush = appender.PackAppender.flush

    def die(self: appender.PackAppender) -> None:  # the commit dies before its last seal
        raise Killed

    r = Repository.open(repo_path, Mode.WRITE)
    appender.PackAppender.flush = die  # type: ignore[method-assign]
    try:
        commit_file(r, other)  # checkpoints every 16 MiB, then dies with ~8 MiB unindexed
    except Killed:
        pass
    finally:
        appender.PackAppender.flush = real_flush  # type: ignore[method-assign]
    for step in list(r._appender._steps):  # what was scheduled completes, as in a real kill
        step.result()
    r._packs.close()
    r._index.close()
    for lock in r._locks:
        lock.release()
    with Repository.open(repo_path, Mode.WRITE) as r:
        rerun = commit_file(r, other)
    assert rerun.new_raw_bytes <= 16 * MiB, "the rerun did not reuse the checkpointed chunks"

    before = du(repo_path)
    plan = snap_json("gc", "--dry-run", "-r", str(repo_path))
    assert plan["truncate_packs"] == 1
    assert plan["planned_free_bytes"] >= 4 * MiB
    done = snap_json("gc", "-r", str(repo_path))
    assert before - du(repo_path) >= 4 * MiB
    assert done["truncate_packs"] == 1
    again = snap_json("gc", "--dry-run", "-r", str(repo_path))
    assert again["truncate_packs"] == 0 and again["planned_free_bytes"] == 0
    snap_ok("verify", "--read-data", "-r", str(repo_path))
    with Repository.open(repo_path) as r2:
        checkout(r2, kept, str(tmp_path / "out.img"))
        checkout(r2, rerun.snapshot, str(tmp_path / "other.out"))
    assert (tmp_path / "out.img").read_bytes() == data
    assert (tmp_path / "other.out").read_bytes() == other.read_bytes()


def test_gc_plan_is_pure_and_cuts_at_the_last_live_record() -> None:
    """Pure planning on plain values: dead records inside a kept pack are punched, those past
    its last live record are cut off with the unindexed tail, packs with nothing live go."""
    a, b = PackId(b"A" * 16), PackId(b"B" * 16)

    def loc(pack: PackId, offset: int, stored: int, refs: int) -> ChunkLocation:
        return ChunkLocation(pack, offset, stored, stored, 0, refs)

    locations = [
        (ChunkId(b"1" * 32), loc(a, 16, 100, 1)),  # live: [16, 168)
        (ChunkId(b"2" * 32), loc(a, 168, 100, 0)),  # dead, inside: punched
        (ChunkId(b"3" * 32), loc(a, 320, 100, 2)),  # live: ends at 472
        (ChunkId(b"4" * 32), loc(a, 472, 100, 0)),  # dead, past the last live record: cut off
        (ChunkId(b"5" * 32), loc(b, 16, 100, 0)),  # pack b has nothing live: removed
    ]
    garbage = [(a, 700, 50)]  # listed by an earlier gc, past the end too
    plan = gc_ops.plan(locations, garbage, {a: 8192, b: 4096}, {a: 1000, b: 168})
    assert plan.dead_chunks == (b"2" * 32, b"4" * 32, b"5" * 32)
    assert plan.punch == (gc_ops.PackRange(a, 168, H + 100),)
    assert plan.truncate == (gc_ops.PackRange(a, 472, 1000 - 472),)
    assert plan.delete_packs == (b,)
    assert plan.freed_bytes == (H + 100) + (1000 - 472) + 4096
    # Nothing to do once that is done: the pack ends at its last live record.
    after = gc_ops.plan(locations[:1] + locations[2:3], [], {a: 8192}, {a: 472})
    assert after.empty and after.freed_bytes == 0
