"""Random access to a snapshot's bytes (snap nbd, snap mount): any range reads back exactly
the committed bytes, zero runs are reported where they are, damage fails only the reads that
need the damaged chunk."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import SnapstoreError
from snapstore.ops.commit import commit_file
from snapstore.ops.snapread import SnapshotReader
from snapstore.repo import Mode, Repository
from tests.conftest import SMALL_CHUNKER
from tests.helpers import flip, text_bytes, write_sparse

SIZE = 3 * 1024 * 1024 + 4321
PIECES = [
    (0, text_bytes(300_000, 1)),
    (1 << 20, random.Random(2).randbytes(500_000)),
    (SIZE - 9000, b"x" * 9000),
]


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    tmp = tmp_path_factory.mktemp("snapread")
    src = tmp / "disk.img"
    write_sparse(src, SIZE, PIECES)
    repo = tmp / "repo"
    Repository.init(repo, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    with Repository.open(repo, Mode.WRITE) as r:
        commit_file(r, src)
    return repo, src, src.read_bytes()


@given(st.lists(st.tuples(st.integers(0, SIZE + 100), st.integers(0, 300_000)), min_size=1, max_size=25))
def test_any_range_reads_the_committed_bytes(
    committed: tuple[Path, Path, bytes], reads: list[tuple[int, int]]
) -> None:
    repo, _, data = committed
    with Repository.open(repo) as r, SnapshotReader(r, r.resolve("latest"), cache_bytes=200_000) as reader:
        assert reader.size == SIZE
        for offset, length in reads:
            assert reader.read(offset, length) == data[offset : offset + length]


def test_reads_in_order_and_the_extents_match_the_file(committed: tuple[Path, Path, bytes]) -> None:
    repo, _, data = committed
    with Repository.open(repo) as r, SnapshotReader(r, r.resolve("latest")) as reader:
        got = b"".join(reader.read(pos, 65536) for pos in range(0, SIZE, 65536))
        assert got == data
        extents = reader.extents(0, SIZE)
    assert extents[0].offset == 0 and sum(e.length for e in extents) == SIZE
    assert all(a.offset + a.length == b.offset and a.zero != b.zero for a, b in itertools.pairwise(extents))
    zeros = [e for e in extents if e.zero]
    assert zeros, "the holes between the pieces are zero runs"
    for e in extents:
        if e.zero:
            assert data[e.offset : e.offset + e.length] == bytes(e.length)
    assert sum(e.length for e in zeros) > SIZE // 2


def test_a_damaged_chunk_fails_only_the_reads_that_need_it(
    committed: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    repo, _, data = committed
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    with Repository.open(copy) as r:
        snap = r.resolve("latest")
        first = next(rec for rec in r.iter_records(snap.id) if hasattr(rec, "chunk_id"))
        loc = r.get_location(first.chunk_id)
        assert loc is not None
        pack = r._packs.path(loc.pack_id)
    flip(pack, loc.offset + 60)  # inside the first chunk's payload
    with Repository.open(copy) as r, SnapshotReader(r, r.resolve("latest")) as reader:
        with pytest.raises(SnapstoreError):
            reader.read(0, 100)
        tail = PIECES[2][0]
        assert reader.read(tail, 9000) == data[tail:]
