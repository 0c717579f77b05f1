"""Stale lock objects (storage/objlock.py, storage/holders.py): a lock object whose holder
was a process of this host that is gone is removed by whoever meets it, with a warning; a
live holder, or one of another host, keeps its lock. The first test kills a real process
holding the write lock of a repository kept as objects of a local directory."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore import Mode
from snapstore.backends import LocalBackend, MemoryBackend
from snapstore.errors import LockedError
from snapstore.repo import Repository
from snapstore.storage import holders
from tests.conftest import SMALL_CHUNKER

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from snapstore import Mode
    from snapstore.backends import LocalBackend
    from snapstore.repo import Repository
    backend = LocalBackend(Path(sys.argv[1]))
    r = Repository.open_backend(backend, Mode[sys.argv[2]], cache_dir=Path(sys.argv[3]))
    print("held", flush=True)
    time.sleep(120)
    """
)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[_Lines]:
    seen = _Lines()
    logger = logging.getLogger("snapstore.storage.objlock")
    logger.addHandler(seen)
    yield seen
    logger.removeHandler(seen)


def _hold(objects: Path, mode: str, cache: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(objects), mode, str(cache)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("mode", ["WRITE", "READ"])
def test_a_killed_holder_s_lock_object_is_removed_by_the_next_opening(
    tmp_path: Path, mode: str, warnings: _Lines
) -> None:
    objects = tmp_path / "objects"
    backend = LocalBackend(objects, create=True)
    Repository.init_backend(backend, cache_dir=tmp_path / "cache", chunker=SMALL_CHUNKER).close()
    holder = _hold(objects, mode, tmp_path / "cache-holder")
    try:
        with pytest.raises(LockedError):  # alive: its lock holds
            Repository.open_backend(backend, Mode.EXCLUSIVE, cache_dir=tmp_path / "cache")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert list(backend.list("locks/")), "kill -9 left the lock object"
    with Repository.open_backend(backend, Mode.EXCLUSIVE, cache_dir=tmp_path / "cache") as r:
        assert r.list_snapshots() == []
    assert len(warnings.lines) == (2 if mode == "WRITE" else 1)  # write-exclusive, data-shared
    assert all(f"pid {holder.pid} on " in w and "no longer running" in w for w in warnings.lines)
    assert list(backend.list("locks/")) == []


def _plant(backend: MemoryBackend, name: str, **changes: object) -> None:
    backend.put(name, json.dumps(holders.this_process() | changes).encode())


@pytest.fixture
def memory(tmp_path: Path) -> MemoryBackend:
    backend = MemoryBackend()
    Repository.init_backend(backend, cache_dir=tmp_path / "cache", chunker=SMALL_CHUNKER).close()
    return backend


def test_a_holder_of_another_host_keeps_its_lock(memory: MemoryBackend, tmp_path: Path) -> None:
    _plant(memory, "locks/write-exclusive", host="another-host", pid=1)
    with pytest.raises(LockedError):
        Repository.open_backend(memory, Mode.WRITE, cache_dir=tmp_path / "cache")
    assert memory.exists_many(["locks/write-exclusive"])


def test_a_live_holder_of_this_host_keeps_its_lock(memory: MemoryBackend, tmp_path: Path) -> None:
    _plant(memory, "locks/data-shared-0123456789abcdef")  # this very process: alive
    with pytest.raises(LockedError):
        Repository.open_backend(memory, Mode.EXCLUSIVE, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "changes",
    [
        {"boot": "another-boot"},  # this host rebooted since
        {"start": -1},  # the pid lives again, in another process
        {"pid": 2**22 + 12345, "start": None},  # no such process
    ],
)
def test_a_gone_holder_of_this_host_loses_its_lock(
    memory: MemoryBackend, tmp_path: Path, changes: dict[str, object], warnings: _Lines
) -> None:
    _plant(memory, "locks/write-exclusive", **changes)
    _plant(memory, "locks/data-shared-0123456789abcdef", **changes)
    with Repository.open_backend(memory, Mode.EXCLUSIVE, cache_dir=tmp_path / "cache") as r:
        assert r.mode is Mode.EXCLUSIVE
    assert len(warnings.lines) == 2
    assert list(memory.list("locks/")) == []


def test_a_damaged_record_is_not_taken_for_a_gone_holder(memory: MemoryBackend, tmp_path: Path) -> None:
    memory.put("locks/write-exclusive", b"\xff not json")
    with pytest.raises(LockedError):
        Repository.open_backend(memory, Mode.WRITE, cache_dir=tmp_path / "cache")


def test_the_process_identity_tells_lives_of_a_pid_apart() -> None:
    me = holders.this_process()
    assert me["pid"] == os.getpid() and not holders.gone(me)
    child = subprocess.Popen(["sleep", "30"])
    try:
        info = me | {"pid": child.pid, "start": holders._start_ticks(child.pid)}
        assert not holders.gone(info)
    finally:
        child.kill()
        child.wait()
    assert holders.gone(info)
    assert not holders.gone(info | {"host": "elsewhere"})
