"""In-place sync of a tree snapshot (issue 13, point 5 and the second "Done when" line):
``snap checkout ID -o EXISTING_DIR --in-place [--delete] [--dry-run]`` brings a restore of
yesterday's snapshot to today's, field by field, and every file the day did not change keeps
its inode and ctime. Real processes, real files, a kill -9 midway, a planted symlink."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from snapstore.ops.treecommit import commit_tree
from snapstore.ops.treerestore import restore_tree
from snapstore.ops.treesync import sync_tree
from snapstore.repo import Repository
from tests.conftest import SNAP, run_snap
from tests.helpers import one_error_line
from tests.test_json_schema import check
from tests.test_trees import describe_tree

BIG = 6 << 20  # the large-ish sparse file


def _xattr(path: Path, name: bytes, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


def make_day_one(top: Path) -> None:
    """A few dozen files: small ones in a few directories, a sparse one, symlinks, a
    three-way hard-link group, a FIFO, xattrs."""
    top.mkdir()
    for d in ("etc", "srv/www", "srv/data", "home/u", "gone/deep"):
        (top / d).mkdir(parents=True)
    for i in range(30):
        sub = ("etc", "srv/www", "srv/data", "home/u")[i % 4]
        (top / sub / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * (i * 37 + 1))
    (top / "gone/deep/x").write_bytes(b"to be removed")
    (top / "gone/y").write_bytes(b"to be removed too")
    with open(top / "disk.img", "wb") as f:  # holes, and data that is rewritten in the middle
        f.seek(1 << 20)
        f.write(os.urandom(2 << 20))
        f.truncate(BIG)
    (top / "linked").write_bytes(b"one inode, three names\n" * 50)
    os.link(top / "linked", top / "etc/linked-2")
    os.link(top / "linked", top / "home/u/linked-3")
    os.symlink("etc/f00.txt", top / "link-to-f00")
    os.symlink("../../nowhere", top / "srv/dangling")
    os.mkfifo(top / "fifo", 0o640)
    (top / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (top / "will-be-link").write_bytes(b"a file, then a symlink")
    _xattr(top / "etc/f04.txt", b"user.tag", b"\x00\xffbinary")
    _xattr(top / "srv", b"user.dir", b"on a directory")
    _settle_times(top)


def _settle_times(top: Path) -> None:
    """Times in the past, each its own, so a change made now always moves an mtime."""
    for i, (path, dirs, files) in enumerate(sorted(os.walk(top), reverse=True)):
        for name in sorted(dirs + files):
            t = 1_600_000_000_123_456_789 + i * 1000 + len(name)
            os.utime(os.path.join(path, name), ns=(t, t), follow_symlinks=False)
        os.utime(path, ns=(1_600_000_000_000_000_001 + i, 1_600_000_000_000_000_001 + i))


def a_day_of_changes(top: Path) -> None:
    """Files modified, added, removed, a mode change, a file rewritten in the middle, a
    symlink retargeted, a file become a symlink, an xattr changed."""
    (top / "etc/f00.txt").write_bytes(b"changed, same length\n"[: len(b"file 0\n")])
    with open(top / "srv/www/f01.txt", "ab") as f:
        f.write(b"appended\n")
    (top / "home/u/f03.txt").write_bytes(b"shorter")
    (top / "etc/new.conf").write_bytes(b"added\n")
    (top / "srv/new-dir/a").parent.mkdir()
    (top / "srv/new-dir/a").write_bytes(os.urandom(5000))
    (top / "srv/data/f06.txt").unlink()
    for p in ("gone/deep/x", "gone/y"):
        (top / p).unlink()
    (top / "gone/deep").rmdir()
    (top / "gone").rmdir()
    os.chmod(top / "script.sh", 0o755)
    with open(top / "disk.img", "r+b") as f:
        f.seek((1 << 20) + 700_000)
        f.write(os.urandom(100_000))
    os.unlink(top / "srv/dangling")
    os.symlink("../../elsewhere", top / "srv/dangling")
    os.unlink(top / "will-be-link")
    os.symlink("script.sh", top / "will-be-link")
    _xattr(top / "etc/f04.txt", b"user.tag", b"another value")


def comparable(top: Path) -> dict[str, dict[str, Any]]:
    """describe_tree without what an in-place sync may lay out differently (where the
    holes are: the sync punches 1 MiB steps)."""
    found = describe_tree(top)
    return {
        os.fsdecode(k): {f: v for f, v in doc.items() if f != "data_segments"} for k, doc in found.items()
    }


def changed_paths(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> set[str]:
    """Ground truth: every path added, removed, or with any field changed (a hard-link
    count that only moved with the group is not a change)."""
    return {
        p
        for p in old.keys() | new.keys()
        if {k: v for k, v in old.get(p, {}).items() if k != "nlink"}
        != {k: v for k, v in new.get(p, {}).items() if k != "nlink"}
    }


def inodes(top: Path) -> dict[str, tuple[int, int]]:
    """(st_ino, st_ctime_ns) of every non-directory."""
    found = {}
    for path, _dirs, files in os.walk(top):
        for name in files:
            full = os.path.join(path, name)
            st = os.lstat(full)
            found[os.path.relpath(full, top)] = (st.st_ino, st.st_ctime_ns)
    return found


def snap_ok(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = run_snap(*args)
    assert done.returncode == 0, done.stderr.decode()
    return done


def sync_json(repo: Path, snap: str, target: Path) -> Any:
    args = ("checkout", snap, "-o", str(target), "--in-place", "--delete", "-r", str(repo), "--json")
    return json.loads(snap_ok(*args).stdout)


@pytest.fixture
def two_days(tmp_path: Path) -> tuple[Path, str, str, dict[str, dict[str, Any]], set[str]]:
    """A repository with day one and day two of the same tree; the expected tree of day
    two and the ground truth of what changed."""
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    src = tmp_path / "src"
    make_day_one(src)
    day1 = comparable(src)
    one = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    a_day_of_changes(src)
    day2 = comparable(src)
    two = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    return repo, one, two, day2, changed_paths(day1, day2)


def test_sync_of_a_day_of_changes_is_identical_and_keeps_unchanged_inodes(
    tmp_path: Path, two_days: tuple[Path, str, str, dict[str, dict[str, Any]], set[str]]
) -> None:
    repo, one, two, day2, changed = two_days
    diff = json.loads(snap_ok("diff", one, two, "-r", str(repo), "--json").stdout)
    check("diff_tree", diff)
    assert {c["path"] or "." for c in diff["changes"]} == changed  # exactly the changed paths
    (img_diff,) = [c for c in diff["changes"] if c["path"] == "disk.img"]
    assert img_diff["fields"] == ["content", "mtime"]
    rewritten = ((1 << 20) + 700_000, (1 << 20) + 800_000)
    assert any(r["start"] <= rewritten[0] and rewritten[1] <= r["end"] for r in img_diff["ranges"])
    assert img_diff["changed_bytes"] <= 2 << 20  # at most the data's chunks, not the whole file
    assert {c["path"]: c["fields"] for c in diff["changes"] if c["change"] == "modified"}["script.sh"] == [
        "mode"
    ]
    target = tmp_path / "target"
    snap_ok("checkout", one, "-o", str(target), "-r", str(repo))
    (target / "not-in-snapshot").write_bytes(b"stray")
    before = inodes(target)
    untouched = comparable(target)

    dry = snap_ok("checkout", two, "-o", str(target), "--in-place", "--delete", "--dry-run", "-r", str(repo))
    assert comparable(target) == untouched and inodes(target) == before  # nothing changed
    planned = [line.split("\t") for line in dry.stdout.decode().splitlines()]
    assert {p for *_, p in planned} >= {"not-in-snapshot", "etc/new.conf", "disk.img", "gone"}

    doc = sync_json(repo, two, target)
    check("checkout_tree_in_place", doc)
    assert [[a["action"], a["kind"], str(a["bytes"]), ",".join(a["fields"]) or "-", a["path"] or "."]
            for a in doc["actions"]] == planned  # fmt: skip
    assert comparable(target) == day2
    after = inodes(target)
    for path, (ino, ctime) in before.items():
        if path in after and path not in changed:
            assert after[path] == (ino, ctime), f"{path} was touched"
    # a mode change and an xattr change are set without rewriting content
    by_path = {a["path"]: a for a in doc["actions"]}
    assert (by_path["script.sh"]["action"], by_path["script.sh"]["fields"]) == ("metadata", ["mode"])
    assert by_path["etc/f04.txt"]["action"] == "metadata" and "xattrs" in by_path["etc/f04.txt"]["fields"]
    assert after["script.sh"][0] == before["script.sh"][0]
    # the file rewritten in the middle kept its inode and got only its changed blocks
    assert after["disk.img"][0] == before["disk.img"][0]
    (img,) = [a for a in doc["actions"] if a["path"] == "disk.img"]
    assert img["action"] == "updated" and 100_000 <= img["bytes"] <= 100_000 + 2 * 4096
    assert os.stat(target / "disk.img").st_blocks * 512 < 4 << 20  # still sparse
    # a second run finds nothing to do
    again = sync_json(repo, two, target)
    assert again["actions"] == [] and inodes(target) == after


def test_without_delete_extra_files_stay_and_checksum_finds_a_same_stat_change(
    tmp_path: Path, two_days: tuple[Path, str, str, dict[str, dict[str, Any]], set[str]]
) -> None:
    repo, _one, two, day2, _changed = two_days
    target = tmp_path / "target"
    snap_ok("checkout", two, "-o", str(target), "-r", str(repo))
    (target / "extra").write_bytes(b"mine")
    f = target / "etc/f08.txt"
    st = f.stat()
    f.write_bytes(b"X" + f.read_bytes()[1:])  # same size, mtime put back: the quick check misses it
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    snap_ok("checkout", two, "-o", str(target), "--in-place", "-r", str(repo))
    assert (target / "extra").read_bytes() == b"mine"
    assert comparable(target)["etc/f08.txt"] != day2["etc/f08.txt"]  # rsync's rule, as documented
    snap_ok("checkout", two, "-o", str(target), "--in-place", "--checksum", "-r", str(repo))
    found = comparable(target)
    assert found.pop("extra")
    assert found == day2


def test_a_kill_midway_and_a_rerun_give_the_identical_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"m{i:02d}").write_bytes(os.urandom(20_000))
    (src / "big").write_bytes(os.urandom(24 << 20))
    one = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    (src / "aaa-first").write_bytes(b"made first")
    (src / "big").write_bytes(os.urandom(24 << 20))
    for i in range(0, 40, 3):
        (src / f"m{i:02d}").write_bytes(os.urandom(30_000))
    os.chmod(src / "m01", 0o600)
    want = comparable(src)
    two = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    target = tmp_path / "target"
    snap_ok("checkout", one, "-o", str(target), "-r", str(repo))
    proc = subprocess.Popen(
        [*SNAP, "checkout", two, "-o", str(target), "--in-place", "--delete", "-j", "1", "-r", str(repo)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None and not (target / "aaa-first").exists():
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    snap_ok("checkout", two, "-o", str(target), "--in-place", "--delete", "-r", str(repo))
    assert comparable(target) == want


def test_a_symlink_planted_in_the_target_is_replaced_never_followed(
    tmp_path: Path, two_days: tuple[Path, str, str, dict[str, dict[str, Any]], set[str]]
) -> None:
    repo, one, two, day2, _changed = two_days
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f01.txt").write_bytes(b"not yours")
    (outside / "precious").write_bytes(b"keep me")
    os.chmod(outside, 0o755)
    target = tmp_path / "target"
    snap_ok("checkout", one, "-o", str(target), "-r", str(repo))
    for planted, points_to in (("srv/www", outside), ("script.sh", outside / "precious")):
        p = target / planted
        if p.is_dir() and not p.is_symlink():
            for child in p.iterdir():
                child.unlink()
            p.rmdir()
        else:
            p.unlink()
        os.symlink(points_to, p)
    seen = describe_tree(outside)
    snap_ok("checkout", two, "-o", str(target), "--in-place", "--delete", "-r", str(repo))
    assert describe_tree(outside) == seen
    assert comparable(target) == day2


def test_hard_link_structure_ends_as_in_the_snapshot(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c", "d"):
        (src / name).write_bytes(b"same bytes, same times")
    os.link(src / "c", src / "c2")
    for name in ("a", "b", "c", "c2", "d"):
        os.utime(src / name, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    snap = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    target = tmp_path / "target"
    target.mkdir()
    (target / "a").write_bytes(b"same bytes, same times")  # a and b one inode: to be split
    os.link(target / "a", target / "b")
    (target / "c").write_bytes(b"other bytes")  # c and c2 two inodes: to be joined
    (target / "c2").write_bytes(b"other bytes, other inode")
    os.symlink("a", target / "d")
    for name in ("a", "c", "c2"):
        os.utime(target / name, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    snap_ok("checkout", snap, "-o", str(target), "--in-place", "--delete", "-r", str(repo))
    want, found = comparable(src), comparable(target)
    assert found == want
    assert os.stat(target / "a").st_ino != os.stat(target / "b").st_ino
    assert os.stat(target / "c").st_ino == os.stat(target / "c2").st_ino


def test_bad_targets_give_one_line_and_exit_2(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    snap = json.loads(snap_ok("commit", str(src), "-r", str(repo), "--json").stdout)["id"]
    file_snap = json.loads(snap_ok("commit", str(src / "f"), "-r", str(repo), "--json").stdout)["id"]
    (tmp_path / "a-file").write_bytes(b"")
    for args in (
        [snap, "-o", str(tmp_path / "missing"), "--in-place"],
        [snap, "-o", str(tmp_path / "a-file"), "--in-place"],
        [snap, "-o", str(tmp_path / "x"), "--delete"],
        [file_snap, "-o", str(tmp_path / "a-file"), "--in-place", "--delete"],
    ):
        done = run_snap("checkout", *args, "-r", str(repo))
        assert done.returncode == 2, (args, done.stderr)
        one_error_line(done.stderr.decode())
    assert stat.S_ISREG(os.stat(tmp_path / "a-file").st_mode)


def test_path_limits_the_sync_and_its_deletions(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_bytes(b"day one " + d.encode())
    with Repository.init(tmp_path / "repo") as r:
        one = commit_tree(r, src).snapshot
        for d in ("a", "b"):
            (src / d / "f").write_bytes(b"day two " + d.encode())
        two = commit_tree(r, src).snapshot
        target = tmp_path / "target"
        restore_tree(r, one, str(target))
        for d in ("a", "b"):
            (target / d / "extra").write_bytes(b"not in the snapshot")
        dry = sync_tree(r, two, str(target), paths=["a"], delete=True, dry_run=True)
        assert {(a.action, a.path) for a in dry.actions} == {
            ("updated", b"a/f"),
            ("deleted", b"a/extra"),
            ("metadata", b"a"),  # its mtime moved when extra was made
        }
        res = sync_tree(r, two, str(target), paths=["a"], delete=True)
        assert [(a.action, a.path) for a in res.actions] == [(a.action, a.path) for a in dry.actions]
    assert (target / "a/f").read_bytes() == b"day two a" and not (target / "a/extra").exists()
    assert (target / "b/f").read_bytes() == b"day one b" and (target / "b/extra").exists()
