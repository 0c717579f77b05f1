"""Storage backends: the conformance suite on every backend, then what only the local file
system backend promises (trust rules, du usage, holes, flock, a put killed by SIGKILL)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.backends import Backend, FaultyBackend, LocalBackend, MemoryBackend, check_name
from snapstore.backends.base import MAX_NAME
from snapstore.errors import CorruptError, LockedError, ObjectNameError
from tests.backend_conformance import VALID_NAME, BackendConformance, MiB, parts, random_bytes

BACKENDS = ["local", "memory", "faulty-local", "faulty-memory"]


def make_backend(kind: str, where: Path) -> Backend:
    inner: Backend = MemoryBackend() if kind.endswith("memory") else LocalBackend(where, create=True)
    return FaultyBackend(inner) if kind.startswith("faulty") else inner


class TestConformance(BackendConformance):
    @pytest.fixture(params=BACKENDS)
    def backend(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        with make_backend(request.param, tmp_path / "store") as backend:
            yield backend


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalBackend]:
    with LocalBackend(tmp_path / "store", create=True) as backend:
        yield backend


def test_declared_capabilities() -> None:
    local, memory = LocalBackend.capabilities, MemoryBackend.capabilities
    assert local.append and local.punch and local.flock and local.create_exclusive and local.local_path
    assert memory.append and memory.punch and memory.create_exclusive
    assert not memory.flock and not memory.local_path
    assert FaultyBackend(MemoryBackend()).capabilities == memory


# -- names: the rule, as a regular expression checked against the code --------------------------


@given(st.one_of(st.text(max_size=40), st.text("ab./-_Z\x00", max_size=40), st.text("a/", max_size=1100)))
def test_check_name_accepts_exactly_the_documented_names(name: str) -> None:
    expected = bool(VALID_NAME.fullmatch(name)) and len(name) <= MAX_NAME
    try:
        check_name(name)
    except ObjectNameError:
        assert not expected, name
    else:
        assert expected, name


# -- the local backend ----------------------------------------------------------------------------


def test_local_objects_are_files_below_the_root(local: LocalBackend, tmp_path: Path) -> None:
    local.put("packs/ab/x.pack", b"data")
    assert (tmp_path / "store/packs/ab/x.pack").read_bytes() == b"data"
    assert local.local_path("packs/ab/x.pack").read_bytes() == b"data"
    assert os.stat(tmp_path / "store/packs/ab/x.pack").st_mode & 0o777 == 0o600


def test_local_list_hides_temp_files_and_foreign_names(local: LocalBackend, tmp_path: Path) -> None:
    local.put("packs/ab/x.pack", b"x")
    root = tmp_path / "store"
    (root / "packs/ab/.x.pack.tmp-0123456789ab").write_bytes(b"half")
    (root / "packs/ab/README.TXT").write_bytes(b"not ours")
    (root / "Upper").mkdir()
    (root / "Upper/y").write_bytes(b"not ours")
    assert list(local.list()) == ["packs/ab/x.pack"]
    assert local.remove_temp() == 1
    assert sorted(os.listdir(root / "packs/ab")) == ["README.TXT", "x.pack"]


def test_local_symlinks_are_never_followed(local: LocalBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "store"
    os.symlink(outside, root / "packs")  # a planted directory link
    os.symlink(outside / "secret", root / "config")  # a planted file link
    for call in (
        lambda: local.put("packs/x.pack", b"evil"),
        lambda: local.get("packs/secret"),
        lambda: local.stat("packs/secret"),
        lambda: local.get("config"),
        lambda: local.stat("config"),
        lambda: local.put("config", b"evil"),
        lambda: local.put("config", b"evil", overwrite=True),
        lambda: local.punch("config", 0, 1),
        lambda: local.open_append("packs/y.pack"),
    ):
        with pytest.raises(CorruptError) as info:
            call()
        assert info.value.exit_code == 4
    assert os.listdir(outside) == ["secret"] and (outside / "secret").read_bytes() == b"secret"
    assert list(local.list()) == ["config", "packs"]  # listed, and refused when read


def test_local_fifo_is_refused_without_hanging(local: LocalBackend, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "store/fifo")
    with pytest.raises(CorruptError):
        local.get("fifo")
    with pytest.raises(CorruptError):
        local.stat("fifo")


def test_local_punch_frees_blocks(local: LocalBackend) -> None:
    local.put("packs/ab/x.pack", random_bytes(8 * MiB, seed=1))
    before = local.usage()
    local.punch("packs/ab/x.pack", 2 * MiB, 4 * MiB)
    assert local.stat("packs/ab/x.pack") == 8 * MiB
    assert local.usage() <= before - 4 * MiB + 64 * 1024  # the range's blocks, give or take a block
    assert local.get("packs/ab/x.pack", 2 * MiB, 4 * MiB) == bytes(4 * MiB)


def test_local_append_survives_reopen(tmp_path: Path) -> None:
    with LocalBackend(tmp_path / "store", create=True) as first:
        writer = first.open_append("packs/ab/x.pack")
        writer.write(b"header")
        writer.checkpoint()
        writer.write(b"record")
    with LocalBackend(tmp_path / "store") as second:  # the writer was never sealed
        assert second.get("packs/ab/x.pack") == b"headerrecord"
    writer.abort()


def test_local_lock(local: LocalBackend) -> None:
    with local.lock("locks/write", exclusive=True):
        with pytest.raises(LockedError) as info, local.lock("locks/write", exclusive=False):
            pass
        assert info.value.exit_code == 6
    with (
        local.lock("locks/data", exclusive=False),
        local.lock("locks/data", exclusive=False),
        pytest.raises(LockedError),
        local.lock("locks/data", exclusive=True),
    ):
        pass
    with local.lock("locks/write", exclusive=True):
        pass  # released when the block ended
    assert MemoryBackend.capabilities.flock is False
    with pytest.raises(NotImplementedError):
        MemoryBackend().lock("locks/write", exclusive=True)


def test_local_large_put_holds_little_memory(local: LocalBackend) -> None:
    tracemalloc.start()
    try:
        local.put("packs/ff/large.pack", parts(64 * MiB, MiB, seed=3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB  # a part or two in flight, never the object


def test_local_list_walks_lazily(local: LocalBackend) -> None:
    for i in range(3):
        local.put(f"d{i}/x", b"")
    listing = local.list()
    assert next(listing) == "d0/x"
    local.put("d2/a", b"")  # a directory not reached yet is read when it is reached
    assert list(listing) == ["d1/x", "d2/a", "d2/x"]


# -- a put killed by SIGKILL --------------------------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
from snapstore.backends import LocalBackend
from tests.backend_conformance import parts
backend = LocalBackend(Path(sys.argv[1]))
def stream():
    for i, part in enumerate(parts(int(sys.argv[3]), 1 << 20, seed=int(sys.argv[4]))):
        yield part
        if i == 0:
            print("writing", flush=True)  # the first part is in the temp file
backend.put(sys.argv[2], stream())
print("done", flush=True)
"""
KILLS = 8


