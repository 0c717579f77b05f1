"""gc that repacks (``snap gc --repack``): packs mostly dead have their live records copied
to a new pack and are removed, nothing is punched. Checked on real data with small packs:
every kept snapshot checks out byte for byte, the moved chunks' index entries point into the
new packs, the old pack files are gone and the repository's allocated blocks drop; a dry run
changes no byte; the planning function is checked by hypothesis on plain values."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import Mode, Repository, commit_file
from snapstore.format.pack import PACK_HEADER_SIZE, RECORD_HEADER_SIZE
from snapstore.gcplan import live_fraction, plan, record_span
from snapstore.model import ChunkId, ChunkLocation, PackId, SnapshotId
from tests.conftest import SMALL_CHUNKER, run_snap
from tests.helpers import content_sha
from tests.test_crash_space import assert_finished
from tests.test_gc import du, make_base, rewrite, tree_state

MiB = 1 << 20
History = tuple[Path, list[str], dict[str, str]]


def snap_json(*args: str) -> Any:
    res = run_snap(*args, "--json")
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


@pytest.fixture
def history(tmp_path: Path) -> History:
    """Four versions of 6 MiB, each rewriting scattered pieces of the last, in 1 MiB packs;
    the two oldest removed: most packs keep a few live chunks among dead ones."""
    root = tmp_path / "repo"
    Repository.init(root, chunker=SMALL_CHUNKER, pack_target_size=MiB).close()
    data = make_base(5, 6 * MiB)
    src = tmp_path / "src"
    ids, digests = [], {}
    with Repository.open(root, Mode.WRITE) as r:
        for i in range(4):
            if i:
                rewrite(data, 40 + i, 300, 8192)
            src.write_bytes(data)
            s = commit_file(r, src, name="disk").snapshot
            ids.append(s.hex)
            digests[s.hex] = content_sha(r, s.id)
        for sid in ids[:2]:
            r.remove_snapshot(SnapshotId(bytes.fromhex(sid)))
    return root, ids[2:], {sid: digests[sid] for sid in ids[2:]}


def _locations(root: Path) -> dict[bytes, ChunkLocation]:
    with Repository.open(root, Mode.READ) as r:
        return dict(r.chunk_locations())


def test_repack_round_trip_moves_chunks_and_frees_space(history: History) -> None:
    root, kept, digests = history
    packs_before = {p.stem for p in (root / "packs").glob("*/*.pack")}
    dry = snap_json("gc", "--repack-threshold", "1", "--dry-run", "-r", str(root))
    chosen = {p["pack"] for p in dry["repack_packs"]}
    assert dry["repack_threshold"] == 1 and len(chosen) >= 3
    assert dry["punch_ranges"] == 0 and dry["truncate_packs"] == 0
    assert 0 < dry["scratch_bytes"] <= MiB + 64 * 1024  # one pack at most
    assert dry["scratch_bytes"] == max(
        p["live_bytes"] + PACK_HEADER_SIZE + 56 * p["live_chunks"] + 64 for p in dry["repack_packs"]
    )
    before_locations = _locations(root)
    moved = {cid for cid, loc in before_locations.items() if loc.pack_id.hex() in chosen and loc.refcount}
    assert moved
    du_before = du(root)

    done = snap_json("gc", "--repack-threshold", "1", "-r", str(root))
    assert {p["pack"] for p in done["repack_packs"]} == chosen
    packs_after = {p.stem for p in (root / "packs").glob("*/*.pack")}
    assert not chosen & packs_after, "a repacked pack is still there"
    new_packs = packs_after - packs_before
    assert len(new_packs) == len(chosen)
    after = _locations(root)
    for cid in moved:
        old, new = before_locations[cid], after[cid]
        assert new.pack_id.hex() in new_packs, "a moved chunk does not point into a new pack"
        assert (new.refcount, new.owners, new.stored_size, new.codec) == (
            old.refcount,
            old.owners,
            old.stored_size,
            old.codec,
        )
    assert all(loc.refcount for loc in after.values()), "a dead chunk is still indexed"
    freed = du_before - du(root)
    assert freed >= 0.8 * done["planned_free_bytes"] > MiB, (freed, done["planned_free_bytes"])
    with Repository.open(root, Mode.READ) as r:
        for sid in kept:
            assert content_sha(r, SnapshotId(bytes.fromhex(sid))) == digests[sid]
    res = run_snap("verify", "--read-data", "-r", str(root))
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    assert_finished(root, "after gc --repack-threshold 1")
    again = snap_json("gc", "--repack-threshold", "1", "--dry-run", "-r", str(root))
    assert again["repack_packs"] == [] and again["planned_free_bytes"] == 0


def test_repack_dry_run_changes_nothing(history: History) -> None:
    root, _, _ = history
    before = tree_state(root)
    res = run_snap("gc", "--repack", "--dry-run", "-r", str(root))
    assert res.returncode == 0, res.stderr.decode()
    text = res.stdout.decode()
    assert "would repack" in text and "scratch space" in text
    assert tree_state(root) == before


def test_repack_threshold_chooses_fewer_packs(history: History) -> None:
    root, _, _ = history
    low = snap_json("gc", "--repack-threshold", "0.1", "--dry-run", "-r", str(root))["repack_packs"]
    high = snap_json("gc", "--repack-threshold", "0.5", "--dry-run", "-r", str(root))["repack_packs"]
    assert low and {p["pack"] for p in low} < {p["pack"] for p in high}
    assert all(p["live_bytes"] < 0.1 * p["pack_bytes"] for p in low)


def test_repack_threshold_out_of_range_is_a_usage_error(history: History) -> None:
    root, _, _ = history
    res = run_snap("gc", "--repack-threshold", "1.5", "-r", str(root))
    assert res.returncode == 2, res.stderr.decode()
    assert "threshold" in res.stderr.decode()


def test_repack_where_the_repository_cannot_punch(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repository that cannot punch holes repacks without being asked."""
    from snapstore.ops import gc

    root, kept, digests = history
    monkeypatch.setattr(Repository, "can_punch", lambda self: False)
    with Repository.open(root, Mode.EXCLUSIVE) as r:
        result = gc.collect(r)
        assert result.plan.repack_threshold == gc.DEFAULT_REPACK_THRESHOLD
        assert result.plan.repack and not result.plan.punch and not result.plan.truncate
        for sid in kept:
            assert content_sha(r, SnapshotId(bytes.fromhex(sid))) == digests[sid]


