"""Corruption: bytes of every kind of repository file are flipped (many seeded positions and
values), and after each flip ``snap verify --read-data`` and ``snap checkout`` of every
snapshot run (tests/corruption_worker.py, in a child process under a 512 MiB data limit and a
timeout: no hang, no huge allocation).

Every flip that touches live data is reported by verify (exit 5; 4 for the config, which no
command can read then) and makes the checkout of each snapshot it affects fail with the
documented exit code and one line on stderr; no flip passes silently: a checkout that
succeeds is byte-identical. For the index (derived data), a flip is live when the tables
read differently; checkouts then succeed identical or fail cleanly. Lock files and pins are
covered by junk contents and names.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.format import index as fmt_index
from snapstore.format import manifest as mf
from snapstore.format.pack import PACK_HEADER_SIZE, RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkRef, SnapshotId
from snapstore.ops import gc
from snapstore.storage import lmdb_file
from tests.conftest import SMALL_CHUNKER
from tests.helpers import cli, copy_repository, one_error_line, text_bytes

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 512 << 20
DOCUMENTED = {0, 3, 4, 5}


@dataclass
class Base:
    path: Path
    digests: dict[str, str]  # snapshot id -> sha256 of its content
    users: dict[ChunkId, set[str]] = field(default_factory=dict)  # chunk id -> snapshots naming it
    mixed: str = ""  # the snapshot whose manifest is flipped (entry, chunks, a zero run)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("corruption")
    path = root / "base"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    rng = random.Random(31)
    text = text_bytes(500_000, seed=31)
    contents = {
        "text": text,
        "random": rng.randbytes(400_000),
        "mixed": text[:250_000] + rng.randbytes(150_000) + bytes(300_000) + text_bytes(100_000, seed=32),
        "doomed": rng.randbytes(300_000),
    }
    b = Base(path, {})
    src = root / "src"
    with Repository.open(path, Mode.EXCLUSIVE) as r:
        ids = {}
        for name, content in contents.items():
            src.write_bytes(content)
            ids[name] = commit_file(r, src, name=name).snapshot.hex
        r.remove_snapshot(SnapshotId(bytes.fromhex(ids["doomed"])))  # dead records: holes in the packs
        gc.collect(r)
        for name, sid in ids.items():
            if name != "doomed":
                b.digests[sid] = hashlib.sha256(contents[name]).hexdigest()
                for rec in r.iter_records(SnapshotId(bytes.fromhex(sid))):
                    if isinstance(rec, ChunkRef):
                        b.users.setdefault(rec.chunk_id, set()).add(sid)
    b.mixed = ids["mixed"]
    return b


# -- where to flip --------------------------------------------------------------------------------------


def _flip(kind: str, path: Path, offset: int, rng: random.Random, affected: set[str]) -> dict[str, Any]:
    return {
        "kind": kind,
        "path": str(path),
        "offset": offset,
        "xor": rng.randrange(1, 256),
        "live": True,
        "affected": sorted(affected),
    }


def plan(kind: str, repo: Path, base: Base, rng: random.Random) -> list[dict[str, Any]]:
    everyone = set(base.digests)
    if kind == "config":
        config = repo / "config"
        data = config.read_bytes()
        flips = [_flip(kind, config, i, rng, everyone) for i in range(len(data))]
        for f in flips:  # a flip that only turns white space into other white space changes nothing
            flipped = bytearray(data)
            flipped[f["offset"]] ^= f["xor"]
            f["live"] = _json_or_none(bytes(flipped)) != json.loads(data)
        return flips
    if kind == "index":
        mdb = repo / "index" / "data.mdb"
        blob = mdb.read_bytes()
        used = [i for i in range(0, len(blob), 4096) if any(blob[i : i + 4096])]
        flips = []
        for _ in range(100):  # anywhere: page headers, meta pages, free pages
            page = rng.choice(used)
            flips.append(_flip(kind, mdb, page + rng.randrange(4096), rng, set()))
        env = lmdb.open(str(repo / "index"), max_dbs=8, readonly=True, lock=False)
        try:
            with env.begin() as txn:
                pages = lmdb_file.check_tree(repo / "index", txn.id(), "")
        finally:
            env.close()
        with Repository.open(repo) as r, r._index.read() as t:  # inside keys and entries in use
            stored = [cid + fmt_index.encode_location(loc) for cid, loc in t.iter_locations()]
            stored += [sid for sid in t.iter_counted()]
        found = []
        for item in stored:
            at = blob.find(item)
            while at >= 0 and at // 4096 not in pages:
                at = blob.find(item, at + 1)
            if at >= 0:
                found.append((at, len(item)))
        for _ in range(100):
            at, length = rng.choice(found)
            flips.append(_flip(kind, mdb, at + rng.randrange(length), rng, set()))
        return flips
    if kind.startswith("manifest"):
        path = repo / "snapshots" / base.mixed
        size = path.stat().st_size
        length = mf.trailer_length(path.read_bytes()[-mf.FOOTER_SIZE :], size, "m")
        trailer_tag = size - mf.FOOTER_SIZE - length - 1
        span = {
            "manifest-header": range(0, mf.HEADER_SIZE),
            "manifest-records": range(mf.HEADER_SIZE, trailer_tag),
            "manifest-trailer": range(trailer_tag, size - mf.FOOTER_SIZE),
            "manifest-footer": range(size - mf.FOOTER_SIZE, size),
        }[kind]
        offsets = list(span) if len(span) <= 60 else rng.sample(list(span), 60)
        return [_flip(kind, path, off, rng, {base.mixed}) for off in offsets]
    with Repository.open(repo) as r, r._index.read() as t:
        locations = dict(t.iter_locations())
        path_of = {cid: r._packs.path(loc.pack_id) for cid, loc in locations.items()}
    live = sorted(cid for cid in base.users if cid in locations)
    if kind == "pack-header":
        pack = path_of[live[0]]
        return [_flip(kind, pack, i, rng, set()) for i in range(PACK_HEADER_SIZE)]
    codec = {"record-header": None, "payload-zstd": 1, "payload-raw": 0}[kind]
    chosen = [cid for cid in live if codec is None or locations[cid].codec == codec]
    flips = []
    for cid in (rng.choice(chosen) for _ in range(60)):
        loc = locations[cid]
        if kind == "record-header":
            offset = loc.offset + rng.randrange(RECORD_HEADER_SIZE)
        else:
            offset = loc.offset + RECORD_HEADER_SIZE + rng.randrange(loc.stored_size)
        flips.append(_flip(kind, path_of[cid], offset, rng, base.users[cid]))
    return flips


def _json_or_none(data: bytes) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return None


# -- running and judging --------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_worker(flips: list[dict[str, Any]], repo: Path, base: Base, scratch: Path) -> list[dict[str, Any]]:
    spec = scratch / "spec.json"
    results = scratch / "results.jsonl"
    spec.write_text(
        json.dumps({"repo": str(repo), "scratch": str(scratch), "snapshots": base.digests, "flips": flips})
    )
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    try:
        done = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-m", "tests.corruption_worker", str(spec), str(results)],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            timeout=600,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        written = results.read_text().splitlines() if results.exists() else []
        raise AssertionError(f"hung after flip {len(written) - 1}: {flips[len(written) - 1]}") from exc
    lines: list[dict[str, Any]] = [json.loads(line) for line in results.read_text().splitlines()]
    if done.returncode != 0:
        raise AssertionError(
            f"the worker died ({done.returncode}) at flip {len(lines) - 1} of {len(flips)}: "
            f"{flips[len(lines) - 1] if len(lines) - 1 < len(flips) else ''}\n{done.stderr.decode()[-3000:]}"
        )
    assert lines[0] == {"memory_limited": True}, "the memory limit did not apply"
    return lines[1:]


def judge(result: dict[str, Any], tally: Counter[str]) -> None:
    """Assert what the module docstring promises for one flip."""
    where = f"{result['kind']} flip at {result['offset']} (xor {result['xor']:#04x})"
    verify, checkouts = result["verify"], result["checkouts"]
    for what, res in (("verify", verify), *((f"checkout {sid[:12]}", co) for sid, co in checkouts.items())):
        assert res["exc"] is None, f"{where}: {what} raised\n{res['exc']}"
        assert res["code"] in DOCUMENTED, f"{where}: {what} exit {res['code']}: {res['err']}"
        if res["code"]:
            one_error_line("\n".join(res["err"]))
        else:
            assert all(
                line.startswith(("snap: warning:", "snap: note:", "checked", "checked out"))
                for line in res["err"]
            ), f"{where}: {what}: {res['err']}"
        if what != "verify":
            tally["checkouts"] += 1
            if res["code"] == 0:
                assert res["identical"], f"{where}: {what} succeeded with different bytes"
                tally["checkouts identical"] += 1
    affected = set(result["affected"])
    if not result["live"]:
        assert verify["code"] == 0, f"{where}: not live, yet verify says {verify['err']}"
        tally["not live"] += 1
        return
    tally["live"] += 1
    expected_code = 4 if result["kind"] == "config" else 5
    assert verify["code"] == expected_code, f"{where}: verify exit {verify['code']}: {verify['err']}"
    tally["reported by verify"] += 1
    if expected_code == 5:
        assert affected <= set(verify["affected"]), (
            f"{where}: verify names {verify['affected']}, not {affected}"
        )
    for sid, co in checkouts.items():
        if sid in affected:
            assert co["code"] in (4, 5), f"{where}: checkout of affected {sid[:12]} gave {co['code']}"
            tally["checkouts failed (affected)"] += 1
        elif result["kind"] != "index":
            assert co["code"] == 0, f"{where}: checkout of unaffected {sid[:12]} failed: {co['err']}"


KINDS = [
    "config",
    "pack-header",
    "record-header",
    "payload-zstd",
    "payload-raw",
    "manifest-header",
    "manifest-records",
    "manifest-trailer",
    "manifest-footer",
    "index",
]


@pytest.mark.parametrize("kind", KINDS)
def test_flipped_bytes_never_pass_silently(kind: str, base: Base, tmp_path: Path, report_count: Any) -> None:
    repo = copy_repository(base.path, tmp_path / "repo")
    flips = plan(kind, repo, base, random.Random(f"flip-{kind}"))
    results = run_worker(flips, repo, base, tmp_path)
    assert len(results) == len(flips)
    tally: Counter[str] = Counter()
    for result in results:
        judge(result, tally)
    if kind == "index":
        assert tally["live"] >= 10, f"too few index flips changed the index: {dict(tally)}"
    report_count(
        "corruption", kind, tried=len(flips), live=tally["live"], reported=tally["reported by verify"]
    )


# -- delta records (issue 15) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delta_base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """A delta repository: four days of "disk" (a few bytes changed at scattered places each
    day: the later days' changed chunks are deltas against day 0's), day 0 removed (its
    chunks stay as bases), and an unrelated "other". ``users``: the snapshots that name a
    chunk or a delta against it."""
    root = tmp_path_factory.mktemp("corruption-delta")
    path = root / "base"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20, delta=True).close()
    rng = random.Random(15)
    disk = bytearray(rng.randbytes(300_000) + text_bytes(400_000, seed=15))
    src = root / "src"
    b = Base(path, {})
    with Repository.open(path, Mode.EXCLUSIVE) as r:
        days = []
        for day in range(4):
            for _ in range(6 if day else 0):
                at = rng.randrange(len(disk) - 300)
                disk[at : at + 300] = rng.randbytes(300)
            src.write_bytes(disk)
            days.append(commit_file(r, src, name="disk").snapshot.hex)
            b.digests[days[-1]] = hashlib.sha256(disk).hexdigest()
        other = rng.randbytes(200_000)
        src.write_bytes(other)
        sid = commit_file(r, src, name="other").snapshot.hex
        b.digests[sid] = hashlib.sha256(other).hexdigest()
        r.remove_snapshot(SnapshotId(bytes.fromhex(days[0])))
        del b.digests[days[0]]
        for sid in b.digests:
            for rec in r.iter_records(SnapshotId(bytes.fromhex(sid))):
                if isinstance(rec, ChunkRef):
                    loc = r.get_location(rec.chunk_id)
                    assert loc is not None
                    for cid in (rec.chunk_id,) if loc.base is None else (rec.chunk_id, loc.base):
                        b.users.setdefault(cid, set()).add(sid)
    return b


@pytest.mark.parametrize("record", ["base", "delta"])
def test_flipped_base_or_delta_records_name_exactly_who_needs_them(
    record: str, delta_base: Base, tmp_path: Path, report_count: Any
) -> None:
    """Flips in the payload of a base (a keyframe no snapshot left names) or of a delta, as
    the other kinds above, through the real commands: verify (exit 5) names exactly the
    snapshots that need the record (a base: every snapshot with a delta against it), their
    checkouts fail cleanly, the others' succeed identical."""
    repo = copy_repository(delta_base.path, tmp_path / "repo")
    with Repository.open(repo) as r, r._index.read() as t:
        locations = dict(t.iter_locations())
        path_of = {cid: r._packs.path(loc.pack_id) for cid, loc in locations.items()}
        named = {
            rec.chunk_id
            for sid in delta_base.digests
            for rec in r.iter_records(SnapshotId(bytes.fromhex(sid)))
            if isinstance(rec, ChunkRef)
        }
    if record == "base":  # needed only as a base
        chosen = sorted({loc.base for c, loc in locations.items() if loc.base and c in named} - named)
    else:
        chosen = sorted(c for c in named if locations[c].base is not None)
    assert len(chosen) >= 3, chosen
    rng = random.Random(f"flip-{record}")
    flips = []
    for cid in (rng.choice(chosen) for _ in range(12)):
        loc = locations[cid]
        skip = 32 if record == "delta" else 0  # (past the base's id: the frame itself)
        offset = loc.offset + RECORD_HEADER_SIZE + skip + rng.randrange(loc.stored_size - skip)
        flips.append(_flip(f"payload-{record}", path_of[cid], offset, rng, delta_base.users[cid]))
    results = run_worker(flips, repo, delta_base, tmp_path)
    assert len(results) == len(flips)
    tally: Counter[str] = Counter()
    for result in results:
        judge(result, tally)
        where = f"{result['kind']} flip at {result['offset']}"
        assert set(result["verify"]["affected"]) == set(result["affected"]), where
    assert tally["live"] == len(flips) and tally["checkouts failed (affected)"] >= len(flips), tally
    report_count(
        "corruption",
        f"{record} record (delta repository)",
        tried=len(flips),
        reported=tally["reported by verify"],
    )


