"""checkout --in-place (issue 16, point 2): only the chunks that differ are written, holes
punched only where the snapshot has zero runs over non-zero data, block devices written in
place, an interrupted run finished by the next one, --dry-run writing nothing."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.model import ChunkRef, SnapshotId
from snapstore.ops import inplace
from snapstore.repo import Repository
from snapstore.storage import fsio
from tests.conftest import have, run_snap
from tests.test_cli import flip_payload_byte

MiB = 1024 * 1024
SIZE = 64 * MiB
HOLE = (20 * MiB, 36 * MiB)  # a zero run of day 1 (a hole in its file)
CHANGES = [(5 * MiB, 800 * 1024), (44 * MiB, 800 * 1024)]  # day 3's edits: 2.5% of the image
IN_HOLE = (24 * MiB, 256 * 1024)  # and day 3 writes into day 1's zero run too
# A CLI run that tells its own I/O counters (/proc/self/io) on its last stderr line.
WITH_IO = (
    "import sys\nfrom snapstore.cli.app import main\nrc = main(sys.argv[1:])\n"
    "io = dict(l.split(': ') for l in open('/proc/self/io').read().split('\\n') if l)\n"
    "sys.stderr.write('\\nIO ' + io['wchar'] + ' ' + io['write_bytes'] + '\\n')\nsys.exit(rc)\n"
)


def write_day1(path: Path) -> None:
    rng = __import__("random").Random(1)
    with path.open("wb") as f:
        f.write(rng.randbytes(HOLE[0]))
        f.seek(HOLE[1])
        f.write(rng.randbytes(SIZE - HOLE[1] - 8 * MiB) + bytes(8 * MiB))  # written zeros at the end


def make_day3(day1: Path, path: Path) -> None:
    subprocess.run(["cp", "--sparse=always", str(day1), str(path)], check=True)
    with path.open("r+b") as f:
        for at, n in [*CHANGES, IN_HOLE]:
            f.seek(at)
            f.write(os.urandom(n))


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, Path, Path]:
    """One repository with day 1 and day 3 committed, shared by the tests (they only read it)."""
    base = tmp_path_factory.mktemp("days")
    repo = base / "repo"
    assert run_snap("init", str(repo), "--chunker", "fastcdc:16K:64K:256K").returncode == 0
    day1, day3 = base / "day1.img", base / "day3.img"
    write_day1(day1)
    make_day3(day1, day3)
    ids = []
    for p in (day1, day3):
        done = run_snap("-r", str(repo), "commit", str(p), "--name", "vm.img")
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.decode().strip())
    return repo, ids[0], ids[1], day1, day3


@pytest.fixture
def days(committed: tuple[Path, str, str, Path, Path], tmp_path: Path) -> tuple[Path, str, str, Path, Path]:
    """As ``committed``, with a copy of day 3 of the test's own to rewrite."""
    repo, id1, id3, day1, day3 = committed
    mine = tmp_path / "day3.img"
    subprocess.run(["cp", "--sparse=always", str(day3), str(mine)], check=True)
    return repo, id1, id3, day1, mine


