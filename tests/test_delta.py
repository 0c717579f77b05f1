"""Delta records (docs/FORMAT.md, "delta records"): a changed chunk stored as a delta against
the keyframe of the chunk at its place in the previous snapshot; its base kept while any
live delta needs it; reads, verify, repair and gc through it."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import codec, deltacodec
from snapstore.errors import CorruptError, DamagedChunkError
from snapstore.format import config as config_fmt
from snapstore.format import index as index_fmt
from snapstore.model import ChunkerParams, ChunkId, ChunkLocation, ChunkRef, PackId, SnapshotId
from snapstore.ops.commit import commit_file
from snapstore.ops.gc import collect
from snapstore.ops.inplace import checkout_in_place
from snapstore.ops.snapread import SnapshotReader
from snapstore.ops.treecommit import commit_tree
from snapstore.ops.treerestore import restore_tree
from snapstore.repo import Mode, Repository
from tests.conftest import SNAP, run_snap
from tests.helpers import content_sha, copy_repository, file_sha, flip, text_bytes

CHUNKER = ChunkerParams("fastcdc", 64 << 10, 256 << 10, 1 << 20, 64 << 10)
SIZE = 4 << 20


def day_images(tmp: Path, days: int, seed: int = 15) -> list[Path]:
    """Day 0, then each day 1% of the 4 KiB blocks rewritten at scattered places (half new
    bytes, half copies of other blocks): the issue's scattered-writes chain, small."""
    rng = random.Random(seed)
    img = bytearray(text_bytes(SIZE, seed))
    paths = []
    for day in range(days + 1):
        if day:
            blocks = SIZE // 4096
            for i, b in enumerate(rng.sample(range(blocks), blocks // 100)):
                if i % 2:
                    img[b * 4096 : (b + 1) * 4096] = rng.randbytes(4096)
                else:
                    c = rng.randrange(blocks)
                    img[b * 4096 : (b + 1) * 4096] = img[c * 4096 : (c + 1) * 4096]
        path = tmp / f"day{day}.img"
        path.write_bytes(img)
        paths.append(path)
    return paths


def commit_days(root: Path, images: list[Path], *, delta: bool = True) -> list[SnapshotId]:
    Repository.init(root, chunker=CHUNKER, pack_target_size=1 << 20, delta=delta).close()
    ids = []
    for image in images:
        with Repository.open(root, Mode.WRITE) as repo:
            ids.append(commit_file(repo, image, name="vm.img").snapshot.id)
    return ids


def deltas_of(repo: Repository, sid: SnapshotId) -> dict[ChunkId, ChunkId]:
    """The snapshot's chunks stored as deltas, with their bases."""
    found = {}
    for record in repo.iter_records(sid):
        if isinstance(record, ChunkRef):
            loc = repo.get_location(record.chunk_id)
            assert loc is not None
            if loc.codec == codec.CODEC_DELTA:
                assert loc.base is not None
                found[record.chunk_id] = loc.base
    return found


# -- the codec (pure) -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=1 << 14), st.binary(min_size=1, max_size=1 << 14))
def test_delta_round_trip(base: bytes, data: bytes) -> None:
    payload = deltacodec.encode(data, bytes(32), base)
    assert deltacodec.base_of(payload) == bytes(32)
    assert deltacodec.decode(payload, base, len(data)) == data


def test_delta_of_a_few_changed_blocks_is_small_and_wrong_base_is_caught() -> None:
    base = text_bytes(1 << 20, 1)
    rng = random.Random(1)
    changed = bytearray(base)
    for _ in range(4):
        at = rng.randrange(256) * 4096
        changed[at : at + 4096] = rng.randbytes(4096)
    payload = deltacodec.encode(bytes(changed), bytes(32), base)
    full = codec.encode(bytes(changed), 3)[1]
    assert len(payload) < len(full) * deltacodec.KEEP_BELOW / 4  # ~ the 16 KiB changed
    assert deltacodec.decode(payload, base, len(changed)) == changed
    other = text_bytes(1 << 20, 2)
    try:
        wrong = deltacodec.decode(payload, other, len(changed))
    except DamagedChunkError:
        return
    assert wrong != changed  # (the caller's hash check catches it)


def test_delta_sizes_are_checked() -> None:
    payload = deltacodec.encode(b"abc" * 100, bytes(32), b"abc" * 90)
    with pytest.raises(DamagedChunkError):
        deltacodec.decode(payload, b"abc" * 90, 299)
    with pytest.raises(DamagedChunkError):
        deltacodec.base_of(payload[:32])
    with pytest.raises(DamagedChunkError):
        codec.decode(codec.CODEC_DELTA, payload, 300)  # needs its base


def test_index_entry_of_a_delta_names_its_base() -> None:
    loc = ChunkLocation(PackId(bytes(16)), 16, 100, 4096, codec.CODEC_DELTA, 2, bytes(32), ChunkId(b"b" * 32))
    data = index_fmt.encode_location(loc)
    assert len(data) == index_fmt.LOCATION_SIZE + 32
    assert index_fmt.decode_location(data) == loc
    with pytest.raises(CorruptError):  # a delta entry without its base
        index_fmt.decode_location(data[: index_fmt.LOCATION_SIZE])
    full = ChunkLocation(PackId(bytes(16)), 16, 100, 4096, codec.CODEC_ZSTD, 1)
    with pytest.raises(CorruptError):  # a base on an entry stored full
        index_fmt.decode_location(index_fmt.encode_location(full) + b"b" * 32)


def test_config_delta_only_in_format_3(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "r", delta=True) as repo:
        assert repo.config.format_version == 3 and repo.deltas
    doc = json.loads((tmp_path / "r" / "config").read_bytes())
    assert doc["delta"] is True and doc["format_version"] == 3
    for edit in ({"delta": False}, {"format_version": 2}):
        changed = dict(doc, **edit)
        del changed["checksum"]
        with pytest.raises(CorruptError):
            config_fmt.decode(json.dumps(changed).encode())
    with Repository.init(tmp_path / "plain") as repo:
        assert repo.config.format_version == 2 and not repo.deltas
        assert "delta" not in (tmp_path / "plain" / "config").read_text()


# -- end to end ------------------------------------------------------------------------------------


def test_changed_chunks_are_stored_as_deltas_and_read_back(tmp_path: Path) -> None:
    images = day_images(tmp_path, 4)
    ids = commit_days(tmp_path / "delta", images)
    full_ids = commit_days(tmp_path / "full", images, delta=False)
    with Repository.open(tmp_path / "delta", Mode.READ) as repo:
        assert not deltas_of(repo, ids[0])
        for sid in ids[1:]:
            found = deltas_of(repo, sid)
            assert len(found) >= 5
            for base in found.values():  # one level: every base is stored full
                loc = repo.get_location(base)
                assert loc is not None and loc.codec != codec.CODEC_DELTA and loc.base is None
        for sid, image in zip(ids, images, strict=True):
            assert content_sha(repo, sid) == file_sha(image)
        delta_bytes = repo.space_totals().stored_bytes
    with Repository.open(tmp_path / "full", Mode.READ) as repo:
        assert not deltas_of(repo, full_ids[-1])
        full_bytes = repo.space_totals().stored_bytes
    assert delta_bytes < full_bytes / 2
    # through the real command: checkout of every day, verify reading every chunk
    for sid, image in zip(ids, images, strict=True):
        out = tmp_path / f"out-{sid.hex()[:8]}"
        done = run_snap("checkout", sid.hex(), "-o", str(out), "-r", str(tmp_path / "delta"))
        assert done.returncode == 0, done.stderr
        assert file_sha(out) == file_sha(image)
    done = run_snap("verify", "--read-data", "-r", str(tmp_path / "delta"))
    assert done.returncode == 0, done.stderr + done.stdout
    done = run_snap("stats", "--json", "-r", str(tmp_path / "delta"))
    doc = json.loads(done.stdout)
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "snap.schema.json").read_text())
    jsonschema.validate(doc, {**schema, "$ref": "#/$defs/stats"})
    deltas = doc["deltas"]
    assert deltas["delta_chunks"] >= 5 and deltas["full_chunks"] >= 1
    assert 0 < deltas["delta_stored_bytes"] < deltas["delta_saved_bytes"]


