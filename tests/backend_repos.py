"""Repositories over the in-memory backend for the backend suites (tests/test_backend_faults.py,
test_backend_corruption.py, test_backend_fuzz.py): built once, copied per case (objects and
index cache), opened through any backend wrapper, and checked as the local suites check a
repository directory."""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import snapstore
from snapstore import Mode
from snapstore.backends import Backend, Capabilities, MemoryBackend
from snapstore.model import SnapshotId
from snapstore.repo import Repository
from tests.conftest import SMALL_CHUNKER
from tests.helpers import content_sha, text_bytes

MiB = 1 << 20


class PutOnlyBackend(MemoryBackend):
    """A memory backend that declares no capability: packs are put whole when sealed."""

    capabilities = Capabilities()


BACKENDS: dict[str, Callable[[], MemoryBackend]] = {
    "memory": MemoryBackend,
    "put-only": PutOnlyBackend,
    "delta": MemoryBackend,  # a repository of format 3 (snap init --delta): changed chunks as deltas
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class MemRepo:
    """A repository in a memory backend, its index cache, and what its snapshots hold."""

    backend: MemoryBackend
    cache: Path
    digests: dict[SnapshotId, str] = field(default_factory=dict)  # snapshot -> sha256 of its content
    names: dict[str, list[SnapshotId]] = field(default_factory=dict)  # snapshot name -> ids, oldest first

    def open(self, mode: Mode = Mode.READ, backend: Backend | None = None, **kwargs: bool) -> Repository:
        return Repository.open_backend(backend or self.backend, mode, cache_dir=self.cache, **kwargs)

    def copy(self, tmp: Path) -> MemRepo:
        """A copy: the same objects in a new backend of the same kind, the cache copied."""
        backend = type(self.backend)()
        for name in self.backend.list():
            backend.put(name, self.backend.get(name))
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.cache, tmp)
        return MemRepo(backend, tmp, dict(self.digests), {k: list(v) for k, v in self.names.items()})

    def commit(self, data: bytes, name: str, src: Path) -> SnapshotId:
        src.write_bytes(data)
        with self.open(Mode.WRITE) as r:
            sid = snapstore.commit_file(r, src, name=name).snapshot.id
        self.digests[sid] = sha(data)
        self.names.setdefault(name, []).append(sid)
        return sid

    def restart(self) -> None:
        """What a user does after a process died holding the repository: the lock objects
        it left are deleted by hand (docs/BACKENDS.md, "locks without flock")."""
        for name in list(self.backend.list("locks/")):
            self.backend.delete(name)

    def leftovers(self) -> list[str]:
        """Objects no writer should leave once recovery ran."""
        return list(self.backend.list("tmp/")) + list(self.backend.list("locks/"))


def new_repo(kind: str, tmp: Path) -> MemRepo:
    backend = BACKENDS[kind]()
    cache = tmp / "cache"
    Repository.init_backend(
        backend, cache_dir=cache, chunker=SMALL_CHUNKER, pack_target_size=MiB, delta=kind == "delta"
    ).close()
    return MemRepo(backend, cache)


def scattered(data: bytearray, rng: random.Random, offsets: tuple[int, ...], length: int = 300) -> None:
    """``length`` new bytes at each offset: a chunk's small change, stored as a delta against
    the chunk at its place in a delta repository."""
    for off in offsets:
        data[off : off + length] = rng.randbytes(length)


def two_disks_and_scratch(kind: str, tmp: Path, seed: int = 21) -> tuple[MemRepo, bytes]:
    """As tests/test_faults.py's base: two versions of "disk" (random, text and zeros), one
    "scratch" of random bytes; and the content of a third version of "disk" that crosses
    into a new pack. Of kind "delta", the versions differ by small scattered changes: the
    second's changed chunks are deltas whose bases only the first names, the third's are
    deltas too."""
    repo = new_repo(kind, tmp)
    rng = random.Random(seed)
    v1 = bytearray(rng.randbytes(600_000) + text_bytes(300_000, seed=seed) + bytes(200_000))
    src = tmp / "src"
    for i in range(2):
        if i and kind == "delta":
            scattered(v1, rng, tuple(range(10_000, 900_000, 45_000)))
        elif i:
            for off in (50_000, 400_000):
                v1[off : off + 20_000] = rng.randbytes(20_000)
        repo.commit(bytes(v1), "disk", src)
    repo.commit(rng.randbytes(400_000), "scratch", src)
    if kind == "delta":
        scattered(v1, rng, tuple(range(30_000, 900_000, 60_000)))
    else:
        v1[700_000:760_000] = rng.randbytes(60_000)
    return repo, bytes(v1) + rng.randbytes(700_000)


def check(repo: MemRepo, keep: set[SnapshotId], when: str, *, mode: Mode = Mode.READ) -> set[SnapshotId]:
    """verify --read-data finds nothing; every snapshot listed is one we know, every one of
    ``keep`` is listed, and each reads back with its content's sha256. Returns those listed."""
    with repo.open(mode) as r:
        report = snapstore.verify(r, read_data=True)
        assert report.ok, f"{when}: verify found {[(p.kind, p.detail) for p in report.problems]}"
        listed = {s.id for s in r.list_snapshots()}
        assert listed <= set(repo.digests), f"{when}: unknown snapshots {listed - set(repo.digests)}"
        assert keep <= listed, f"{when}: lost {[s.hex()[:12] for s in keep - listed]}"
        for sid in listed:
            assert content_sha(r, sid) == repo.digests[sid], f"{when}: {sid.hex()[:12]} differs"
    return listed
