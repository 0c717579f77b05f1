"""The index keeps every snapshot's exclusive size and the repository's totals up to date as
snapshots come and go (docs/FORMAT.md, "kept sizes"): listing never reads chunk lists. After
any sequence of commits, removals, gc and recounts, what is kept equals what reading every
manifest computes (counts killed between batches: tests/test_batched_counts.py, whose verify
checks what is kept)."""

from __future__ import annotations

import random
import shutil
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import recovery
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkRef, SnapshotId
from snapstore.repo import Mode, Repository
from tests.conftest import SMALL_CHUNKER
from tests.helpers import cli, init_repo

OPS = st.lists(st.sampled_from(["commit", "commit", "edit", "rm", "gc", "recount"]), min_size=1, max_size=12)


def computed(repo: Path) -> tuple[dict[SnapshotId, int], tuple[int, int, int, int]]:
    """Exclusive sizes and totals as reading every manifest gives them."""
    with Repository.open(repo) as r:
        users: dict[ChunkId, set[SnapshotId]] = {}
        for info in r.list_snapshots():
            for rec in r.iter_records(info.id):
                if isinstance(rec, ChunkRef):
                    users.setdefault(rec.chunk_id, set()).add(info.id)
        exclusive = {info.id: 0 for info in r.list_snapshots()}
        live = raw = stored = garbage = 0
        with r._index.read() as t:
            for cid, loc in t.iter_locations():
                size = RECORD_HEADER_SIZE + loc.stored_size
                owners = users.get(cid, set())
                if owners:
                    live, raw, stored = live + 1, raw + loc.raw_size, stored + size
                else:
                    garbage += size
                if len(owners) == 1:
                    exclusive[next(iter(owners))] += size
    return exclusive, (live, raw, stored, garbage)


def kept(repo: Path) -> tuple[dict[SnapshotId, int], tuple[int, int, int, int] | None]:
    with Repository.open(repo) as r, r._index.read() as t:
        assert t.sizes_ready()
        return {info.id: t.exclusive(info.id) or 0 for info in r.list_snapshots()}, t.totals()


@settings(max_examples=12, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_kept_sizes_equal_what_the_manifests_give(
    tmp_path_factory: pytest.TempPathFactory, ops: list[str], seed: int
) -> None:
    base = tmp_path_factory.mktemp("kept")
    repo = init_repo(base / "repo", SMALL_CHUNKER, pack_target_size=1 << 20)
    rng = random.Random(seed)
    image = base / "vm.img"
    data = bytearray(rng.randbytes(300_000) + bytes(100_000) + rng.randbytes(200_000))
    for op in ops:
        if op == "edit":
            at = rng.randrange(len(data) - 20_000)
            data[at : at + 20_000] = rng.randbytes(20_000)
        elif op == "commit":
            image.write_bytes(data)
            assert cli("commit", image, "-r", repo).code == 0
        elif op == "rm":
            with Repository.open(repo) as r:
                snaps = r.list_snapshots()
            if snaps:
                assert cli("rm", rng.choice(snaps).hex, "-r", repo).code == 0
        elif op == "gc":
            assert cli("gc", "-r", repo).code == 0
        else:
            with Repository.open(repo, Mode.WRITE) as r:
                recovery.recount(r._index, r._snapshots)
        assert kept(repo) == computed(repo)
    assert cli("verify", "-r", repo).code == 0
    shutil.rmtree(base)


def test_an_index_of_version_1_is_upgraded_by_the_next_writer(tmp_path: Path) -> None:
    """The frozen format-1 repository has an index of version 1: readers compute sizes from
    the manifests, the first writer recounts and keeps them from then on."""
    with tarfile.open(Path(__file__).parent / "data" / "format1-repo.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    repo = tmp_path / "repo"
    with Repository.open(repo) as r, r._index.read() as t:
        assert not t.sizes_ready()
    listed = cli("log", "-r", repo, "--json").json()
    assert cli("gc", "-r", repo, "--dry-run").code == 0
    assert cli("gc", "-r", repo).code == 0  # a writer: upgrades
    exclusive, totals = kept(repo)
    assert (exclusive, totals) == computed(repo)
    assert {s["id"]: s["exclusive_bytes"] for s in listed} == {k.hex(): v for k, v in exclusive.items()}