def test_gc_keeps_a_base_while_a_live_delta_needs_it(tmp_path: Path) -> None:
    images = day_images(tmp_path, 2)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    with Repository.open(root, Mode.EXCLUSIVE) as repo:
        bases = set(deltas_of(repo, ids[1]).values())
        assert bases
        # the bases are named by day 0 only: removing it leaves them needed by day 1
        named_later = {
            r.chunk_id for sid in ids[1:] for r in repo.iter_records(sid) if isinstance(r, ChunkRef)
        }
        only_needed = bases - named_later
        assert only_needed
        repo.remove_snapshot(ids[0])
        collect(repo)
        for base in only_needed:
            loc = repo.get_location(base)
            assert loc is not None and loc.refcount >= 1
        for sid, image in zip(ids[1:], images[1:], strict=True):
            assert content_sha(repo, sid) == file_sha(image)
    done = run_snap("verify", "--read-data", "-r", str(root))
    assert done.returncode == 0, done.stderr + done.stdout
    with Repository.open(root, Mode.EXCLUSIVE) as repo:  # once nothing needs them, they go
        for sid in ids[1:]:
            repo.remove_snapshot(sid)
        collect(repo)
        assert all(repo.get_location(base) is None for base in bases)
        assert repo.space_totals().stored_bytes == 0


