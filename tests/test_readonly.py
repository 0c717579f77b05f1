"""Repositories that cannot be written (issue 18, points 3 and 4): on read-only media (a
read-only bind mount) and, with ``--shared``, for another user, every reading command works
(log, show, stats, verify, checkout, gc --dry-run); writers still fail cleanly. A reader that
cannot open a lock file at all goes on without it, saying so once; ``--no-lock`` takes none.

The mount and second-user tests need root (mount, setpriv) and skip otherwise."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore.errors import LockedError, StorageIOError, UsageError
from snapstore.repo import Mode, Repository
from tests.conftest import SNAP, have, run_snap

MiB = 1 << 20
READERS = [["log"], ["show", "latest"], ["stats"], ["verify", "--read-data"], ["gc", "--dry-run"]]
UNLOCKED = b"without its lock"


def needs_root(*tools: str) -> None:
    if os.geteuid() != 0 or not all(have(t) for t in tools):
        pytest.skip(f"needs root and {', '.join(tools)}")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "vm.img"
    src.write_bytes(random.Random(4).randbytes(3 * MiB))
    return src


@pytest.fixture
def read_only(tmp_path: Path, repo_path: Path, source: Path) -> Iterator[Path]:
    """The committed repository, seen through a read-only bind mount."""
    needs_root("mount", "umount")
    assert run_snap("commit", str(source), "-r", str(repo_path)).returncode == 0
    view = tmp_path / "ro"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(repo_path), str(view)], check=False).returncode != 0:
        pytest.skip("cannot bind-mount")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a))
def test_readers_work_on_read_only_media(read_only: Path, args: list[str]) -> None:
    done = run_snap(*args, "-r", str(read_only))
    assert done.returncode == 0, done.stderr
    assert UNLOCKED not in done.stderr  # the lock files were there: locked read-only


def test_checkout_from_read_only_media(tmp_path: Path, read_only: Path, source: Path) -> None:
    out = tmp_path / "out.img"
    done = run_snap("checkout", "latest", "-o", str(out), "-r", str(read_only))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == source.read_bytes()


def test_writers_fail_cleanly_on_read_only_media(read_only: Path, source: Path) -> None:
    done = run_snap("commit", str(source), "-r", str(read_only))
    assert done.returncode == StorageIOError.exit_code
    assert b"Read-only file system" in done.stderr


def test_missing_lock_files_on_read_only_media(tmp_path: Path, repo_path: Path, source: Path) -> None:
    """A repository copied without its lock files onto read-only media: readers go on
    without the locks, saying so once; with --no-lock they say nothing."""
    needs_root("mount", "umount")
    assert run_snap("commit", str(source), "-r", str(repo_path)).returncode == 0
    for name in ("data", "write"):
        (repo_path / "locks" / name).unlink()
    view = tmp_path / "ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(repo_path), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        for args in (["log"], ["verify"]):
            done = run_snap(*args, "-r", str(view))
            assert done.returncode == 0, done.stderr
            assert done.stderr.count(UNLOCKED) == 1, done.stderr
            quiet = run_snap(*args, "--no-lock", "-r", str(view))
            assert quiet.returncode == 0, quiet.stderr
            assert UNLOCKED not in quiet.stderr
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_no_lock_reads_beside_a_lock_holder(repo_path: Path, source: Path) -> None:
    assert run_snap("commit", str(source), "-r", str(repo_path)).returncode == 0
    fd = os.open(repo_path / "locks" / "data", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as gc holds it
        assert run_snap("log", "-r", str(repo_path)).returncode == LockedError.exit_code
        done = run_snap("log", "--no-lock", "-r", str(repo_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(b"vm.img") == 1
    finally:
        os.close(fd)


def test_no_lock_refused_for_writers(repo_path: Path) -> None:
    with pytest.raises(UsageError):
        Repository.open(repo_path, Mode.WRITE, lock=False)


def test_shared_repository_readable_by_another_user(source: Path) -> None:
    needs_root("setpriv")
    top = Path(tempfile.mkdtemp(prefix="snap-shared-"))  # under /tmp, searchable by others
    try:
        top.chmod(0o755)
        repo = top / "repo"
        assert run_snap("init", "--shared", str(repo)).returncode == 0
        assert run_snap("commit", str(source), "-r", str(repo)).returncode == 0
        out_dir = top / "out"
        out_dir.mkdir()
        os.chown(out_dir, 65534, 65534)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *SNAP]
        env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
        probe = [*nobody[:4], SNAP[0], "-c", "import click, lmdb, blake3, zstandard, typer"]
        if subprocess.run(probe, capture_output=True, env=env, timeout=60, check=False).returncode:
            pytest.skip("another user cannot import this interpreter's packages (installed under /root?)")

        def as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [*nobody, *args, "-r", str(repo)], capture_output=True, env=env, timeout=300, check=False
            )

        for args in READERS:
            done = as_nobody(*args)
            assert done.returncode == 0, (args, done.stderr)
        out = out_dir / "out.img"
        done = as_nobody("checkout", "latest", "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == source.read_bytes()
        denied = as_nobody("commit", str(source))
        assert denied.returncode == StorageIOError.exit_code
        assert b"Permission denied" in denied.stderr
    finally:
        shutil.rmtree(top)
