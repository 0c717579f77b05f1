"""Special files as checkout's output (issue 18, point 1): a block device is written in place
and stays a block device (never unlinked, never truncated; refused when smaller than the
snapshot), a character device or a FIFO is written as a stream; --force never replaces a
special file by a regular one.

The block-device tests use a real loop device (root only), reached through a device node
made in the test's own directory: the code path is the one ``-o /dev/loopN`` takes, and a
regression cannot replace a node in /dev."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore.errors import UsageError
from tests.conftest import have, run_snap
from tests.helpers import write_sparse

MiB = 1 << 20
OLD = b"\xaa"  # what the device held before the checkout


def commit(repo: Path, src: Path) -> str:
    done = run_snap("commit", str(src), "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    """3 MiB with a hole in the middle: the device's old bytes there must become zeros."""
    rnd = random.Random(18)
    src = tmp_path / "vm.img"
    write_sparse(src, 3 * MiB, [(0, rnd.randbytes(MiB)), (2 * MiB, rnd.randbytes(MiB))])
    return src, src.read_bytes()


def loop_device(tmp_path: Path, size: int) -> Iterator[Path]:
    if os.geteuid() != 0 or not have("losetup"):
        pytest.skip("needs root and losetup")
    backing = tmp_path / f"backing-{size}"
    backing.write_bytes(OLD * size)
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, check=False, text=True
    )
    if dev.returncode != 0:
        pytest.skip(f"no loop device: {dev.stderr.strip()}")
    name = dev.stdout.strip()
    try:
        node = tmp_path / f"node-{size}"
        os.mknod(node, stat.S_IFBLK | 0o600, os.stat(name).st_rdev)
        yield node
    finally:
        subprocess.run(["losetup", "-d", name], check=False)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Path]:
    yield from loop_device(tmp_path, 4 * MiB)


@pytest.fixture
def small_device(tmp_path: Path) -> Iterator[Path]:
    yield from loop_device(tmp_path, 2 * MiB)


def read_device(node: Path) -> bytes:
    fd = os.open(node, os.O_RDONLY)
    try:
        out = bytearray()
        while chunk := os.read(fd, MiB):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def test_block_device_written_in_place(repo_path: Path, source: tuple[Path, bytes], device: Path) -> None:
    src, data = source
    sid = commit(repo_path, src)
    done = run_snap("checkout", sid, "-o", str(device), "--force", "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    assert stat.S_ISBLK(os.lstat(device).st_mode)
    held = read_device(device)
    assert len(held) == 4 * MiB  # not truncated
    assert held[: len(data)] == data  # the hole written as zeros over the old bytes
    assert held[len(data) :] == OLD * (4 * MiB - len(data))  # past the snapshot: untouched
    assert not [p for p in device.parent.iterdir() if ".snap-tmp-" in p.name]


def test_block_device_needs_force(repo_path: Path, source: tuple[Path, bytes], device: Path) -> None:
    sid = commit(repo_path, source[0])
    done = run_snap("checkout", sid, "-o", str(device), "--repo", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"--force" in done.stderr
    assert read_device(device) == OLD * (4 * MiB)


def test_smaller_block_device_refused(
    repo_path: Path, source: tuple[Path, bytes], small_device: Path
) -> None:
    sid = commit(repo_path, source[0])
    done = run_snap("checkout", sid, "-o", str(small_device), "--force", "--repo", str(repo_path))
    assert done.returncode == UsageError.exit_code
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "less than the snapshot" in lines[0], lines
    assert stat.S_ISBLK(os.lstat(small_device).st_mode)
    assert read_device(small_device) == OLD * (2 * MiB)


def test_fifo_written_as_stream(tmp_path: Path, repo_path: Path, source: tuple[Path, bytes]) -> None:
    src, data = source
    sid = commit(repo_path, src)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def drain() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(MiB):
                got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    done = run_snap("checkout", sid, "-o", str(fifo), "--force", "--repo", str(repo_path))
    reader.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert bytes(got) == data
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_character_device_written_as_stream(repo_path: Path, source: tuple[Path, bytes]) -> None:
    sid = commit(repo_path, source[0])
    done = run_snap("checkout", sid, "-o", "/dev/null", "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_socket_refused(tmp_path: Path, repo_path: Path, source: tuple[Path, bytes]) -> None:
    import socket

    sid = commit(repo_path, source[0])
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        done = run_snap("checkout", sid, "-o", str(path), "--force", "--repo", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"is a socket" in done.stderr
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
