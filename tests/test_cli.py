"""The ``snap`` command: every error is one line on stderr, the documented exit code, no
traceback, and leaves earlier snapshots intact. Also repository discovery and --json.

Most cases run in-process through ``snapstore.cli.app.main`` (fast, and monkeypatch can reach
inside); a few run the real command in a subprocess (``run_snap``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest
from typer.testing import CliRunner

from snapstore import Mode, Repository, checkout, commit_file
from snapstore.cli.app import app, main
from snapstore.errors import AmbiguousIdError, SnapstoreError, distinct_prefixes
from snapstore.format import manifest as mf
from snapstore.format.pack import RECORD_HEADER_SIZE
from snapstore.model import ChunkId, ChunkRef, EntryEnd, EntryStart, SnapshotId
from snapstore.storage.lock import WRITE, Lock
from tests.conftest import SNAP, run_snap
from tests.helpers import temp_leftovers, text_bytes

MiB = 1 << 20
IS_ROOT = os.geteuid() == 0


# helpers ----------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


def snap(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    """Run the CLI in-process; returns exit code, stdout and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_error(res: Result | subprocess.CompletedProcess[bytes], code: int) -> str:
    """The documented error shape: exit code, one stderr line 'snap: error: ...', no traceback."""
    if isinstance(res, subprocess.CompletedProcess):
        got, err = res.returncode, res.stderr.decode()
    else:
        got, err = res.code, res.err
    assert got == code, f"exit {got}, expected {code}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("snap: error: "), lines[0]
    return lines[0]


@dataclass
class Base:
    """A repository with two snapshots whose contents are known."""

    root: Path
    tmp: Path
    snaps: dict[str, bytes]  # full id -> content

    def intact(self) -> None:
        """Every snapshot of ``snaps`` still checks out byte-identical (read-only open)."""
        out = self.tmp / "intact.out"
        with Repository.open(self.root) as repo:
            listed = {s.hex for s in repo.list_snapshots()}
            for sid, content in self.snaps.items():
                assert sid in listed
                checkout(repo, repo.resolve(sid), str(out), force=True)
                assert out.read_bytes() == content, sid[:12]
        out.unlink()


@pytest.fixture
def base(tmp_path: Path, repo_path: Path) -> Base:
    rng = random.Random(11)
    snaps = {}
    src = tmp_path / "vm.img"
    with Repository.open(repo_path, Mode.WRITE) as repo:
        for content in (rng.randbytes(400_000) + text_bytes(200_000), rng.randbytes(300_000)):
            src.write_bytes(content)
            snaps[commit_file(repo, src).snapshot.hex] = content
    return Base(repo_path, tmp_path, snaps)


def distinct_chunk(repo: Repository, snapshot_id: SnapshotId) -> ChunkId:
    """A chunk of this snapshot that no other snapshot names."""
    others: set[ChunkId] = set()
    for s in repo.list_snapshots():
        if s.id != snapshot_id:
            others |= {r.chunk_id for r in repo.iter_records(s.id) if isinstance(r, ChunkRef)}
    mine = [r.chunk_id for r in repo.iter_records(snapshot_id) if isinstance(r, ChunkRef)]
    return next(c for c in mine if c not in others)


def flip_payload_byte(root: Path, chunk_id: ChunkId, at: int) -> None:
    with Repository.open(root) as repo:
        loc = repo.get_location(chunk_id)
        assert loc is not None
        path = repo._packs.path(loc.pack_id)
    with open(path, "r+b") as f:
        f.seek(loc.offset + RECORD_HEADER_SIZE + at % loc.stored_size)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x41]))


# missing and unreadable input -------------------------------------------------------------