def test_a_delta_whose_base_was_freed_is_stored_again(tmp_path: Path) -> None:
    """A gc killed after freeing an unreferenced base but before its unreferenced deltas
    leaves a delta without its base: a commit must not dedup against it."""
    images = day_images(tmp_path, 1)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    with Repository.open(root, Mode.EXCLUSIVE) as repo:
        found = deltas_of(repo, ids[1])
        for sid in ids:
            repo.remove_snapshot(sid)
        with repo._index.write() as w:  # what the killed gc did: the bases only
            for base in set(found.values()):
                w.delete(base)
        assert not any(repo.has_chunks(list(found)))
        sid = commit_file(repo, images[1], name="vm.img").snapshot.id
        assert content_sha(repo, sid) == file_sha(images[1])
    done = run_snap("verify", "--read-data", "-r", str(root))
    assert done.returncode == 0, done.stderr + done.stdout


def test_verify_reports_a_damaged_base_with_every_snapshot_needing_it(tmp_path: Path) -> None:
    images = day_images(tmp_path, 2)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    with Repository.open(root, Mode.WRITE) as repo:
        found = deltas_of(repo, ids[2])
        named = {r.chunk_id for sid in ids[1:] for r in repo.iter_records(sid) if isinstance(r, ChunkRef)}
        base = next(b for b in found.values() if b not in named)  # named by day 0 alone
        loc = repo.get_location(base)
        assert loc is not None
        needing = {sid for sid in ids[1:] if base in deltas_of(repo, sid).values()}
        repo.remove_snapshot(ids[0])
        pack = repo._packs.path(loc.pack_id)
    flip(pack, loc.offset + 52 + loc.stored_size // 2)
    done = run_snap("verify", "--read-data", "--json", "-r", str(root))
    assert done.returncode != 0
    report = json.loads(done.stdout)
    about_base = [p for p in report["problems"] if base.hex()[:16] in p["detail"]]
    assert about_base, report
    assert {s for p in about_base for s in p["snapshots"]} >= {sid.hex() for sid in needing}


def test_repair_rebuilds_bases_from_the_packs(tmp_path: Path) -> None:
    images = day_images(tmp_path, 2)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    for args in (["repair"], ["repair", "--read-data"]):  # rebuilt from the packs; every chunk read
        done = run_snap(*args, "-r", str(root))
        assert done.returncode == 0, done.stderr
    with Repository.open(root, Mode.READ) as repo:
        assert deltas_of(repo, ids[2])
        for sid, image in zip(ids, images, strict=True):
            assert content_sha(repo, sid) == file_sha(image)
    done = run_snap("verify", "--read-data", "-r", str(root))
    assert done.returncode == 0, done.stderr + done.stdout


def test_init_delta_on_the_command_line(tmp_path: Path) -> None:
    done = run_snap("init", str(tmp_path / "r"), "--delta", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delta"] is True
    assert json.loads((tmp_path / "r" / "config").read_text())["format_version"] == 3


def test_nbd_reads_and_in_place_checkout_through_deltas(tmp_path: Path) -> None:
    images = day_images(tmp_path, 2)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    with Repository.open(root, Mode.READ) as repo:
        assert deltas_of(repo, ids[2])
        newest = repo.load_info(ids[2])
        want = images[2].read_bytes()
        with SnapshotReader(repo, newest, cache_bytes=300_000) as reader:
            rng = random.Random(3)
            for _ in range(40):  # scattered reads, as a guest's
                at = rng.randrange(SIZE - 5000)
                assert reader.read(at, 5000) == want[at : at + 5000]
        target = tmp_path / "disk.img"
        target.write_bytes(images[0].read_bytes())  # day 0 on disk, brought to day 2 in place
        checkout_in_place(repo, newest, str(target))
        assert file_sha(target) == file_sha(images[2])


def test_quota_planning_counts_what_removing_frees_with_bases(tmp_path: Path) -> None:
    images = day_images(tmp_path, 3)
    root = tmp_path / "r"
    ids = commit_days(root, images)
    with Repository.open(root, Mode.EXCLUSIVE) as repo:
        planned = list(repo.freed_by_removing(ids[:2]))  # the first kept, the second from manifests
        before = repo.space_totals().stored_bytes
        repo.remove_snapshot(ids[0])
        after_one = repo.space_totals().stored_bytes
        repo.remove_snapshot(ids[1])
        after_two = repo.space_totals().stored_bytes
        collect(repo)
        for sid, image in zip(ids[2:], images[2:], strict=True):
            assert content_sha(repo, sid) == file_sha(image)
    assert planned == [before - after_one, before - after_two]
    assert before - after_two < before / 2  # day 0's chunks are mostly bases still needed


def test_chain_benchmark_runs(tmp_path: Path) -> None:
    """bench/chain.py on a tiny chain (snap and snap --delta only): every day restored
    identical, and the delta repository the smaller."""
    source = tmp_path / "source.img"
    source.write_bytes(text_bytes(2 << 20, 7) + bytes(1 << 20) + random.Random(7).randbytes(1 << 20))
    script = Path(__file__).resolve().parent.parent / "bench" / "chain.py"
    args = ["--source", str(source), "--size", "4M", "--days", "3", "--work", str(tmp_path / "w")]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--tools", "snap,snap-delta"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = {r["tool"]: r for r in json.loads((tmp_path / "w" / "chain.json").read_text())}
    for result in results.values():
        assert all(r["identical"] for r in result["restore"].values())
        assert len(result["repo_bytes"]) == 4
    assert results["snap-delta"]["repo_bytes"][-1] < results["snap"]["repo_bytes"][-1]


def test_bench_py_runs_the_chain(tmp_path: Path) -> None:
    """``bench/bench.py --chain`` hands day 0 (here: --image) to bench/chain.py, snap with
    snap --delta."""
    source = tmp_path / "source.img"
    source.write_bytes(text_bytes(3 << 20, 8) + random.Random(8).randbytes(1 << 20) + bytes(12 << 20))
    script = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
    args = ["--chain", "clustered", "--image", str(source), "--size", "16M", "--days", "2", "--tools", "snap"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "w" / "chain-clustered" / "chain.json").read_text())
    assert [r["tool"] for r in results] == ["snap", "snap-delta"]
    assert all(r["identical"] for result in results for r in result["restore"].values())
    assert all(len(result["repo_bytes"]) == 3 for result in results)


def test_tree_snapshot_files_stored_as_deltas_and_restored(tmp_path: Path) -> None:
    images = day_images(tmp_path, 2)
    src = tmp_path / "src"
    (src / "vm").mkdir(parents=True)
    (src / "notes.txt").write_bytes(b"the guest's disk\n")
    root = tmp_path / "r"
    ids = []
    with Repository.init(root, chunker=CHUNKER, pack_target_size=1 << 20, delta=True) as repo:
        for image in images:
            (src / "vm" / "disk.img").write_bytes(image.read_bytes())
            ids.append(commit_tree(repo, src).snapshot.id)
        totals = repo.delta_totals()
        assert totals is not None and totals.delta_chunks >= 5
        for sid, image in zip(ids, images, strict=True):
            out = tmp_path / f"out-{sid.hex()[:8]}"
            restore_tree(repo, repo.load_info(sid), str(out))
            assert file_sha(out / "vm" / "disk.img") == file_sha(image)
            assert (out / "notes.txt").read_bytes() == b"the guest's disk\n"
        repo.remove_snapshot(ids[0])
        repo.upgrade()
        collect(repo)
        out = tmp_path / "after-gc"
        restore_tree(repo, repo.load_info(ids[2]), str(out))
        assert file_sha(out / "vm" / "disk.img") == file_sha(images[2])
    done = run_snap("verify", "--read-data", "-r", str(root))
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.mark.slow
def test_commit_of_deltas_killed_at_many_points(tmp_path: Path) -> None:
    """``snap commit`` of day 2 (its changed chunks stored as deltas against day 0's) killed
    with SIGKILL at moments spread over its run: each time, the snapshots there read back
    identical, the commit run again succeeds, with deltas, and verify --read-data is clean."""
    images = day_images(tmp_path, 2)
    golden = tmp_path / "golden"
    ids = commit_days(golden, images[:2])
    argv = ["commit", str(images[2]), "--name", "vm.img", "--json"]
    start = time.perf_counter()
    assert run_snap(*argv, "-r", str(copy_repository(golden, tmp_path / "timed"))).returncode == 0
    span = time.perf_counter() - start
    landed = 0
    for n in range(4):  # (the first part of the span is the process starting)
        root = copy_repository(golden, tmp_path / "r")
        commit = subprocess.Popen(
            [*SNAP, *argv, "-r", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(span * (0.4 + 0.55 * n / 3))
        commit.send_signal(signal.SIGKILL)
        landed += commit.wait() == -signal.SIGKILL
        with Repository.open(root, Mode.WRITE) as repo:  # the next writer's recovery
            for sid, image in zip(ids, images, strict=False):
                assert content_sha(repo, sid) == file_sha(image), f"kill {n}"
            sid = commit_file(repo, images[2], name="vm.img").snapshot.id
            assert deltas_of(repo, sid) and content_sha(repo, sid) == file_sha(images[2])
        done = run_snap("verify", "--read-data", "-r", str(root))
        assert done.returncode == 0, f"kill {n}: {done.stderr!r}"
    assert landed >= 2, f"only {landed} kills landed mid-commit"


@pytest.mark.slow
def test_gc_killed_at_many_points_never_leaves_a_delta_without_its_base(tmp_path: Path) -> None:
    """``snap gc`` of a delta repository, after the snapshots that named the bases were
    removed, killed with SIGKILL at moments spread over its run: each time the next commit
    (which dedups against what is left) and gc succeed, and every snapshot checks out."""
    images = day_images(tmp_path, 3)
    golden = tmp_path / "golden"
    ids = commit_days(golden, images)
    for sid in ids[:2]:
        assert run_snap("rm", sid.hex(), "-r", str(golden)).returncode == 0
    start = time.perf_counter()
    assert run_snap("gc", "-r", str(copy_repository(golden, tmp_path / "timed"))).returncode == 0
    span = time.perf_counter() - start
    for n in range(8):
        root = copy_repository(golden, tmp_path / "r")
        gc = subprocess.Popen(
            [*SNAP, "gc", "-r", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(span * (n + 1) / 9)
        gc.send_signal(signal.SIGKILL)
        gc.wait()
        done = run_snap("commit", str(images[3]), "--name", "vm.img", "--json", "-r", str(root))
        assert done.returncode == 0, done.stderr
        again = json.loads(done.stdout)["id"]
        assert run_snap("gc", "-r", str(root)).returncode == 0
        for ref, image in ((ids[2].hex(), images[2]), (ids[3].hex(), images[3]), (str(again), images[3])):
            out = tmp_path / "out.img"
            done = run_snap("checkout", ref, "-o", str(out), "-f", "-r", str(root))
            assert done.returncode == 0, done.stderr
            assert file_sha(out) == file_sha(image)
        done = run_snap("verify", "--read-data", "-r", str(root))
        assert done.returncode == 0, done.stderr + done.stdout


def test_a_delta_past_the_threshold_is_stored_full_and_becomes_the_next_keyframe(tmp_path: Path) -> None:
    """Changes accumulate against a keyframe: each day rewrites two more 4 KiB blocks of every
    64 KiB chunk (fixed-size chunks: each stays at its place), so a chunk's delta against its
    keyframe grows day after day until it no longer pays (deltacodec.KEEP_BELOW); that day the
    chunk is stored full, and the next day's chunk at its place is a delta against it."""
    chunk, chunks, days = 64 << 10, 12, 6
    rng = random.Random(5)
    img = bytearray(text_bytes(chunk * chunks, 5))
    root = tmp_path / "r"
    Repository.init(
        root, chunker=ChunkerParams("fixed", chunk, chunk, chunk), pack_target_size=1 << 20, delta=True
    ).close()
    ids, images = [], []
    for day in range(days + 1):
        if day:
            for i in range(chunks):
                for block in rng.sample(range(chunk // 4096), 2):
                    at = i * chunk + block * 4096
                    img[at : at + 4096] = rng.randbytes(4096)
        path = tmp_path / f"day{day}.img"
        path.write_bytes(img)
        images.append(path)
        with Repository.open(root, Mode.WRITE) as repo:
            ids.append(commit_file(repo, path, name="vm.img").snapshot.id)
    refreshed = 0
    with Repository.open(root, Mode.READ) as repo:
        # per day, per place: (chunk id, its base or None when stored full)
        places: list[list[tuple[ChunkId, ChunkId | None]]] = []
        for sid in ids:
            row = []
            for record in repo.iter_records(sid):
                if not isinstance(record, ChunkRef):
                    continue
                loc = repo.get_location(record.chunk_id)
                assert loc is not None
                if loc.codec == codec.CODEC_DELTA:  # each delta pays against storing it full
                    full = codec.encode(repo.get_chunk(record.chunk_id), 3)[1]
                    assert loc.stored_size < len(full) * deltacodec.KEEP_BELOW * 1.1
                row.append((record.chunk_id, loc.base))
            places.append(row)
        for i in range(chunks):
            history = [row[i] for row in places]
            assert history[0][1] is None and history[1][1] == history[0][0]  # day 1: against day 0
            keyframe = history[0][0]
            for day in range(1, days + 1):
                cid, base = history[day]
                if base is None:  # stored full: the new keyframe
                    assert history[day - 1][1] is not None, f"place {i}: stored full twice running"
                    keyframe = cid
                    refreshed += day < days
                else:
                    assert base == keyframe, f"place {i}, day {day}: a delta against an old keyframe"
        for sid, image in zip(ids, images, strict=True):
            assert content_sha(repo, sid) == file_sha(image)
    assert refreshed >= chunks  # every place got a new keyframe, and a delta against it after
    done = run_snap("verify", "--read-data", "-r", str(root))
    assert done.returncode == 0, done.stderr + done.stdout
