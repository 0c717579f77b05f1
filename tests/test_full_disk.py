"""A repository on a real, small filesystem that fills up: the commit that fills it fails
cleanly (exit 8, one line), nothing stored is lost, and on the 100% full disk ``snap rm`` and
``snap gc`` (or ``snap prune``) still work and make room for the next commit.

Needs root (it mounts a tmpfs and a loop-mounted ext4 image); skipped otherwise.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_snap
from tests.helpers import checks_out, one_error_line
from tests.test_gc import snap_json, snap_ok

pytestmark = [pytest.mark.root, pytest.mark.slow]
MiB = 1 << 20
NO_SPACE_EXIT = 8
FS_SIZE_MIB = 300
VERSION_MIB = 60


@pytest.fixture(params=["tmpfs", "ext4-loop"])
def small_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem")
    mnt = tmp_path / request.param  # named after the kind, for messages
    mnt.mkdir()
    if request.param == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE_MIB}m", "tmpfs", str(mnt)]
    else:
        if shutil.which("mkfs.ext4") is None:
            pytest.skip("mkfs.ext4 is not installed")
        image = tmp_path / "fs.img"
        subprocess.run(["truncate", "-s", f"{FS_SIZE_MIB}M", str(image)], check=True)
        made = subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.decode().strip()}")
        cmd = ["mount", "-o", "loop", str(image), str(mnt)]
    mounted = subprocess.run(cmd, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount {request.param}: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no block left."""
    block = b"\xa5" * MiB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (MiB, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, block[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def assert_full(mount: Path) -> None:
    """Not one more block can be written (ext4 may still report a few MiB of clusters it
    keeps for itself as free)."""
    probe = mount / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError(f"{mount} is not full: {free_bytes(mount)} bytes free")
    finally:
        os.close(fd)
        probe.unlink()


def version(tmp_path: Path, i: int, size_mib: int = VERSION_MIB) -> Path:
    """Incompressible and unlike every other version: each one needs its full size."""
    path = tmp_path / f"disk-v{i}.img"
    path.write_bytes(random.Random(1000 + i).randbytes(size_mib * MiB))
    return path


def fill_repository_until_commit_fails(repo: Path, tmp_path: Path) -> list[tuple[str, Path]]:
    """Commit new versions until one fails for lack of space; return those that worked."""
    committed: list[tuple[str, Path]] = []
    for i in range(FS_SIZE_MIB // VERSION_MIB + 3):
        src = version(tmp_path, i)
        res = run_snap("commit", str(src), "--name", "disk", "-r", str(repo))
        if res.returncode == 0:
            committed.append((res.stdout.decode().strip(), src))
            continue
        assert res.returncode == NO_SPACE_EXIT, f"exit {res.returncode}: {res.stderr.decode()}"
        line = one_error_line(res.stderr.decode())
        assert "no space left on device" in line, line
        assert res.stdout == b""
        src.unlink()
        return committed
    raise AssertionError("the filesystem never filled up")


@pytest.mark.parametrize("reclaim", ["rm+gc", "prune"])
def test_full_disk_commit_fails_cleanly_and_rm_gc_make_room(
    small_fs: Path, tmp_path: Path, reclaim: str
) -> None:
    repo = small_fs / "repo"
    snap_ok("init", str(repo))
    committed = fill_repository_until_commit_fails(repo, tmp_path)
    assert len(committed) >= 2, "the filesystem should hold a few versions before it fills"
    assert [s["id"] for s in snap_json("log", "-r", str(repo))] == [sid for sid, _ in committed]
    for sid, src in committed:
        assert checks_out(repo, sid, src, tmp_path), f"{sid[:12]} broken by the failed commit"

    # Make the disk 100% full: whatever the failed commit gave back is taken by a filler.
    fill(small_fs / "filler")
    assert_full(small_fs)
    full = free_bytes(small_fs)
    oldest = committed[0][0]
    exclusive = {s["id"]: s["exclusive_bytes"] for s in snap_json("stats", "-r", str(repo))["snapshots"]}
    assert exclusive[oldest] >= (VERSION_MIB - 1) * MiB

    if reclaim == "rm+gc":
        res = run_snap("rm", oldest, "-r", str(repo))
        assert res.returncode == 0, f"snap rm on a full disk: {res.stderr.decode()}"
        res = run_snap("gc", "-r", str(repo))
        assert res.returncode == 0, f"snap gc on a full disk: {res.stderr.decode()}"
    else:
        res = run_snap("prune", "--keep-last", str(len(committed) - 1), "-r", str(repo))
        assert res.returncode == 0, f"snap prune on a full disk: {res.stderr.decode()}"
    freed = free_bytes(small_fs) - full
    print(
        f"\n{small_fs.name}: {len(committed)} versions fit; {reclaim} on the full disk freed {freed} B "
        f"(exclusive {exclusive[oldest]} B)"
    )
    assert freed >= 0.95 * exclusive[oldest], f"only {freed} B free after {reclaim}"
    assert [s["id"] for s in snap_json("log", "-r", str(repo))] == [sid for sid, _ in committed[1:]]

    # The room is usable: a new version commits, with the filler still in place.
    new = version(tmp_path, 99, size_mib=VERSION_MIB // 2)
    res = run_snap("commit", str(new), "--name", "disk", "-r", str(repo))
    assert res.returncode == 0, f"commit after {reclaim}: {res.stderr.decode()}"
    new_id = res.stdout.decode().strip()
    assert checks_out(repo, new_id, new, tmp_path)
    for sid, src in committed[1:]:
        assert checks_out(repo, sid, src, tmp_path)
    snap_ok("verify", "-r", str(repo))


def test_gc_and_dry_run_prune_work_on_a_full_disk(small_fs: Path, tmp_path: Path) -> None:
    """gc (freeing what the failed commit kept, if anything) and prune --dry-run succeed on a
    100% full disk and leave every snapshot intact."""
    repo = small_fs / "repo"
    snap_ok("init", str(repo))
    committed = fill_repository_until_commit_fails(repo, tmp_path)
    fill(small_fs / "filler")
    assert_full(small_fs)
    res = run_snap("gc", "-r", str(repo))
    assert res.returncode == 0, res.stderr.decode()
    res = run_snap("prune", "--keep-last", "1", "--dry-run", "-r", str(repo))
    assert res.returncode == 0, res.stderr.decode()
    for sid, src in committed:
        assert checks_out(repo, sid, src, tmp_path)
