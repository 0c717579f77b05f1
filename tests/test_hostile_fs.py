"""A hostile or damaged repository's file system (planted links, FIFOs, stray names, a pack
replaced by a directory, more packs than open files) is never turned against its host: no
write outside the repository, no hang, no traceback, no double count (docs/FORMAT.md,
"trust"). Every command runs as the real CLI."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.format import FORMAT_VERSION
from snapstore.format import pack as pack_fmt
from snapstore.model import ChunkLocation, SnapshotId
from tests.conftest import SMALL_CHUNKER
from tests.helpers import one_error_line, snap_limited

TIMEOUT = 20  # a hang is a failure; every command here finishes in well under a second or two


def snap(*args: str | Path, limit_files: int | None = None) -> subprocess.CompletedProcess[bytes]:
    rlimits = {resource.RLIMIT_NOFILE: limit_files} if limit_files is not None else {}
    return snap_limited(*args, timeout=TIMEOUT, rlimits=rlimits)


def clean(res: subprocess.CompletedProcess[bytes]) -> None:
    """Success, or one clean error line (and warnings): never a traceback."""
    err = res.stderr.decode()
    assert "Traceback" not in err, err
    if res.returncode != 0:
        assert res.returncode > 1, err  # 1 is the exit code of a bug
        one_error_line("\n".join(line for line in err.splitlines() if not line.startswith("snap: warning")))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    Repository.init(root, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    src = tmp_path / "first.img"
    src.write_bytes(os.urandom(300_000))
    with Repository.open(root, Mode.WRITE) as r:
        commit_file(r, src)
    return root


def snapshot_ids(root: Path) -> list[str]:
    return sorted(os.listdir(root / "snapshots"))


def commands(root: Path, tmp_path: Path, sid: str = "latest") -> list[list[str | Path]]:
    src = tmp_path / "next.img"
    if not src.exists():
        src.write_bytes(os.urandom(200_000))
    return [
        ["log", "-r", root],
        ["commit", src, "-r", root],
        ["pin", sid, "-r", root],
        ["checkout", sid, "-o", tmp_path / "out.img", "--force", "-r", root],
        ["gc", "-r", root],
        ["verify", "-r", root],
        ["repair", "-r", root],
    ]


def outside_tree(outside: Path) -> dict[str, bytes]:
    found = {}
    for directory, _, files in os.walk(outside):
        for name in files:
            path = Path(directory, name)
            found[str(path)] = path.read_bytes()
    return found


# -- planted links ----------------------------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    """A directory outside the repository with files named as a repository's would be."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "precious").write_bytes(b"do not touch\n")
    (outside / "part-0123").write_bytes(b"not a manifest part\n")
    (outside / ("pending-" + "a" * 64)).write_bytes(b"x")
    (outside / "index-keep").mkdir(exist_ok=True)
    (outside / "index-keep" / "f").write_bytes(b"y")
    (outside / "write").write_bytes(b"a lock name\n")
    return outside


LINKS = ["locks/write", "index/lock.mdb", "index/data.mdb", "tmp", "snapshots", "pins", "packs", "packs/<xx>"]


@pytest.mark.parametrize("where", LINKS)
def test_planted_link_leaves_the_outside_untouched(repo: Path, tmp_path: Path, where: str) -> None:
    outside = _victim(tmp_path)
    if where == "packs/<xx>":
        sub = sorted(p for p in (repo / "packs").iterdir())[0]
        shutil.copytree(sub, outside / "packsub")
        (outside / "packsub" / f"{sub.name}{'0' * 30}.pack").write_bytes(
            pack_fmt.encode_pack_header(FORMAT_VERSION)
        )
        where = f"packs/{sub.name}"
        target = outside / "packsub"
    elif where == "tmp":
        target = outside  # where part-*, pending-* and index-* entries would be deleted
    elif where == "index/data.mdb":
        target = outside / "data.mdb"  # a working index: LMDB would write to it
        shutil.copyfile(repo / where, target)
    elif where in ("snapshots", "pins", "packs"):
        shutil.copytree(repo / where, outside / where)  # even a faithful copy is not used
        target = outside / where
    else:
        target = outside / "precious"
    link = repo / where
    if link.is_dir():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)
    before = outside_tree(outside)
    for args in commands(repo, tmp_path):
        res = snap(*args)
        clean(res)
        assert outside_tree(outside) == before, f"{args[0]} changed the outside of the repository"


# -- FIFOs ------------------------------------------------------------------------------------

FIFOS = ["manifest", "pack", "config", "locks/write", "index/data.mdb"]


@pytest.mark.parametrize("where", FIFOS)
def test_fifo_makes_no_command_hang(repo: Path, tmp_path: Path, where: str) -> None:
    if where == "manifest":
        path = repo / "snapshots" / ("ab" * 32)
    elif where == "pack":
        with Repository.open(repo) as r, r._index.read() as t:
            loc: ChunkLocation = next(loc for _, loc in t.iter_locations())
            path = r._packs.path(loc.pack_id)
        path.unlink()
    else:
        path = repo / where
        path.unlink()
    os.mkfifo(path)
    for args in commands(repo, tmp_path):
        clean(snap(*args))  # within TIMEOUT: subprocess.run raises TimeoutExpired on a hang


# -- stray names ------------------------------------------------------------------------------


def refcounts(root: Path) -> dict[bytes, int]:
    with Repository.open(root) as r, r._index.read() as t:
        return {cid: loc.refcount for cid, loc in t.iter_locations()}