# -- the planning function, on plain values --------------------------------------------------------

_packs = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 2)), min_size=0, max_size=12),  # records
        st.integers(0, 3000),  # unindexed tail bytes
        st.booleans(),  # some of it punched already
    ),
    min_size=0,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(_packs, st.floats(0.01, 1.0))
def test_plan_repack_properties(
    packs: list[tuple[list[tuple[int, int]], int, bool]],
    threshold: float,
) -> None:
    locations: list[tuple[ChunkId, ChunkLocation]] = []
    sizes: dict[PackId, int] = {}
    lengths: dict[PackId, int] = {}
    live: dict[PackId, tuple[int, int]] = {}
    rng = random.Random(len(packs))
    for n, (records, tail, punched) in enumerate(packs):
        pack_id = PackId(bytes([n]) * 16)
        offset = PACK_HEADER_SIZE
        lb = lr = 0
        for i, (stored, refs) in enumerate(records):
            cid = ChunkId(bytes([n, i]) * 16)
            loc = ChunkLocation(pack_id, offset, stored, stored, 0, refs)
            locations.append((cid, loc))
            offset += record_span(loc)
            if refs:
                lb, lr = lb + record_span(loc), lr + 1
        lengths[pack_id] = offset + tail
        sizes[pack_id] = (offset + tail) // (2 if punched else 1) + rng.randrange(4096)
        if lr:
            live[pack_id] = (lb, lr)
    locations.sort()
    p = plan(iter(locations), [], sizes, lengths, repack_threshold=threshold)
    assert p.repack_threshold == threshold and not p.punch and not p.truncate
    assert set(p.delete_packs) == set(sizes) - set(live)
    chosen = {r.pack_id: r for r in p.repack}
    assert list(chosen) == sorted(chosen)
    for pack_id, (lb, lr) in live.items():
        fraction = live_fraction(lb, sizes[pack_id], lengths[pack_id])
        worth = PACK_HEADER_SIZE + lb + 56 * lr + 64 < sizes[pack_id]
        assert (pack_id in chosen) == (fraction < threshold and worth)
        if pack_id in chosen:
            assert (chosen[pack_id].live_bytes, chosen[pack_id].live_records) == (lb, lr)
    assert not set(chosen) & set(p.delete_packs)
    assert p.scratch_bytes == max((r.new_pack_bytes for r in p.repack), default=0)
    assert p.scratch_bytes <= max(sizes.values(), default=0)  # one pack of scratch space at most
    assert p.repack_bytes == sum(r.new_pack_bytes for r in p.repack)
    assert p.freed_bytes == sum(sizes[d] for d in p.delete_packs) + sum(
        r.pack_bytes - r.new_pack_bytes for r in p.repack
    )
    assert {cid for cid, loc in locations if not loc.refcount} == set(p.dead_chunks)
    assert RECORD_HEADER_SIZE == 52


