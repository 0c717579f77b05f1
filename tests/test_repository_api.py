"""The repository interface operations use (issue 12): batched and streamed calls, no file
paths, no stores reachable from outside; and each method agrees with the per-chunk or
whole-repository way of getting the same answer."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import Mode, Repository, commit_file
from snapstore.errors import SnapstoreError
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.gcplan import GcPlan
from snapstore.hashing import chunk_id
from snapstore.model import ChunkId, ChunkRef
from tests.helpers import flip, text_bytes


def test_no_store_and_no_file_path_in_the_interface(repo: Repository) -> None:
    for name in ("packs", "snapshots", "pins", "index", "dirs"):
        assert not hasattr(repo, name), name
    for name, member in inspect.getmembers(type(repo), callable):
        if name.startswith("_") or name in ("init", "open", "init_backend", "open_backend"):  # where it is
            continue
        for annotation in inspect.get_annotations(member).values():
            assert "Path" not in str(annotation), (name, annotation)


@settings(max_examples=20, deadline=None)
@given(picks=st.lists(st.integers(0, 39), max_size=60), unknown=st.lists(st.binary(min_size=32, max_size=32)))
def test_has_chunks_agrees_with_has_chunk(
    tmp_path_factory: pytest.TempPathFactory, picks: list[int], unknown: list[bytes]
) -> None:
    root = tmp_path_factory.mktemp("r") / "repo"
    with Repository.init(root) as repo:
        stored = [repo.put_chunk(text_bytes(1000 + i, seed=i))[0] for i in range(40)]
        repo.flush()
        asked = [stored[i] for i in picks] + [ChunkId(u) for u in unknown]
        assert repo.has_chunks(asked) == [repo.has_chunk(c) for c in asked]
        assert repo.has_chunks(asked) == [c in set(stored) for c in asked]


def test_prefetch_chunks_returns_verified_bytes(repo_path: Path) -> None:
    datas = [text_bytes(5000, seed=i) for i in range(8)]
    with Repository.open(repo_path, Mode.WRITE) as repo:
        ids = [repo.put_chunk(d)[0] for d in datas]
        repo.flush()
        with repo.prefetch_chunks() as chunks:
            locs = [chunks.want(c) for c in ids]
            assert [bytes(chunks.get(c, loc)) for c, loc in zip(ids, locs, strict=True)] == datas
            assert chunks.want(chunk_id(b"never stored")) is None
        victim = locs[3]
        assert victim is not None
        pack = next((repo_path / "packs").rglob(f"{victim.pack_id.hex()}.pack"))
    flip(pack, victim.offset + RECORD_HEADER_SIZE + victim.stored_size // 2)  # in the payload
    with Repository.open(repo_path) as repo, repo.prefetch_chunks() as chunks:
        with pytest.raises(SnapstoreError):
            chunks.get(ids[3], chunks.want(ids[3]))
        assert bytes(chunks.get(ids[4], chunks.want(ids[4]))) == datas[4]


def test_sizes_agree_with_the_chunk_lists(repo_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    sids = []
    with Repository.open(repo_path, Mode.WRITE) as repo:
        for i in range(3):
            src.write_bytes(text_bytes(200_000, seed=0) + text_bytes(100_000, seed=10 + i))
            sids.append(commit_file(repo, src, name="f").snapshot.id)
        sets = [set(s) for s in repo.snapshot_chunk_sets(sids)]
        named = [{r.chunk_id for r in repo.iter_records(s) if isinstance(r, ChunkRef)} for s in sids]
        assert sets == named
        locs = dict(repo.chunk_locations())
        totals = repo.space_totals()
        assert totals.chunks == len(locs) and totals.live_chunks == len(set().union(*sets))
        assert totals.raw_bytes == sum(locs[c].raw_size for c in set().union(*sets))
        # what removing the first alone frees: the chunks only it names
        only_first = sets[0] - sets[1] - sets[2]
        freed = next(repo.freed_by_removing(sids[:1]))
        assert freed == sum(RECORD_HEADER_SIZE + locs[c].stored_size for c in only_first) > 0
        assert list(repo.freed_by_removing(sids))[-1] == totals.stored_bytes
        assert set(repo.pack_sizes()) == {loc.pack_id for loc in locs.values()}


def test_apply_gc_needs_exclusive(repo: Repository) -> None:
    with pytest.raises(AssertionError):
        repo.apply_gc(GcPlan((), (), (), 0))
    with pytest.raises(AssertionError):
        repo.drop_corrupt_chunks()


def test_pins_through_the_repository(repo_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(text_bytes(50_000))
    with Repository.open(repo_path, Mode.WRITE) as repo:
        sid = commit_file(repo, src, name="f").snapshot.id
        repo.pin(sid)
        assert repo.pinned() == {sid}
        repo.unpin(sid)
        assert repo.pinned() == set()
    with Repository.open(repo_path) as repo, pytest.raises(AssertionError):
        repo.pin(sid)
