"""The index cache of a repository over a backend knows when it is behind (docs/FORMAT.md,
"the index as a cache"): another writer (a second machine) changed the objects since the
cache was built, so it is rebuilt before it is trusted. Trusting it would let a commit
deduplicate against chunks another machine's gc has freed: a snapshot that cannot be read."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

import snapstore
from snapstore import Mode
from snapstore.backends import MemoryBackend
from snapstore.errors import CorruptError
from snapstore.format import generation as generation_fmt
from snapstore.repo import Repository
from tests.conftest import SMALL_CHUNKER
from tests.helpers import content_sha, file_sha

MiB = 1 << 20


def _image(tmp: Path, name: str, seed: int, size: int = 2 * MiB) -> Path:
    path = tmp / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _open(backend: MemoryBackend, cache: Path, mode: Mode = Mode.READ) -> Repository:
    return Repository.open_backend(backend, mode, cache_dir=cache)


@pytest.fixture
def backend(tmp_path: Path) -> MemoryBackend:
    b = MemoryBackend()
    Repository.init_backend(b, cache_dir=tmp_path / "a", chunker=SMALL_CHUNKER, pack_target_size=MiB).close()
    return b


def test_a_commit_never_dedups_against_chunks_another_machine_freed(
    backend: MemoryBackend, tmp_path: Path
) -> None:
    image = _image(tmp_path, "vm.img", 1)
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:  # machine A
        first = snapstore.commit_file(r, image, name="vm").snapshot.id
    with _open(backend, tmp_path / "b", Mode.EXCLUSIVE) as r:  # machine B removes it, frees all
        r.remove_snapshot(first)
        snapstore.gc(r)
    assert not list(backend.list("packs/")), "gc freed every pack"
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:  # A's cache still names those chunks
        assert r.rebuild_report is not None, "a cache behind its repository is rebuilt"
        again = snapstore.commit_file(r, image, name="vm").snapshot.id
    assert list(backend.list("packs/")), "the chunks were stored again"
    for cache in ("a", "b"):
        with _open(backend, tmp_path / cache) as r:
            assert content_sha(r, again) == file_sha(image)
            assert snapstore.verify(r, read_data=True).ok


def test_one_machine_alone_never_rebuilds_its_cache(backend: MemoryBackend, tmp_path: Path) -> None:
    for day in range(3):
        with _open(backend, tmp_path / "a", Mode.WRITE) as r:
            assert r.rebuild_report is None
            snapstore.commit_file(r, _image(tmp_path, f"d{day}.img", day), name="vm")
        with _open(backend, tmp_path / "a") as r:
            assert r.rebuild_report is None and len(r.list_snapshots()) == day + 1


def test_each_machine_rebuilds_once_after_the_other_wrote(backend: MemoryBackend, tmp_path: Path) -> None:
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:
        snapstore.commit_file(r, _image(tmp_path, "one.img", 1), name="vm")
    with _open(backend, tmp_path / "b") as r:  # B's first look: built
        assert r.rebuild_report is not None and len(r.list_snapshots()) == 1
    with _open(backend, tmp_path / "b") as r:  # in step now
        assert r.rebuild_report is None
    with _open(backend, tmp_path / "b", Mode.WRITE) as r:
        assert r.rebuild_report is None
        snapstore.commit_file(r, _image(tmp_path, "two.img", 2), name="vm")
    with _open(backend, tmp_path / "a") as r:  # A is behind B's commit
        assert r.rebuild_report is not None and len(r.list_snapshots()) == 2
        assert snapstore.verify(r).ok
    with _open(backend, tmp_path / "a") as r:
        assert r.rebuild_report is None


def test_a_reader_while_a_writer_is_at_work_leaves_the_cache_alone(
    backend: MemoryBackend, tmp_path: Path
) -> None:
    image = _image(tmp_path, "one.img", 1)
    with _open(backend, tmp_path / "a", Mode.WRITE) as writer:
        snapstore.commit_file(writer, image, name="vm")
        state = generation_fmt.decode(backend.get("generation"), "generation")
        assert state.writing
        with _open(backend, tmp_path / "b") as r:  # a temporary index, the cache not built
            assert [content_sha(r, s.id) for s in r.list_snapshots()] == [file_sha(image)]
        assert not (tmp_path / "b" / "index").exists()
    assert not generation_fmt.decode(backend.get("generation"), "generation").writing
    with _open(backend, tmp_path / "b") as r:
        assert r.rebuild_report is not None
    with _open(backend, tmp_path / "b") as r:
        assert r.rebuild_report is None


def test_a_writer_that_died_leaves_every_cache_out_of_step(backend: MemoryBackend, tmp_path: Path) -> None:
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:
        snapstore.commit_file(r, _image(tmp_path, "one.img", 1), name="vm")
    backend.put("generation", generation_fmt.encode(generation_fmt.new(writing=True)), overwrite=True)
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:  # the next writer rebuilds, then settles
        assert r.rebuild_report is not None
    with _open(backend, tmp_path / "a") as r:
        assert r.rebuild_report is None


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_damaged_generation_object_is_one_warning_and_a_rebuild(
    backend: MemoryBackend, tmp_path: Path
) -> None:
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:
        snapstore.commit_file(r, _image(tmp_path, "one.img", 1), name="vm")
    good = backend.get("generation")
    backend.put("generation", good[:-1] + bytes([good[-1] ^ 1]), overwrite=True)
    seen = _Lines()
    logger = logging.getLogger("snapstore.repo_location")
    logger.addHandler(seen)
    try:
        with _open(backend, tmp_path / "a") as r:
            assert r.rebuild_report is not None and len(r.list_snapshots()) == 1
    finally:
        logger.removeHandler(seen)
    assert seen.lines == ["generation is corrupt: checksum mismatch; the index cache is rebuilt"]
    with _open(backend, tmp_path / "a", Mode.WRITE) as r:  # a writer puts a good one back
        assert len(r.list_snapshots()) == 1
    generation_fmt.decode(backend.get("generation"), "generation")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SNAPGEN1" + bytes(24),
        b"SNAPGEN2" + bytes(25),
        generation_fmt.encode(generation_fmt.Generation(bytes(16), writing=False))[:-1],
    ],
)
def test_generation_decoding_refuses_what_it_does_not_know(data: bytes) -> None:
    with pytest.raises(CorruptError):
        generation_fmt.decode(data, "generation")


def test_generation_round_trip() -> None:
    for writing in (False, True):
        g = generation_fmt.new(writing=writing)
        assert generation_fmt.decode(generation_fmt.encode(g), "generation") == g


def test_a_local_snap_and_a_remote_client_each_learn_what_the_other_freed(tmp_path: Path) -> None:
    """One directory used both ways (a local `snap -r DIR` on the server, and clients over
    ssh, which see it as objects of a local backend): once a client has written the
    ``generation`` object, the directory's own index is kept in step by it like a cache, so
    neither side deduplicates against chunks the other's gc freed."""
    from snapstore.backends import LocalBackend

    repo = tmp_path / "repo"
    Repository.init(repo, chunker=SMALL_CHUNKER).close()
    image = _image(tmp_path, "vm.img", 7)

    def client(mode: Mode) -> Repository:
        backend = LocalBackend(repo)
        return Repository.open_backend(backend, mode, cache_dir=tmp_path / "cache", owns_backend=True)

    with client(Mode.WRITE) as r:  # the client writes first: the generation object exists
        snapstore.commit_file(r, _image(tmp_path, "other.img", 8), name="other")
    with Repository.open(repo, Mode.WRITE) as r:  # local: commit, remembered in index/
        local_first = snapstore.commit_file(r, image, name="vm").snapshot.id
    with client(Mode.EXCLUSIVE) as r:  # the client removes it and frees its chunks
        r.remove_snapshot(local_first)
        snapstore.gc(r)
    with Repository.open(repo, Mode.WRITE) as r:  # local again: must store them anew
        assert r.rebuild_report is not None, "the directory's index is behind: rebuilt"
        again = snapstore.commit_file(r, image, name="vm").snapshot.id
    with client(Mode.WRITE) as r:  # and the client learns of the local commit
        assert r.rebuild_report is not None
        assert content_sha(r, again) == file_sha(image)
        assert snapstore.verify(r, read_data=True).ok
    with Repository.open(repo, Mode.EXCLUSIVE) as r:  # the local side removes, frees
        r.remove_snapshot(again)
        snapstore.gc(r)
    with client(Mode.WRITE) as r:  # the client must store them anew
        third = snapstore.commit_file(r, image, name="vm").snapshot.id
        assert content_sha(r, third) == file_sha(image)
    with Repository.open(repo) as r:
        assert content_sha(r, third) == file_sha(image)
        assert snapstore.verify(r, read_data=True).ok
