"""Corruption on the in-memory backend (issue 12, "Done when" 1): what tests/test_corruption.py
and tests/test_verify_repair.py check of a local repository directory, for its objects.

Bytes of every kind of object are flipped at seeded positions (pack record headers, zstd and
raw payloads, pack headers, pack trailers; manifest headers, records, trailers and footers;
the config), objects are cut short or deleted (packs, manifests), and pins get junk. After
each: verify --read-data reports it (naming every snapshot it affects), a checkout of an
affected snapshot fails with the exit code of damage (4 or 5) leaving no output, and every
unaffected snapshot checks out byte for byte; no damage passes silently. repair then does
what it documents (ops/repair.py): drops corrupt chunks naming the snapshots that lost data,
writes a damaged pack header again, lists damaged manifests (gc frees nothing until they are
removed), and changes no other pack byte.

Not here: the index, which over a backend is the same LMDB file as a local repository's, in
the cache directory (tests/test_corruption.py flips it); lock objects, where any object is a
holder (docs/BACKENDS.md: a stale one is deleted by hand).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import snapstore
from snapstore import Mode
from snapstore.errors import DamagedManifestsError, SnapstoreError
from snapstore.format import manifest as mf
from snapstore.format.pack import FOOTER_SIZE, PACK_HEADER_SIZE, RECORD_HEADER_SIZE, decode_footer
from snapstore.model import ChunkId, ChunkLocation, ChunkRef, SnapshotId
from snapstore.ops.repair import repair
from snapstore.ops.verify import affected
from snapstore.storage.objpacks import pack_name
from tests.backend_repos import MemRepo, new_repo, scattered
from tests.helpers import content_sha, file_sha, text_bytes

FLIPS = 8  # seeded positions per kind of object


@dataclass
class Base:
    repo: MemRepo
    users: dict[ChunkId, set[SnapshotId]]  # chunk -> the snapshots naming it
    locations: dict[ChunkId, ChunkLocation]
    mixed: SnapshotId  # text, random bytes and a zero run: the manifest that is flipped
    contents: dict[SnapshotId, bytes]

    def packs(self) -> dict[str, set[ChunkId]]:
        """Pack object name -> the chunks indexed in it."""
        out: dict[str, set[ChunkId]] = {}
        for cid, loc in self.locations.items():
            out.setdefault(pack_name(loc.pack_id), set()).add(cid)
        return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    tmp = tmp_path_factory.mktemp("corruption")
    repo = new_repo("memory", tmp)
    rng = random.Random(31)
    text = text_bytes(500_000, seed=31)
    contents = {
        "text": text,
        "random": rng.randbytes(400_000),
        "mixed": text[:250_000] + rng.randbytes(150_000) + bytes(300_000) + text_bytes(100_000, seed=32),
        "doomed": rng.randbytes(300_000),
    }
    ids = {name: repo.commit(data, name, tmp / "src") for name, data in contents.items()}
    doomed, mixed = ids["doomed"], ids["mixed"]
    with repo.open(Mode.EXCLUSIVE) as r:
        r.remove_snapshot(doomed)  # dead records: gc removes or repacks their pack
        snapstore.gc(r, repack_threshold=1.0)
        users: dict[ChunkId, set[SnapshotId]] = {}
        for sid in r.snapshot_ids():
            for rec in r.iter_records(sid):
                if isinstance(rec, ChunkRef):
                    users.setdefault(rec.chunk_id, set()).add(sid)
        locations = dict(r.chunk_locations())
    del repo.digests[doomed]
    return Base(repo, users, locations, mixed, {ids[n]: contents[n] for n in ids if n != "doomed"})


def edit(repo: MemRepo, name: str, change: Callable[[bytearray], bytes | bytearray | None]) -> None:
    """Change an object in place (None: delete it)."""
    body = change(bytearray(repo.backend.get(name)))
    if body is None:
        repo.backend.delete(name)
    else:
        repo.backend.put(name, bytes(body), overwrite=True)


def flip_at(offset: int, xor: int) -> Callable[[bytearray], bytearray]:
    def change(body: bytearray) -> bytearray:
        body[offset] ^= xor
        return body

    return change


def cut_at(length: int) -> Callable[[bytearray], bytearray]:
    return lambda body: body[:length]


# -- judging one damaged copy ------------------------------------------------------------------------


def judge(
    repo: MemRepo, hit: set[SnapshotId], when: str, out: Path, *, read_data: bool = True
) -> set[SnapshotId]:
    """verify reports the damage (naming at least ``hit``; a listing stopped by a damaged
    manifest is a CorruptError naming it), a checkout of each snapshot in ``hit`` fails
    cleanly, the others check out identical. Returns what verify named."""
    with repo.open(Mode.CHECK) as r:
        try:
            report = snapstore.verify(r, read_data=read_data)
        except SnapstoreError as exc:
            assert exc.exit_code == 4 and "manifest" in exc.message, f"{when}: verify raised {exc}"
            named = set(hit)
        else:
            assert not report.ok, f"{when}: verify found nothing"
            named = affected(report.problems)
            assert hit <= named, f"{when}: verify names {named}, not {hit}"
    with repo.open() as r:
        for sid, digest in repo.digests.items():
            out.unlink(missing_ok=True)
            try:
                snapstore.checkout(r, r.resolve(sid.hex()), str(out), force=True)
            except SnapstoreError as exc:
                assert sid in named, f"{when}: checkout of unaffected {sid.hex()[:12]} failed: {exc}"
                assert exc.exit_code in (4, 5), f"{when}: checkout exit {exc.exit_code}: {exc}"
                assert not out.exists(), f"{when}: a failed checkout left its output"
                continue
            assert sid not in hit, f"{when}: checkout of damaged {sid.hex()[:12]} succeeded"
            assert file_sha(out) == digest, f"{when}: {sid.hex()[:12]} checked out different bytes"
    return named


def heal(
    repo: MemRepo, hit: set[SnapshotId], contents: dict[SnapshotId, bytes], tmp_path: Path, when: str
) -> None:
    """Commit the content of each snapshot in ``hit`` again: a good copy of every chunk it
    lost is stored, and each then checks out as it was (verify --read-data passes)."""
    for sid in sorted(hit):
        src = tmp_path / "src"
        src.write_bytes(contents[sid])
        with repo.open(Mode.WRITE) as r:
            snapstore.commit_file(r, src, name="healing")
    with repo.open(Mode.CHECK) as r:
        assert snapstore.verify(r, read_data=True).ok, when
        for sid in hit:
            assert content_sha(r, sid) == repo.digests[sid], f"{when}: not healed"


def pack_bytes(repo: MemRepo) -> dict[str, str]:
    return {n: hashlib.sha256(repo.backend.get(n)).hexdigest() for n in repo.backend.list("packs/")}


# -- packs ---------------------------------------------------------------------------------------------


def _chunks(base: Base, rng: random.Random, codec: int | None) -> list[ChunkId]:
    live = sorted(c for c in base.users if codec is None or base.locations[c].codec == codec)
    return [rng.choice(live) for _ in range(FLIPS)]


@pytest.mark.parametrize(("kind", "codec"), [("payload", 1), ("payload", 0), ("record-header", None)])
def test_a_flipped_record_is_found_and_dropped_by_repair(
    kind: str, codec: int | None, base: Base, tmp_path: Path
) -> None:
    rng = random.Random(f"{kind}-{codec}")
    for i, cid in enumerate(_chunks(base, rng, codec)):
        loc = base.locations[cid]
        within = (
            rng.randrange(loc.stored_size) + RECORD_HEADER_SIZE
            if kind == "payload"
            else rng.randrange(RECORD_HEADER_SIZE)
        )
        repo = base.repo.copy(tmp_path / "cache")
        edit(repo, pack_name(loc.pack_id), flip_at(loc.offset + within, rng.randrange(1, 256)))
        when = f"{kind} (codec {codec}) flip {i} at {within} in its record"
        hit = base.users[cid]
        judge(repo, hit, when, tmp_path / "out")
        before = pack_bytes(repo)
        with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            report = repair(r, read_data=True)
        assert report.dropped_corrupt == 1 and set(report.damaged_snapshots) == hit, f"{when}: {report}"
        assert pack_bytes(repo) == before, f"{when}: repair changed pack data"
        with repo.open(Mode.EXCLUSIVE) as r:  # the others survive gc
            snapstore.gc(r)
        with repo.open() as r:
            for sid in set(repo.digests) - hit:
                assert content_sha(r, sid) == repo.digests[sid], f"{when}: {sid.hex()[:12]} after gc"
        if i == 0:  # committing the lost content again stores a good copy and heals them
            heal(repo, hit, base.contents, tmp_path, when)


def test_a_flipped_pack_header_is_found_and_written_again(base: Base, tmp_path: Path) -> None:
    name = sorted(base.packs())[0]
    for at in range(PACK_HEADER_SIZE):
        repo = base.repo.copy(tmp_path / "cache")
        edit(repo, name, flip_at(at, 0x41))
        judge(repo, set(), f"pack header flip at {at}", tmp_path / "out")  # its chunks still read
        with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            report = repair(r)
        assert [pack_name(p) for p in report.rewritten_pack_headers] == [name], at
        assert repo.backend.get(name) == base.repo.backend.get(name), at
        with repo.open(Mode.CHECK) as r:
            assert snapstore.verify(r, read_data=True).ok, at


def test_a_flipped_pack_trailer_is_not_trusted(base: Base, tmp_path: Path) -> None:
    """A trailer is only where records are: flipped, it fails its checks, the pack is scanned
    instead, and no chunk is lost, now, after the index is rebuilt, or after gc."""
    name = sorted(base.packs())[0]
    body = base.repo.backend.get(name)
    footer = decode_footer(body[-FOOTER_SIZE:], len(body))
    assert footer is not None
    rng = random.Random("trailer")
    spots = [
        *rng.sample(range(footer[1], len(body) - FOOTER_SIZE), FLIPS),  # the table
        *rng.sample(range(len(body) - FOOTER_SIZE, len(body)), FLIPS),  # the footer
    ]
    for at in spots:
        repo = base.repo.copy(tmp_path / "cache")
        edit(repo, name, flip_at(at, rng.randrange(1, 256)))
        when = f"trailer flip at {at}"
        with repo.open(Mode.CHECK) as r:
            report = snapstore.verify(r, read_data=True)
            assert not affected(report.problems), (when, report.problems)
        with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            assert repair(r, read_data=True).damaged_snapshots == (), when
        with repo.open(Mode.EXCLUSIVE) as r:
            snapstore.gc(r, repack_threshold=1.0)
        with repo.open(Mode.CHECK) as r:
            assert snapstore.verify(r, read_data=True).ok, when
            assert all(content_sha(r, sid) == d for sid, d in repo.digests.items()), when


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_cut_or_lost_pack_names_the_snapshots_it_held(damage: str, base: Base, tmp_path: Path) -> None:
    packs = base.packs()
    name = max(packs, key=lambda n: len({s for c in packs[n] for s in base.users.get(c, ())}))
    in_pack = sorted(packs[name], key=lambda c: base.locations[c].offset)
    if damage == "truncated":  # inside the record of its middle chunk
        victim = base.locations[in_pack[len(in_pack) // 2]]
        cut = victim.offset + RECORD_HEADER_SIZE + victim.stored_size // 2
        lost = [
            c
            for c in in_pack
            if base.locations[c].offset + RECORD_HEADER_SIZE + base.locations[c].stored_size > cut
        ]
    else:
        cut, lost = 0, in_pack
    hit = {s for c in lost for s in base.users.get(c, ())}
    assert hit
    repo = base.repo.copy(tmp_path / "cache")
    edit(repo, name, cut_at(cut) if cut else lambda body: None)
    judge(repo, hit, f"{damage} pack", tmp_path / "out")
    with repo.open(Mode.CHECK) as r:
        problems = snapstore.verify(r).problems
    if damage == "deleted":
        assert len([p for p in problems if "missing" in p.detail]) == 1, "one problem per missing pack"
    with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
        report = repair(r, read_data=True)
    assert set(report.damaged_snapshots) == hit, report


# -- delta records (issue 15) ---------------------------------------------------------------------------


@dataclass
class Deltas:
    """A delta repository: four days of "disk" (each changing a few bytes at scattered places:
    the later days' changed chunks are deltas against day 0's chunks), day 0 removed (its
    chunks stay as bases), and an unrelated "other"."""

    repo: MemRepo
    needs: dict[ChunkId, set[SnapshotId]]  # chunk -> the snapshots naming it or a delta against it
    named: set[ChunkId]  # the chunks the snapshots name
    locations: dict[ChunkId, ChunkLocation]
    contents: dict[SnapshotId, bytes]


@pytest.fixture(scope="module")
def deltas(tmp_path_factory: pytest.TempPathFactory) -> Deltas:
    tmp = tmp_path_factory.mktemp("corruption-delta")
    repo = new_repo("delta", tmp)
    rng = random.Random(15)
    disk = bytearray(rng.randbytes(300_000) + text_bytes(400_000, seed=15))
    contents = {}
    for day in range(4):
        if day:
            scattered(disk, rng, tuple(rng.randrange(len(disk) - 300) for _ in range(6)))
        contents[repo.commit(bytes(disk), "disk", tmp / "src")] = bytes(disk)
    other = rng.randbytes(200_000)
    contents[repo.commit(other, "other", tmp / "src")] = other
    day0 = repo.names["disk"][0]
    with repo.open(Mode.WRITE) as r:
        r.remove_snapshot(day0)
        locations = dict(r.chunk_locations())
        needs: dict[ChunkId, set[SnapshotId]] = {}
        named = set()
        for sid in r.snapshot_ids():
            for rec in r.iter_records(sid):
                if isinstance(rec, ChunkRef):
                    named.add(rec.chunk_id)
                    base = locations[rec.chunk_id].base
                    for cid in (rec.chunk_id,) if base is None else (rec.chunk_id, base):
                        needs.setdefault(cid, set()).add(sid)
    del repo.digests[day0], contents[day0]
    return Deltas(repo, needs, named, locations, contents)


@pytest.mark.parametrize("record", ["base", "delta"])
def test_a_flipped_base_or_delta_names_exactly_the_snapshots_needing_it(
    record: str, deltas: Deltas, tmp_path: Path
) -> None:
    """A flipped byte in the payload of a base (a keyframe, named by no snapshot left) or of a
    delta: verify names exactly the snapshots that need it (a base: every one with a delta
    against it); their checkouts fail cleanly, the others' succeed; repair drops the record
    (a base: with every delta against it, which no longer decodes), names those snapshots,
    and changes no pack byte; gc keeps the rest whole; committing the lost days again
    heals them."""
    if record == "base":
        bases = {
            loc.base for c, loc in deltas.locations.items() if loc.base is not None and c in deltas.named
        }
        pool = sorted(b for b in bases if b not in deltas.named)
    else:
        pool = sorted(c for c in deltas.named if deltas.locations[c].base is not None)
    assert len(pool) >= 4, pool
    rng = random.Random(f"delta-{record}")
    for i, cid in enumerate(rng.sample(pool, 4)):
        loc = deltas.locations[cid]
        skip = 32 if record == "delta" else 0  # (past the base's id: the frame itself)
        within = RECORD_HEADER_SIZE + skip + rng.randrange(loc.stored_size - skip)
        repo = deltas.repo.copy(tmp_path / "cache")
        edit(repo, pack_name(loc.pack_id), flip_at(loc.offset + within, rng.randrange(1, 256)))
        when = f"{record} flip {i} at {within} in its record"
        hit = deltas.needs[cid]
        against = {c for c, other in deltas.locations.items() if other.base == cid}
        assert (record == "base") == bool(against), when
        assert hit and set(repo.digests) - hit, when  # (a checkout of the others must work)
        named = judge(repo, hit, when, tmp_path / "out")
        assert named == hit, f"{when}: verify names {named}, needing it: {hit}"
        before = pack_bytes(repo)
        with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            report = repair(r, read_data=True)
        dropped = 1 + len(against & deltas.named)
        assert report.dropped_corrupt >= dropped and set(report.damaged_snapshots) == hit, f"{when}: {report}"
        assert pack_bytes(repo) == before, f"{when}: repair changed pack data"
        with repo.open(Mode.EXCLUSIVE) as r:
            snapstore.gc(r)
        with repo.open() as r:
            for sid in set(repo.digests) - hit:
                assert content_sha(r, sid) == repo.digests[sid], f"{when}: {sid.hex()[:12]} after gc"
        if i == 0:
            heal(repo, hit, deltas.contents, tmp_path, when)


# -- manifests -----------------------------------------------------------------------------------------


def _manifest_spans(repo: MemRepo, sid: SnapshotId) -> dict[str, range]:
    body = repo.backend.get(f"snapshots/{sid.hex()}")
    size = len(body)
    length = mf.trailer_length(body[-mf.FOOTER_SIZE :], size, "m")
    trailer_tag = size - mf.FOOTER_SIZE - length - 1
    return {
        "header": range(0, mf.HEADER_SIZE),
        "records": range(mf.HEADER_SIZE, trailer_tag),
        "trailer": range(trailer_tag, size - mf.FOOTER_SIZE),
        "footer": range(size - mf.FOOTER_SIZE, size),
    }


@pytest.mark.parametrize("where", ["header", "records", "trailer", "footer", "cut"])
def test_a_damaged_manifest_blocks_gc_until_it_is_removed(where: str, base: Base, tmp_path: Path) -> None:
    sid = base.mixed
    name = f"snapshots/{sid.hex()}"
    rng = random.Random(f"manifest-{where}")
    if where == "cut":
        size = base.repo.backend.stat(name)
        changes = [cut_at(n) for n in (size - 20, size // 2, 10)]
    else:
        span = _manifest_spans(base.repo, sid)[where]
        changes = [flip_at(at, rng.randrange(1, 256)) for at in rng.sample(span, min(FLIPS, len(span)))]
    others = set(base.repo.digests) - {sid}
    for i, change in enumerate(changes):
        when = f"manifest {where} damage {i}"
        repo = base.repo.copy(tmp_path / "cache")
        edit(repo, name, change)
        judge(repo, {sid}, when, tmp_path / "out", read_data=False)
        before = pack_bytes(repo)
        with repo.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            report = repair(r)
            assert report.damaged_manifests == (sid,) and sid in report.damaged_snapshots, f"{when}: {report}"
            with pytest.raises(DamagedManifestsError):
                snapstore.gc(r)
        assert pack_bytes(repo) == before, f"{when}: not one byte freed"
        with repo.open(Mode.WRITE) as r:
            r.remove_snapshot(sid)
        with repo.open(Mode.EXCLUSIVE) as r:
            assert snapstore.gc(r).plan.dead_chunks, f"{when}: its own chunks are freed"
        with repo.open(Mode.CHECK) as r:
            assert snapstore.verify(r, read_data=True).ok, when
            assert {s.id for s in r.list_snapshots()} == others
            assert all(content_sha(r, s) == repo.digests[s] for s in others), when


def test_a_lost_manifest_loses_only_its_snapshot(base: Base, tmp_path: Path) -> None:
    repo = base.repo.copy(tmp_path / "cache")
    repo.backend.delete(f"snapshots/{base.mixed.hex()}")
    del repo.digests[base.mixed]
    with repo.open(Mode.WRITE):
        pass  # recovery: a counted snapshot with no manifest has its counts recomputed
    with repo.open(Mode.EXCLUSIVE) as r:
        assert snapstore.gc(r).plan.dead_chunks
    with repo.open(Mode.CHECK) as r:
        assert snapstore.verify(r, read_data=True).ok
        assert all(content_sha(r, s) == d for s, d in repo.digests.items())


# -- config and pins -----------------------------------------------------------------------------------


def test_a_flipped_config_byte_is_refused_or_harmless(base: Base, tmp_path: Path) -> None:
    """A flipped byte of the config makes opening fail (exit 4), unless every field the
    config has reads as before: a flip inside the name of the ``checksum`` key leaves a
    config without a checksum (read, as one edited by hand: docs/FORMAT.md, "config") and an
    unknown field (ignored, as one a newer snap added)."""
    data = base.repo.backend.get("config")
    fields = json.loads(data)
    fields.pop("checksum")
    refused = 0
    for at in range(len(data)):
        repo = base.repo.copy(tmp_path / "cache")
        edit(repo, "config", flip_at(at, 0x20 if data[at : at + 1].isalpha() else 0x01))
        try:
            with repo.open(Mode.CHECK) as r:
                report = snapstore.verify(r, read_data=True)
        except SnapstoreError as exc:
            assert exc.exit_code == 4, (at, exc)
            refused += 1
            continue
        doc = json.loads(repo.backend.get("config"))
        assert {k: doc.get(k) for k in fields} == fields, f"config flip at {at} was read"
        assert "checksum" not in doc and report.ok, at
    assert refused >= len(data) - len("checksum")
    repo = base.repo.copy(tmp_path / "cache")
    repo.backend.delete("config")
    with pytest.raises(SnapstoreError) as lost:
        repo.open()
    assert lost.value.exit_code == 3  # no repository there


JUNK = [b"\x00\xff" * 100, b"{" * 50_000, b'{"pid": 1e999}', b"x" * (1 << 20), b""]


@pytest.mark.parametrize("i", range(len(JUNK)))
def test_junk_pins(i: int, base: Base, tmp_path: Path) -> None:
    repo = base.repo.copy(tmp_path / "cache")
    sid = base.mixed
    repo.backend.put("pins/not-a-pin", JUNK[i])
    repo.backend.put(f"pins/{'ab' * 32}", JUNK[i])  # a pin of no snapshot, with content
    repo.backend.put(f"pins/{sid.hex()}", JUNK[-1 - i])
    with repo.open(Mode.CHECK) as r:
        assert snapstore.verify(r, read_data=True).ok
    with repo.open(Mode.EXCLUSIVE) as r:
        assert sid in r.pinned()
        r.unpin(sid)
        r.pin(sid)
        result = snapstore.prune(r, snapstore.KeepPolicy(last=1), quota_bytes=None)
        assert result.plan.drop == ()
        snapstore.gc(r)
        r.unpin(sid)
    assert repo.backend.get("pins/not-a-pin") == JUNK[i]
    with repo.open() as r:
        assert sid not in r.pinned() and content_sha(r, sid) == repo.digests[sid]