def test_missing_input(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    line = assert_error(snap(capsys, "commit", base.tmp / "nope.img", "--repo", base.root), 3)
    assert "nope.img" in line
    assert_error(run_snap("commit", str(base.tmp / "nope.img"), "--repo", str(base.root)), 3)
    base.intact()


def test_directory_input_leaves_the_repository_out(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    """A directory is committed as a tree (issue 13; before it, exit 10); one that holds the
    repository leaves the repository out, with a warning, instead of reading its own packs."""
    res = snap(capsys, "commit", base.tmp, "--repo", base.root)
    assert res.code == 0, res.err
    assert "the repository itself, not recorded" in res.err
    with Repository.open(base.root) as repo:
        newest = repo.list_snapshots()[-1]
        assert newest.kind == "tree" and newest.name == base.tmp.name
    base.intact()


def test_fifo_input_is_refused_without_blocking(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    """A FIFO has no size and cannot be read twice: refused at once (no writer needed)."""
    fifo = base.tmp / "pipe"
    os.mkfifo(fifo)
    done = subprocess.run(
        [*SNAP, "commit", str(fifo), "--repo", str(base.root)], capture_output=True, timeout=20, check=False
    )
    assert_error(done, 10)
    base.intact()


def test_character_device_input_is_refused(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    """/dev/zero or /dev/null would silently become an empty snapshot."""
    for dev in ("/dev/null", "/dev/zero"):
        assert_error(snap(capsys, "commit", dev, "--repo", base.root), 10)
    base.intact()
    with Repository.open(base.root) as repo:
        assert len(repo.list_snapshots()) == 2


def test_unreadable_input(base: Base) -> None:
    src = base.tmp / "secret.img"
    src.write_bytes(b"secret")
    src.chmod(0)
    cmd = [*SNAP, "commit", str(src), "--repo", str(base.root)]
    if IS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no way to be denied a read")
        # Root without the capabilities that bypass file permissions.
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    line = assert_error(done, 10)
    assert "secret.img" in line
    base.intact()


# snapshot ids -----------------------------------------------------------------------------


def test_unknown_id(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    out = base.tmp / "out.img"
    known = {s[:4] for s in base.snaps}
    unknown = next(p for p in ("0000", "ffff", "1234", "abcd") if p not in known)
    for args in (["checkout", unknown, "-o", out], ["show", unknown], ["rm", unknown]):
        line = assert_error(snap(capsys, *args, "--repo", base.root), 3)
        assert unknown in line
    assert not out.exists()
    assert_error(run_snap("checkout", unknown + "abcd", "-o", str(out), "--repo", str(base.root)), 3)
    assert not out.exists()
    base.intact()


@pytest.mark.parametrize("ref", ["abc", "a", "zzzz", "12-4", "latestt"])
def test_bad_id(capsys: pytest.CaptureFixture[str], base: Base, ref: str) -> None:
    out = base.tmp / "out.img"
    line = assert_error(snap(capsys, "checkout", ref, "-o", out, "--repo", base.root), 2)
    assert "not a snapshot id" in line
    assert not out.exists()
    base.intact()


def _empty_manifest_parts(message: str) -> tuple[list[object], bytes]:
    records = [EntryStart("empty.img"), EntryEnd(0, blake3.blake3(b"").digest())]
    trailer = mf.encode_trailer(
        name="empty.img",
        created=datetime(2024, 1, 1, tzinfo=UTC),
        message=message,
        size=0,
        entries=1,
        chunk_refs=0,
        hostname="h",
        source="/empty.img",
    )
    return records, trailer


def colliding_snapshots(root: Path) -> tuple[str, str]:
    """Two real snapshots whose ids share their first 4 hex digits. Found by hashing candidate
    manifests in memory (a birthday search, ~300 tries), then only those two are registered."""
    seen: dict[str, str] = {}
    for i in itertools.count():
        message = f"m{i}"
        records, trailer = _empty_manifest_parts(message)
        data = mf.encode_header() + b"".join(mf.encode_record(r) for r in records) + trailer  # type: ignore[arg-type]
        prefix = blake3.blake3(data).hexdigest()[:4]
        if prefix in seen:
            break
        seen[prefix] = message
    ids = []
    with Repository.open(root, Mode.WRITE) as repo:
        for msg in (seen[prefix], message):
            records, trailer = _empty_manifest_parts(msg)
            writer = repo.manifest_writer()
            for r in records:
                writer.add(r)  # type: ignore[arg-type]
            ids.append(repo.register_snapshot(writer, trailer, []).hex())
    assert ids[0][:4] == ids[1][:4] and ids[0] != ids[1]
    return ids[0], ids[1]


def test_ambiguous_id(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    a, b = colliding_snapshots(base.root)
    out = base.tmp / "out.img"
    line = assert_error(snap(capsys, "checkout", a[:4], "-o", out, "--repo", base.root), 2)
    assert "ambiguous" in line and a[:12] in line and b[:12] in line
    assert not out.exists()
    assert_error(run_snap("rm", a[:4], "--repo", str(base.root)), 2)
    # A longer prefix is unique again.
    n = next(i for i in range(4, 64) if a[:i] != b[:i]) + 1
    res = snap(capsys, "checkout", a[:n], "-o", out, "--repo", base.root)
    assert res.code == 0, res.err
    assert out.read_bytes() == b""
    with Repository.open(base.root) as repo:
        assert len(repo.list_snapshots()) == 4
    base.intact()


# repository problems ----------------------------------------------------------------------


def test_not_a_repository(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    empty = base.tmp / "empty"
    empty.mkdir()
    for where in (base.tmp / "missing", empty):
        for args in (["log"], ["checkout", "latest", "-o", base.tmp / "o"], ["show", "latest"], ["stats"]):
            line = assert_error(snap(capsys, *args, "--repo", where), 3)
            assert "no snapstore repository" in line
    assert_error(run_snap("log", "--repo", str(empty)), 3)
    base.intact()


def test_repo_option_naming_a_file(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    f = base.tmp / "plain-file"
    f.write_bytes(b"x")
    assert_error(snap(capsys, "log", "--repo", f), 3)


def test_unsupported_format_version(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    config = base.root / "config"
    original = config.read_bytes()
    doc = json.loads(original)
    doc["format_version"] = 4
    config.write_text(json.dumps(doc))
    for args in (["log"], ["checkout", "latest", "-o", base.tmp / "o"], ["commit", config]):
        line = assert_error(snap(capsys, *args, "--repo", base.root), 4)
        assert "format version 4" in line
    assert_error(run_snap("log", "--repo", str(base.root)), 4)
    config.write_bytes(original)
    base.intact()


def test_corrupt_config(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    config = base.root / "config"
    original = config.read_bytes()
    for damaged in (b"{not json", original[: len(original) // 2], b"[]"):
        config.write_bytes(damaged)
        assert_error(snap(capsys, "log", "--repo", base.root), 4)
    config.write_bytes(original)
    base.intact()


def test_locked_repository(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    src = base.tmp / "new.img"
    src.write_bytes(b"new data")
    with Repository.open(base.root, Mode.WRITE):  # this process is the writer
        line = assert_error(snap(capsys, "commit", src, "--repo", base.root), 6)
        assert "locked" in line and f"pid {os.getpid()}" in line
        assert_error(snap(capsys, "rm", "latest", "--repo", base.root), 6)
        assert_error(run_snap("commit", str(src), "--repo", str(base.root)), 6)
        # Readers (other processes) are not blocked by a writer.
        done = run_snap("checkout", "latest", "-o", str(base.tmp / "o.img"), "--repo", str(base.root))
        assert done.returncode == 0, done.stderr
    base.intact()
    with Repository.open(base.root) as repo:
        assert len(repo.list_snapshots()) == 2
    # Free again: the commit goes through.
    assert snap(capsys, "commit", src, "--repo", base.root).code == 0


def test_reader_beside_a_writer_in_the_same_process(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    with Repository.open(base.root, Mode.WRITE):
        res = snap(capsys, "checkout", "latest", "-o", base.tmp / "o.img", "--repo", base.root)
        assert res.code == 0, res.err


def test_locked_by_a_bare_lock(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    lock = Lock(base.root / "locks" / WRITE, 0o600)
    lock.acquire(exclusive=True, repo=base.root, what="test")
    try:
        assert_error(snap(capsys, "commit", base.root / "config", "--repo", base.root), 6)
    finally:
        lock.release()


def test_corrupt_chunk_payload_raw(base: Base) -> None:
    """Random data is stored raw: a flipped payload byte is a hash mismatch."""
    src = base.tmp / "victim.img"
    src.write_bytes(random.Random(12).randbytes(500_000))
    with Repository.open(base.root, Mode.WRITE) as repo:
        victim = commit_file(repo, src).snapshot
        chunk = distinct_chunk(repo, victim.id)
        assert repo.get_location(chunk).codec == 0  # type: ignore[union-attr]
    flip_payload_byte(base.root, chunk, 1000)
    out = base.tmp / "out.img"
    line = assert_error(run_snap("checkout", victim.hex, "-o", str(out), "--repo", str(base.root)), 5)
    assert "hash mismatch" in line
    assert not out.exists()
    assert temp_leftovers(base.tmp) == []
    base.intact()


def test_corrupt_chunk_payload_compressed(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    """Compressed data: whether the damage breaks zstd or only the content, exit 5."""
    src = base.tmp / "victim.img"
    src.write_bytes(text_bytes(400_000, seed=77))
    with Repository.open(base.root, Mode.WRITE) as repo:
        victim = commit_file(repo, src).snapshot
        chunk = distinct_chunk(repo, victim.id)
        loc = repo.get_location(chunk)
        assert loc is not None and loc.codec == 1
    out = base.tmp / "out.img"
    for at in range(0, loc.stored_size, max(1, loc.stored_size // 12)):
        flip_payload_byte(base.root, chunk, at)
        assert_error(snap(capsys, "checkout", victim.hex, "-o", out, "--repo", base.root), 5)
        assert not out.exists()
        flip_payload_byte(base.root, chunk, at)  # undo
    assert temp_leftovers(base.tmp) == []
    assert snap(capsys, "checkout", victim.hex, "-o", out, "--repo", base.root).code == 0
    assert out.read_bytes() == src.read_bytes()
    base.intact()


def test_damaged_manifest(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    src = base.tmp / "victim.img"
    src.write_bytes(random.Random(13).randbytes(200_000))
    with Repository.open(base.root, Mode.WRITE) as repo:
        victim = commit_file(repo, src).snapshot
    path = base.root / "snapshots" / victim.hex
    data = path.read_bytes()
    out = base.tmp / "out.img"
    path.write_bytes(data[: len(data) - 30])  # truncated: its trailer is gone
    assert_error(snap(capsys, "log", "--repo", base.root), 4)
    # A commit of the same name does not need it (it is only a hint): a warning, then success.
    res = run_snap("commit", str(src), "--repo", str(base.root))
    assert res.returncode == 0, res.stderr.decode()
    assert f"snap: warning: snapshot {victim.hex[:12]} left out" in res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()
    assert run_snap("rm", res.stdout.decode().strip(), "--repo", str(base.root)).returncode == 0
    path.write_bytes(data[:60] + bytes([data[60] ^ 1]) + data[61:])  # one chunk id changed
    failed = snap(capsys, "checkout", victim.hex, "-o", out, "--repo", base.root)
    assert failed.code in (4, 5)
    assert_error(failed, failed.code)
    assert not out.exists()
    path.write_bytes(data)
    base.intact()


# input changed while read -----------------------------------------------------------------


@pytest.mark.parametrize("change", ["append", "in-place"])
def test_input_changed_while_read(
    capsys: pytest.CaptureFixture[str], base: Base, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The first read of the input triggers a write to it (as a running VM would)."""
    src = base.tmp / "live.img"
    src.write_bytes(random.Random(14).randbytes(6 * MiB))
    # An old mtime: the guest's write below sets it to now, a visible change even when both
    # writes fall in one tick of the (coarse) filesystem clock.
    os.utime(src, ns=(10**18, 10**18))
    inode = src.stat().st_ino
    real_preadv = os.preadv
    fired: list[bool] = []

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if not fired and os.fstat(fd).st_ino == inode:
            fired.append(True)
            with open(src, "r+b") as f:
                if change == "append":
                    f.seek(0, os.SEEK_END)
                else:
                    f.seek(5 * MiB)
                f.write(b"written by the guest")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    line = assert_error(snap(capsys, "commit", src, "--repo", base.root), 9)
    assert "changed while it was being read" in line
    assert fired
    monkeypatch.undo()
    base.intact()
    with Repository.open(base.root) as repo:
        assert len(repo.list_snapshots()) == 2
    assert not list((base.root / "tmp").iterdir())
    # The retry is fast: what was read before is stored already.
    res = snap(capsys, "commit", src, "--json", "--repo", base.root)
    assert res.code == 0, res.err
    assert json.loads(res.out)["new_stored_bytes"] < 2 * MiB


# disk full --------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("mounting a small filesystem needs root")
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.root
def test_disk_full(tmp_path: Path, tmpfs: Path) -> None:
    root = tmpfs / "repo"
    assert run_snap("init", str(root)).returncode == 0
    small, large = tmp_path / "small.img", tmp_path / "large.img"
    small_data = random.Random(15).randbytes(2 * MiB)
    small.write_bytes(small_data)
    large.write_bytes(random.Random(16).randbytes(40 * MiB))
    done = run_snap("commit", str(small), "--repo", str(root))
    assert done.returncode == 0, done.stderr
    first = done.stdout.decode().strip()
    line = assert_error(run_snap("commit", str(large), "--repo", str(root)), 8)
    assert "no space left" in line
    # Nothing stored before was lost, and the failed commit left no snapshot behind.
    out = tmp_path / "out.img"
    done = run_snap("checkout", first, "-o", str(out), "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == small_data
    log = json.loads(run_snap("log", "--json", "--repo", str(root)).stdout)
    assert [s["id"] for s in log] == [first]
    # The way out the error message suggests works.
    done = run_snap("rm", first, "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert json.loads(run_snap("log", "--json", "--repo", str(root)).stdout) == []
    done = run_snap("gc", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    done = run_snap("commit", str(small), "--repo", str(root))
    assert done.returncode == 0, done.stderr


# other usage errors -----------------------------------------------------------------------


def test_usage_errors(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    out = base.tmp / "exists.img"
    out.write_bytes(b"keep")
    line = assert_error(snap(capsys, "checkout", "latest", "-o", out, "--repo", base.root), 2)
    assert "already exists" in line
    assert out.read_bytes() == b"keep"
    assert_error(snap(capsys, "checkout", "latest", "-o", base.tmp / "no" / "x", "--repo", base.root), 2)
    assert_error(snap(capsys, "checkout", "latest", "-o", base.tmp, "--repo", base.root), 2)
    assert_error(snap(capsys, "init", base.root), 2)
    assert_error(snap(capsys, "init", base.tmp / "r2", "--chunker", "rabin"), 2)
    assert_error(snap(capsys, "init", base.tmp / "r3", "--chunker", "fixed:1K"), 2)
    assert not (base.tmp / "r2").exists() and not (base.tmp / "r3").exists()
    assert_error(snap(capsys, "log", "--no-such-option", "--repo", base.root), 2)
    assert_error(snap(capsys, "frobnicate"), 2)
    assert_error(snap(capsys, "checkout", "latest", "--repo", base.root), 2)  # -o is required
    assert_error(run_snap("checkout", "latest", "--repo", str(base.root)), 2)
    base.intact()


# finding the repository -------------------------------------------------------------------


def test_commit_creates_a_repository_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    src = work / "disk.img"
    src.write_bytes(b"first")
    res = snap(capsys, "commit", "disk.img")
    assert res.code == 0, res.err
    assert "created snapstore repository at" in res.err
    assert str(work / ".snapstore") in res.err
    assert (work / ".snapstore" / "config").is_file()
    first = res.out.strip()
    src.write_bytes(b"second")
    res = snap(capsys, "commit", "disk.img")
    assert res.code == 0 and "created" not in res.err
    # Found from a subdirectory as well.
    sub = work / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    res = snap(capsys, "log", "--json")
    assert res.code == 0
    assert json.loads(res.out)[0]["id"] == first
    res = snap(capsys, "checkout", first[:8], "-o", "out.img")
    assert res.code == 0 and (sub / "out.img").read_bytes() == b"first"


def test_commit_creates_a_repository_via_subprocess(tmp_path: Path) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(b"data")
    done = run_snap("commit", "disk.img", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"created snapstore repository" in done.stderr
    assert (tmp_path / ".snapstore" / "config").is_file()
    assert len(done.stdout.decode().strip()) == 64


@pytest.mark.parametrize(
    "args",
    [["log"], ["show", "latest"], ["checkout", "latest", "-o", "out.img"], ["rm", "latest"], ["stats"]],
)
def test_other_commands_without_a_repository_fail_with_a_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAP_REPO", raising=False)
    line = assert_error(snap(capsys, *args), 3)
    assert "snap init" in line and "--repo" in line
    assert not (tmp_path / ".snapstore").exists()
    assert not (tmp_path / "out.img").exists()


def test_snap_repo_env_and_repo_option(
    capsys: pytest.CaptureFixture[str], base: Base, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = base.tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SNAP_REPO", str(base.root))
    res = snap(capsys, "log", "--json")
    assert res.code == 0, res.err
    assert {s["id"] for s in json.loads(res.out)} == set(base.snaps)
    # --repo wins over SNAP_REPO.
    monkeypatch.setenv("SNAP_REPO", str(base.tmp / "missing"))
    res = snap(capsys, "log", "--json", "--repo", base.root)
    assert res.code == 0, res.err
    assert_error(snap(capsys, "log"), 3)
    # A commit with SNAP_REPO set to a missing repository does not create one elsewhere.
    assert_error(snap(capsys, "commit", base.root / "config"), 3)
    assert not (elsewhere / ".snapstore").exists()
    # And through a real process, with -r.
    src = base.tmp / "env.img"
    src.write_bytes(b"via env")
    done = run_snap("commit", str(src), cwd=elsewhere, env={"SNAP_REPO": str(base.root)})
    assert done.returncode == 0, done.stderr
    sid = done.stdout.decode().strip()
    done = run_snap("checkout", sid[:10], "-o", "-", "-r", str(base.root), cwd=elsewhere)
    assert done.stdout == b"via env"
    assert not (elsewhere / ".snapstore").exists()


# --json -----------------------------------------------------------------------------------


def test_json_outputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "repo"
    res = snap(capsys, "init", root, "--chunker", "fastcdc:4K:16K:64K", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["format_version"] == 2
    assert doc["chunker"] == {
        "algorithm": "fastcdc",
        "min_size": 4096,
        "avg_size": 16384,
        "max_size": 65536,
        "zero_run": 65536,
    }
    src = tmp_path / "disk.img"
    data = random.Random(17).randbytes(500_000) + bytes(MiB)
    src.write_bytes(data)
    res = snap(capsys, "commit", src, "-m", "note", "--json", "--repo", root)
    assert res.code == 0, res.err
    c1 = json.loads(res.out)
    assert len(c1["id"]) == 64 and c1["short_id"] == c1["id"][:12]
    assert c1["size"] == len(data)
    assert c1["name"] == "disk.img"
    assert c1["new_stored_bytes"] >= 500_000
    assert c1["new_chunks"] == c1["chunks"] > 0
    assert c1["zero_bytes"] >= MiB - 65536
    datetime.fromisoformat(c1["created"])
    assert c1["read_bytes"] == len(data) and c1["chunked_bytes"] == len(data) - MiB  # the zeros: a run
    assert c1["confirmed_chunks"] == 0 and c1["pruned"] == []
    res = snap(capsys, "commit", src, "--json", "--repo", root)
    c2 = json.loads(res.out)
    assert c2["new_stored_bytes"] == 0 and c2["new_chunks"] == 0 and c2["id"] != c1["id"]
    # The second commit confirms the first one's chunks in place instead of chunking again.
    assert c2["confirmed_chunks"] > 0 and c2["chunked_bytes"] < len(data) // 2
    res = snap(capsys, "log", "--json", "--repo", root)
    log = json.loads(res.out)
    assert isinstance(log, list) and [s["id"] for s in log] == [c1["id"], c2["id"]]
    for s in log:
        assert {"id", "name", "size", "created"} <= set(s)
        assert s["size"] == len(data) and s["name"] == "disk.img"
        datetime.fromisoformat(s["created"])
    assert log[0]["message"] == "note"
    res = snap(capsys, "show", c1["id"][:6], "--json", "--repo", root)
    show = json.loads(res.out)
    assert show["id"] == c1["id"] and show["chunks"] == c1["chunks"]
    out = tmp_path / "out.img"
    res = snap(capsys, "checkout", "latest", "-o", out, "--json", "--repo", root)
    doc = json.loads(res.out)
    assert doc["id"] == c2["id"] and doc["size"] == len(data) and doc["path"] == str(out)
    assert out.read_bytes() == data
    res = snap(capsys, "log", "--json", "disk.img", "--repo", root)
    assert len(json.loads(res.out)) == 2
    res = snap(capsys, "log", "--json", "other.img", "--repo", root)
    assert json.loads(res.out) == []
    # Text output: the id alone on stdout, the summary on stderr.
    res = snap(capsys, "commit", src, "--repo", root)
    assert res.out.strip() == json.loads(snap(capsys, "log", "--json", "--repo", root).out)[-1]["id"]
    assert "snapshot" in res.err


def test_typer_cli_runner(base: Base) -> None:
    """The typer app itself, as CliRunner drives it: results and the exception it raises."""
    runner = CliRunner()
    res = runner.invoke(app, ["log", "--json", "--repo", str(base.root)])
    assert res.exit_code == 0, res.output
    assert {s["id"] for s in json.loads(res.stdout)} == set(base.snaps)
    res = runner.invoke(app, ["log", "--repo", str(base.tmp / "missing")])
    assert isinstance(res.exception, SnapstoreError)
    assert res.exception.exit_code == 3
    res = runner.invoke(app, ["checkout", "abc", "-o", str(base.tmp / "o"), "--repo", str(base.root)])
    assert isinstance(res.exception, SnapstoreError)
    assert res.exception.exit_code == 2


def test_errors_keep_stdout_clean(base: Base) -> None:
    """Scripts read ids and JSON from stdout: errors print nothing there but, with --json,
    the one error document (issue 18, point 8)."""
    done = run_snap("checkout", "ffff0000", "-o", "-", "--repo", str(base.root))
    assert_error(done, 3)
    assert done.stdout == b""
    done = run_snap("log", "--json", "--repo", str(base.tmp / "missing"))
    assert_error(done, 3)
    assert json.loads(done.stdout)["error"]["code"] == 3
    assert set(json.loads(done.stdout)) == {"error"}


def test_checkout_to_a_closed_pipe(base: Base) -> None:
    big = base.tmp / "big.img"
    big.write_bytes(random.Random(18).randbytes(8 * MiB))
    with Repository.open(base.root, Mode.WRITE) as repo:
        sid = commit_file(repo, big).snapshot.hex
    proc = subprocess.Popen(
        [*SNAP, "checkout", sid, "-o", "-", "--repo", str(base.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == big.read_bytes()[:10]
    proc.stdout.close()  # like 'head -c 10'
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err
    assert err == ""


# I/O and permission errors: one line, the documented exit code (issue 11) -----------------


def test_checkout_to_a_full_stdout(base: Base) -> None:
    """``checkout -o - > /dev/full`` is a full disk where the output goes: exit 8, one line,
    and no advice to remove snapshots (the repository is not what is full)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    sid = next(iter(base.snaps))
    for args in (["checkout", sid, "-o", "-"], ["log", "--json"]):
        with open("/dev/full", "wb") as full:
            done = subprocess.run(
                [*SNAP, *args, "--repo", str(base.root)],
                stdout=full,
                stderr=subprocess.PIPE,
                timeout=120,
                check=False,
            )
        line = assert_error(Result(done.returncode, "", done.stderr.decode()), 8)
        assert "no space left" in line and "snap rm" not in line, line


@pytest.mark.root
def test_full_disk_on_the_output_does_not_advise_snap_rm(
    tmp_path: Path, tmpfs: Path, repo_path: Path
) -> None:
    src = tmp_path / "big.img"
    src.write_bytes(random.Random(21).randbytes(48 * MiB))
    done = run_snap("commit", str(src), "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    sid = done.stdout.decode().strip()
    out = tmpfs / "out.img"
    line = assert_error(run_snap("checkout", sid, "-o", str(out), "--repo", str(repo_path)), 8)
    assert str(out) in line and "snap rm" not in line and "output" in line, line
    assert not out.exists() and os.listdir(tmpfs) == []  # no temp file left


def _drop_dac_capabilities() -> None:
    """In the child: root without the capabilities that bypass file permissions, so a mode-0
    directory is refused as it would be to any user (the interpreter lives under /root, so
    the child cannot simply become nobody)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_snap_unprivileged(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``snap`` as a user to whom permissions apply (root drops its DAC capabilities)."""
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    return subprocess.run(
        [*SNAP, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
        preexec_fn=_drop_dac_capabilities if IS_ROOT else None,
    )


@pytest.fixture
def closed_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may read or search (its mode is restored afterwards)."""
    path = tmp_path / "closed"
    path.mkdir()
    path.chmod(0)
    try:
        yield path
    finally:
        path.chmod(0o700)


def test_output_inside_an_unsearchable_directory(base: Base, closed_dir: Path) -> None:
    sid = next(iter(base.snaps))
    out = closed_dir / "sub" / "out.img"
    line = assert_error(run_snap_unprivileged("checkout", sid, "-o", str(out), "--repo", str(base.root)), 11)
    assert str(out) in line and "ermission denied" in line, line


def test_discovery_through_an_unreadable_snapstore(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / ".snapstore").mkdir(parents=True)
    (work / ".snapstore").chmod(0)
    try:
        for command in ("log", "stats"):
            line = assert_error(run_snap_unprivileged(command, cwd=work), 11)
            assert ".snapstore" in line and "ermission denied" in line, line
    finally:
        (work / ".snapstore").chmod(0o700)


def test_size_walk_over_an_unreadable_directory(base: Base) -> None:
    """gc and stats count the repository's allocated blocks: a directory in it they may not
    read is named in one line (exit 11), not a traceback."""
    hidden = base.root / "tmp" / "closed"
    hidden.mkdir(parents=True, exist_ok=True)
    hidden.chmod(0)
    try:
        for command in ("stats", "gc"):
            line = assert_error(run_snap_unprivileged(command, "--repo", str(base.root)), 11)
            assert str(hidden) in line and "ermission denied" in line, line
    finally:
        hidden.chmod(0o700)
    base.intact()


def test_index_offset_beyond_any_file(capsys: pytest.CaptureFixture[str], base: Base) -> None:
    """An index entry whose offset no file can have (>= 2^63) is a corrupt index (exit 4 for
    checkout, a reported problem for verify), not an OverflowError."""
    sid = next(iter(base.snaps))
    with Repository.open(base.root, Mode.WRITE) as repo:
        cid = next(
            r.chunk_id for r in repo.iter_records(SnapshotId(bytes.fromhex(sid))) if isinstance(r, ChunkRef)
        )
        loc = repo.get_location(cid)
        assert loc is not None
        with repo._index.write() as w:
            w.put(cid, dataclasses.replace(loc, offset=(1 << 63) + 16))
    line = assert_error(snap(capsys, "checkout", sid, "-o", base.tmp / "o.img", "--repo", base.root), 4)
    assert "index is corrupt" in line and "offset" in line, line
    res = snap(capsys, "verify", "--repo", base.root)
    assert res.code == 5 and "Traceback" not in res.err, res.err
    assert "offset" in res.out, res.out
    assert not (base.tmp / "o.img").exists()


def test_snapshot_removed_while_being_checked_out(
    capsys: pytest.CaptureFixture[str], base: Base, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rm between a checkout's resolving the id and its reading the manifest says so
    (not found, exit 3), not that the manifest is corrupt."""
    sid = next(iter(base.snaps))
    resolve = Repository.resolve
    gone = base.tmp / "removed-manifest"

    def resolve_then_rm(self: Repository, ref: str, *, name: str | None = None) -> object:
        found = resolve(self, ref, name=name)
        os.rename(self._snapshots.path(found.id), gone)  # as 'snap rm' unpublishes it
        return found

    monkeypatch.setattr(Repository, "resolve", resolve_then_rm)
    line = assert_error(snap(capsys, "checkout", sid[:8], "-o", base.tmp / "o.img", "--repo", base.root), 3)
    assert f"snapshot {sid[:12]} was removed while it was being read" in line, line
    assert "corrupt" not in line
    monkeypatch.undo()
    os.rename(gone, base.root / "snapshots" / sid)
    base.intact()


def test_ambiguous_ids_sharing_twelve_digits_are_told_apart() -> None:
    a = "5e946211d0b7" + "a" * 52
    b = "5e946211d0b7" + "b" * 52
    message = AmbiguousIdError("5e94", [a, b, b]).message
    assert "matches 2 snapshots" in message
    assert "5e946211d0b7a" in message and "5e946211d0b7b" in message, message
    ids = ["abcdef" * 10 + "0000", "123456" * 10 + "0000"]
    assert distinct_prefixes(ids) == ["123456123456", "abcdefabcdef"]
