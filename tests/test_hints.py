"""In-place confirmation against the previous snapshot must give exactly the chunk list a
full chunking gives (ops/hints.py explains why it can)."""

from __future__ import annotations

import bisect
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import Mode, Repository, checkout, commit_file
from snapstore.model import (
    ChunkerParams,
    ChunkId,
    ChunkRef,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    SnapshotId,
    ZeroRun,
)
from snapstore.ops.hints import HintCursor, PrevChunk, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.storage import fsio
from tests.conftest import SMALL_CHUNKER
from tests.helpers import write_sparse


def _chunk_list(repo: Repository, snapshot_id: SnapshotId) -> list[tuple[str, object, int]]:
    out: list[tuple[str, object, int]] = []
    for r in repo.iter_records(snapshot_id):
        if isinstance(r, ChunkRef):
            out.append(("C", r.chunk_id, r.raw_size))
        elif isinstance(r, ZeroRun):
            out.append(("Z", None, r.length))
    return out


def _assert_hinted_equals_plain(hinted: Path, plain: Path, path: Path, out: Path) -> None:
    """Commit ``path`` with hints into ``hinted`` (checking it out to ``out``) and without
    into ``plain``: the chunk lists must be the same."""
    with Repository.open(hinted, Mode.WRITE) as r:
        h = commit_file(r, path)
        hinted_list = _chunk_list(r, h.snapshot.id)
        checkout(r, h.snapshot, str(out))
    with Repository.open(plain, Mode.WRITE) as r:
        p = commit_file(r, path, use_hints=False)
        plain_list = _chunk_list(r, p.snapshot.id)
    assert hinted_list == plain_list


def test_confirmable_chunks_offer_all_but_the_last_piece() -> None:
    a, b, c = ChunkId(b"a" * 32), ChunkId(b"b" * 32), ChunkId(b"c" * 32)
    records: list[ManifestRecord] = [
        EntryStart("f"),
        ChunkRef(a, 10),
        ChunkRef(b, 20),
        ZeroRun(5),
        ChunkRef(c, 7),
        ChunkRef(a, 10),
        EntryEnd(52, b"\0" * 32),
    ]
    assert list(confirmable_chunks(records)) == [
        PrevChunk(0, 10, a),
        PrevChunk(10, 20, b, before_zeros=True),
        PrevChunk(30, 5, None),
        PrevChunk(35, 7, c),
    ]
    trailing_zeros: list[ManifestRecord] = [
        EntryStart("f"),
        ChunkRef(a, 10),
        ZeroRun(5),
        EntryEnd(15, b"\0" * 32),
    ]
    assert list(confirmable_chunks(trailing_zeros)) == [PrevChunk(0, 10, a, before_zeros=True)]
    only_zeros: list[ManifestRecord] = [EntryStart("f"), ZeroRun(5), EntryEnd(5, b"\0" * 32)]
    assert list(confirmable_chunks(only_zeros)) == []
    # The same size: the end of the file cut the last piece where it cuts it now.
    assert list(confirmable_chunks(records, size=52))[-1] == PrevChunk(42, 10, a)
    assert list(confirmable_chunks(trailing_zeros, size=15))[-1] == PrevChunk(10, 5, None)
    assert list(confirmable_chunks(trailing_zeros, size=16)) == [PrevChunk(0, 10, a, True)]


def test_hint_cursor_runs_and_resyncs() -> None:
    chunks = [
        PrevChunk(0, 10, ChunkId(b"1")),
        PrevChunk(10, 10, ChunkId(b"2")),
        PrevChunk(30, 5, ChunkId(b"3")),
    ]
    cursor = HintCursor(iter(chunks))
    everything = lambda c: True  # noqa: E731
    assert [c.offset for c in cursor.run(0, everything, 1000)] == [0, 10]
    assert [c.offset for c in cursor.run(0, lambda c: c.end <= 15, 1000)] == [0]
    assert [c.offset for c in cursor.run(0, everything, 5)] == [0]  # stops once it holds 5 bytes
    assert cursor.at(10) == chunks[1]  # a run does not consume
    assert cursor.at(15) is None
    assert cursor.at(30) == chunks[2]
    assert cursor.run(0, everything, 1000) == []  # never goes backwards