def test_stray_names_break_nothing_and_count_nothing(repo: Path, tmp_path: Path) -> None:
    sid = snapshot_ids(repo)[0]
    data = (repo / "snapshots" / sid).read_bytes()
    (repo / "snapshots" / ("  " + "0" * 62)).write_bytes(b"junk")  # bytes.fromhex skips spaces
    (repo / "snapshots" / sid.upper()).write_bytes(data)  # a second name for the same id
    (repo / "snapshots" / "junk").write_bytes(b"junk")
    (repo / "tmp" / ("pending-  " + "0" * 62)).write_bytes(b"junk")
    (repo / "tmp" / ("trash-" + "A" * 64)).write_bytes(b"junk")
    sub = sorted((repo / "packs").iterdir())[0]
    (sub / (sub.name.upper() + "0" * 30 + ".pack")).write_bytes(b"junk")
    before = refcounts(repo)
    for args in commands(repo, tmp_path, sid):
        res = snap(*args)
        assert res.returncode == 0, f"{args[0]}: {res.stderr.decode()}"
        assert "Traceback" not in res.stderr.decode()
    # commit added a snapshot: count only the first one's chunks, by id
    res = snap("log", "-r", repo)
    assert res.stdout.decode().count(sid[:12]) == 1, "an uppercase copy is not a second snapshot"
    after = refcounts(repo)
    assert all(after[cid] >= count for cid, count in before.items())
    with Repository.open(repo) as r:
        first = {
            rec.chunk_id for rec in r.iter_records(SnapshotId(bytes.fromhex(sid))) if hasattr(rec, "chunk_id")
        }
        others = set()
        for other in r._snapshots.list_ids():
            if other.hex() != sid:
                others |= {rec.chunk_id for rec in r.iter_records(other) if hasattr(rec, "chunk_id")}
    for cid in first - others:
        assert after[cid] == 1, "repair counted the uppercase copy too"
    # a user may type an id in capitals
    res = snap("checkout", sid[:12].upper(), "-o", tmp_path / "upper.img", "-r", repo)
    assert res.returncode == 0, res.stderr.decode()


# -- a pack replaced by a directory -----------------------------------------------------------


def _committed(tmp_path: Path) -> tuple[Path, Path]:
    """A repository holding one commit of a new file in a single pack; (repository, file)."""
    root = tmp_path / "repo"
    Repository.init(root, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    src = tmp_path / "disk.img"
    src.write_bytes(os.urandom(600_000))
    assert snap("commit", src, "-r", root).returncode == 0
    return root, src


def _replace_the_pack_by_a_directory(root: Path) -> Path:
    [sub] = [p for p in (root / "packs").iterdir()]
    [pack] = list(sub.iterdir())
    pack.unlink()
    pack.mkdir()
    return pack


def test_pack_replaced_by_directory(tmp_path: Path) -> None:
    root, src = _committed(tmp_path)
    pack = _replace_the_pack_by_a_directory(root)
    res = snap("repair", "-r", root)
    clean(res)
    assert res.returncode in (0, 5), res.stderr.decode()  # the chunks are gone: repair may report it
    assert "not a regular file" in res.stderr.decode()
    res = snap("commit", src, "-r", root)
    assert res.returncode == 0, res.stderr.decode()
    out = tmp_path / "out.img"
    res = snap("checkout", "latest", "-o", out, "-r", root)
    assert res.returncode == 0, res.stderr.decode()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    with Repository.open(root) as r, r._index.read() as t:
        assert all(loc.pack_id.hex() != pack.stem for _, loc in t.iter_locations())


def test_commit_does_not_dedup_against_an_unreadable_pack(tmp_path: Path) -> None:
    root, src = _committed(tmp_path)
    before = refcounts(root)
    _replace_the_pack_by_a_directory(root)  # no repair: the index still points into it
    res = snap("commit", src, "-r", root)
    assert res.returncode == 0, res.stderr.decode()
    after = refcounts(root)
    assert {cid: n + 1 for cid, n in before.items()} == after, "counts kept, plus the new snapshot"
    for ref in snapshot_ids(root):
        out = tmp_path / f"{ref}.img"
        res = snap("checkout", ref, "-o", out, "-r", root)
        assert res.returncode == 0, res.stderr.decode()
        assert out.read_bytes() == src.read_bytes()


# -- EMFILE ----------------------------------------------------------------------------------


def test_checkout_with_many_packs_and_few_open_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository.init(root, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    src = tmp_path / "disk.img"
    # Interleave blocks of 40 distinct packs so that every thread reads from many packs.
    with Repository.open(root, Mode.WRITE) as r:
        for i in range(40):
            part = tmp_path / f"part{i}.img"
            part.write_bytes(os.urandom(1 << 20))
            commit_file(r, part)
            part.unlink()
    assert len([p for sub in (root / "packs").iterdir() for p in sub.iterdir()]) >= 40
    # A file whose chunks come from every pack in turn: the parts' chunks, interleaved.
    with src.open("wb") as f, Repository.open(root) as r:
        infos = r.list_snapshots()
        pieces = [list(r.iter_records(info.id)) for info in infos]
        chunk_lists = [[rec for rec in recs if hasattr(rec, "chunk_id")] for recs in pieces]
        for k in range(max(len(c) for c in chunk_lists)):
            for chunks in chunk_lists:
                if k < len(chunks):
                    f.write(bytes(r.get_chunk(chunks[k].chunk_id)))
    assert snap("commit", src, "-r", root).returncode == 0
    out = tmp_path / "out.img"
    res = snap("checkout", "latest", "-o", out, "--threads", "16", "-r", root, limit_files=128)
    assert res.returncode == 0, res.stderr.decode()
    assert out.read_bytes() == src.read_bytes()