def in_place(repo: Path, snap: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """Run checkout --in-place; returns the run and the bytes it wrote (wchar)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WITH_IO,
            "-r",
            str(repo),
            "checkout",
            snap,
            "-o",
            str(out),
            "--in-place",
            *extra,
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    last = done.stderr.decode().strip().splitlines()[-1].split()
    assert last[0] == "IO", done.stderr
    return done, int(last[1])


def is_hole(path: Path, start: int, end: int) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.lseek(fd, start, os.SEEK_DATA)
    except OSError:
        return True
    finally:
        os.close(fd)
    return data >= end


def test_day1_over_day3_writes_only_what_differs(
    days: tuple[Path, str, str, Path, Path], tmp_path: Path
) -> None:
    repo, id1, _, day1, day3 = days
    changed = sum(n for _, n in [*CHANGES, IN_HOLE])
    dry, wrote = in_place(repo, id1, day3, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] is True and 0 < doc["write_bytes"] <= 2 * changed
    assert wrote < 64 * 1024  # a dry run writes nothing to the target (its JSON on stdout only)
    assert doc["punched_bytes"] >= IN_HOLE[1]

    done, wrote = in_place(repo, id1, day3, "--json")
    assert done.returncode == 0, done.stderr
    assert day3.read_bytes() == day1.read_bytes()
    assert wrote <= 2 * changed, (wrote, changed)
    res = json.loads(done.stdout.decode())
    assert res["write_bytes"] == doc["write_bytes"] and res["punched_bytes"] == doc["punched_bytes"]
    assert is_hole(day3, *HOLE)  # sparse where the snapshot has its zero run, punched where day 3 wrote
    # run again: nothing left to do
    again, wrote = in_place(repo, id1, day3, "--json")
    assert json.loads(again.stdout)["write_bytes"] == 0 and wrote < 64 * 1024


def test_one_byte_changed_gets_one_chunk_written(
    days: tuple[Path, str, str, Path, Path], tmp_path: Path
) -> None:
    repo, id1, _, day1, _ = days
    target = tmp_path / "one.img"
    subprocess.run(["cp", "--sparse=always", str(day1), str(target)], check=True)
    with target.open("r+b") as f:
        f.seek(3 * MiB + 12345)
        old = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([old[0] ^ 0xFF]))
    done, wrote = in_place(repo, id1, target, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    # one chunk differs, and of it only the 4 KiB block holding the byte is written
    assert doc["chunks_written"] == 1 and 0 < doc["write_bytes"] <= 4096
    assert doc["punched_bytes"] == doc["zeroed_bytes"] == 0
    assert doc["unchanged_bytes"] == SIZE - doc["write_bytes"]
    assert wrote < 4096 + 16 * 1024  # that block and the JSON, nothing else
    assert target.read_bytes() == day1.read_bytes()


def test_adjacent_dirty_steps_of_a_zero_run_are_punched_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.img"
    with path.open("wb") as f:
        f.write(bytes(10 * MiB))
        for at in (1, 2, 3, 6):  # steps 1-3 and 6 hold a byte, 0, 4, 5 and 7-9 are zeros
            f.seek(at * MiB + 7)
            f.write(b"x")
    punched: list[tuple[int, int]] = []
    real = fsio.punch_hole

    def punch(fd: int, offset: int, length: int) -> None:
        punched.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(fsio, "punch_hole", punch)
    fd = os.open(path, os.O_RDWR)
    try:
        assert list(inplace._nonzero_spans(fd, 0, 10 * MiB, 10 * MiB)) == [(MiB, 3 * MiB), (6 * MiB, MiB)]
        out = inplace._fix_zeros(fd, 0, 10 * MiB, False, 10 * MiB, False)
    finally:
        os.close(fd)
    assert punched == [(MiB, 3 * MiB), (6 * MiB, MiB)]  # one call per span, none on zeros
    assert out.punched + out.zeroed == 4 * MiB
    assert path.read_bytes() == bytes(10 * MiB)


def test_a_damaged_chunk_is_never_written(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_snap("init", str(repo), "--chunker", "fastcdc:16K:64K:256K").returncode == 0
    original = random.Random(5).randbytes(2 * MiB)  # random: stored raw, a flipped byte is seen
    src = tmp_path / "src.img"
    src.write_bytes(original)
    done = run_snap("-r", str(repo), "commit", str(src))
    assert done.returncode == 0, done.stderr
    snap_id = done.stdout.decode().strip()
    edited = bytearray(original)
    edited[MiB + 100 : MiB + 104] = b"edit"
    target = tmp_path / "t.img"
    target.write_bytes(edited)
    with Repository.open(repo) as r:  # the chunk holding the edit
        at, victim = 0, None
        for record in r.iter_records(SnapshotId(bytes.fromhex(snap_id))):
            if isinstance(record, ChunkRef):
                if at <= MiB + 100 < at + record.raw_size:
                    victim = record.chunk_id
                at += record.raw_size
    assert victim is not None
    flip_payload_byte(repo, victim, 10)
    done = run_snap("-r", str(repo), "checkout", snap_id, "-o", str(target), "--in-place")
    assert done.returncode == 5 and b"hash mismatch" in done.stderr, done.stderr
    assert target.read_bytes() == edited  # the damaged chunk's bytes were not written


@given(
    old=st.binary(min_size=1, max_size=3000),
    edits=st.lists(st.tuples(st.integers(0, 2999), st.binary(min_size=1, max_size=40)), max_size=6),
    offset=st.integers(0, 1000),
)
def test_differing_spans_cover_exactly_the_blocks_that_differ(
    old: bytes, edits: list[tuple[int, bytes]], offset: int
) -> None:
    new = bytearray(old)
    for at, data in edits:
        new[at % len(old) : at % len(old) + len(data)] = data
    new = new[: len(old)]
    spans = inplace.differing_spans(old, bytes(new), offset, block=64)
    patched = bytearray(old)
    for start, n in spans:
        patched[start : start + n] = new[start : start + n]
    assert patched == new
    written = {i for start, n in spans for i in range(start, start + n)}
    for start in range(0, len(old)):  # each block of the file (aligned to its offsets) inside
        if start and (offset + start) % 64:
            continue
        stop = min(len(old), start + 64 - (offset + start) % 64)
        inside = {i in written for i in range(start, stop)}
        assert len(inside) == 1  # a block is written whole or not at all
        assert inside == {old[start:stop] != new[start:stop]}  # and only when it differs
    assert all(s1 + n1 < s2 for (s1, n1), (s2, _) in itertools.pairwise(spans))  # merged, in order


def test_zeros_already_there_are_left_alone(days: tuple[Path, str, str, Path, Path], tmp_path: Path) -> None:
    repo, id1, _, day1, _ = days
    # day 1 written out with every zero as data: the snapshot's zero runs are zeros already in
    # the target, so nothing is written and nothing punched (no hole where there was none)
    target = tmp_path / "dense.img"
    subprocess.run(["cp", "--sparse=never", str(day1), str(target)], check=True)
    done, wrote = in_place(repo, id1, target, "--json")
    doc = json.loads(done.stdout)
    assert doc["write_bytes"] == doc["punched_bytes"] == doc["zeroed_bytes"] == 0
    assert doc["unchanged_bytes"] == SIZE and wrote < 64 * 1024
    assert not is_hole(target, *HOLE) and not is_hole(target, SIZE - 8 * MiB, SIZE)


def test_resized_to_the_snapshot(days: tuple[Path, str, str, Path, Path]) -> None:
    repo, id1, _id3, day1, day3 = days
    with day3.open("r+b") as f:
        f.truncate(SIZE - 10 * MiB - 123)
    assert in_place(repo, id1, day3)[0].returncode == 0
    assert day3.read_bytes() == day1.read_bytes()
    with day3.open("ab") as f:
        f.write(os.urandom(3 * MiB))
    assert in_place(repo, id1, day3)[0].returncode == 0
    assert day3.read_bytes() == day1.read_bytes()


def test_killed_midway_then_rerun_gives_the_snapshot(
    days: tuple[Path, str, str, Path, Path], tmp_path: Path
) -> None:
    repo, id1, _, day1, _ = days
    target = tmp_path / "other.img"
    target.write_bytes(os.urandom(SIZE))  # every chunk differs
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapstore",
            "-r",
            str(repo),
            "checkout",
            id1,
            "-o",
            str(target),
            "--in-place",
        ],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/io") as f:
            wchar = int(next(line for line in f if line.startswith("wchar")).split()[1])
        if wchar > 4 * MiB:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    done, _ = in_place(repo, id1, target, "--json")
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == day1.read_bytes()
    if killed:  # the rerun wrote only what the killed run had not
        assert json.loads(done.stdout)["write_bytes"] < SIZE - HOLE[1] + HOLE[0] - 8 * MiB


def test_errors(days: tuple[Path, str, str, Path, Path], tmp_path: Path) -> None:
    repo, id1, *_ = days
    done = run_snap("-r", str(repo), "checkout", id1, "-o", str(tmp_path / "missing"), "--in-place")
    assert done.returncode == 2 and b"does not exist" in done.stderr
    done = run_snap("-r", str(repo), "checkout", id1, "-o", str(tmp_path / "x"), "--dry-run")
    assert done.returncode == 2
    done = run_snap("-r", str(repo), "checkout", id1, "-o", str(tmp_path), "--in-place")
    assert done.returncode == 2


@pytest.fixture
def loop(tmp_path: Path, days: tuple[Path, str, str, Path, Path]) -> Iterator[tuple[Path, Path]]:
    if os.geteuid() != 0 or not have("losetup"):
        pytest.skip("needs root and losetup")
    backing = tmp_path / "backing"
    subprocess.run(["cp", str(days[4]), str(backing)], check=True)
    with backing.open("ab") as f:
        f.write(b"\xee" * MiB)  # the device is larger than the snapshot: its tail is kept
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, check=False, text=True
    )
    if dev.returncode != 0:
        pytest.skip(f"no loop device: {dev.stderr.strip()}")
    name = dev.stdout.strip()
    try:
        node = tmp_path / "loop-node"
        os.mknod(node, stat.S_IFBLK | 0o600, os.stat(name).st_rdev)
        yield node, backing
    finally:
        subprocess.run(["losetup", "-d", name], check=False)


def test_a_loop_device_target(days: tuple[Path, str, str, Path, Path], loop: tuple[Path, Path]) -> None:
    repo, id1, _, day1, _ = days
    node, _backing = loop
    done, wrote = in_place(repo, id1, node, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["punched_bytes"] == 0 and doc["zeroed_bytes"] >= IN_HOLE[1]  # a device: zeros written
    assert wrote <= 2 * sum(n for _, n in [*CHANGES, IN_HOLE])
    with node.open("rb") as f:
        assert f.read(SIZE) == day1.read_bytes()
        assert f.read() == b"\xee" * MiB


def test_a_device_smaller_than_the_snapshot_is_refused(
    days: tuple[Path, str, str, Path, Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0 or not have("losetup"):
        pytest.skip("needs root and losetup")
    repo, id1, *_ = days
    backing = tmp_path / "small"
    backing.write_bytes(b"\xee" * (SIZE // 2))
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, check=False, text=True
    )
    if dev.returncode != 0:
        pytest.skip(f"no loop device: {dev.stderr.strip()}")
    try:
        node = tmp_path / "small-node"
        os.mknod(node, stat.S_IFBLK | 0o600, os.stat(dev.stdout.strip()).st_rdev)
        done = run_snap("-r", str(repo), "checkout", id1, "-o", str(node), "--in-place")
        assert done.returncode == 2 and b"less than the snapshot" in done.stderr
        assert backing.read_bytes() == b"\xee" * (SIZE // 2)
    finally:
        subprocess.run(["losetup", "-d", dev.stdout.strip()], check=False)
