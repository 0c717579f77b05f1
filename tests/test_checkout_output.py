"""A checkout's output: durable once the command returns (fsync of the file, rename, fsync of
its directory, checked in the system calls strace sees), private until complete and then given
the snapshot's permission bits, and the stale-temp cleanup touches only the user's own files."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from snapstore.model import EntryStart
from snapstore.ops.checkout import TEMP_MARK, output_mode
from tests.conftest import SNAP, run_snap

MiB = 1 << 20


def commit(repo: Path, src: Path) -> str:
    done = run_snap("commit", str(src), "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.fixture
def committed(tmp_path: Path, repo_path: Path) -> tuple[Path, str, bytes]:
    src = tmp_path / "vm.img"
    data = random.Random(3).randbytes(3 * MiB)
    src.write_bytes(data)
    return repo_path, commit(repo_path, src), data


# durability -------------------------------------------------------------------------------


_DONE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_STARTED = re.compile(r"^(\d+)\s+(\w+)\((.*?),? <unfinished \.\.\.>")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>.*\)\s+=\s+(-?\d+)")
_FD_PATH = re.compile(r"^\d+<(.*)>$")


def traced_calls(log: str) -> list[tuple[str, str, int, int]]:
    """(name, first argument, line it started on, line it returned on) of every call in an
    ``strace -f -y`` log that returned 0; a call another thread interrupted is joined up."""
    calls, started = [], {}
    for i, line in enumerate(log.splitlines()):
        if m := _DONE.match(line):
            _, name, args, result = m.groups()
            begun = i
        elif m := _STARTED.match(line):
            started[m.group(1)] = (m.group(2), m.group(3), i)
            continue
        elif (m := _RESUMED.match(line)) and m.group(1) in started:
            name, args, begun = started.pop(m.group(1))
            result = m.group(3)
        else:
            continue
        if result == "0":
            first = args.split(", ")[0]
            fd = _FD_PATH.match(first)
            calls.append((name, fd.group(1) if fd else first.strip('"'), begun, i))
    return calls


def test_checkout_output_is_fsynced_renamed_then_its_directory_fsynced(
    tmp_path: Path, committed: tuple[Path, str, bytes]
) -> None:
    """A power cut right after the command returned keeps OUT: the temp file's data is synced
    before the rename, and the directory holding the new name is synced after it."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    repo, sid, data = committed
    out_dir = tmp_path / "restore"
    out_dir.mkdir()
    out = out_dir / "out.img"
    out.write_bytes(b"old content")  # replaced with --force: the old content must not come back
    log = tmp_path / "strace.log"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-y",  # fds printed with the paths they are open on
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            "-o",
            str(log),
            *SNAP,
            "checkout",
            sid,
            "-o",
            str(out),
            "--force",
            "--repo",
            str(repo),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and b"ptrace" in done.stderr:
        pytest.skip(f"ptrace is not permitted here: {done.stderr.decode().strip()}")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    calls = traced_calls(log.read_text())
    renames = [c for c in calls if c[0].startswith("rename") and TEMP_MARK in c[1]]
    assert len(renames) == 1, calls
    _, _, rename_began, rename_done = renames[0]
    syncs = [c for c in calls if c[0] in ("fsync", "fdatasync")]
    synced_before = {arg for _, arg, _, done in syncs if done < rename_began}
    synced_after = {arg for _, arg, began, _ in syncs if began > rename_done}
    assert any(TEMP_MARK in Path(p).name and Path(p).parent == out_dir for p in synced_before), calls
    assert str(out_dir) in synced_after, calls
    assert not [p for p in out_dir.iterdir() if TEMP_MARK in p.name]


# permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "expected"), [(0o600, 0o600), (0o640, 0o640), (0o4755, 0o755)])
def test_checkout_output_gets_the_snapshots_permission_bits(
    tmp_path: Path, repo_path: Path, stored: int, expected: int
) -> None:
    """Even with umask 0 a 0600 image with secrets stays owner-only (it was 0666); setuid and
    setgid bits are never restored."""
    src = tmp_path / "secret.img"
    src.write_bytes(random.Random(4).randbytes(MiB))
    os.chmod(src, stored)
    sid = commit(repo_path, src)
    out = tmp_path / "out.img"
    done = subprocess.run(
        [*SNAP, "checkout", sid, "-o", str(out), "--repo", str(repo_path)],
        capture_output=True,
        timeout=300,
        check=False,
        preexec_fn=lambda: os.umask(0),
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == expected
    assert out.read_bytes() == src.read_bytes()


def test_output_mode_without_a_usable_mode_is_owner_only() -> None:
    assert output_mode(None) == 0o600
    assert output_mode(EntryStart("f", mode=-1)) == 0o600
    assert output_mode(EntryStart("f", mode=1 << 40)) == 0o600
    assert output_mode(EntryStart("f", mode=0o6775)) == 0o775


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.root
def test_stale_temp_cleanup_removes_only_the_users_own_regular_files(
    tmp_path: Path, committed: tuple[Path, str, bytes]
) -> None:
    """Root's cleanup of killed checkouts' temp files leaves another user's file (and a
    symlink, and what it points at) alone, even when the name matches the temp pattern."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    repo, sid, data = committed
    out_dir = tmp_path / "shared"
    out_dir.mkdir()
    out = out_dir / "out.img"
    prefix = f".{out.name}{TEMP_MARK}{_dead_pid()}-"
    mine = out_dir / f"{prefix}aaaaaaaa"
    mine.write_bytes(b"left by a killed checkout")
    theirs = out_dir / f"{prefix}bbbbbbbb"
    theirs.write_bytes(b"another user's file")
    os.chown(theirs, 65534, 65534)
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"pointed at")
    link = out_dir / f"{prefix}cccccccc"
    link.symlink_to(target)
    done = run_snap("checkout", sid, "-o", str(out), "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    assert not mine.exists()
    assert theirs.read_bytes() == b"another user's file"
    assert link.is_symlink() and target.read_bytes() == b"pointed at"