def test_rebuild_after_a_killed_repack_keeps_the_first_copy(history: History, tmp_path: Path) -> None:
    """Killed after the new pack was sealed and before the index moved to it, every moved
    chunk is in two packs. An index rebuilt then keeps, of each, the copy in the pack whose id
    sorts first and lists the other on the garbage list; everything checks out, and the next
    gc leaves one copy."""
    from snapstore.ops import gc
    from tests.helpers import copy_repository
    from tests.test_crash_repack import ORDER, die_before
    from tests.test_crash_space import Killed

    root, kept, digests = history
    ref = copy_repository(root, tmp_path / "ref")
    with Repository.open(ref, Mode.EXCLUSIVE) as r, die_before(r, None):
        gc.collect(r, repack_threshold=1.0)
    step = ORDER.index("write", ORDER.index("seal")) + 1  # the index transaction after the first seal
    old_packs = {p.stem for p in (root / "packs").glob("*/*.pack")}
    with pytest.raises(Killed), Repository.open(root, Mode.EXCLUSIVE) as r, die_before(r, step):
        gc.collect(r, repack_threshold=1.0)
    (new_pack,) = {p.stem for p in (root / "packs").glob("*/*.pack")} - old_packs
    with Repository.open(root, Mode.READ) as r:
        copied = {h.chunk_id: off for off, h in r._packs.records(PackId(bytes.fromhex(new_pack)))}
        before = dict(r.chunk_locations())
    old_pack = {before[cid].pack_id.hex() for cid in copied}
    assert len(old_pack) == 1 and copied
    first, second = sorted([new_pack, *old_pack])

    shutil.rmtree(root / "index")
    res = run_snap("repair", "--json", "-r", str(root))
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout)["duplicate_records"] == len(copied)
    with Repository.open(root, Mode.READ) as r:
        after = dict(r.chunk_locations())
        garbage = {(p.hex(), off) for p, off, _ in r.garbage_ranges()}
        for sid in kept:
            assert content_sha(r, SnapshotId(bytes.fromhex(sid))) == digests[sid]
    for cid, off in copied.items():
        assert after[cid].pack_id.hex() == first
        other = before[cid].offset if second != new_pack else off
        assert (second, other) in garbage
    res = run_snap("gc", "--repack-threshold", "1", "-r", str(root))
    assert res.returncode == 0, res.stderr.decode()
    assert_finished(root, "after the rebuild and gc")