def test_local_put_killed_leaves_the_object_absent_or_whole(tmp_path: Path, report_count: Any) -> None:
    size = 32 * MiB
    root = tmp_path / "store"
    LocalBackend(root, create=True).close()
    rng = random.Random(12)
    outcomes = {"absent": 0, "whole": 0}
    for i in range(KILLS):
        name = f"packs/k{i % 3}/obj-{i}.pack"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), name, str(size), str(i)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        if i < KILLS - 1:  # the last one runs to the end: both outcomes are seen
            time.sleep(rng.uniform(0, 0.6))  # a put takes about 0.5 s here
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
        with LocalBackend(root) as backend:
            listed = list(backend.list())
            assert all(".tmp-" not in n for n in listed)
            size_now = backend.stat_many([name])[name]
            if size_now is None:
                outcomes["absent"] += 1
                assert name not in listed
            else:
                outcomes["whole"] += 1
                assert size_now == size and name in listed
                assert backend.get(name) == b"".join(parts(size, MiB, seed=i))
    assert outcomes["whole"] >= 1
    with LocalBackend(root) as backend:
        assert backend.remove_temp() >= outcomes["absent"]  # each absent one left its temp file
        left = [p.name for p in root.rglob(".*")]
        assert left == []
    report_count("crash", "backend put 32 MiB (SIGKILL)", kill_points=KILLS - 1, **outcomes)


def test_local_backend_usable_from_threads_while_listing(local: LocalBackend) -> None:
    for i in range(50):
        local.put(f"a/{i:03d}", b"x")
    seen: list[list[str]] = []
    pool = [threading.Thread(target=lambda: seen.append(list(local.list("a/")))) for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert seen == [[f"a/{i:03d}" for i in range(50)]] * 4


def test_memory_list_spans_batches() -> None:
    backend = MemoryBackend()
    names = [f"packs/{i % 7}/{i:05d}.pack" for i in range(2500)]
    for name in names:
        backend.put(name, b"")
    backend.put("packs0", b"")  # sorts after every "packs/..." name: not under "packs/"
    assert list(backend.list("packs/")) == sorted(names)
    assert list(backend.list("packs/3/")) == sorted(n for n in names if n.startswith("packs/3/"))
    listing = backend.list()
    first = [next(listing) for _ in range(1500)]
    backend.delete(sorted(names)[2000])  # removed before the listing reaches it: not listed
    assert first + list(listing) == sorted([*names, "packs0"])[:2000] + sorted([*names, "packs0"])[2001:]
