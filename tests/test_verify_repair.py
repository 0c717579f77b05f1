"""snap verify and snap repair.

verify: a clean repository verifies; each kind of damage is reported, naming exactly the
snapshots it affects, with exit 5; --sample with --seed reads a repeatable subset.
repair: rebuilds a deleted or damaged index (the repository then verifies and checks out),
drops corrupt chunks with --read-data and names the snapshots that lost data, rewrites a
damaged pack header, and never deletes or changes pack data otherwise.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.errors import CorruptError, DamagedManifestsError
from snapstore.format.pack import PACK_HEADER_SIZE, RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkRef, SnapshotId
from snapstore.ops import gc
from tests.conftest import SMALL_CHUNKER, run_snap
from tests.helpers import cli, content_sha, copy_repository, flip, one_error_line, text_bytes

MiB = 1 << 20
DAMAGED = 5
JsonDoc = dict[str, Any]  # a parsed --json document: its values are whatever the JSON holds


@dataclass
class Base:
    path: Path
    digests: dict[str, str]  # snapshot id -> sha256 of its content
    sources: dict[str, bytes]  # snapshot id -> content


def _build(root: Path) -> Base:
    path = root / "base"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    rng = random.Random(5)
    v1 = bytearray(rng.randbytes(MiB) + text_bytes(MiB // 2, seed=5))
    v2 = bytearray(v1)
    for off in (100_000, 700_000, 1_300_000):
        v2[off : off + 30_000] = rng.randbytes(30_000)
    other = rng.randbytes(MiB * 3 // 4)
    base = Base(path, {}, {})
    src = root / "src"
    with Repository.open(path, Mode.WRITE) as r:
        for name, content in (("disk", bytes(v1)), ("disk", bytes(v2)), ("other", other)):
            src.write_bytes(content)
            sid = commit_file(r, src, name=name).snapshot.hex
            base.digests[sid] = hashlib.sha256(content).hexdigest()
            base.sources[sid] = content
    return base


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return _build(tmp_path_factory.mktemp("verify-base"))


@pytest.fixture
def repo(base: Base, tmp_path: Path) -> Path:
    return copy_repository(base.path, tmp_path / "repo")


# -- looking inside ---------------------------------------------------------------------------------


def users_of(root: Path) -> dict[ChunkId, set[str]]:
    """chunk id -> the snapshots (hex) that name it."""
    users: dict[ChunkId, set[str]] = {}
    with Repository.open(root) as r:
        for s in r.list_snapshots():
            for rec in r.iter_records(s.id):
                if isinstance(rec, ChunkRef):
                    users.setdefault(rec.chunk_id, set()).add(s.hex)
    return users


def location(root: Path, chunk_id: ChunkId) -> tuple[Path, int, int, int]:
    """(pack path, record offset, stored size, codec) of a chunk."""
    with Repository.open(root) as r:
        loc = r.get_location(chunk_id)
        assert loc is not None
        return r._packs.path(loc.pack_id), loc.offset, loc.stored_size, loc.codec


def chunk_of(root: Path, only: set[str], codec: int | None = None) -> ChunkId:
    """A chunk named by exactly the snapshots ``only`` (and stored with ``codec``)."""
    for cid, names in sorted(users_of(root).items()):
        if names == only and (codec is None or location(root, cid)[3] == codec):
            return cid
    raise AssertionError(f"no chunk used by exactly {only}")


def verify(root: Path, *args: str) -> tuple[int, JsonDoc]:
    res = cli("verify", "--json", *args, "-r", root)
    if res.code:
        line = one_error_line(res.err)
        assert "problem(s) found" in line or res.code != DAMAGED, line
    return res.code, res.json()


def assert_damage(root: Path, kind: str, affected: set[str], *args: str) -> JsonDoc:
    """verify exits 5, reports a problem of ``kind``, and names exactly ``affected``."""
    code, doc = verify(root, *args)
    assert code == DAMAGED, doc
    kinds = {p["kind"] for p in doc["problems"]}
    assert kind in kinds, doc["problems"]
    assert set(doc["affected_snapshots"]) == affected, doc["problems"]
    return doc


def snapshots_of(base: Base, name: str) -> set[str]:
    with Repository.open(base.path) as r:
        return {s.hex for s in r.list_snapshots() if s.name == name}


def checks_out(root: Path, base: Base, sids: set[str]) -> None:
    with Repository.open(root) as r:
        for sid in sids:
            assert content_sha(r, SnapshotId(bytes.fromhex(sid))) == base.digests[sid], sid[:12]


def pack_bytes(root: Path) -> dict[str, str]:
    """Every pack file's name -> sha256 of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "packs").rglob("*.pack"))
    }