# -- lock files and pins: junk contents and names --------------------------------------------------------

JUNK = [
    b"\x00\xff" * 100,
    b"{" * 50_000,
    b'{"pid": 1e999, "host": [], "command": {}}',
    b'{"pid": 99999999999999999999, "host": "h", "command": "c"}',
    b'{"pid": -1, "host": "h", "command": "c"}',
    b'{"pid": 0, "host": "' + os.uname().nodename.encode() + b'", "command": "c"}',
    json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "command": "snap commit"}).encode(),
    json.dumps({"pid": 1, "host": "elsewhere", "command": "snap gc"}).encode(),
    b"x" * (1 << 20),
]


@pytest.mark.parametrize("i", range(len(JUNK)))
def test_junk_in_lock_files_and_pins(i: int, base: Base, tmp_path: Path, report_count: Any) -> None:
    repo = copy_repository(base.path, tmp_path / "repo")
    (repo / "locks" / "write").write_bytes(JUNK[i])
    (repo / "locks" / "data").write_bytes(JUNK[-1 - i])
    (repo / "pins" / "not-a-pin").write_bytes(JUNK[i])
    (repo / "pins" / ("ab" * 32)).write_bytes(JUNK[i])  # a pin of no snapshot, with content
    (repo / "pins" / ("zz" * 32)).write_bytes(b"")
    sid = sorted(base.digests)[0]
    for args in (
        ["verify", "--read-data"],
        ["pin", sid],
        ["checkout", sid, "-o", str(tmp_path / "out")],
        ["prune", "--keep-last", "1", "--dry-run"],
        ["gc"],
        ["unpin", sid],
    ):
        res = cli(*args, "-r", repo)
        assert res.code == 0, f"{args}: {res.err}"
        assert "Traceback" not in res.err
        assert all(
            line.startswith(("snap: note:", "checked", "checked out", "would", "nothing"))
            for line in res.err.splitlines()
        ), res.err
    assert hashlib.sha256((tmp_path / "out").read_bytes()).hexdigest() == base.digests[sid]
    assert (repo / "locks" / "write").read_bytes() == b"{}", "a finished writer leaves an empty record"
    report_count("corruption", "lock files and pins (junk contents, names)", tried=1, live=0, reported=0)
