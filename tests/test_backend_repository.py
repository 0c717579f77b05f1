"""A Repository over a storage backend (issue 12, "Done when" 1): commit, checkout, rm, gc,
prune, verify and repair run on the in-memory backend as on a local directory (each test
runs on a local directory, the in-memory backend, a backend declaring no capability, and
the object stores over the local backend), and a Repository over the fault-injecting
backend never leaves a damaged snapshot, whatever call fails. The local CLI suites keep
covering the local fast paths."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import snapstore
from snapstore import KeepPolicy, Mode
from snapstore.backends import Backend, Capabilities, Fault, FaultyBackend, LocalBackend, MemoryBackend
from snapstore.errors import LockedError, SnapstoreError
from snapstore.format import pack as pack_fmt
from snapstore.model import SnapshotId
from snapstore.ops.repair import repair
from snapstore.repo import Repository
from snapstore.repo_location import default_cache_dir
from tests.conftest import SMALL_CHUNKER
from tests.helpers import content_sha, file_sha

MiB = 1 << 20
Opener = Callable[..., Repository]


class PutOnlyBackend(MemoryBackend):
    """A memory backend that declares no capability: packs are put whole when sealed."""

    capabilities = Capabilities()


class Place:
    """Where a test's repository is: a local directory or a backend (its index in a cache)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.backend: Backend | None = None
        if kind == "memory":
            self.backend = MemoryBackend()
        elif kind == "put-only":
            self.backend = PutOnlyBackend()
        elif kind == "local-backend":  # the object stores over a local directory
            self.backend = LocalBackend(tmp / "objects", create=True)
        self.root = tmp / "repo"
        self.cache = tmp / "cache"

    def init(self) -> None:
        if self.backend is None:
            Repository.init(self.root, chunker=SMALL_CHUNKER, pack_target_size=MiB).close()
        else:
            Repository.init_backend(
                self.backend, cache_dir=self.cache, chunker=SMALL_CHUNKER, pack_target_size=MiB
            ).close()

    def open(self, mode: Mode = Mode.READ, **kwargs: bool) -> Repository:
        if self.backend is None:
            return Repository.open(self.root, mode, **kwargs)
        return Repository.open_backend(self.backend, mode, cache_dir=self.cache, **kwargs)

    def drop_index(self) -> None:
        shutil.rmtree((self.root if self.backend is None else self.cache) / "index")