# -- verify -------------------------------------------------------------------------------------------


def test_clean_repository_verifies(repo: Path, base: Base) -> None:
    code, doc = verify(repo)
    assert code == 0 and doc["ok"] and doc["problems"] == []
    assert doc["snapshot_count"] == 3 and len(doc["snapshots"]) == 3 and doc["chunks_read"] == 0
    assert {s["id"] for s in doc["snapshots"]} == set(base.digests)
    code, doc = verify(repo, "--read-data")
    assert code == 0 and doc["ok"]
    assert doc["chunks_read"] == doc["chunks"] > 100
    done = run_snap("verify", "--read-data", "-r", str(repo))  # the real command, human output
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert b"no problems" in done.stderr and b"Traceback" not in done.stderr


def test_missing_pack(repo: Path, base: Base) -> None:
    victim = chunk_of(repo, snapshots_of(base, "other"))
    pack = location(repo, victim)[0]
    with Repository.open(repo) as r, r._index.read() as t:
        in_pack = {cid for cid, loc in t.iter_locations() if r._packs.path(loc.pack_id) == pack}
    users = users_of(repo)
    expected = set().union(*(users.get(c, set()) for c in in_pack))
    pack.unlink()
    doc = assert_damage(repo, "pack", expected)
    missing = [p for p in doc["problems"] if "missing" in p["detail"]]
    assert len(missing) == 1, "one problem per missing pack, not one per chunk"


