"""Issue 11, point 4: reference counts of one manifest are applied in bounded batches, and a
count killed between two batches is finished (or rolled back) by the next writer's recovery,
whichever way it was going. The batch size is made tiny here so that a small manifest needs
many transactions; verify then checks every count against the manifests."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import lmdb
import pytest

from snapstore import Mode, Repository, chunkset, commit_file, recovery
from snapstore.chunkset import collect
from snapstore.errors import StorageIOError
from snapstore.model import ChunkId, SnapshotId
from snapstore.ops.verify import verify
from snapstore.storage.index import IndexWriteTxn, _translate
from tests.conftest import SMALL_CHUNKER

BATCH = 7


class Killed(Exception):
    """Stands for SIGKILL between two transactions."""


def _before_each_batch(monkeypatch: pytest.MonkeyPatch, before: Callable[[list[ChunkId]], None]) -> None:
    """Run ``before`` with the chunk ids of each batch the index is about to count."""
    original = IndexWriteTxn.add_refs

    def add_refs(
        self: IndexWriteTxn,
        chunk_ids: Iterable[ChunkId],
        delta: int,
        snapshot_id: SnapshotId,
        *,
        strict: bool = True,
    ) -> None:
        ids = list(chunk_ids)
        before(ids)
        original(self, ids, delta, snapshot_id, strict=strict)

    monkeypatch.setattr(IndexWriteTxn, "add_refs", add_refs)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batches of BATCH ids; returns the sizes of the batches applied."""
    monkeypatch.setattr(recovery, "BATCH", BATCH)
    sizes: list[int] = []
    _before_each_batch(monkeypatch, lambda ids: sizes.append(len(ids)))
    return sizes


def _kill_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    left = [batches]

    def count_down(_: list[ChunkId]) -> None:
        if left[0] == 0:
            raise Killed
        left[0] -= 1

    _before_each_batch(monkeypatch, count_down)


def _repo(tmp_path: Path) -> tuple[Path, list[SnapshotId]]:
    path = tmp_path / "repo"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    src = tmp_path / "src"
    rng = random.Random(11)
    data = bytearray(rng.randbytes(1 << 20))
    ids: list[SnapshotId] = []
    with Repository.open(path, Mode.WRITE) as r:
        for _ in range(3):
            src.write_bytes(data)
            ids.append(commit_file(r, src, name="disk").snapshot.id)
            data[rng.randrange(len(data) - 70_000) :][:70_000] = rng.randbytes(70_000)
    return path, ids


def _problems(path: Path) -> list[str]:
    with Repository.open(path, Mode.CHECK) as r:
        return [f"{p.kind}: {p.detail}" for p in verify(r).problems]


def test_rm_counts_in_bounded_batches(tmp_path: Path, small_batches: list[int]) -> None:
    path, ids = _repo(tmp_path)
    small_batches.clear()
    with Repository.open(path, Mode.WRITE) as r:
        distinct = len(recovery.chunk_set(r._snapshots, ids[0]))
        r.remove_snapshot(ids[0])
    assert distinct > 3 * BATCH
    assert max(small_batches) == BATCH and sum(small_batches) == distinct
    assert _problems(path) == []


@pytest.mark.parametrize("after", [0, 1, 3])
def test_rm_killed_between_batches_is_finished_by_recovery(
    tmp_path: Path, small_batches: list[int], monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    path, ids = _repo(tmp_path)
    with Repository.open(path, Mode.WRITE) as r:
        _kill_after(monkeypatch, after)
        with pytest.raises(Killed):
            r.remove_snapshot(ids[1])
    monkeypatch.undo()
    monkeypatch.setattr(recovery, "BATCH", BATCH)
    with Repository.open(path, Mode.WRITE) as r:  # recovery finishes the removal
        assert ids[1] not in r._snapshots.list_ids() and not r._snapshots.list_trash()
        with r._index.read() as t:
            assert not t.is_counted(ids[1])
    assert _problems(path) == []


@pytest.mark.parametrize("after", [1, 4])
def test_commit_killed_between_batches_is_rolled_back(
    tmp_path: Path, small_batches: list[int], monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    path, _ = _repo(tmp_path)
    src = tmp_path / "new"
    src.write_bytes(random.Random(12).randbytes(600_000))
    with Repository.open(path, Mode.WRITE) as r:
        monkeypatch.setattr(Repository, "_roll_back", lambda self, sid: None)  # killed: no undo
        _kill_after(monkeypatch, after)
        with pytest.raises(Killed):
            commit_file(r, src, name="new")
        assert len(r._snapshots.list_pending()) == 1
    monkeypatch.undo()
    monkeypatch.setattr(recovery, "BATCH", BATCH)
    with Repository.open(path, Mode.WRITE) as r:
        assert not r._snapshots.list_pending() and len(r._snapshots.list_ids()) == 3
    assert _problems(path) == []


def test_a_count_killed_half_way_is_finished_either_way(tmp_path: Path, small_batches: list[int]) -> None:
    """Forward to counted, then back to uncounted from the middle, then forward again."""
    path, ids = _repo(tmp_path)
    with Repository.open(path, Mode.WRITE) as r:
        refs = recovery.chunk_set(r._snapshots, ids[2])
        with r._index.read() as t:
            before = {cid: loc.refcount for cid, loc in t.iter_locations()}
        with r._index.write() as w:  # half way through an uncount
            w.add_refs(refs.iter_from(0, 10), -1, ids[2])
            w.set_counting(ids[2], -1, refs[9])
        recovery.count(r._index, ids[2], refs, True)  # back to counted: undoes the 10
        with r._index.read() as t:
            assert {cid: loc.refcount for cid, loc in t.iter_locations()} == before
            assert t.count_state(ids[2]) is True
    assert _problems(path) == []


def test_txn_full_points_at_repair() -> None:
    error = _translate(lmdb.TxnFullError("mdb_put: MDB_TXN_FULL"), "index")
    assert isinstance(error, StorageIOError) and error.hint is not None and "snap repair" in error.hint


def test_chunk_id_sets_are_sorted_distinct_and_compact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    pool = [rng.randbytes(32) for _ in range(5000)]
    ids = [rng.choice(pool) for _ in range(20000)]

    def stream() -> Iterator[ChunkId]:
        yield from map(ChunkId, ids)

    for run in (1 << 18, 1000):  # one run, and many runs merged
        monkeypatch.setattr(chunkset, "_RUN", run)
        got = collect(stream())
        assert list(got) == sorted(set(ids))
        assert all(cid in got for cid in pool[:50]) and rng.randbytes(32) not in got