@pytest.fixture(params=["local", "memory", "put-only", "local-backend"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    p = Place(request.param, tmp_path)
    p.init()
    yield p
    if p.backend is not None:
        p.backend.close()


def versions(tmp: Path, n: int, size: int = 3 * MiB, seed: int = 5) -> list[Path]:
    """``n`` versions of an image, each changing a few ranges of the one before."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    out = []
    for i in range(n):
        for _ in range(3):
            at = rng.randrange(size - 200_000)
            data[at : at + 200_000] = rng.randbytes(200_000) if i % 2 else bytes(200_000)
        path = tmp / f"v{i}.img"
        path.write_bytes(data)
        out.append(path)
    return out


def commit_all(place: Place, images: list[Path]) -> list[SnapshotId]:
    ids = []
    for image in images:
        with place.open(Mode.WRITE) as r:
            ids.append(snapstore.commit_file(r, image, name="vm").snapshot.id)
    return ids


def sha_of(place: Place, sid: SnapshotId) -> str:
    with place.open() as r:
        return content_sha(r, sid)


def test_commit_and_checkout_round_trip(place: Place, tmp_path: Path) -> None:
    images = versions(tmp_path, 3)
    ids = commit_all(place, images)
    with place.open() as r:
        assert [s.id for s in r.list_snapshots()] == ids
        for sid, image in zip(ids, images, strict=True):
            out = tmp_path / "out.img"
            snapstore.checkout(r, r.resolve(sid.hex()), str(out), force=True)
            assert file_sha(out) == file_sha(image)
        stats = snapstore.repo_stats(r, r.list_snapshots())
    assert stats.snapshots == 3 and stats.live_chunks > 0 and stats.disk_bytes > 0
    if place.backend is not None:
        names = list(place.backend.list())
        kinds = ("config", "generation", "packs/", "snapshots/")
        assert "config" in names and all(n.startswith(kinds) for n in names)
        assert len([n for n in names if n.startswith("snapshots/")]) == 3


def test_rm_gc_and_verify(place: Place, tmp_path: Path) -> None:
    images = versions(tmp_path, 3)
    ids = commit_all(place, images)
    keep = sha_of(place, ids[2])
    with place.open(Mode.WRITE) as r:
        r.remove_snapshot(ids[0])
        r.remove_snapshot(ids[1])
    with place.open(Mode.EXCLUSIVE) as r:
        res = snapstore.gc(r)
        assert res.plan.dead_chunks and res.freed_bytes > 0
        assert snapstore.gc(r).plan.empty
    with place.open(Mode.CHECK) as r:
        report = snapstore.verify(r, read_data=True)
        assert report.ok and report.snapshots == 1, report.problems
    assert sha_of(place, ids[2]) == keep == file_sha(images[2])


def test_prune_keeps_the_policy_and_pins(place: Place, tmp_path: Path) -> None:
    ids = commit_all(place, versions(tmp_path, 4))
    with place.open(Mode.WRITE) as r:
        r.pin(ids[0])
    with place.open(Mode.EXCLUSIVE) as r:
        result = snapstore.prune(r, KeepPolicy(last=1), now=datetime.now(UTC) + timedelta(days=1))
        assert {s.id for s in r.list_snapshots()} == {ids[0], ids[3]}
        assert {s.id for s in result.plan.drop} == {ids[1], ids[2]}
        assert r.pinned() == {ids[0]}
    with place.open(Mode.CHECK) as r:
        assert snapstore.verify(r, read_data=True).ok


def test_repair_rebuilds_a_lost_index_from_pack_trailers(place: Place, tmp_path: Path) -> None:
    ids = commit_all(place, versions(tmp_path, 2))
    before = [sha_of(place, sid) for sid in ids]
    place.drop_index()
    with place.open() as r:
        if place.backend is None:  # a reader rebuilds a temporary index and says why
            assert r.index_problem == "the index is missing"
        else:  # a cache: rebuilt in place, by readers too
            assert r.index_problem is None and r.rebuild_report is not None
        assert [content_sha(r, sid) for sid in ids] == before
    with place.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
        assert snapstore.verify(r, read_data=True).ok
    with place.open(Mode.WRITE) as r:
        assert r.index_problem is None and [content_sha(r, sid) for sid in ids] == before


def test_rebuild_reads_each_pack_by_its_trailer(tmp_path: Path) -> None:
    """On a backend every read is a request: rebuilding the index reads each pack's header
    and tail (at most 3 gets a pack) and a small fraction of its bytes."""
    inner = MemoryBackend()
    Repository.init_backend(
        inner, cache_dir=tmp_path / "c", chunker=SMALL_CHUNKER, pack_target_size=MiB
    ).close()
    with Repository.open_backend(inner, Mode.WRITE, cache_dir=tmp_path / "c") as r:
        snapstore.commit_file(r, versions(tmp_path, 1, size=6 * MiB)[0])
    shutil.rmtree(tmp_path / "c" / "index")
    packs = [n for n in inner.list("packs/")]
    assert len(packs) >= 5
    read: dict[str, int] = {}
    gets: dict[str, int] = {}

    class Counting(FaultyBackend):
        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
            data = super().get(name, offset, length)
            gets[name] = gets.get(name, 0) + 1
            read[name] = read.get(name, 0) + len(data)
            return data

    with Repository.open_backend(
        Counting(inner), Mode.EXCLUSIVE, cache_dir=tmp_path / "c", rebuild_index=True
    ):
        pass
    for name in packs:
        assert gets[name] <= 3, (name, gets[name])
    assert sum(read[n] for n in packs) < 0.02 * sum(inner.stat(n) for n in packs)


def test_corrupt_pack_is_found_by_verify_and_dropped_by_repair(tmp_path: Path) -> None:
    place = Place("memory", tmp_path)
    place.init()
    ids = commit_all(place, versions(tmp_path, 1))
    backend = place.backend
    assert backend is not None
    name = next(iter(backend.list("packs/")))
    body = bytearray(backend.get(name))
    body[pack_fmt.PACK_HEADER_SIZE + pack_fmt.RECORD_HEADER_SIZE + 10] ^= 1  # the first chunk's payload
    backend.put(name, body, overwrite=True)
    with place.open(Mode.CHECK) as r:
        report = snapstore.verify(r, read_data=True)
    assert not report.ok and {p.kind for p in report.problems} == {"data"}
    assert any(ids[0] in p.snapshots for p in report.problems)


def test_repair_drops_a_corrupt_chunk_and_rewrites_a_damaged_pack_header(tmp_path: Path) -> None:
    place = Place("memory", tmp_path)
    place.init()
    ids = commit_all(place, versions(tmp_path, 1))
    backend = place.backend
    assert backend is not None
    first, second, *_ = backend.list("packs/")
    body = bytearray(backend.get(first))
    body[pack_fmt.PACK_HEADER_SIZE + pack_fmt.RECORD_HEADER_SIZE + 10] ^= 1
    backend.put(first, body, overwrite=True)
    header = bytearray(backend.get(second))
    header[0] ^= 1  # the pack magic
    backend.put(second, header, overwrite=True)
    with place.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
        report = repair(r, read_data=True)
    assert report.dropped_corrupt == 1 and report.damaged_snapshots == (ids[0],)
    assert len(report.rewritten_pack_headers) == 1
    assert backend.get(second, 0, 8) == pack_fmt.PACK_MAGIC


def test_a_damaged_manifest_is_reported_counted_and_removable(tmp_path: Path) -> None:
    place = Place("memory", tmp_path)
    place.init()
    images = versions(tmp_path, 2)
    ids = commit_all(place, images)
    backend = place.backend
    assert backend is not None
    name = f"snapshots/{ids[0].hex()}"
    body = bytearray(backend.get(name))
    body[len(body) // 2] ^= 1
    backend.put(name, body, overwrite=True)
    with place.open(Mode.CHECK) as r:
        report = snapstore.verify(r)
    assert not report.ok and "manifest" in {p.kind for p in report.problems}
    assert [p.snapshots for p in report.problems if p.kind == "manifest"] == [(ids[0],)]
    with place.open(Mode.WRITE) as r:
        r.remove_snapshot(ids[0])
    with place.open(Mode.EXCLUSIVE) as r:
        snapstore.gc(r)
    with place.open(Mode.CHECK) as r:
        assert snapstore.verify(r, read_data=True).ok
        assert content_sha(r, ids[1]) == file_sha(images[1])


def test_lock_objects_keep_writers_and_gc_apart(tmp_path: Path) -> None:
    place = Place("memory", tmp_path)
    place.init()
    backend = place.backend
    assert backend is not None
    with place.open(Mode.WRITE) as w:
        with pytest.raises(LockedError):
            place.open(Mode.WRITE)
        with place.open(Mode.READ):  # a reader beside a writer
            with pytest.raises(LockedError):
                place.open(Mode.EXCLUSIVE)
            with pytest.raises(LockedError):
                w.upgrade()
        w.upgrade()  # no reader left
        with pytest.raises(LockedError):
            place.open(Mode.READ)
    assert list(backend.list("locks/")) == []  # every lock object released


def test_default_cache_dir_is_keyed_by_repository_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    backend = MemoryBackend()
    with Repository.init_backend(backend, chunker=SMALL_CHUNKER) as r:
        rid = r.config.repository_id
    assert default_cache_dir(rid) == tmp_path / "xdg" / "snapstore" / rid
    assert (tmp_path / "xdg" / "snapstore" / rid / "index" / "data.mdb").is_file()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert default_cache_dir(rid) == Path.home() / ".cache" / "snapstore" / rid


# -- faults: whatever backend call fails, no damaged snapshot ---------------------------------------


def copy_backend(src: MemoryBackend) -> MemoryBackend:
    dst = MemoryBackend()
    for name in src.list():
        dst.put(name, src.get(name))
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoryBackend, Path, list[Path], str]:
    """A memory repository with one snapshot, its index cache, and a second version to commit."""
    tmp = tmp_path_factory.mktemp("faults")
    images = versions(tmp, 2, size=2 * MiB + 123_457, seed=9)
    backend = MemoryBackend()
    Repository.init_backend(
        backend, cache_dir=tmp / "cache", chunker=SMALL_CHUNKER, pack_target_size=MiB
    ).close()
    with Repository.open_backend(backend, Mode.WRITE, cache_dir=tmp / "cache") as r:
        sha = file_sha(images[0])
        snapstore.commit_file(r, images[0], name="vm")
    return backend, tmp / "cache", images, sha


def _calls_of_a_commit(base: tuple[MemoryBackend, Path, list[Path], str], tmp: Path) -> int:
    backend, cache, images, _ = base
    shutil.copytree(cache, tmp / "count-cache")
    faulty = FaultyBackend(copy_backend(backend))
    with Repository.open_backend(faulty, Mode.WRITE, cache_dir=tmp / "count-cache") as r:
        snapstore.commit_file(r, images[1], name="vm")
    return faulty.calls["*"]


@pytest.mark.parametrize("kind", ["crash", "eio", "torn"])
def test_a_failing_backend_call_never_damages_a_snapshot(
    base: tuple[MemoryBackend, Path, list[Path], str], kind: str, tmp_path: Path
) -> None:
    backend, cache, images, first_sha = base
    total = _calls_of_a_commit(base, tmp_path)
    assert total > 20
    step = max(1, total // 25)
    outcomes = set()
    for nth in sorted({*range(1, total + 1, step), total}):  # the last call: the generation's put
        inner = copy_backend(backend)
        case_cache = tmp_path / f"cache-{kind}-{nth}"
        shutil.copytree(cache, case_cache)
        faulty = FaultyBackend(inner, [Fault("*", nth, kind)])  # type: ignore[arg-type]
        failed = False
        try:
            with Repository.open_backend(faulty, Mode.WRITE, cache_dir=case_cache) as r:
                snapstore.commit_file(r, images[1], name="vm")
        except SnapstoreError:
            failed = True
        # A restart: lock objects of the "dead" process are removed by hand (documented).
        for name in list(inner.list("locks/")):
            inner.delete(name)
        with Repository.open_backend(inner, Mode.WRITE, cache_dir=case_cache) as r:
            shas = sorted(content_sha(r, s.id) for s in r.list_snapshots())
            report = snapstore.verify(r, read_data=True)
        assert report.ok, (kind, nth, report.problems)
        assert shas in ([first_sha], sorted([first_sha, file_sha(images[1])])), (kind, nth)
        outcomes.add((failed, len(shas)))
        assert not list(inner.list("tmp/")), (kind, nth)
        with Repository.open_backend(inner, Mode.WRITE, cache_dir=case_cache) as r:  # and commits again
            snapstore.commit_file(r, images[1], name="vm")
            assert content_sha(r, r.list_snapshots()[-1].id) == file_sha(images[1])
    assert {(True, 1), (False, 2)} <= outcomes  # failures rolled back, and faults past the commit
