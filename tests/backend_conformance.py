"""The conformance suite every storage backend passes (docs/BACKENDS.md, "conformance").

A backend's test module subclasses :class:`BackendConformance` and provides a ``backend``
fixture (a new, empty backend for each test); tests of capabilities the backend does not
declare check that calling them is refused instead.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstore.backends import Backend, Fault, FaultyBackend
from snapstore.backends.base import MAX_PART
from snapstore.backends.faulty import Kind
from snapstore.errors import (
    NoSpaceError,
    ObjectExistsError,
    ObjectNameError,
    ObjectNotFoundError,
    ShortObjectError,
    SnapstoreError,
    StorageIOError,
)
from snapstore.model import Buffer

MiB = 1 << 20
_SERIAL = itertools.count()
PART_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"
valid_parts = st.text(PART_CHARS, min_size=1, max_size=20).filter(lambda p: not p.startswith("."))
valid_names = st.lists(valid_parts, min_size=1, max_size=4).map("/".join)
FIXTURE_OK = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_NAME = re.compile(
    rf"[a-z0-9_-][a-z0-9._-]{{0,{MAX_PART - 1}}}(/[a-z0-9_-][a-z0-9._-]{{0,{MAX_PART - 1}}})*"
)
bad_pieces = st.sampled_from(["", ".", "..", ".x", "A", " ", "\x00", "\\", "é", "\n", "x" * (MAX_PART + 1)])
invalid_names = st.one_of(
    st.text(max_size=30).filter(lambda n: not VALID_NAME.fullmatch(n)),
    st.tuples(st.lists(valid_parts, max_size=2), bad_pieces, st.lists(valid_parts, max_size=2)).map(
        lambda t: "/".join([*t[0], t[1], *t[2]]) if t[1] in ("", ".", "..", ".x") else "/".join(t[0]) + t[1]
    ),
)

INVALID_NAMES = [
    "",
    "/abs",
    "a/",
    "a//b",
    ".",
    "..",
    "a/../b",
    "a/./b",
    ".hidden",
    "packs/.ab",
    "Upper",
    "sp ace",
    "nul\x00",
    "back\\slash",
    "é",
    "x" * (MAX_PART + 1),
    "/".join(["abc"] * 300),
]


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def parts(total: int, part: int, seed: int) -> Iterator[bytes]:
    """``total`` deterministic bytes made as they are asked for, ``part`` at a time."""
    rng = random.Random(seed)
    for start in range(0, total, part):
        yield rng.randbytes(min(part, total - start))


class BackendConformance:
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        raise NotImplementedError("a backend's test class provides this fixture")

    # -- put, get, stat, delete ---------------------------------------------------------------------

    def test_put_get_round_trip(self, backend: Backend) -> None:
        data = random_bytes(100_000)
        backend.put("snapshots/one", data)
        backend.put("snapshots/two", bytearray(data[:10]))
        backend.put("snapshots/three", memoryview(data)[5:20])
        streamed: list[Buffer] = [data[:7], memoryview(data)[7:50_000], b"", data[50_000:]]
        backend.put("packs/ab/streamed.pack", iter(streamed))
        backend.put("empty", b"")
        backend.put("wide", memoryview(data[:400]).cast("I"))  # 100 items, 400 bytes
        assert backend.get("wide") == data[:400]
        assert backend.get("snapshots/one") == data
        assert backend.get("snapshots/two") == data[:10]
        assert backend.get("snapshots/three") == data[5:20]
        assert backend.get("packs/ab/streamed.pack") == data
        assert backend.get("empty") == b""
        assert backend.stat("snapshots/one") == len(data)
        assert backend.stat("empty") == 0

    def test_ranged_get(self, backend: Backend) -> None:
        data = random_bytes(10_000, seed=1)
        backend.put("obj", data)
        for offset, length in [(0, 0), (0, 1), (1, 100), (9_999, 1), (10_000, 0), (4096, 4096)]:
            assert backend.get("obj", offset, length) == data[offset : offset + length]
        assert backend.get("obj", 9_000) == data[9_000:]
        assert backend.get("obj", 10_000) == b""
        for start, count in [(9_999, 2), (0, 10_001), (10_001, 0), (20_000, None)]:
            with pytest.raises(ShortObjectError) as info:
                backend.get("obj", start, count)
            assert info.value.size == 10_000 and info.value.exit_code == 4
        with pytest.raises(ValueError):
            backend.get("obj", -1, 1)

    def test_missing_object(self, backend: Backend) -> None:
        backend.put("present/a", b"a")
        for name in ("missing", "present/b", "absent/dir/c"):
            with pytest.raises(ObjectNotFoundError) as info:
                backend.get(name)
            assert info.value.name == name and info.value.exit_code == 3
            with pytest.raises(ObjectNotFoundError):
                backend.stat(name)
            backend.delete(name)  # idempotent
        assert backend.stat_many(["present/a", "missing", "absent/dir/c"]) == {
            "present/a": 1,
            "missing": None,
            "absent/dir/c": None,
        }
        assert backend.exists_many(["present/a", "missing"]) == {"present/a"}

    def test_overwrite_refused_unless_asked(self, backend: Backend) -> None:
        backend.put("config", b"first")
        with pytest.raises(ObjectExistsError) as info:
            backend.put("config", b"second")
        assert info.value.exit_code == 4
        assert backend.get("config") == b"first"
        backend.put("config", b"third!", overwrite=True)
        assert backend.get("config") == b"third!"
        assert list(backend.list()) == ["config"]

    def test_delete(self, backend: Backend) -> None:
        backend.put("packs/ab/x.pack", b"x")
        backend.put("packs/ab/y.pack", b"y")
        backend.delete("packs/ab/x.pack")
        with pytest.raises(ObjectNotFoundError):
            backend.stat("packs/ab/x.pack")
        assert list(backend.list("packs/")) == ["packs/ab/y.pack"]
        backend.delete("packs/ab/x.pack")
        backend.put("packs/ab/x.pack", b"again")  # a deleted name can be put again
        assert backend.get("packs/ab/x.pack") == b"again"

    def test_usage_counts_stored_bytes(self, backend: Backend) -> None:
        before = backend.usage()
        backend.put("big", random_bytes(MiB, seed=2))
        assert backend.usage() >= before + MiB
        backend.delete("big")
        assert backend.usage() < before + MiB

    # -- list ---------------------------------------------------------------------------------------

    def test_list_sorted_with_exact_prefix(self, backend: Backend) -> None:
        names = [
            "x/a-c",
            "x/a/b",
            "x/a.x",
            "x/a0",
            "x/a/c/d",
            "x/ab",
            "y",
            "packs/ab/1.pack",
            "packs/b0/2.pack",
        ]
        for name in names:
            backend.put(name, name.encode())
        listing = backend.list()
        assert iter(listing) is listing  # an iterator, produced as it goes
        assert list(listing) == sorted(names)
        assert list(backend.list("x/a")) == sorted(n for n in names if n.startswith("x/a"))
        assert list(backend.list("x/a/")) == ["x/a/b", "x/a/c/d"]
        assert list(backend.list("packs/a")) == ["packs/ab/1.pack"]
        assert list(backend.list("y")) == ["y"]
        assert list(backend.list("x/a/c/d")) == ["x/a/c/d"]
        assert list(backend.list("z")) == []
        assert list(backend.list("x/q/")) == []

    @FIXTURE_OK
    @given(
        names=st.lists(st.tuples(valid_parts, valid_parts).map("/".join), max_size=12, unique=True),
        extra=st.text(PART_CHARS + "/", max_size=6),
    )
    def test_list_matches_a_sorted_filter(self, backend: Backend, names: list[str], extra: str) -> None:
        for name in backend.list():
            backend.delete(name)
        for name in names:
            backend.put(name, b"")
        prefixes = {"", extra, *(n[:k] for n in names for k in (1, len(n) // 2, len(n)))}
        for prefix in prefixes:
            try:
                got = list(backend.list(prefix))
            except ObjectNameError:
                continue  # "a//", ".x": no name starts so
            assert got == sorted(n for n in names if n.startswith(prefix)), prefix

    # -- names ----------------------------------------------------------------------------------------

    @pytest.mark.parametrize("name", INVALID_NAMES)
    def test_invalid_names_refused(self, backend: Backend, name: str) -> None:
        for call in (
            lambda: backend.put(name, b"x"),
            lambda: backend.get(name),
            lambda: backend.stat(name),
            lambda: backend.delete(name),
        ):
            with pytest.raises(ObjectNameError) as info:
                call()
            assert info.value.exit_code == 2
        assert list(backend.list()) == []

    @FIXTURE_OK
    @given(name=invalid_names)
    def test_invalid_names_always_refused(self, backend: Backend, name: str) -> None:
        assert not VALID_NAME.fullmatch(name)
        with pytest.raises(ObjectNameError):
            backend.put(name, b"x")
        with pytest.raises(ObjectNameError):
            backend.get(name)
        assert list(backend.list()) == []

    @FIXTURE_OK
    @given(name=valid_names, data=st.binary(max_size=64))
    def test_valid_names_round_trip(self, backend: Backend, name: str, data: bytes) -> None:
        where = f"rt{next(_SERIAL)}/"  # each example in its own directory
        backend.put(where + name, data)
        assert backend.get(where + name) == data
        assert list(backend.list(where)) == [where + name]
        backend.delete(where + name)

    # -- atomicity under faults -----------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["torn", "crash", "eio", "enospc"])
    def test_failed_put_leaves_nothing(self, backend: Backend, kind: Kind) -> None:
        data = random_bytes(3 * MiB, seed=3)
        faulty = FaultyBackend(backend, [Fault("put", 2, kind)])
        faulty.put("packs/ab/first.pack", data)
        with pytest.raises(NoSpaceError if kind == "enospc" else StorageIOError):
            faulty.put("packs/ab/second.pack", parts(3 * MiB, MiB, seed=4))
        assert faulty.injected == [Fault("put", 2, kind)]
        with pytest.raises(ObjectNotFoundError):
            backend.stat("packs/ab/second.pack")
        assert list(backend.list()) == ["packs/ab/first.pack"]
        assert backend.get("packs/ab/first.pack") == data
        if kind == "crash":
            with pytest.raises(StorageIOError):
                faulty.get("packs/ab/first.pack")
        else:
            faulty.put("packs/ab/second.pack", data[:5])
            assert backend.get("packs/ab/second.pack") == data[:5]

    def test_failed_overwrite_keeps_the_old_object(self, backend: Backend) -> None:
        backend.put("config", b"old config")
        faulty = FaultyBackend(backend, [Fault("put", 1, "torn")])
        with pytest.raises(StorageIOError):
            faulty.put("config", random_bytes(MiB), overwrite=True)
        assert backend.get("config") == b"old config"
        assert list(backend.list()) == ["config"]

    def test_faults_on_reads(self, backend: Backend) -> None:
        backend.put("obj", b"abcdef")
        faulty = FaultyBackend(backend, [Fault("get", 1, "short"), Fault("get", 2, "flip"), Fault("*", 4)])
        assert faulty.get("obj") == b"abcde"
        assert faulty.get("obj") == b"`bcdef"
        assert faulty.get("obj") == b"abcdef"
        with pytest.raises(StorageIOError):
            faulty.stat("obj")  # the 4th call of any operation
        assert faulty.stat("obj") == 6
        assert faulty.calls["get"] == 3 and faulty.calls["*"] == 5

    # -- capabilities -------------------------------------------------------------------------------

    def test_append_with_checkpoints(self, backend: Backend) -> None:
        if not backend.capabilities.append:
            with pytest.raises(NotImplementedError):
                backend.open_append("packs/ab/x.pack")
            return
        data = random_bytes(300_000, seed=5)
        writer = backend.open_append("packs/ab/x.pack")
        with pytest.raises(ObjectExistsError):
            backend.open_append("packs/ab/x.pack")
        assert writer.write(data[:100_000]) == 0
        assert writer.write(memoryview(data)[100_000:250_000]) == 100_000
        writer.checkpoint()
        assert writer.size == 250_000
        assert backend.get("packs/ab/x.pack", 0, 250_000) == data[:250_000]  # checkpointed bytes read back
        assert writer.write(memoryview(data[250_000:]).cast("Q")) == 250_000  # 8-byte items
        assert writer.size == len(data)
        writer.seal()
        writer.seal()
        with pytest.raises(ValueError):
            writer.write(b"more")
        assert backend.get("packs/ab/x.pack") == data
        writer.abort()  # after seal: the object stays
        assert backend.stat("packs/ab/x.pack") == len(data)
        dropped = backend.open_append("packs/ab/y.pack")
        dropped.write(b"partial")
        dropped.abort()
        assert list(backend.list()) == ["packs/ab/x.pack"]

    def test_torn_append_keeps_earlier_writes(self, backend: Backend) -> None:
        if not backend.capabilities.append:
            return
        faulty = FaultyBackend(backend, [Fault("append.write", 2, "torn")])
        writer = faulty.open_append("packs/ab/x.pack")
        writer.write(b"a" * 1000)
        writer.checkpoint()
        with pytest.raises(StorageIOError):
            writer.write(b"b" * 1000)
        assert backend.get("packs/ab/x.pack", 0, 1000) == b"a" * 1000
        writer.abort()
        assert list(backend.list()) == []

    def test_punch(self, backend: Backend) -> None:
        if not backend.capabilities.punch:
            backend.put("obj", b"x")
            with pytest.raises(NotImplementedError):
                backend.punch("obj", 0, 1)
            return
        data = random_bytes(3 * 65536, seed=6)
        backend.put("packs/ab/x.pack", data)
        backend.punch("packs/ab/x.pack", 65536, 65536)
        backend.punch("packs/ab/x.pack", 10, 5)  # unaligned: zeroed all the same
        expected = data[:10] + bytes(5) + data[15:65536] + bytes(65536) + data[2 * 65536 :]
        assert backend.stat("packs/ab/x.pack") == len(data)
        assert backend.get("packs/ab/x.pack") == expected
        with pytest.raises(ShortObjectError):
            backend.punch("packs/ab/x.pack", len(data) - 1, 2)
        with pytest.raises(ObjectNotFoundError):
            backend.punch("packs/ab/missing.pack", 0, 1)

    def test_create_exclusive_race(self, backend: Backend) -> None:
        if not backend.capabilities.create_exclusive:
            with pytest.raises(NotImplementedError):
                backend.create_exclusive("locks/x", b"")
            return
        threads = 8
        for round_ in range(10):
            name = f"locks/race-{round_}"
            barrier = threading.Barrier(threads)
            results: list[tuple[bool, bytes]] = []

            def contend(
                i: int,
                name: str = name,
                barrier: threading.Barrier = barrier,
                results: list[tuple[bool, bytes]] = results,
            ) -> None:
                mine = f"holder {i}".encode() * 1000
                barrier.wait()
                results.append((backend.create_exclusive(name, mine), mine))

            pool = [threading.Thread(target=contend, args=(i,)) for i in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(timeout=60)
            winners = [data for won, data in results if won]
            assert len(results) == threads and len(winners) == 1
            assert backend.get(name) == winners[0]
        assert backend.create_exclusive("locks/race-0", b"late") is False

    # -- size and threads -------------------------------------------------------------------------------

    def test_large_object_streamed(self, backend: Backend) -> None:
        size, part = 64 * MiB, MiB
        expected = hashlib.sha256()
        for piece in parts(size, part, seed=7):
            expected.update(piece)
        tracemalloc.start()
        try:
            backend.put("packs/ff/large.pack", parts(size, part, seed=7))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1.5 * size  # never the object twice over
        self.put_peak = peak
        assert backend.stat("packs/ff/large.pack") == size
        got = hashlib.sha256()
        for offset in range(0, size, 8 * MiB):
            got.update(backend.get("packs/ff/large.pack", offset, 8 * MiB))
        assert got.hexdigest() == expected.hexdigest()

    def test_concurrent_puts_and_gets(self, backend: Backend) -> None:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(20):
                    name = f"t{i}/obj-{j}"
                    data = random_bytes(1000 + j, seed=i * 100 + j)
                    backend.put(name, data)
                    assert backend.get(name) == data
                    if j % 3 == 0:
                        backend.delete(name)
            except (AssertionError, SnapstoreError) as exc:
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=60)
        assert errors == []
        listed = list(backend.list())
        assert listed == sorted(f"t{i}/obj-{j}" for i in range(6) for j in range(20) if j % 3)
