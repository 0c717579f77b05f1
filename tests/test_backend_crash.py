"""kill -9 on a repository over a storage backend (issue 12, "Done when" 1).

The in-memory backend dies with its process, so a crash of a real process does not apply to
it (its crash is the fault sweeps' ``crash`` kind: tests/test_backend_faults.py). Here the
object stores run over the local backend (Repository.open_backend(LocalBackend(dir))), as
tests/test_crash.py runs ``snap commit`` on a repository directory: a worker process
(tests/backend_crash_worker.py) commits a new version of a ~40 MiB image, or repacks with gc,
and is killed with SIGKILL at moments spread over a measured run. After each kill, and the
dead worker's lock objects deleted by hand (docs/BACKENDS.md), every snapshot listed is one
that was committed and reads back identical; the next writer's recovery leaves no ``tmp/``
object and no temp file of a put; verify --read-data is clean; and the next run succeeds.
A put killed midway (its stream kills its own process) leaves a temp file that only the next
writer removes.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import snapstore
from snapstore import Mode
from snapstore.backends import LocalBackend
from snapstore.model import ChunkRef
from snapstore.repo import Repository
from tests.helpers import content_sha

MiB = 1 << 20
SIZE = 40 * MiB
KILL_POINTS = 8
PROJECT = Path(__file__).resolve().parent.parent


class Place:
    def __init__(self, tmp: Path) -> None:
        self.objects = tmp / "objects"
        self.cache = tmp / "cache"
        self.expected: dict[str, str] = {}  # message -> sha256 of the content
        self.required = "v0"  # a snapshot that must be listed

    def open(self, mode: Mode = Mode.READ) -> tuple[LocalBackend, Repository]:
        backend = LocalBackend(self.objects)
        try:
            return backend, Repository.open_backend(backend, mode, cache_dir=self.cache)
        except BaseException:
            backend.close()
            raise

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], float]:
        """The worker, once it holds the write lock (and when)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.backend_crash_worker", str(self.objects), str(self.cache), *args],
            cwd=PROJECT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        lock = self.objects / "locks" / "write-exclusive"
        deadline = time.monotonic() + 60
        while not lock.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker never took the lock"
            time.sleep(0.0005)
        return proc, time.monotonic()

    def restart(self) -> None:
        with LocalBackend(self.objects) as backend:
            for name in list(backend.list("locks/")):
                backend.delete(name)

    def check(self, when: str) -> None:
        """Readers cope; the next writer recovers; nothing is left; all verifies."""
        backend, repo = self.open()
        with backend, repo:
            listed = {s.message: s.id for s in repo.list_snapshots()}
            assert set(listed) <= set(self.expected), f"{when}: unknown {set(listed) - set(self.expected)}"
            assert self.required in listed, f"{when}: lost {self.required}"
            for message, sid in listed.items():
                assert content_sha(repo, sid) == self.expected[message], f"{when}: {message} differs"
        backend, repo = self.open(Mode.WRITE)
        with backend, repo:
            assert list(backend.list("tmp/")) == [], f"{when}: tmp objects left"
        temps = [p.name for p in self.objects.rglob(".*.tmp-*")]
        assert temps == [], f"{when}: temp files of puts left: {temps}"
        backend, repo = self.open(Mode.CHECK)
        with backend, repo:
            report = snapstore.verify(repo, read_data=True)
            assert report.ok, f"{when}: {[(p.kind, p.detail) for p in report.problems]}"