def test_hint_cursor_restores_to_a_mark() -> None:
    chunks = [PrevChunk(i * 10, 10, ChunkId(bytes([i]))) for i in range(6)]
    cursor = HintCursor(iter(chunks))
    assert cursor.at(10) == chunks[1]
    mark = cursor.mark()
    assert cursor.at(40) == chunks[4]  # passes chunks 1..3
    assert cursor.at(20) is None
    cursor.restore(mark)
    assert cursor.at(10) == chunks[1] and cursor.at(20) == chunks[2]
    assert cursor.at(0) is None  # passed before the mark: stays passed


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(0, 12))
def test_hinted_commit_equals_full_chunking(tmp_path_factory: object, seed: int, edits: int) -> None:
    tmp = tmp_path_factory.mktemp("hints")  # type: ignore[attr-defined]
    rng = random.Random(seed)
    size = rng.randrange(200_000, 1_500_000)
    base = bytearray(rng.randbytes(size))
    path = tmp / "disk.img"
    write_sparse(path, size, [(0, bytes(base))])
    hinted, plain = tmp / "hinted", tmp / "plain"
    for p in (hinted, plain):
        Repository.init(p, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    with Repository.open(hinted, Mode.WRITE) as r:
        commit_file(r, path, threads=2)
    for _ in range(edits):
        at = rng.randrange(0, size)
        data = rng.randbytes(rng.randrange(1, 20_000))[: size - at]
        base[at : at + len(data)] = data
    write_sparse(path, size, [(0, bytes(base))])
    with Repository.open(hinted, Mode.WRITE) as r:
        h = commit_file(r, path, threads=2)
        hinted_list = _chunk_list(r, h.snapshot.id)
        checkout(r, h.snapshot, str(tmp / "out.img"))
    with Repository.open(plain, Mode.WRITE) as r:
        p = commit_file(r, path, threads=2, use_hints=False)
        plain_list = _chunk_list(r, p.snapshot.id)
    assert hinted_list == plain_list
    assert (tmp / "out.img").read_bytes() == bytes(base)
    if edits == 0:
        assert h.confirmed_chunks > 0 and h.new_chunks == 0


@pytest.mark.parametrize("chunker", [SMALL_CHUNKER, ChunkerParams("fixed", 8192, 8192, 8192)])
def test_hints_with_holes_and_growth(tmp_path: Path, chunker: ChunkerParams) -> None:
    """Holes, data after holes, and a file that grew: still the full-chunking result."""
    rng = random.Random(7)
    path = tmp_path / "disk.img"
    size = 24 << 20
    pieces = [
        (0, rng.randbytes(3 << 20)),
        (8 << 20, rng.randbytes(2 << 20) + bytes(300_000)),
        (20 << 20, rng.randbytes(1 << 20)),
    ]
    write_sparse(path, size, pieces)
    hinted, plain = tmp_path / "hinted", tmp_path / "plain"
    for root in (hinted, plain):
        Repository.init(root, chunker=chunker, pack_target_size=1 << 20).close()
    with Repository.open(hinted, Mode.WRITE) as r:
        commit_file(r, path)
    pieces[1] = (8 << 20, pieces[1][1][:500_000] + os.urandom(4096) + pieces[1][1][504_096:])
    pieces.append((23 << 20, rng.randbytes(200_000)))
    write_sparse(path, size + (1 << 20), pieces)
    with Repository.open(hinted, Mode.WRITE) as r:
        h = commit_file(r, path)
        hinted_list = _chunk_list(r, h.snapshot.id)
    with Repository.open(plain, Mode.WRITE) as r:
        p = commit_file(r, path, use_hints=False)
        plain_list = _chunk_list(r, p.snapshot.id)
    assert hinted_list == plain_list
    assert h.confirmed_chunks > 10


def _commit_list(repo_path: Path, path: Path) -> tuple[list[tuple[str, object, int]], int]:
    with Repository.open(repo_path, Mode.WRITE) as r:
        res = commit_file(r, path, use_hints=False)
        return _chunk_list(r, res.snapshot.id), res.new_stored_bytes


def test_chunk_list_does_not_depend_on_the_hole_layout(tmp_path: Path) -> None:
    """The same bytes give the same chunks whether their zeros are holes or written zeros."""
    rng = random.Random(3)
    size = 40 << 20
    regions = [
        (0, rng.randbytes(3 << 20)),
        (9 << 20, rng.randbytes(5 << 20)),
        (30 << 20, rng.randbytes(1 << 20) + bytes(2 << 20) + rng.randbytes(100_000)),
    ]
    lists = []
    for sparse in (True, False):
        path, repo_path = tmp_path / f"f{sparse}", tmp_path / f"r{sparse}"
        write_sparse(path, size, regions, sparse=sparse)
        Repository.init(repo_path).close()
        lists.append(_commit_list(repo_path, path)[0])
    assert lists[0] == lists[1]


def test_shifted_sparse_image_dedups(tmp_path: Path) -> None:
    """Inserting a few KiB near the start moves every byte and every hole edge; only the
    chunks around the insertion may be new (default 1 MiB chunks)."""
    rng = random.Random(4)
    size = 64 << 20
    regions = [(i << 20, rng.randbytes(rng.choice([1, 2, 3]) << 20)) for i in range(0, 60, 5)]
    shift = 5000
    shifted = [(0, regions[0][1][:65536] + rng.randbytes(shift) + regions[0][1][65536:])]
    shifted += [(off + shift, data) for off, data in regions[1:]]
    repo_path = tmp_path / "repo"
    Repository.init(repo_path).close()
    write_sparse(tmp_path / "a", size, regions)
    write_sparse(tmp_path / "b", size + shift, shifted)
    _, first = _commit_list(repo_path, tmp_path / "a")
    _, second = _commit_list(repo_path, tmp_path / "b")
    assert first > 15 << 20
    assert second < 6 << 20, f"{second} bytes stored again for a {shift}-byte insertion"


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(0, 6), hole_edits=st.integers(0, 3))
def test_hinted_commit_with_holes_equals_full_chunking(
    tmp_path_factory: object, seed: int, edits: int, hole_edits: int
) -> None:
    """Holes (some longer than max_size, some shorter), written zeros and data; then data
    edited, holes filled and data punched out: hinted and full chunking agree."""
    tmp = tmp_path_factory.mktemp("holes")  # type: ignore[attr-defined]
    rng = random.Random(seed)
    size = rng.randrange(1 << 20, 6 << 20)
    regions: list[tuple[int, bytes]] = []
    pos = 0
    while pos < size:
        gap = rng.choice([0, 1 << 20, 100_000, 300_000])  # a hole (>= 1 MiB) or a short gap
        length = rng.randrange(1, 400_000)
        kind = rng.random()
        data = bytes(length) if kind < 0.2 else rng.randbytes(length)
        if pos + gap < size:
            regions.append((pos + gap, data[: size - pos - gap]))
        pos += gap + length
    path = tmp / "disk.img"
    hinted, plain = tmp / "hinted", tmp / "plain"
    for p in (hinted, plain):
        Repository.init(p, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    write_sparse(path, size, regions)
    with Repository.open(hinted, Mode.WRITE) as r:
        commit_file(r, path)
    for _ in range(edits):
        at = rng.randrange(0, size)
        regions.append((at, rng.randbytes(rng.randrange(1, 50_000))[: size - at]))
    write_sparse(path, size, regions)
    with open(path, "r+b") as f:  # punch some data out again: new holes where data was
        for _ in range(hole_edits):
            at = rng.randrange(0, size) & ~4095
            fsio.punch_hole(f.fileno(), at, rng.randrange(4096, 2 << 20))
    _assert_hinted_equals_plain(hinted, plain, path, tmp / "out.img")
    assert (tmp / "out.img").read_bytes() == path.read_bytes()


def test_hint_cursor_reanchors_after_an_insertion_and_a_deletion() -> None:
    chunks = [PrevChunk(i * 10, 10, ChunkId(bytes([i]))) for i in range(8)]
    cursor = HintCursor(iter(chunks))
    assert cursor.at(0) == chunks[0]
    assert cursor.at(20) == chunks[2]
    # 3 bytes were inserted before chunk 3: it was cut at 33 and found behind the cursor
    assert cursor.at(33) is None
    assert cursor.reanchor(30 + 3, 10, ChunkId(bytes([3])))
    assert cursor.shift == 3
    assert cursor.at(43) == PrevChunk(43, 10, ChunkId(bytes([4])))  # offered in the file's offsets
    assert [c.offset for c in cursor.run(43, lambda c: True, 1000)] == [43, 53, 63, 73]
    # chunk 5 was deleted: chunk 6 now starts where chunk 5 did
    assert cursor.reanchor(53, 10, ChunkId(bytes([6])))
    assert cursor.shift == -7
    assert cursor.at(63) == PrevChunk(63, 10, ChunkId(bytes([7])))
    assert not cursor.reanchor(63, 10, ChunkId(b"new"))  # content the previous snapshot never had
    assert not cursor.reanchor(63, 9, ChunkId(bytes([7])))  # the same id must come with its length


def test_hint_cursor_prefers_the_nearest_copy() -> None:
    same = ChunkId(b"s")
    chunks = [
        PrevChunk(0, 10, same),
        PrevChunk(10, 10, ChunkId(b"x")),
        PrevChunk(20, 10, same),
        PrevChunk(30, 10, ChunkId(b"y")),
    ]
    cursor = HintCursor(iter(chunks))
    assert cursor.reanchor(22, 10, same)
    assert cursor.shift == 2 and cursor.at(32) == PrevChunk(32, 10, ChunkId(b"y"))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    edits=st.lists(
        st.tuples(st.sampled_from(["insert", "delete", "overwrite"]), st.integers(1, 60_000)), max_size=6
    ),
)
def test_hinted_commit_after_insertions_and_deletions_equals_full_chunking(
    tmp_path_factory: object, seed: int, edits: list[tuple[str, int]]
) -> None:
    """Bytes inserted and removed move everything after them: the cursor re-anchors on the
    content, and the chunk list is still exactly a full chunking's."""
    tmp = tmp_path_factory.mktemp("shifts")  # type: ignore[attr-defined]
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(rng.randrange(300_000, 2_000_000)))
    if rng.random() < 0.5:  # a run of zeros inside: zero runs are re-anchored past too
        at = rng.randrange(len(data))
        data[at : at + 300_000] = bytes(300_000)
    path = tmp / "disk.img"
    path.write_bytes(bytes(data))
    hinted, plain = tmp / "hinted", tmp / "plain"
    for p in (hinted, plain):
        Repository.init(p, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    with Repository.open(hinted, Mode.WRITE) as r:
        commit_file(r, path)
    for kind, length in edits:
        at = rng.randrange(len(data) + 1)
        if kind == "insert":
            data[at:at] = rng.randbytes(length)
        elif kind == "delete":
            del data[at : at + length]
        else:
            data[at : at + length] = rng.randbytes(length)[: len(data) - at]
    path.write_bytes(bytes(data))
    _assert_hinted_equals_plain(hinted, plain, path, tmp / "out.img")
    assert (tmp / "out.img").read_bytes() == bytes(data)


def test_an_insertion_is_confirmed_past_not_chunked(tmp_path: Path) -> None:
    """5000 bytes inserted near the start of a 48 MiB file: after some chunks (as many as
    the chunker cuts while the first ones are hashed) the rest is confirmed in place at its
    new offsets instead of being chunked again."""
    rng = random.Random(11)
    data = rng.randbytes(48 << 20)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    Repository.init(tmp_path / "repo").close()
    with Repository.open(tmp_path / "repo", Mode.WRITE) as r:
        first = commit_file(r, path)
        path.write_bytes(data[:65536] + rng.randbytes(5000) + data[65536:])
        second = commit_file(r, path)
        checkout(r, second.snapshot, str(tmp_path / "out.img"))
    assert (tmp_path / "out.img").read_bytes() == path.read_bytes()
    assert second.chunked_bytes < 24 << 20, second.chunked_bytes
    assert second.confirmed_chunks >= first.chunks // 2
    assert second.new_chunks <= 3


@pytest.mark.parametrize("reader", ["as it comes", "never ready for a look-ahead"])
def test_in_place_edits_cost_only_the_chunks_they_touch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """Small rewrites of a 64 MiB file, some over a cut point (the cut moves: the chunker
    takes over until it is back in step), some inside chunks, at the file's start, at read
    block boundaries and mid-block: each costs the chunks it lands in, and everything else is
    confirmed in place, even where a block's confirmations were queued before the previous
    block's had settled."""
    if reader != "as it comes":  # every look-ahead is given up after peeking at the cursor
        monkeypatch.setattr(CommitPipeline, "_next_block_now", lambda self, old: None)
    rng = random.Random(12)
    data = bytearray(rng.randbytes(64 << 20))
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    Repository.init(tmp_path / "repo").close()
    with Repository.open(tmp_path / "repo", Mode.WRITE) as r:
        first = commit_file(r, path)
        bounds = [0]
        for _, _, length in _chunk_list(r, first.snapshot.id):
            bounds.append(bounds[-1] + length)
        touched = 0
        inside = [0, 8 << 20, (16 << 20) + 4096, 47 << 20]
        for at in inside:  # 4 KiB inside a chunk (its cut stays)
            data[at : at + 4096] = rng.randbytes(4096)
            i = max(k for k in range(len(bounds) - 1) if bounds[k] <= at)
            touched += bounds[i + 1] - bounds[i]
        for i in (1, *(bisect.bisect(bounds, at << 20) for at in (36, 44, 52))):  # their cuts move:
            data[bounds[i] - 32 : bounds[i]] = rng.randbytes(32)  # the last 32 bytes of a chunk
            touched += bounds[i + 1] - bounds[i - 1]
        path.write_bytes(data)
        second = commit_file(r, path)
        checkout(r, second.snapshot, str(tmp_path / "out.img"))
    assert (tmp_path / "out.img").read_bytes() == bytes(data)
    assert second.chunked_bytes <= touched + (1 << 20), (second.chunked_bytes, touched)
    assert second.confirmed_chunks >= first.chunks - 14  # 12 chunks touched
