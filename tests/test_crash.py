"""Crash safety of commit: a real ``snap commit`` of a ~200 MiB image is killed with SIGKILL
at many different moments. After each kill every snapshot that exists still checks out
byte-identical, ``snap log`` works, the next commit succeeds and leaves no half-written
manifest behind.

The repository uses 1 MiB packs, so a commit passes through ~200 seal+index steps (and the
manifest's pending->published steps at the end): the kill points land between all of them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from snapstore import Repository, checkout
from snapstore.chunker import stream_pieces
from snapstore.hashing import chunk_id
from tests.conftest import SNAP, run_snap
from tests.helpers import file_digest, start_holding_lock

pytestmark = pytest.mark.slow

MiB = 1 << 20
SIZE = 200 * MiB
KILL_POINTS = 12


def _make_image(path: Path, rng: random.Random) -> None:
    """Random data with some compressible and zero stretches, like a disk image."""
    with open(path, "wb") as f:
        for i in range(SIZE // MiB):
            if i % 5 == 3:
                f.write(bytes(MiB))
            elif i % 5 == 4:
                f.write((b"log line %d: all is well\n" % i) * (MiB // 26) + bytes(MiB % 26))
            else:
                f.write(rng.randbytes(MiB))


def _modify(path: Path, rng: random.Random) -> None:
    """A new version: ~60 MiB rewritten in place at random offsets."""
    with open(path, "r+b") as f:
        for _ in range(60):
            f.seek(rng.randrange(0, SIZE - MiB))
            f.write(rng.randbytes(MiB))


def _leftovers(root: Path) -> list[str]:
    tmp = [p.name for p in (root / "tmp").iterdir()]
    stray = [p.name for p in root.rglob(".*.tmp-*")]
    return tmp + stray


def _check_snapshots(root: Path, expected: dict[str, str], out: Path, verified: set[str], full: bool) -> None:
    """``snap log`` works; every snapshot is one we know and checks out identical. Each
    snapshot is checked when it first appears, the oldest after every kill, and all of them
    when ``full``."""
    done = run_snap("log", "--json", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    snaps = json.loads(done.stdout)
    by_message = {s["message"]: s for s in snaps if s["name"] == "disk.img"}
    assert len(by_message) == len([s for s in snaps if s["name"] == "disk.img"]), "a version committed twice"
    assert set(by_message) <= set(expected), f"unknown snapshots {set(by_message) - set(expected)}"
    assert "v0" in by_message
    with Repository.open(root) as repo:
        for message, s in by_message.items():
            if message in verified and message != "v0" and not full:
                continue
            checkout(repo, repo.resolve(s["id"]), str(out), force=True)
            assert file_digest(out) == expected[message], f"{message} does not check out identical"
            verified.add(message)
    out.unlink(missing_ok=True)


def test_commit_killed_at_many_points(tmp_path: Path, report_count: Any) -> None:
    """The kill moments are fractions of a measured commit (from taking the lock to exiting),
    so they land mid-commit on a fast machine as on a slow one."""
    root = tmp_path / "repo"
    Repository.init(root, pack_target_size=1 << 20).close()
    rng = random.Random(2024)
    image, out, small = tmp_path / "disk.img", tmp_path / "out.img", tmp_path / "small.img"
    _make_image(image, rng)
    done = run_snap("commit", str(image), "-m", "v0", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    expected = {"v0": file_digest(image)}
    verified: set[str] = set()
    outcomes: list[str] = []
    left_behind = 0  # kills after which a half-written manifest was found

    # Calibrate: unkilled commits of new versions, timed from taking the lock to exiting; the
    # shorter of two, and kills spread over its first 80%, so that a machine busy with other
    # tests (slower) or idle again (faster) still sees most kills land mid-commit.
    work = float("inf")
    for run in ("calibration", "calibration 2"):
        _modify(image, rng)
        expected[run] = file_digest(image)
        proc, locked = start_holding_lock(["commit", str(image), "-m", run], root)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()  # type: ignore[union-attr]
        work = min(work, time.monotonic() - locked)

    for i in range(1, KILL_POINTS + 1):
        fraction = 0.8 * (i - 0.5) / KILL_POINTS
        _modify(image, rng)
        expected[f"v{i}"] = file_digest(image)
        proc, locked = start_holding_lock(["commit", str(image), "-m", f"v{i}"], root)
        time.sleep(max(0.0, locked + fraction * work - time.monotonic()))
        proc.send_signal(signal.SIGKILL)  # nothing if it has ended (and been reaped)
        proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
        outcomes.append("killed" if proc.returncode == -signal.SIGKILL else "finished")

        # Readers cope with whatever the kill left behind.
        _check_snapshots(root, expected, out, verified, full=False)
        if _leftovers(root):
            left_behind += 1
        # The next writer recovers: a new commit succeeds and nothing half-done remains.
        small.write_bytes(rng.randbytes(MiB))
        done = run_snap("commit", str(small), "--repo", str(root))
        assert done.returncode == 0, f"commit after kill {i} ({fraction:.2f}): {done.stderr.decode()}"
        assert _leftovers(root) == [], f"after kill {i}"

    killed = outcomes.count("killed")
    print(f"\ncommit of 200 MiB: work {work * 1000:.0f} ms, {killed} of {KILL_POINTS} kills mid-commit")
    report_count("crash", "commit 200 MiB (SIGKILL)", kill_points=KILL_POINTS, landed_mid_run=killed)
    assert killed >= 8, f"only {killed} of {KILL_POINTS} kills landed mid-commit: {outcomes}"
    assert left_behind >= killed // 2, "the kills hardly ever interrupted the work: the test proves little"
    # A kill before the snapshot was published leaves none; one after it leaves a whole one.
    _check_snapshots(root, expected, out, verified, full=True)
    # Finally, the image commits cleanly.
    done = run_snap("commit", str(image), "-m", "final", "--json", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == image.stat().st_size
    with Repository.open(root) as repo:
        checkout(repo, repo.resolve("latest", name="disk.img"), str(out))
    assert file_digest(out) == expected[f"v{KILL_POINTS}"]
    done = run_snap("verify", "--read-data", "--repo", str(root))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_checkout_killed_leaves_no_output_and_is_cleaned_up(tmp_path: Path) -> None:
    """A killed checkout leaves only its temp file (never a partial OUT); the next checkout
    to the same OUT removes it. Temp files of live checkouts are left alone."""
    root = tmp_path / "repo"
    Repository.init(root, pack_target_size=8 << 20).close()
    image = tmp_path / "disk.img"
    image.write_bytes(random.Random(7).randbytes(150 * MiB))
    done = run_snap("commit", str(image), "--repo", str(root))
    assert done.returncode == 0, done.stderr
    target = tmp_path / "restore" / "out.img"
    target.parent.mkdir()
    live = target.parent / f".out.img.snap-tmp-{os.getpid()}-abcd"  # this process is alive
    live.write_bytes(b"a checkout in progress")
    proc = subprocess.Popen(
        [*SNAP, "checkout", "latest", "-o", str(target), "--repo", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    temp: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        temp = [p for p in target.parent.glob(f".out.img.snap-tmp-{proc.pid}-*")]
        if temp and temp[0].stat().st_size > 16 * MiB:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the checkout finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not target.exists(), "a killed checkout left a partial output"
    assert temp and temp[0].exists()
    done = run_snap("checkout", "latest", "-o", str(target), "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert file_digest(target) == file_digest(image)
    assert not temp[0].exists(), "the dead checkout's temp file was not removed"
    assert live.exists(), "a live checkout's temp file was removed"


def test_rerun_of_a_killed_commit_reuses_its_chunks(tmp_path: Path, report_count: Any) -> None:
    """Killed once it has written 48 MiB into its first (64 MiB) pack, a commit has indexed
    what it wrote up to its last finished 16 MiB checkpoint: the rerun does not store that
    again. (How many checkpoints finished by then depends on the disk's fsync time, so the
    test reads the index left behind rather than expecting a number.)"""
    image = tmp_path / "disk.img"
    rng = random.Random(99)
    data = b"".join(rng.randbytes(MiB) for _ in range(160))  # incompressible: stored = raw
    image.write_bytes(data)
    root = tmp_path / "repo"
    Repository.init(root).close()
    proc, _ = start_holding_lock(["commit", str(image)], root)
    deadline = time.monotonic() + 60
    while sum(p.stat().st_size for p in (root / "packs").rglob("*.pack")) < 48 * MiB:
        assert proc.poll() is None and time.monotonic() < deadline, "the commit ended too soon"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    with Repository.open(root) as repo:  # what the killed commit made durable and indexed
        params = repo.config.chunker
        chunks, at = [], 0
        for length, _ in stream_pieces(params, data):
            chunks.append(data[at : at + length])
            at += length
        kept = sum(len(c) for c in chunks if repo.has_chunk(chunk_id(c)))
    assert kept >= 16 * MiB, f"only {kept / MiB:.1f} MiB indexed after writing 48 MiB"
    done = run_snap("commit", str(image), "--json", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)["new_stored_bytes"]
    print(
        f"\nrerun after a kill at 48 MiB ({kept / MiB:.0f} MiB indexed) stored {stored / MiB:.0f} of 160 MiB"
    )
    assert stored == len(data) - kept, f"the rerun stored {stored / MiB:.0f} MiB: checkpoints not reused"
    report_count("crash", "commit rerun reuses chunks (SIGKILL)", kill_points=1, landed_mid_run=1)
    with Repository.open(root) as repo:
        checkout(repo, repo.resolve("latest"), str(tmp_path / "out"))
    assert file_digest(tmp_path / "out") == file_digest(image)