def _image(path: Path, rng: random.Random, size: int = SIZE) -> str:
    data = bytearray()
    for i in range(size // MiB):
        data += (
            bytes(MiB) if i % 5 == 3 else (b"log %d\n" % i) * (MiB // 6) if i % 5 == 4 else rng.randbytes(MiB)
        )
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _modify(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    for _ in range(12):
        at = rng.randrange(len(data) - MiB)
        data[at : at + MiB] = rng.randbytes(MiB)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _scatter(path: Path, rng: random.Random) -> str:
    """A new version by 4 KiB writes at scattered places (a delta repository stores its
    changed chunks as deltas)."""
    data = bytearray(path.read_bytes())
    for _ in range(100):
        at = rng.randrange(len(data) // 4096) * 4096
        data[at : at + 4096] = rng.randbytes(4096)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _kill_at(place: Place, args: list[str], work: float, fraction: float) -> bool:
    proc, locked = place.start(*args)
    time.sleep(max(0.0, locked + fraction * work - time.monotonic()))
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    return proc.returncode == -signal.SIGKILL


def _timed(place: Place, args: list[str]) -> float:
    proc, locked = place.start(*args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - locked


@pytest.mark.slow
@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
def test_commit_and_gc_killed_at_many_points(delta: bool, tmp_path: Path, report_count: Any) -> None:
    """``delta``: a repository of deltas (issue 15), a 16 MiB image, each version 100
    scattered 4 KiB writes, half the kill points; its gc then drops v0 too, whose chunks stay
    as bases."""
    place = Place(tmp_path)
    backend = LocalBackend(place.objects, create=True)
    with backend:
        Repository.init_backend(backend, cache_dir=place.cache, pack_target_size=MiB, delta=delta).close()
    rng = random.Random(12)
    image = tmp_path / "disk.img"
    modify = _scatter if delta else _modify
    points = KILL_POINTS // 2 if delta else KILL_POINTS
    place.expected["v0"] = _image(image, rng, 16 * MiB if delta else SIZE)
    work = _timed(place, ["commit", str(image), "v0"])
    place.expected["v1"] = modify(image, rng)
    work = min(work, _timed(place, ["commit", str(image), "v1"]))
    killed = 0
    for i in range(points):
        message = f"k{i}"
        place.expected[message] = modify(image, rng)
        killed += _kill_at(place, ["commit", str(image), message], work, 0.8 * (i + 0.5) / points)
        place.restart()
        place.check(f"commit killed at point {i}")
    assert killed >= points // 2, f"only {killed} kills landed mid-commit"
    # gc: drop all but v0 (in a delta repository, v0 too) and the newest, then kill the
    # repacking gc at points of its run.
    backend, repo = place.open(Mode.WRITE)
    with backend, repo:
        newest = max(repo.list_snapshots(), key=lambda s: s.created)
        kept = {newest.message} if delta else {"v0", newest.message}
        doomed = [s.id for s in repo.list_snapshots() if s.message not in kept]
        for sid in doomed:
            repo.remove_snapshot(sid)
        if delta:
            locs = [
                repo.get_location(r.chunk_id) for r in repo.iter_records(newest.id) if isinstance(r, ChunkRef)
            ]
            assert len([loc for loc in locs if loc is not None and loc.base is not None]) >= 5
    place.required = newest.message
    gc_killed = 0
    for i in range(points // 2):
        gc_killed += _kill_at(place, ["gc"], work, 0.8 * (i + 0.5) / (points // 2))
        place.restart()
        place.check(f"gc killed at point {i}")
    assert _timed(place, ["gc"]) > 0
    place.check("after the last gc")
    report_count(
        "crash",
        f"commit and gc over the local backend (SIGKILL){', delta repository' if delta else ''}",
        kill_points=points + points // 2,
        landed_mid_run=killed + gc_killed,
    )


KILLED_PUT = """
import os, signal, sys
from pathlib import Path
from snapstore.backends import LocalBackend
from snapstore.model import ChunkRef
backend = LocalBackend(Path(sys.argv[1]))
def parts():
    yield b"half an object " * 1000
    os.kill(os.getpid(), signal.SIGKILL)
backend.put(sys.argv[2], parts(), overwrite=True)
"""


def test_a_put_killed_midway_is_cleared_by_the_next_writer(tmp_path: Path) -> None:
    place = Place(tmp_path)
    with LocalBackend(place.objects, create=True) as backend:
        Repository.init_backend(backend, cache_dir=place.cache).close()
    names = [
        f"tmp/pending-{'ab' * 32}",
        f"snapshots/{'cd' * 32}",
        "config",
        "locks/data-shared-0123456789abcdef",
    ]
    for name in names:
        done = subprocess.run(
            [sys.executable, "-c", KILLED_PUT, str(place.objects), name], cwd=PROJECT, check=False
        )
        assert done.returncode == -signal.SIGKILL
    temps = sorted(str(p.relative_to(place.objects)) for p in place.objects.rglob(".*.tmp-*"))
    assert len(temps) == len(names), temps
    backend, repo = place.open()
    with backend, repo:  # a reader removes nothing (a writer may be putting)
        assert list(backend.list("tmp/")) == [] and len(repo.list_snapshots()) == 0
    assert len(list(place.objects.rglob(".*.tmp-*"))) == len(names)
    place.restart()
    backend, repo = place.open(Mode.WRITE)
    with backend, repo:
        pass
    left = [str(p.relative_to(place.objects)) for p in place.objects.rglob(".*.tmp-*")]
    assert len(left) == 1 and left[0].startswith("locks/"), left  # readers put lock objects beside a writer
