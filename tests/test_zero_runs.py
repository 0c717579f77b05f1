"""Zero runs (docs/FORMAT.md, "Chunker"): every run of at least ``zero_run`` zero bytes is a
zero run of its own and the data between runs is chunked from its first byte. The commit
pipeline finds the runs while it streams (through holes, read zeros and block edges alike)
and must give exactly the pieces :func:`snapstore.chunker.stream_pieces` gives."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import Mode, Repository, checkout, commit_file
from snapstore.chunker import stream_pieces, zero_runs, zero_runs_py
from snapstore.model import ChunkerParams, ChunkRef, SnapshotId, ZeroRun
from snapstore.ops import pipeline
from snapstore.storage import fsio
from tests.conftest import SMALL_CHUNKER
from tests.helpers import write_sparse

# 4 KiB runs with 4-64 KiB chunks: runs are common in small test files.
ZR_CHUNKER = dataclasses.replace(SMALL_CHUNKER, zero_run=4096)


@st.composite
def zeroish(draw: st.DrawFn) -> bytes:
    """Bytes made of zero stretches (around the run length) and other bytes."""
    parts = []
    for _ in range(draw(st.integers(0, 10))):
        parts.append(bytes(draw(st.sampled_from([0, 1, 7, 8, 16, 17, 31, 32, 33, 63, 64, 65, 200]))))
        parts.append(draw(st.binary(min_size=0, max_size=40)))
    return b"".join(parts)


@settings(max_examples=300)
@given(data=zeroish(), min_zeros=st.sampled_from([1, 8, 15, 16, 17, 24, 32, 33, 64]), skew=st.integers(0, 7))
def test_zero_runs_scanner_matches_the_plain_definition(data: bytes, min_zeros: int, skew: int) -> None:
    view = memoryview(bytearray(skew) + data)[skew:]  # any alignment
    assert zero_runs(view, min_zeros) == zero_runs_py(data, min_zeros)
    for a, b in zero_runs_py(data, min_zeros):
        assert data[a:b] == bytes(b - a)
        assert a == 0 or data[a - 1] != 0
        assert b == len(data) or data[b] != 0
        assert b - a >= min_zeros or a == 0 or b == len(data)


def test_stream_pieces_cut_the_data_between_runs_on_its_own() -> None:
    rng = random.Random(5)
    a, b = rng.randbytes(100_000), rng.randbytes(70_000)
    pieces = stream_pieces(ZR_CHUNKER, a + bytes(5000) + b)
    alone = stream_pieces(ZR_CHUNKER, b)
    assert (5000, True) in pieces
    assert pieces[-len(alone) :] == alone  # b is chunked from its first byte, as if alone
    assert stream_pieces(dataclasses.replace(ZR_CHUNKER, zero_run=0), a + bytes(5000) + b) != pieces
    assert sum(n for n, _ in pieces) == len(a) + 5000 + len(b)


def _pieces(repo: Repository, snapshot_id: SnapshotId) -> list[tuple[int, bool]]:
    out: list[tuple[int, bool]] = []
    for r in repo.iter_records(snapshot_id):
        if isinstance(r, ChunkRef):
            out.append((r.raw_size, False))
        elif isinstance(r, ZeroRun):
            out.append((r.length, True))
    return out


def _regions(rng: random.Random, size: int) -> list[tuple[int, bytes]]:
    """Data, written zeros of about a run's length and holes from 4 KiB to 1 MiB apart."""
    regions: list[tuple[int, bytes]] = []
    pos = 0
    while pos < size:
        gap = rng.choice([0, 0, 4096, 8192, 40_000, 1 << 20])
        length = rng.randrange(1, 120_000)
        kind = rng.random()
        if kind < 0.25:
            data = bytes(length)
        elif kind < 0.5:  # data with zero stretches just under, at and over a run
            data = b"".join(
                rng.randbytes(rng.randrange(1, 9000)) + bytes(rng.choice([4095, 4096, 4097, 100]))
                for _ in range(8)
            )
        else:
            data = rng.randbytes(length)
        if pos + gap < size:
            regions.append((pos + gap, data[: size - pos - gap]))
        pos += gap + len(data)
    return regions


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sparse=st.booleans(),
    edits=st.integers(0, 8),
    punches=st.integers(0, 3),
    read_size=st.sampled_from([64 * 1024, pipeline.READ_SIZE]),
)
def test_commit_gives_the_reference_pieces(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    sparse: bool,
    edits: int,
    punches: int,
    read_size: int,
) -> None:
    """Whether zeros are holes or written, read in small blocks (runs and chunks straddle
    their edges) or large, with and without the previous snapshot's hints (edits fill runs,
    write zeros and punch holes): the pieces are the reference's, and the file checks out
    byte for byte."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "READ_SIZE", read_size)
        _commit_gives_the_reference_pieces(tmp_path_factory, seed, sparse, edits, punches)


def _commit_gives_the_reference_pieces(
    tmp_path_factory: pytest.TempPathFactory, seed: int, sparse: bool, edits: int, punches: int
) -> None:
    tmp = tmp_path_factory.mktemp("zr")
    rng = random.Random(seed)
    size = rng.randrange(300_000, 3 << 20)
    regions = _regions(rng, size)
    path, repo_path = tmp / "disk.img", tmp / "repo"
    Repository.init(repo_path, chunker=ZR_CHUNKER, pack_target_size=1 << 20).close()
    write_sparse(path, size, regions, sparse=sparse)
    with Repository.open(repo_path, Mode.WRITE) as r:
        first = commit_file(r, path, threads=2)
        assert _pieces(r, first.snapshot.id) == stream_pieces(ZR_CHUNKER, path.read_bytes())
    for _ in range(edits):
        at = rng.randrange(0, size)
        data = rng.choice([bytes(rng.randrange(1, 20_000)), rng.randbytes(rng.randrange(1, 20_000))])
        regions.append((at, data[: size - at]))
    write_sparse(path, size, regions, sparse=sparse)
    with open(path, "r+b") as f:
        for _ in range(punches):
            fsio.punch_hole(f.fileno(), rng.randrange(0, size) & ~4095, rng.randrange(4096, 300_000))
    content = path.read_bytes()
    with Repository.open(repo_path, Mode.WRITE) as r:
        hinted = commit_file(r, path, threads=2)
        plain = commit_file(r, path, threads=2, use_hints=False)
        expected = stream_pieces(ZR_CHUNKER, content)
        assert _pieces(r, hinted.snapshot.id) == expected
        assert _pieces(r, plain.snapshot.id) == expected
        checkout(r, hinted.snapshot, str(tmp / "out.img"))
    assert (tmp / "out.img").read_bytes() == content
    if edits == 0 and punches == 0:
        assert hinted.new_chunks == 0


def test_zero_runs_store_less_and_skip_the_zeros(tmp_path: Path) -> None:
    """An image whose data sits between holes and written zeros: with zero runs its chunks
    hold no long zero stretch, and an edit costs only the chunks of its own data."""
    rng = random.Random(9)
    size = 24 << 20
    regions = [
        (i << 20, rng.randbytes(300_000) + bytes(200_000) + rng.randbytes(100_000)) for i in range(0, 24, 2)
    ]
    path = tmp_path / "disk.img"
    write_sparse(path, size, regions)
    stored = {}
    for zero_run in (0, 64 * 1024):
        repo_path = tmp_path / f"repo{zero_run}"
        params = dataclasses.replace(ChunkerParams(), zero_run=zero_run)
        Repository.init(repo_path, chunker=params).close()
        with Repository.open(repo_path, Mode.WRITE) as r:
            commit_file(r, path)
            data = bytearray(path.read_bytes())
            data[(6 << 20) + 1000 : (6 << 20) + 1100] = rng.randbytes(100)
            edited = tmp_path / "edited.img"
            write_sparse(edited, size, [(o, bytes(data[o : o + len(d)])) for o, d in regions])
            res = commit_file(r, edited)
            stored[zero_run] = res.new_raw_bytes
            pieces = _pieces(r, res.snapshot.id)
            assert pieces == stream_pieces(params, bytes(data))
            if zero_run:
                assert all(n <= 300_000 for n, zeros in pieces if not zeros)
    assert stored[64 * 1024] <= 300_000 < stored[0]


def _edit_scenarios() -> dict[str, tuple[bytes, bytes]]:
    """(before, after) pairs of the same size that move, fill, open and grow zero runs next
    to unchanged data (in place: the chunks after an edit are found where they were)."""
    rng = random.Random(11)
    a, b, c = rng.randbytes(150_000), rng.randbytes(120_000), rng.randbytes(90_000)
    fill = rng.randbytes(8192)
    return {
        # the chunk before the run ended there; now the data goes on (its cut must be checked)
        "run filled with data": (a + bytes(8192) + b, a + fill + b),
        # a run opens inside what was one chunk
        "run opened inside a chunk": (a + b + c, a + b[:50_000] + bytes(9000) + b[59_000:] + c),
        # the run shrinks below the run length: its zeros become data
        "run shrunk below a run": (a + bytes(8192) + b, a + bytes(3000) + fill[:5192] + b),
        # the run grows into the data before it
        "run grown backwards": (a + bytes(8192) + b, a[:-5000] + bytes(13_192) + b),
        # zeros written right after a run join it: the data after it starts later
        "zeros joining a run": (a + bytes(8192) + b + c, a + bytes(11_192) + b[3000:] + c),
        # a block (64 KiB reads) that starts with zeros too short for a run, then an edit
        "short zeros at a block's start": (
            a[:65535] + b"\x01" + bytes(100) + b,
            a[:65535] + b"\x01" + bytes(100) + b[:1000] + fill + b[1000 + len(fill) :],
        ),
        # runs at the very start and the very end, then written over
        "runs at both ends": (bytes(10_000) + a + bytes(10_000), fill[:5000] * 2 + a + fill[:5000] * 2),
    }


@pytest.mark.parametrize("scenario", list(_edit_scenarios()))
@pytest.mark.parametrize("read_size", [64 * 1024, pipeline.READ_SIZE])
def test_hinted_commit_around_zero_runs_gives_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str, read_size: int
) -> None:
    """Each edit next to or inside a zero run: the hinted commit gives the reference pieces
    and still confirms the chunks away from the edit."""
    monkeypatch.setattr(pipeline, "READ_SIZE", read_size)
    before, after = _edit_scenarios()[scenario]
    path, repo_path = tmp_path / "disk.img", tmp_path / "repo"
    Repository.init(repo_path, chunker=ZR_CHUNKER, pack_target_size=1 << 20).close()
    with Repository.open(repo_path, Mode.WRITE) as r:
        path.write_bytes(before)
        first = commit_file(r, path, threads=2)
        assert _pieces(r, first.snapshot.id) == stream_pieces(ZR_CHUNKER, before)
        path.write_bytes(after)
        res = commit_file(r, path, threads=2)
        assert _pieces(r, res.snapshot.id) == stream_pieces(ZR_CHUNKER, after)
        checkout(r, res.snapshot, str(tmp_path / "out.img"))
    assert (tmp_path / "out.img").read_bytes() == after
    assert len(after) == len(before) and res.confirmed_chunks >= 3
