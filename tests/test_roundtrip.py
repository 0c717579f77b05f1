"""commit -> checkout gives back every byte: sizes at chunk boundaries, sparse files larger
than 4 GiB, deduplication, several versions, stdout, existing outputs, ``latest``."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstore import Mode, Repository, checkout, commit_file
from snapstore.errors import OutputExistsError, UsageError
from snapstore.model import ChunkerParams, ChunkRef, SnapshotId, ZeroRun
from tests.conftest import SMALL_CHUNKER, run_snap
from tests.helpers import (
    checkout_digest,
    chunk_sizes,
    file_digest,
    init_repo,
    temp_leftovers,
    text_bytes,
    write_sparse,
    zero_run_bytes,
)

MiB, GiB = 1 << 20, 1 << 30
DEFAULT = ChunkerParams()
FIXED = ChunkerParams("fixed", 8192, 8192, 8192)


def _boundary_sizes(p: ChunkerParams) -> list[int]:
    sizes = {0, 1, 2, 4095, 4096, 4097}
    for base in (p.min_size, p.avg_size, p.max_size):
        sizes |= {base - 1, base, base + 1, 2 * base, 3 * base}
    sizes |= {p.max_size * 2 + 1, p.min_size + p.max_size}
    return sorted(sizes)


@pytest.mark.parametrize(
    "chunker",
    [
        pytest.param(SMALL_CHUNKER, id="small"),
        pytest.param(FIXED, id="fixed8k"),
        pytest.param(DEFAULT, id="default", marks=pytest.mark.slow),
    ],
)
def test_sizes_at_chunk_boundaries(tmp_path: Path, chunker: ChunkerParams) -> None:
    root = init_repo(tmp_path / "repo", chunker)
    rng = random.Random(chunker.avg_size)
    src, out = tmp_path / "in.img", tmp_path / "out.img"
    with Repository.open(root, Mode.WRITE) as repo:
        for size in _boundary_sizes(chunker):
            data = rng.randbytes(size)
            src.write_bytes(data)
            res = commit_file(repo, src, name=f"s{size}")
            assert res.snapshot.size == size
            sizes = chunk_sizes(repo, res.snapshot.id)
            zeros = zero_run_bytes(repo, res.snapshot.id)  # e.g. a last chunk of one 0 byte
            assert sum(sizes) + zeros == size
            assert all(0 < n <= chunker.max_size for n in sizes)
            if chunker.algorithm == "fixed" and not zeros:
                assert sizes == [min(8192, size - i) for i in range(0, size, 8192)]
            checkout(repo, res.snapshot, str(out), force=True)
            assert out.read_bytes() == data, f"size {size}"
            assert out.stat().st_size == size


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNKER.max_size, 3 * MiB + 5])
def test_all_zero_files_store_nothing(tmp_path: Path, repo: Repository, size: int) -> None:
    src, out = tmp_path / "zeros.img", tmp_path / "out.img"
    src.write_bytes(bytes(size))  # allocated zeros, not holes
    res = commit_file(repo, src)
    assert res.new_stored_bytes == 0
    assert chunk_sizes(repo, res.snapshot.id) == []
    assert zero_run_bytes(repo, res.snapshot.id) == size
    checkout(repo, res.snapshot, str(out))
    assert out.read_bytes() == bytes(size)


def test_metadata_of_a_snapshot(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(b"hello world")
    res = commit_file(repo, src, message="first")
    s = res.snapshot
    assert (s.name, s.message, s.size, s.entries, s.chunk_refs) == ("disk.img", "first", 11, 1, 1)
    assert s.source == str(src.absolute())
    assert repo.list_snapshots() == [s]
    named = commit_file(repo, src, name="other")
    assert named.snapshot.name == "other"
    assert named.snapshot.id != s.id


@pytest.mark.slow
def test_sparse_file_larger_than_4_gib(tmp_path: Path, repo: Repository) -> None:
    """Holes are neither read nor stored; data beyond 4 GiB comes back at its offset; the
    checkout is sparse."""
    size = 4 * GiB + GiB // 2
    rng = random.Random(45)
    pieces = [
        (0, rng.randbytes(MiB)),
        (GiB + 123, rng.randbytes(2 * MiB)),
        (4 * GiB - 300_000, rng.randbytes(MiB)),  # straddles the 4 GiB boundary
        (4 * GiB + 5 * MiB + 7, text_bytes(2 * MiB)),
        (size - 100_000, rng.randbytes(100_000)),  # ends at the end of the file
    ]
    src, out = tmp_path / "big.img", tmp_path / "out.img"
    write_sparse(src, size, pieces)
    res = commit_file(repo, src)
    data_bytes = sum(len(d) for _, d in pieces)
    assert res.snapshot.size == size
    assert res.new_raw_bytes <= data_bytes + 2 * MiB  # holes were not stored
    assert res.zero_bytes >= size - data_bytes - 8 * MiB
    checkout(repo, res.snapshot, str(out))
    st = out.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 64 * MiB, "checkout is not sparse"
    assert file_digest(out) == file_digest(src)
    with open(out, "rb") as f:
        for offset, data in pieces:
            f.seek(offset)
            assert f.read(len(data)) == data


def test_same_file_twice_stores_nothing_new(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(random.Random(1).randbytes(3 * MiB) + text_bytes(MiB))
    first = commit_file(repo, src)
    assert first.new_stored_bytes > 0
    for hints in (True, False):
        again = commit_file(repo, src, use_hints=hints)
        assert again.new_stored_bytes == 0
        assert again.new_chunks == 0
        assert again.chunks == first.chunks
        assert chunk_sizes(repo, again.snapshot.id) == chunk_sizes(repo, first.snapshot.id)
    assert len(repo.list_snapshots()) == 3


def test_small_in_place_change_stores_little(tmp_path: Path, repo: Repository) -> None:
    rng = random.Random(2)
    data = bytearray(rng.randbytes(8 * MiB))
    src, out = tmp_path / "disk.img", tmp_path / "out.img"
    src.write_bytes(data)
    first = commit_file(repo, src)
    for offset in (100, 3 * MiB + 17, 7 * MiB):
        data[offset : offset + 512] = rng.randbytes(512)
    with open(src, "r+b") as f:  # in place, as a VM writes its disk
        for offset in (100, 3 * MiB + 17, 7 * MiB):
            f.seek(offset)
            f.write(data[offset : offset + 512])
    second = commit_file(repo, src)
    assert 0 < second.new_stored_bytes <= 3 * 2 * SMALL_CHUNKER.max_size
    assert second.new_stored_bytes < first.new_stored_bytes / 20
    assert checkout_digest(repo, first.snapshot.hex, out) != checkout_digest(repo, second.snapshot.hex, out)
    checkout(repo, second.snapshot, str(out), force=True)
    assert out.read_bytes() == bytes(data)


def test_dedup_across_different_files(tmp_path: Path, repo: Repository) -> None:
    rng = random.Random(3)
    shared = rng.randbytes(4 * MiB)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(shared + rng.randbytes(MiB))
    b.write_bytes(rng.randbytes(300_000) + shared)
    ra = commit_file(repo, a)
    rb = commit_file(repo, b)
    assert ra.new_stored_bytes >= 5 * MiB
    # b stores its own 300 KB and the chunks around the seam, not the shared 4 MiB.
    assert rb.new_stored_bytes <= 300_000 + 3 * SMALL_CHUNKER.max_size
    out = tmp_path / "out.img"
    checkout(repo, rb.snapshot, str(out))
    assert out.read_bytes() == b.read_bytes()


def test_identical_chunks_within_one_file_are_stored_once(tmp_path: Path, repo: Repository) -> None:
    block = random.Random(4).randbytes(MiB)
    src = tmp_path / "repeat.img"
    src.write_bytes(block * 6)
    res = commit_file(repo, src)
    assert res.new_raw_bytes < 2 * MiB + SMALL_CHUNKER.max_size
    out = tmp_path / "out.img"
    checkout(repo, res.snapshot, str(out))
    assert out.read_bytes() == block * 6


def _mixed_image(path: Path, rng: random.Random) -> None:
    """72 MiB: random, text, written zeros, a 16 MiB hole, random again."""
    with open(path, "wb") as f:
        f.write(rng.randbytes(16 * MiB))
        f.write(text_bytes(16 * MiB, seed=rng.randrange(100)))
        f.write(bytes(8 * MiB))
        f.seek(16 * MiB, os.SEEK_CUR)
        f.write(rng.randbytes(16 * MiB))


@pytest.mark.slow
def test_three_versions_of_a_mixed_image(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo", DEFAULT, pack_target_size=8 * MiB)
    rng = random.Random(5)
    src, out = tmp_path / "vm.img", tmp_path / "out.img"
    _mixed_image(src, rng)
    digests, results = [], []
    with Repository.open(root, Mode.WRITE) as repo:
        results.append(commit_file(repo, src, message="v1"))
        digests.append(file_digest(src))
        # v2: scattered 4 KiB writes in place, and the file grows by 3 MiB.
        with open(src, "r+b") as f:
            for _ in range(40):
                f.seek(rng.randrange(0, 72 * MiB, 4096))
                f.write(rng.randbytes(4096))
            f.seek(72 * MiB)
            f.write(rng.randbytes(3 * MiB))
        results.append(commit_file(repo, src, message="v2"))
        digests.append(file_digest(src))
        # v3: 1000 bytes inserted at 20 MiB (everything after shifts), then shrunk to 60 MiB.
        data = src.read_bytes()
        src.write_bytes((data[: 20 * MiB] + rng.randbytes(1000) + data[20 * MiB :])[: 60 * MiB])
        results.append(commit_file(repo, src, message="v3"))
        digests.append(file_digest(src))
        assert len(set(digests)) == 3
        # v2 changed 40 blocks: far less than a full copy; v3 shifted data still dedupes.
        assert results[1].new_stored_bytes < results[0].new_stored_bytes / 2
        assert results[2].new_stored_bytes < 12 * MiB
        for res, digest in zip(results, digests, strict=True):
            checkout(repo, res.snapshot, str(out), force=True)
            assert file_digest(out) == digest, res.snapshot.message
            assert out.stat().st_size == res.snapshot.size
    # Also through a fresh read-only open, in reverse order.
    with Repository.open(root) as repo:
        refs = ["latest", results[1].snapshot.hex[:8], results[0].snapshot.hex]
        for ref, digest in zip(refs, digests[::-1], strict=True):
            assert checkout_digest(repo, ref, out) == digest
    assert temp_leftovers(tmp_path) == []


segments = st.lists(
    st.tuples(
        st.sampled_from(["rand", "zero", "text", "hole"]), st.integers(1, 120_000), st.integers(0, 999)
    ),
    max_size=8,
)


def test_commit_checkout_identity_property(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo", SMALL_CHUNKER)
    src, out = tmp_path / "p.img", tmp_path / "out.img"

    @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
    @given(segs=segments, hints=st.booleans())
    def check(segs: list[tuple[str, int, int]], hints: bool) -> None:
        pieces, pos = [], 0
        expected = bytearray()
        for kind, n, seed in segs:
            if kind == "hole":
                n *= 20  # up to ~2.4 MiB: large enough to be a real hole
                expected += bytes(n)
            else:
                if kind == "rand":
                    data = random.Random(seed).randbytes(n)
                elif kind == "text":
                    data = text_bytes(n, seed)
                else:
                    data = bytes(n)
                pieces.append((pos, data))
                expected += data
            pos += n
        write_sparse(src, pos, pieces)
        with Repository.open(root, Mode.WRITE) as repo:
            res = commit_file(repo, src, name="prop.img", use_hints=hints)
            assert res.snapshot.size == len(expected)
            checkout(repo, res.snapshot, str(out), force=True)
        assert out.read_bytes() == bytes(expected)

    check()


def _chunk_list(repo: Repository, snapshot_id: SnapshotId) -> list[tuple[str, bytes, int]]:
    """Chunk references and zero runs, adjacent zero runs merged."""
    out: list[tuple[str, bytes, int]] = []
    for r in repo.iter_records(snapshot_id):
        if isinstance(r, ChunkRef):
            out.append(("C", r.chunk_id, r.raw_size))
        elif isinstance(r, ZeroRun):
            if out and out[-1][0] == "Z":
                out[-1] = ("Z", b"", out[-1][2] + r.length)
            else:
                out.append(("Z", b"", r.length))
    return out


def test_holes_and_written_zeros_chunk_alike(tmp_path: Path) -> None:
    """The chunk list depends on the bytes only, not on which zeros are holes: the same
    content, once sparse and once fully written, is the same chunk list (so both dedupe)."""
    repos = {p: init_repo(tmp_path / p.algorithm / str(p.avg_size), p) for p in (SMALL_CHUNKER, DEFAULT)}

    @settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
    @given(
        segs=st.lists(
            st.tuples(st.sampled_from(["data", "hole", "zero"]), st.integers(0, 20), st.integers(1, 70_000)),
            min_size=1,
            max_size=5,
        ),
        seed=st.integers(0, 2**32 - 1),
        params=st.sampled_from([SMALL_CHUNKER, DEFAULT]),
    )
    def check(segs: list[tuple[str, int, int]], seed: int, params: ChunkerParams) -> None:
        rng = random.Random(seed)
        pieces, content, pos = [], bytearray(), 0
        for kind, quarters, extra in segs:
            n = quarters * MiB // 4 + extra  # up to ~5 MiB: holes of 1 MiB+ are not read
            data = rng.randbytes(n) if kind == "data" else bytes(n)
            if kind != "hole":
                pieces.append((pos, data))
            content += data
            pos += n
        sparse, dense = tmp_path / "sparse.img", tmp_path / "dense.img"
        write_sparse(sparse, pos, pieces)
        dense.write_bytes(content)
        with Repository.open(repos[params], Mode.WRITE) as repo:
            a = commit_file(repo, sparse, name="a", use_hints=False)
            b = commit_file(repo, dense, name="b", use_hints=False)
            assert _chunk_list(repo, a.snapshot.id) == _chunk_list(repo, b.snapshot.id)
            assert b.new_stored_bytes == 0

    check()


def test_checkout_to_stdout_via_cli(tmp_path: Path, repo_path: Path) -> None:
    src = tmp_path / "disk.img"
    data = random.Random(6).randbytes(700_000) + bytes(2 * MiB) + text_bytes(300_000)
    src.write_bytes(data)
    done = run_snap("commit", str(src), "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    sid = done.stdout.decode().strip()
    assert len(sid) == 64
    for ref in (sid, sid[:6], "latest"):
        got = run_snap("checkout", ref, "-o", "-", "--repo", str(repo_path))
        assert got.returncode == 0, got.stderr
        assert got.stdout == data
        assert b"Traceback" not in got.stderr


def test_checkout_without_sparse_writes_every_byte(tmp_path: Path, repo: Repository) -> None:
    src, out = tmp_path / "disk.img", tmp_path / "out.img"
    write_sparse(src, 6 * MiB, [(0, b"x" * 1000), (5 * MiB, b"y" * 1000)])
    res = commit_file(repo, src)
    checkout(repo, res.snapshot, str(out), sparse=False)
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_blocks * 512 >= 6 * MiB
    checkout(repo, res.snapshot, str(out), force=True)
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_blocks * 512 < 2 * MiB


def test_checkout_is_sparse_where_the_source_was(tmp_path: Path) -> None:
    """Holes shorter than a chunk end up inside chunks that also hold data (default 1 MiB
    chunks, zero runs off): the checkout still leaves them as holes, so it allocates about
    what the source does; with sparse=False every byte is written."""
    repo_path = tmp_path / "repo"
    Repository.init(repo_path, chunker=ChunkerParams(zero_run=0)).close()
    src, out = tmp_path / "disk.img", tmp_path / "out.img"
    rng = random.Random(21)
    pieces = [(i * 3 * MiB, rng.randbytes(MiB)) for i in range(8)]  # 1 MiB data, 2 MiB hole
    write_sparse(src, 24 * MiB, pieces)
    with Repository.open(repo_path, Mode.WRITE) as repo:
        res = commit_file(repo, src)
        assert res.zero_bytes < 8 * MiB, "the holes were meant to sit inside data chunks"
        checkout(repo, res.snapshot, str(out))
        assert file_digest(out) == file_digest(src)
        allocated, source = out.stat().st_blocks * 512, src.stat().st_blocks * 512
        assert allocated <= source + 64 * 1024, f"{allocated} allocated, the source {source}"
        checkout(repo, res.snapshot, str(out), force=True, sparse=False)
        assert file_digest(out) == file_digest(src)
        assert out.stat().st_blocks * 512 >= 24 * MiB


def test_checkout_refuses_existing_output_without_force(tmp_path: Path, repo: Repository) -> None:
    src, out = tmp_path / "disk.img", tmp_path / "out.img"
    src.write_bytes(b"new content")
    res = commit_file(repo, src)
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as info:
        checkout(repo, res.snapshot, str(out))
    assert info.value.exit_code == 2
    assert out.read_bytes() == b"precious"
    assert temp_leftovers(tmp_path) == []
    checkout(repo, res.snapshot, str(out), force=True)
    assert out.read_bytes() == b"new content"
    with pytest.raises(UsageError):
        checkout(repo, res.snapshot, str(tmp_path))  # a directory
    with pytest.raises(UsageError):
        checkout(repo, res.snapshot, str(tmp_path / "missing-dir" / "out.img"))


def test_checkout_refuses_existing_output_via_cli(tmp_path: Path, repo_path: Path) -> None:
    src, out = tmp_path / "disk.img", tmp_path / "out.img"
    src.write_bytes(b"content")
    assert run_snap("commit", str(src), "--repo", str(repo_path)).returncode == 0
    out.write_bytes(b"precious")
    done = run_snap("checkout", "latest", "-o", str(out), "--repo", str(repo_path))
    assert done.returncode == 2
    assert done.stderr.decode().startswith("snap: error:")
    assert "--force" in done.stderr.decode()
    assert out.read_bytes() == b"precious"
    done = run_snap("checkout", "latest", "-o", str(out), "--force", "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"content"


def test_latest_with_name(tmp_path: Path, repo_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    with Repository.open(repo_path, Mode.WRITE) as repo:
        a.write_bytes(b"a1")
        commit_file(repo, a)
        a.write_bytes(b"a2")
        commit_file(repo, a)
        b.write_bytes(b"b1")
        commit_file(repo, b)
        a.write_bytes(b"other name")
        commit_file(repo, a, name="b.img")
        out = tmp_path / "out.img"
        checkout(repo, repo.resolve("latest", name="a.img"), str(out))
        assert out.read_bytes() == b"a2"
        checkout(repo, repo.resolve("latest"), str(out), force=True)
        assert out.read_bytes() == b"other name"
    for name, expected in (("a.img", b"a2"), ("b.img", b"other name")):
        out = tmp_path / f"out-{name}"
        done = run_snap("checkout", "latest", "--name", name, "-o", str(out), "--repo", str(repo_path))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == expected
    done = run_snap(
        "checkout", "latest", "--name", "c.img", "-o", str(tmp_path / "c"), "--repo", str(repo_path)
    )
    assert done.returncode == 3
    assert not (tmp_path / "c").exists()


def test_file_and_directory_names_that_are_not_utf8(tmp_path: Path, repo_path: Path) -> None:
    """Linux names are bytes: an image in a Latin-1 named directory must be committable."""
    directory = Path(os.fsdecode(bytes(tmp_path) + b"/Sch\xf6ne VMs"))
    directory.mkdir()
    src = directory / os.fsdecode(b"d\xefsk.img")
    src.write_bytes(b"bytes of a disk")
    with Repository.open(repo_path, Mode.WRITE) as repo:
        res = commit_file(repo, src)
        assert res.snapshot.name == src.name
        assert res.snapshot.source == str(src)
        out = tmp_path / "out.img"
        checkout(repo, repo.resolve("latest", name=src.name), str(out))
        assert out.read_bytes() == b"bytes of a disk"
    done = run_snap("commit", str(src), "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    done = run_snap("log", "--json", "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr


@pytest.mark.root
def test_commit_a_block_device(tmp_path: Path, repo_path: Path) -> None:
    """A VM disk on a block device (LVM, loop) commits like a file of the device's size."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    backing = tmp_path / "backing.img"
    write_sparse(backing, 64 * MiB, [(10 * MiB, random.Random(8).randbytes(3 * MiB))])
    done = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"losetup: {done.stderr.strip()}")
    device = Path(done.stdout.strip())
    try:
        with Repository.open(repo_path, Mode.WRITE) as repo:
            res = commit_file(repo, device, name="vm-disk")
            assert res.snapshot.size == 64 * MiB
            out = tmp_path / "out.img"
            checkout(repo, res.snapshot, str(out))
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)
    assert file_digest(out) == file_digest(backing)