def test_truncated_pack(repo: Path, base: Base) -> None:
    victim = chunk_of(repo, snapshots_of(base, "other"))
    pack, offset, stored, _ = location(repo, victim)
    os.truncate(pack, offset + RECORD_HEADER_SIZE + stored // 2)  # cut inside its record
    users = users_of(repo)
    doc = assert_damage(repo, "pack", users[victim])
    assert any(victim.hex()[:16] in p["detail"] for p in doc["problems"])


@pytest.mark.parametrize("codec", [0, 1], ids=["raw", "zstd"])
def test_flipped_payload_byte(repo: Path, base: Base, codec: int) -> None:
    victim = chunk_of(repo, snapshots_of(base, "disk"), codec=codec)
    pack, offset, stored, _ = location(repo, victim)
    flip(pack, offset + RECORD_HEADER_SIZE + stored // 3)
    assert verify(repo)[0] == 0, "the structure check does not read payloads"
    assert_damage(repo, "data", snapshots_of(base, "disk"), "--read-data")


def test_flipped_record_header_byte(repo: Path, base: Base) -> None:
    disk = snapshots_of(base, "disk")
    victim = chunk_of(repo, disk)
    pack, offset, _, _ = location(repo, victim)
    flip(pack, offset + 40)  # the raw size field: the header checksum no longer matches
    assert_damage(repo, "pack", disk)  # found without --read-data


def test_deleted_index(repo: Path, base: Base) -> None:
    for f in (repo / "index").iterdir():
        f.unlink()
    doc = assert_damage(repo, "index", set(base.digests))
    assert [p["kind"] for p in doc["problems"]] == ["index"]
    assert "missing" in doc["problems"][0]["detail"]
    assert not (repo / "index" / "data.mdb").exists(), "verify must not write to the repository"


def _edit_index(root: Path, chunk_id: bytes, value: bytes | None) -> None:
    """Replace (None: delete) one raw entry of the chunks table."""
    env = lmdb.open(str(root / "index"), max_dbs=4, subdir=True)
    try:
        db = env.open_db(b"chunks")
        with env.begin(write=True) as txn:
            if value is None:
                txn.delete(chunk_id, db=db)
            else:
                txn.put(chunk_id, value, db=db)
    finally:
        env.close()


def _raw_entry(root: Path, chunk_id: bytes) -> bytes:
    env = lmdb.open(str(root / "index"), max_dbs=4, subdir=True, readonly=True)
    try:
        with env.begin(db=env.open_db(b"chunks", create=False)) as txn:
            value = txn.get(chunk_id)
            assert value is not None
            return bytes(value)
    finally:
        env.close()


@pytest.mark.parametrize("damage", ["short", "codec", "huge-size", "offset", "refcount", "owners"])
def test_corrupt_index_entry(repo: Path, base: Base, damage: str) -> None:
    other = snapshots_of(base, "other")
    victim = chunk_of(repo, other)
    raw = _raw_entry(repo, victim)
    entry = "<16sQIIBI32s"  # index version 2: ... refcount, owners
    pack_id, offset, stored, size, codec, refs, owners = struct.unpack(entry, raw)
    value, kind = {
        "short": (raw[:-1], "index"),
        "codec": (struct.pack(entry, pack_id, offset, stored, size, 9, refs, owners), "index"),
        "huge-size": (
            struct.pack(entry, pack_id, offset, 0xFFFFFFF0, 0xFFFFFFFF, codec, refs, owners),
            "index",
        ),
        "offset": (struct.pack(entry, pack_id, offset + 1, stored, size, codec, refs, owners), "pack"),
        "refcount": (struct.pack(entry, pack_id, offset, stored, size, codec, refs + 1, owners), "refcount"),
        "owners": (struct.pack(entry, pack_id, offset, stored, size, codec, refs, bytes(32)), "refcount"),
    }[damage]
    _edit_index(repo, victim, value)
    assert_damage(repo, kind, other)
    # A checkout of an affected snapshot fails cleanly (or, for a count, is unaffected).
    out = repo.parent / "out"
    res = cli("checkout", next(iter(other)), "-o", out, "-r", repo)
    if damage in ("refcount", "owners"):
        assert (
            res.code == 0 and hashlib.sha256(out.read_bytes()).hexdigest() == base.digests[next(iter(other))]
        )
    else:
        assert res.code in (4, 5), res.err
        one_error_line(res.err)
        assert not out.exists()


@pytest.mark.parametrize("where", ["header", "records", "trailer", "footer"])
def test_manifest_bit_flip(repo: Path, base: Base, where: str) -> None:
    sid = next(iter(snapshots_of(base, "other")))
    path = repo / "snapshots" / sid
    size = path.stat().st_size
    offset = {"header": 3, "records": 200, "trailer": size - 30, "footer": size - 2}[where]
    flip(path, offset)
    res = cli("verify", "--json", "-r", repo)
    if where in ("trailer", "footer"):
        # The trailer is what 'snap log' reads: a damaged one can stop the listing itself.
        assert res.code in (4, DAMAGED), res.err
        if res.code == 4:
            assert "manifest" in one_error_line(res.err)
            return
    assert res.code == DAMAGED, res.err
    doc = res.json()
    assert {p["kind"] for p in doc["problems"]} >= {"manifest"}
    assert sid in doc["affected_snapshots"]
    assert set(doc["affected_snapshots"]) <= {sid, *snapshots_of(base, "other")}


def test_missing_chunk_referenced_by_a_manifest(repo: Path, base: Base) -> None:
    disk = snapshots_of(base, "disk")
    victim = chunk_of(repo, disk)
    _edit_index(repo, victim, None)
    doc = assert_damage(repo, "missing-chunk", disk)
    assert any(victim.hex()[:16] in p["detail"] for p in doc["problems"])


def test_wrong_refcounts(repo: Path, base: Base) -> None:
    disk = snapshots_of(base, "disk")
    victims = [chunk_of(repo, disk), chunk_of(repo, snapshots_of(base, "other"))]
    for victim, delta in zip(victims, (-1, +3), strict=True):
        raw = bytearray(_raw_entry(repo, victim))
        (refs,) = struct.unpack_from("<I", raw, 33)
        struct.pack_into("<I", raw, 33, refs + delta)
        _edit_index(repo, victim, bytes(raw))
    doc = assert_damage(repo, "refcount", disk | snapshots_of(base, "other"))
    assert sum(p["kind"] == "refcount" for p in doc["problems"]) == 2


def test_killed_commit_leftovers_are_not_problems(
    repo: Path, base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A counted pending manifest, an unfinished one and an unindexed pack are states recovery
    handles; verify accepts them."""
    src = tmp_path / "new"
    src.write_bytes(random.Random(8).randbytes(300_000))
    with Repository.open(repo, Mode.WRITE) as r:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(r._snapshots, "publish", lambda snapshot_id: None)
            with pytest.raises(CorruptError):  # it reads back the snapshot it did not publish
                commit_file(r, src)
        pending = r._snapshots.list_pending()
        assert len(pending) == 1
        with r._index.read() as t:
            assert t.is_counted(pending[0])
        # Prevent close() from dropping anything: this is what SIGKILL leaves.
        monkeypatch.setattr(r._appender, "abort", lambda: None)
    (repo / "tmp" / "part-0123456789abcdef").write_bytes(b"SNAPMFST half a manifest")
    orphan = repo / "packs" / "ab" / ("ab" + "0" * 30 + ".pack")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"")  # a commit killed right after creating its pack
    code, doc = verify(repo, "--read-data")
    assert code == 0, doc


def test_sample_with_seed_is_repeatable(repo: Path, base: Base) -> None:
    users = users_of(repo)
    damaged = [cid for cid in sorted(users)][::5]  # every fifth chunk
    for cid in damaged:
        pack, offset, stored, _ = location(repo, cid)
        flip(pack, offset + RECORD_HEADER_SIZE + stored // 2)
    runs: dict[int, list[list[str]]] = {}
    for seed in (1, 2, 1, 2):
        code, doc = verify(repo, "--sample", "30", "--seed", str(seed))
        found = sorted(p["detail"] for p in doc["problems"])
        assert doc["chunks_read"] == round(doc["chunks"] * 0.3)
        assert code == (DAMAGED if found else 0)
        runs.setdefault(seed, []).append(found)
    assert runs[1][0] == runs[1][1] and runs[2][0] == runs[2][1], "same seed, same chunks read"
    assert runs[1][0] != runs[2][0], "another seed reads other chunks"
    assert 0 < len(runs[1][0]) < len(damaged)
    code, doc = verify(repo, "--sample", "100", "--seed", "3")
    assert len(doc["problems"]) == len(damaged)


# -- repair -------------------------------------------------------------------------------------------


def _repair(root: Path, *args: str) -> tuple[int, JsonDoc]:
    res = cli("repair", "--json", *args, "-r", root)
    if res.code:
        one_error_line(res.err)
    return res.code, res.json()


def test_repair_rebuilds_a_deleted_index(repo: Path, base: Base, tmp_path: Path) -> None:
    before = pack_bytes(repo)
    for f in (repo / "index").iterdir():
        f.unlink()
    code, doc = _repair(repo)
    assert code == 0 and doc["damaged_snapshots"] == []
    assert doc["chunks_indexed"] > 100
    assert verify(repo, "--read-data")[0] == 0
    assert pack_bytes(repo) == before
    for sid, content in base.sources.items():
        out = tmp_path / f"{sid[:8]}.out"
        assert cli("checkout", sid, "-o", out, "-r", repo).code == 0
        assert out.read_bytes() == content


def test_readers_use_a_temporary_index_when_it_is_missing(repo: Path, base: Base, tmp_path: Path) -> None:
    for f in (repo / "index").iterdir():
        f.unlink()
    sid = next(iter(base.sources))
    out = tmp_path / "out"
    res = cli("checkout", sid, "-o", out, "-r", repo)
    assert res.code == 0, res.err
    assert out.read_bytes() == base.sources[sid]
    assert "snap: warning: the index is missing" in res.err and "snap repair" in res.err
    res = cli("log", "--json", "-r", repo)
    assert res.code == 0 and len(res.json()) == 3
    assert not (repo / "index" / "data.mdb").exists(), "a reader never writes to the repository"
    # The next writer rebuilds it in place.
    res = cli("pin", sid, "-r", repo)
    assert res.code == 0, res.err
    assert (repo / "index" / "data.mdb").exists()
    assert verify(repo, "--read-data")[0] == 0


def test_damaged_index_file(repo: Path, base: Base, tmp_path: Path) -> None:
    """An index LMDB cannot open: writers refuse (exit 4, naming repair), readers and verify
    carry on with a temporary index, repair replaces it."""
    data = repo / "index" / "data.mdb"
    blob = bytearray(data.read_bytes())
    blob[:4096] = random.Random(3).randbytes(4096)  # both meta pages live in the first pages
    blob[4096:8192] = random.Random(4).randbytes(4096)
    data.write_bytes(bytes(blob))
    src = tmp_path / "new"
    src.write_bytes(b"new data" * 1000)
    res = cli("commit", src, "-r", repo)
    assert res.code == 4
    assert "snap repair" in one_error_line(res.err)
    sid = next(iter(base.sources))
    res = cli("checkout", sid, "-o", tmp_path / "out", "-r", repo)
    assert res.code == 0 and "index is damaged" in res.err
    assert (tmp_path / "out").read_bytes() == base.sources[sid]
    assert_damage(repo, "index", set(base.digests))
    code, _ = _repair(repo)
    assert code == 0
    assert verify(repo, "--read-data")[0] == 0
    assert cli("commit", src, "-r", repo).code == 0


def test_repair_read_data_drops_corrupt_chunks_and_names_the_damaged_snapshots(
    repo: Path, base: Base, tmp_path: Path
) -> None:
    disk = snapshots_of(base, "disk")
    victim = chunk_of(repo, disk)
    pack, offset, stored, _ = location(repo, victim)
    flip(pack, offset + RECORD_HEADER_SIZE + stored // 2)
    before = pack_bytes(repo)
    code, doc = _repair(repo)  # without --read-data the payload is not read
    assert code == 0 and doc["dropped_corrupt"] == 0
    code, doc = _repair(repo, "--read-data")
    assert code == DAMAGED
    assert doc["dropped_corrupt"] == 1
    assert set(doc["damaged_snapshots"]) == disk
    assert pack_bytes(repo) == before, "repair changed pack data"
    assert_damage(repo, "missing-chunk", disk)
    checks_out(repo, base, snapshots_of(base, "other"))
    # gc does not free the dropped record's pack while it holds other live chunks, and the
    # undamaged snapshots survive it.
    with Repository.open(repo, Mode.EXCLUSIVE) as r:
        gc.collect(r)
    checks_out(repo, base, snapshots_of(base, "other"))
    # Committing the same content again stores a good copy and heals both snapshots.
    src = tmp_path / "src"
    for sid in sorted(disk):
        src.write_bytes(base.sources[sid])
        assert cli("commit", src, "--name", "disk", "-r", repo).code == 0
    code, doc = verify(repo, "--read-data")
    assert code == 0, doc["problems"]
    checks_out(repo, base, disk)


def test_repair_never_deletes_pack_data(repo: Path, base: Base) -> None:
    """Damaged packs, a missing chunk and a damaged manifest: repair reports, changes no pack
    byte (but a damaged pack header) and removes no pack."""
    other = snapshots_of(base, "other")
    victim = chunk_of(repo, other)
    pack, offset, _, _ = location(repo, victim)
    flip(pack, offset + 10)  # a record header: the record can no longer be found
    flip(pack, 2)  # the pack header
    sid = next(iter(snapshots_of(base, "disk")))
    flip(repo / "snapshots" / sid, 100)
    before = pack_bytes(repo)
    code, doc = _repair(repo, "--read-data")
    assert code == DAMAGED
    assert set(doc["damaged_snapshots"]) == other | {sid}
    assert doc["damaged_manifests"] == [sid]
    assert len(doc["rewritten_pack_headers"]) == 1
    after = pack_bytes(repo)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [pack.name]
    data = pack.read_bytes()
    assert data[:PACK_HEADER_SIZE] == b"SNAPPACK\x02\x00\x00\x00\x00\x00\x00\x00"
    flip(pack, 2)  # undo our flip: the rest of the pack is byte for byte what it was
    assert (
        hashlib.sha256(pack.read_bytes()[PACK_HEADER_SIZE:]).hexdigest()
        == hashlib.sha256(data[PACK_HEADER_SIZE:]).hexdigest()
    )


def test_repair_rewrites_a_damaged_pack_header(repo: Path, base: Base) -> None:
    victim = chunk_of(repo, snapshots_of(base, "other"))
    pack = location(repo, victim)[0]
    flip(pack, 0, 0xFF)
    doc = assert_damage(repo, "pack", set())
    assert "bad pack magic" in doc["problems"][0]["detail"]
    checks_out(repo, base, set(base.digests))  # the chunks are still readable
    code, doc = _repair(repo)
    assert code == 0 and len(doc["rewritten_pack_headers"]) == 1
    assert verify(repo, "--read-data")[0] == 0


def test_rebuild_keeps_the_good_copy_of_a_duplicated_chunk(repo: Path, base: Base, tmp_path: Path) -> None:
    """The same chunks in two packs (a pack copied in from a twin repository), the indexed copy
    damaged: the rebuilt index points at the good copy and nothing good is listed as garbage."""
    twin = tmp_path / "twin"
    Repository.init(twin, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    sid = next(iter(snapshots_of(base, "other")))
    src = tmp_path / "src"
    src.write_bytes(base.sources[sid])
    with Repository.open(twin, Mode.WRITE) as r:
        commit_file(r, src, name="other")
    for p in (twin / "packs").rglob("*.pack"):
        dst = repo / "packs" / p.parent.name / p.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(p.read_bytes())
    victim = chunk_of(repo, {sid})
    pack, offset, stored, _ = location(repo, victim)
    flip(pack, offset + RECORD_HEADER_SIZE + stored // 2)
    code, doc = _repair(repo, "--read-data")
    assert code == 0, doc
    assert doc["dropped_corrupt"] == 0 and doc["duplicate_records"] > 0
    assert verify(repo, "--read-data")[0] == 0
    with Repository.open(repo, Mode.EXCLUSIVE) as r:
        gc.collect(r)
    assert verify(repo, "--read-data")[0] == 0
    checks_out(repo, base, set(base.digests))


def test_a_killed_index_rebuild_leaves_no_partial_index(
    repo: Path, base: Base, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapstore import recovery

    for f in (repo / "index").iterdir():
        f.unlink()
    real = recovery.recount

    def die(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt  # like a kill: after the chunks, before the counts

    monkeypatch.setattr(recovery, "recount", die)
    with pytest.raises(KeyboardInterrupt):
        Repository.open(repo, Mode.WRITE)
    assert not (repo / "index" / "data.mdb").exists(), "a partial index was put in place"
    assert [p.name for p in (repo / "tmp").iterdir() if p.name.startswith("index-")]
    monkeypatch.setattr(recovery, "recount", real)
    with Repository.open(repo, Mode.WRITE):
        pass
    assert not [p.name for p in (repo / "tmp").iterdir()], "the unfinished build was not removed"
    assert verify(repo, "--read-data")[0] == 0
    checks_out(repo, base, set(base.digests))


def test_rebuilt_counts_keep_a_damaged_manifests_chunks(repo: Path, base: Base) -> None:
    """Counting a damaged manifest as far as it reads keeps gc from freeing its chunks (and
    while it is damaged gc frees nothing at all: it may name any chunk)."""
    sid = next(iter(snapshots_of(base, "other")))
    path = repo / "snapshots" / sid
    flip(path, path.stat().st_size - 30)  # its trailer: every chunk record still reads
    for f in (repo / "index").iterdir():
        f.unlink()
    code, doc = _repair(repo)
    assert code == DAMAGED and doc["damaged_manifests"] == [sid]
    with Repository.open(repo, Mode.EXCLUSIVE) as r:
        with r._index.read() as t:
            counts = {cid: loc.refcount for cid, loc in t.iter_locations()}
        assert all(counts.values())  # every chunk counted, the damaged manifest's too
        with pytest.raises(DamagedManifestsError) as blocked:
            gc.plan_for(r)
        assert blocked.value.snapshot_ids == [bytes.fromhex(sid)]
    flip(path, path.stat().st_size - 30)  # undone: the snapshot is whole again
    checks_out(repo, base, set(base.digests))


def test_a_damaged_manifest_does_not_stop_checkout_of_the_others(
    repo: Path, base: Base, tmp_path: Path
) -> None:
    """'snap log' lists every snapshot or fails (exit 4, naming the manifest); checkout and
    show of another snapshot still work (with a warning), and naming the damaged one gives
    its error."""
    damaged = next(iter(snapshots_of(base, "other")))
    path = repo / "snapshots" / damaged
    path.write_bytes(path.read_bytes()[:-20])  # its trailer is gone
    res = cli("log", "-r", repo)
    assert res.code == 4 and damaged[:12] in one_error_line(res.err)
    for sid in snapshots_of(base, "disk"):
        out = tmp_path / sid[:8]
        res = cli("checkout", sid[:10], "-o", out, "-r", repo)
        assert res.code == 0, res.err
        assert out.read_bytes() == base.sources[sid]
        assert res.err.startswith(f"snap: warning: manifest {damaged[:12]}")
    res = cli("checkout", "latest", "--name", "disk", "-o", tmp_path / "latest", "-r", repo)
    assert res.code == 0, res.err
    res = cli("checkout", damaged, "-o", tmp_path / "x", "-r", repo)
    assert res.code == 4 and damaged[:12] in one_error_line(res.err)
    res = cli("checkout", "ffff", "-o", tmp_path / "x", "-r", repo)
    assert res.code == 3, res.err


def test_a_snapshot_with_a_damaged_manifest_can_be_removed(repo: Path, base: Base) -> None:
    damaged = next(iter(snapshots_of(base, "other")))
    path = repo / "snapshots" / damaged
    path.write_bytes(path.read_bytes()[:-20])
    assert_damage(repo, "manifest", {damaged})
    res = cli("rm", damaged[:8], "-r", repo)
    assert res.code == 0, res.err
    assert f"removed {damaged[:12]} (its manifest is damaged)" in res.out
    assert verify(repo, "--read-data")[0] == 0
    assert cli("gc", "-r", repo).code == 0
    assert verify(repo, "--read-data")[0] == 0
    checks_out(repo, base, snapshots_of(base, "disk"))
    res = cli("log", "--json", "-r", repo)
    assert res.code == 0 and {s["id"] for s in res.json()} == snapshots_of(base, "disk")


def test_header_flip_then_repair_then_gc_loses_nothing(repo: Path, base: Base) -> None:
    """Issue 11, point 1: the documented path (verify says repair, repair, gc) with one byte
    of a manifest's header flipped frees nothing: gc refuses (exit 4) naming the snapshot and
    both ways out. Restoring the byte + repair gives the snapshot back byte for byte; 'snap
    rm' of it instead lets gc free its space."""
    sid = next(iter(snapshots_of(base, "other")))
    path = repo / "snapshots" / sid
    flip(path, 3)  # the magic
    before = pack_bytes(repo)
    assert_damage(repo, "manifest", {sid})
    code, doc = _repair(repo)
    assert code == DAMAGED and doc["damaged_manifests"] == [sid]
    for args in (("gc",), ("gc", "--dry-run"), ("prune", "--keep-last", "1")):
        res = cli(*args, "-r", repo)
        line = one_error_line(res.err)
        assert res.code == 4, res.err
        assert sid[:12] in line and "snap rm" in line and "restore" in line, line
    assert pack_bytes(repo) == before  # not one byte freed
    assert len(list((repo / "snapshots").iterdir())) == 3
    flip(path, 3)  # restored
    code, doc = _repair(repo)
    assert code == 0 and doc["damaged_manifests"] == [], doc
    assert verify(repo)[0] == 0
    checks_out(repo, base, set(base.digests))
    res = cli("gc", "-r", repo)  # nothing is garbage: nothing goes
    assert res.code == 0, res.err
    assert pack_bytes(repo) == before
    checks_out(repo, base, set(base.digests))


def test_rm_of_a_damaged_manifest_then_gc_frees_its_space(repo: Path, base: Base) -> None:
    """Giving the damaged snapshot up (by id) lifts the gc block; gc then frees what only it
    named, and the others check out."""
    sid = next(iter(snapshots_of(base, "other")))
    flip(repo / "snapshots" / sid, 3)
    assert _repair(repo)[0] == DAMAGED
    only_it = chunk_of(base.path, {sid})
    res = cli("rm", sid[:10], "-r", repo)
    assert res.code == 0, res.err
    res = cli("gc", "--json", "-r", repo)
    assert res.code == 0, res.err
    assert res.json()["dead_chunks"] > 0
    with Repository.open(repo) as r:
        assert not r.has_chunk(only_it)
    assert verify(repo)[0] == 0
    checks_out(repo, base, set(base.digests) - {sid})


def test_a_flipped_counted_manifest_removed_frees_what_it_held(repo: Path, base: Base) -> None:
    """A manifest counted whole and damaged afterwards (no repair in between): rm cannot tell
    which chunks it named, so counts are recomputed and none of its chunks stays held."""
    sid = next(iter(snapshots_of(base, "other")))
    flip(repo / "snapshots" / sid, 3)
    only_it = chunk_of(base.path, {sid})
    res = cli("rm", sid[:10], "-r", repo)
    assert res.code == 0, res.err
    assert cli("gc", "-r", repo).code == 0
    with Repository.open(repo) as r:
        assert not r.has_chunk(only_it)
    assert verify(repo)[0] == 0
    checks_out(repo, base, set(base.digests) - {sid})
