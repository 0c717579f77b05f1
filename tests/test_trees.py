"""Directory snapshots (issue 13): ``snap commit DIR``, restore with ``snap checkout ID -o
OUTDIR [--path P]`` and ``snap ls``. The tree of "Done when" (every entry kind, every kind of
metadata) restores identical, compared field by field."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import CorruptError, EntryNotFoundError, StorageIOError, UsageError
from snapstore.format import tree as tree_fmt
from snapstore.model import ENTRY_KINDS, ChunkId, TreeEntry, TreeRoot
from snapstore.model import ChunkRef as RefPiece
from snapstore.model import ZeroRun as ZeroPiece
from snapstore.ops.treecommit import commit_tree
from snapstore.ops.treerestore import restore_tree
from snapstore.repo import Mode, Repository
from tests.conftest import run_snap
from tests.helpers import one_error_line

ROOT = os.geteuid() == 0
OTHER_UID, OTHER_GID = 4321, 8765
SPARSE_SIZE = 64 << 20


def _try_xattr(path: bytes, name: bytes, value: bytes, skipped: list[str]) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        skipped.append(f"{name.decode()} on {os.fsdecode(path)}: {exc.strerror}")


def make_tree(top: Path) -> list[str]:
    """The tree of issue 13's "Done when"; returns what the filesystem refused, and why."""
    skipped: list[str] = []
    t = os.fsencode(top)
    os.mkdir(t)
    os.mkdir(t + b"/sub")
    with open(t + b"/sparse.img", "wb") as f:  # 64 MiB, two small stretches of data
        f.seek(5 << 20)
        f.write(os.urandom(100_000))
        f.seek(40 << 20)
        f.write(b"tail data" * 1000)
        f.truncate(SPARSE_SIZE)
    with open(t + b"/sub/linked", "wb") as f:
        f.write(b"one inode, three names\n" * 100)
    os.link(t + b"/sub/linked", t + b"/linked-2")
    os.link(t + b"/sub/linked", t + b"/sub/linked-3")
    os.symlink(b"../no/such/target\xff", t + b"/sub/dangling")
    os.symlink(b"sub/linked", t + b"/good-link")
    os.mkfifo(t + b"/fifo", 0o640)
    os.mknod(t + b"/null-dev", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(t + b"/loop-dev", 0o600 | stat.S_IFBLK, os.makedev(7, 42))
    with open(t + b"/setuid-bin", "wb") as f:
        f.write(b"#!/bin/sh\necho hi\n")
    os.chown(t + b"/setuid-bin", OTHER_UID, OTHER_GID)
    os.chmod(t + b"/setuid-bin", 0o4755)  # after chown, which clears it
    with open(t + b"/caf\xe9-latin1", "wb") as f:
        f.write(b"not UTF-8")
    with open(t + b"/two\nlines", "wb") as f:
        f.write(b"newline in the name")
    os.mkdir(t + b"/sticky")
    os.chmod(t + b"/sticky", 0o1777)
    os.mkdir(t + b"/setgid-dir")
    os.chown(t + b"/setgid-dir", 0, OTHER_GID)
    os.chmod(t + b"/setgid-dir", 0o2750)
    with open(t + b"/setgid-dir/empty", "wb"):
        pass
    _try_xattr(t + b"/sub/linked", b"user.binary", b"\x00\xff\x01\x02binary", skipped)
    _try_xattr(t + b"/sub/linked", b"trusted.snap", b"\x00trusted", skipped)
    _try_xattr(t + b"/sticky", b"user.dir", b"on a directory", skipped)
    _try_xattr(t + b"/sub/dangling", b"trusted.link", b"on a symlink", skipped)
    _try_xattr(t + b"/fifo", b"trusted.fifo", b"", skipped)
    _try_xattr(t + b"/null-dev", b"trusted.dev", b"\xff" * 300, skipped)
    # Times last, deepest first: ns precision, and each differs.
    for i, (path, _dirs, _files) in enumerate(sorted(os.walk(t), reverse=True)):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            times = (1_600_000_000_123_456_789 + i, 1_700_000_000_987_654_321 + i * 1000)
            os.utime(full, ns=times, follow_symlinks=False)
        os.utime(path, ns=(1_600_000_000_000_000_001, 1_700_000_123_000_000_007 + i))
    return skipped


def _layout(fd: int, size: int) -> list[tuple[int, int]]:
    """The data segments of a file (SEEK_DATA / SEEK_HOLE)."""
    segments, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        segments.append((start, end))
        pos = end
    return segments


def describe_tree(top: Path) -> dict[bytes, dict[str, Any]]:
    """Every entry under ``top`` with every field the restore must keep; hard-link structure
    as the sorted names of each inode with several links."""
    t = os.fsencode(top)
    found: dict[bytes, dict[str, Any]] = {}
    inodes: dict[int, list[bytes]] = {}
    for path, dirs, files in os.walk(t):
        names: list[bytes] = sorted(dirs + files) if path != t else [b"", *sorted(dirs + files)]
        for name in names:
            full = os.path.join(path, name) if name else path
            rel = os.path.relpath(full, t)
            st = os.lstat(full)
            doc: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "nlink": st.st_nlink if not stat.S_ISDIR(st.st_mode) else None,
                "xattrs": sorted(
                    (n, os.getxattr(full, n, follow_symlinks=False))
                    for n in os.listxattr(full, follow_symlinks=False)
                ),
            }
            if stat.S_ISLNK(st.st_mode):
                doc["target"] = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                doc["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(full, os.O_RDONLY)
                try:
                    doc["size"] = st.st_size
                    doc["sha256"] = hashlib.sha256(_read_all(fd)).hexdigest()
                    doc["data_segments"] = _layout(fd, st.st_size)
                finally:
                    os.close(fd)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, []).append(rel)
            found[rel] = doc
    for names in inodes.values():
        for name in names:
            found[name]["link_group"] = sorted(names)
    return found


def _read_all(fd: int) -> bytes:
    chunks = []
    while data := os.read(fd, 1 << 20):
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.skipif(not ROOT, reason="the tree has a device node and a file of another uid: needs root")
def test_every_entry_kind_restores_identical_field_by_field(tmp_path: Path) -> None:
    src = tmp_path / "src"
    skipped = make_tree(src)
    repo = tmp_path / "repo"
    assert run_snap("init", "-r", str(repo)).returncode == 0
    made = run_snap("-r", str(repo), "commit", str(src))
    assert made.returncode == 0, made.stderr
    snapshot_id = made.stdout.decode().strip()
    out = tmp_path / "out"
    restored = run_snap("-r", str(repo), "checkout", snapshot_id[:12], "-o", str(out))
    assert restored.returncode == 0, restored.stderr
    before, after = describe_tree(src), describe_tree(out)
    assert sorted(after) == sorted(before)
    for path in before:
        assert after[path] == before[path], path
    # What the tree holds, so that the comparison above compared something.
    assert before[b"setuid-bin"]["mode"] == 0o4755 and before[b"setuid-bin"]["uid"] == OTHER_UID
    assert before[b"sticky"]["mode"] == 0o1777
    assert before[b"sub/linked"]["link_group"] == [b"linked-2", b"sub/linked", b"sub/linked-3"]
    assert before[b"null-dev"]["rdev"] == (1, 3) and before[b"loop-dev"]["type"] == stat.S_IFBLK
    assert before[b"sub/dangling"]["target"] == b"../no/such/target\xff"
    assert b"caf\xe9-latin1" in before and b"two\nlines" in before
    sparse = after[b"sparse.img"]
    assert sparse["size"] == SPARSE_SIZE and sum(e - s for s, e in sparse["data_segments"]) < 1 << 20
    if skipped:  # a filesystem without some xattr namespace (everything else was compared)
        pytest.skip(f"the filesystem refused: {skipped}")
    assert ("user.binary", b"\x00\xff\x01\x02binary") in after[b"linked-2"]["xattrs"]
    assert ("trusted.link", b"on a symlink") in after[b"sub/dangling"]["xattrs"]
    assert ("trusted.dev", b"\xff" * 300) in after[b"null-dev"]["xattrs"]


def test_second_commit_reads_only_what_changed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"f{i}").write_bytes(os.urandom(5000 + i))
    (src / "big").write_bytes(os.urandom(3 << 20))
    with Repository.init(tmp_path / "repo") as r:
        first = commit_tree(r, src)
        assert first.unread_files == 0 and first.read_bytes >= 3 << 20
        second = commit_tree(r, src)
        assert second.unread_files == 21 and second.read_bytes == 0 and second.new_chunks == 0
        (src / "d" / "f3").write_bytes(b"changed")
        third = commit_tree(r, src)
        assert third.unread_files == 20 and third.read_bytes == len(b"changed")
        forced = commit_tree(r, src, force_read=True)
        assert forced.unread_files == 0 and forced.read_bytes >= 3 << 20
        assert forced.snapshot.kind == "tree" and forced.snapshot.entries == 23  # root, d, 21 files
        assert third.new_chunks == 1


def test_unchanged_tree_costs_no_new_tree_object(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"x" * 100)
    (src / "c").mkdir()
    (src / "c" / "g").write_bytes(b"y" * 100)
    with Repository.init(tmp_path / "repo") as r:
        commit_tree(r, src)
        (src / "c" / "g").write_bytes(b"z" * 100)
        res = commit_tree(r, src)
        # New: g's chunk, c's tree object, the root's; a and a/b are the same objects.
        assert res.new_chunks == 1
        assert res.snapshot.chunk_refs == 6  # 4 tree objects, 2 file chunks
        root = next(rec for rec in r.iter_records(res.snapshot.id) if isinstance(rec, TreeRoot)).entry
        assert root.subtree is not None and r.has_chunk(root.subtree)


def test_gc_keeps_what_only_trees_name_and_a_rebuilt_index_counts_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "f").write_bytes(os.urandom(200_000))
    repo = tmp_path / "repo"
    with Repository.init(repo) as r:
        snap = commit_tree(r, src).snapshot
    assert run_snap("-r", str(repo), "gc").returncode == 0
    for _ in range(2):
        check = run_snap("-r", str(repo), "verify", "--read-data")
        assert check.returncode == 0, check.stderr
        out = tmp_path / f"out{_}"
        assert run_snap("-r", str(repo), "checkout", snap.hex, "-o", str(out)).returncode == 0
        assert (out / "deep" / "er" / "f").read_bytes() == (src / "deep" / "er" / "f").read_bytes()
        for name in os.listdir(repo / "index"):
            os.unlink(repo / "index" / name)
        os.rmdir(repo / "index")  # the next writer rebuilds it, counting through the tree objects
        assert run_snap("-r", str(repo), "gc").returncode == 0


def test_path_selection_and_ls(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"f")
    (src / "a" / "g").write_bytes(b"g")
    (src / "h").write_bytes(b"h")
    os.symlink("a/g", src / "ln")
    with Repository.init(tmp_path / "repo") as r:
        snap = commit_tree(r, src).snapshot
        out = tmp_path / "out"
        res = restore_tree(r, snap, str(out), paths=["a/b", "/h"])
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a", "a/b", "a/b/f", "h"]
        assert res.entries == 4
        with pytest.raises(EntryNotFoundError):
            restore_tree(r, snap, str(tmp_path / "o2"), paths=["a/nope"])
        assert not (tmp_path / "o2").exists()
        with pytest.raises(UsageError, match="not empty"):
            restore_tree(r, snap, str(out))
        with pytest.raises(UsageError, match=r"'\.\.'"):
            restore_tree(r, snap, str(tmp_path / "o3"), paths=["a/../.."])
    repo = str(tmp_path / "repo")
    listed = run_snap("-r", repo, "ls", snap.hex[:12])
    assert listed.stdout.decode().splitlines() == ["a", "a/b", "a/b/f", "a/g", "h", "ln -> a/g"]
    sub = run_snap("-r", repo, "ls", snap.hex[:12], "a/b", "--json")
    docs = json.loads(sub.stdout)
    assert [d["path"] for d in docs] == ["a/b", "a/b/f"] and docs[1]["size"] == 1
    long = run_snap("-r", repo, "ls", "latest", "--long").stdout.decode().splitlines()
    assert long[0].startswith("drwx") and long[-1].startswith("lrwxrwxrwx") and "-> a/g" in long[-1]
    missing = run_snap("-r", repo, "ls", "latest", "nope")
    assert missing.returncode == 3 and "no entry 'nope'" in one_error_line(missing.stderr.decode())


def test_restore_never_writes_outside_outdir(tmp_path: Path) -> None:
    """A symlink planted where the restore makes a directory is never followed."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    with Repository.init(tmp_path / "repo") as r:
        snap = commit_tree(r, src).snapshot
        out = tmp_path / "out"
        out.mkdir()
        os.symlink(outside, out / "d")  # planted: OUTDIR is not empty, refused
        with pytest.raises(UsageError):
            restore_tree(r, snap, str(out))
    assert list(outside.iterdir()) == []


def test_bad_inputs_give_one_line_and_an_exit_code(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_snap("init", "-r", repo).returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    made = run_snap("-r", repo, "commit", str(src))
    tree_id = made.stdout.decode().strip()
    (tmp_path / "file").write_bytes(b"a file")
    file_id = run_snap("-r", repo, "commit", str(tmp_path / "file")).stdout.decode().strip()
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    cases = [
        (["commit", str(tmp_path / "nothing")], 3),
        (["commit", str(tmp_path / "sock")], 10),  # neither a file nor a directory
        (["commit", "/dev/null"], 10),
        (["commit", "--force-read", str(tmp_path / "file")], 2),
        (["checkout", tree_id, "-o", "-"], 2),
        (["checkout", file_id, "-o", str(tmp_path / "x"), "--path", "f"], 2),
        (["ls", file_id], 2),
        (["diff", tree_id, file_id], 2),  # a tree and a file (two trees: tests/test_tree_diff.py)
    ]
    if not ROOT:
        os.chmod(src, 0)
        cases.append((["commit", str(src)], 10))  # the committed directory itself: no snapshot
    for args, code in cases:
        res = run_snap("-r", repo, *args)
        assert res.returncode == code, (args, res.stderr)
        one_error_line(res.stderr.decode())
    sock.close()


def test_a_missing_tree_object_makes_the_snapshot_damaged_not_uncounted(tmp_path: Path) -> None:
    """A tree snapshot whose tree objects cannot be read is damage (gc is blocked)."""
    from snapstore import recovery

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(10_000))
    with Repository.init(tmp_path / "repo") as r:
        snap = commit_tree(r, src).snapshot
        store = r._snapshots
        store.load_tree = None
        ids, damage = recovery.read_chunk_set(store, snap.id)
        assert isinstance(damage, CorruptError) and len(ids) == 0
    with Repository.open(tmp_path / "repo", Mode.READ) as r:
        assert len(next(r.snapshot_chunk_sets([snap.id]))) == 2  # the root's tree object, f's chunk


def test_a_symlink_planted_mid_restore_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone swaps a directory the restore just made for a symlink to elsewhere: the restore
    fails on it (O_NOFOLLOW), and nothing is written outside OUTDIR."""
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    real_mkdir = os.mkdir

    def mkdir_then_swap(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if dir_fd is not None and path == b"d":
            os.rmdir(path, dir_fd=dir_fd)
            os.symlink(outside, path, dir_fd=dir_fd)

    with Repository.init(tmp_path / "repo") as r:
        snap = commit_tree(r, src).snapshot
        monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
        with pytest.raises(StorageIOError):
            restore_tree(r, snap, str(tmp_path / "out"))
    assert list(outside.iterdir()) == []


def test_hard_links_restore_as_one_inode_even_when_the_first_name_is_not_selected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "x").write_bytes(b"shared")
    os.link(src / "a" / "x", src / "b" / "y")
    os.link(src / "a" / "x", src / "b" / "z")
    with Repository.init(tmp_path / "repo") as r:
        made = commit_tree(r, src)
        assert made.read_bytes == len(b"shared")  # one inode, read once
        snap = made.snapshot
        out = tmp_path / "out"
        restore_tree(r, snap, str(out), paths=["b"])
    y, z = os.stat(out / "b" / "y"), os.stat(out / "b" / "z")
    assert y.st_ino == z.st_ino and y.st_nlink == 2 and (out / "b" / "z").read_bytes() == b"shared"
    assert not (out / "a").exists()


def test_removed_tree_snapshots_free_their_chunks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(200_000))  # one chunk (below min_size)
    repo = tmp_path / "repo"
    with Repository.init(repo) as r:
        first = commit_tree(r, src).snapshot
        (src / "d" / "f").write_bytes(os.urandom(200_000))  # one chunk (below min_size)
        second = commit_tree(r, src).snapshot
    assert run_snap("-r", str(repo), "rm", first.hex).returncode == 0
    gc = run_snap("-r", str(repo), "gc", "--json")
    freed = json.loads(gc.stdout)
    assert freed["dead_chunks"] == 3, freed  # the old file's chunk, its d and root tree objects
    check = run_snap("-r", str(repo), "verify", "--read-data")
    assert check.returncode == 0, check.stderr
    assert run_snap("-r", str(repo), "checkout", second.hex, "-o", str(tmp_path / "out")).returncode == 0
    assert (tmp_path / "out" / "d" / "f").read_bytes() == (src / "d" / "f").read_bytes()


@pytest.mark.parametrize("size", [1, 100, 4095, 65535, 65536, 262143, 262144, 300_000])
def test_small_files_get_the_chunk_list_a_single_file_gets(tmp_path: Path, size: int) -> None:
    """Files below min(min_size, zero_run) skip the pipeline's threads; their chunk list is
    still exactly the one the pipeline gives the same bytes (data, all zeros, zeros inside)."""
    from snapstore.model import ChunkRef as Ref
    from snapstore.model import ZeroRun as Zeros
    from snapstore.ops.commit import commit_file
    from snapstore.ops.treeread import children, tree_root

    src = tmp_path / "src"
    src.mkdir()
    contents = {
        "data": os.urandom(size),
        "zeros": bytes(size),
        "mixed": os.urandom(size // 3) + bytes(size - 2 * (size // 3)) + os.urandom(size // 3),
    }
    for name, data in contents.items():
        (src / name).write_bytes(data)
    with Repository.init(tmp_path / "repo") as r:
        tree = commit_tree(r, src).snapshot
        entries = {e.name.decode(): e for e in children(r, tree_root(r, tree))}
        for name in contents:
            single = commit_file(r, src / name).snapshot
            pieces = [rec for rec in r.iter_records(single.id) if isinstance(rec, Ref | Zeros)]
            assert list(entries[name].pieces) == pieces, name
        out = tmp_path / "out"
        restore_tree(r, tree, str(out))
    for name, data in contents.items():
        assert (out / name).read_bytes() == data


def test_a_tree_over_a_backend_counts_and_rebuilds_its_cache(tmp_path: Path) -> None:
    """Over a storage backend the index is a cache: rebuilt from the packs, it counts a tree
    snapshot's chunks through its tree objects as a local index does."""
    from snapstore.backends import MemoryBackend

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(100_000))
    backend = MemoryBackend()
    with Repository.init_backend(backend, cache_dir=tmp_path / "cache") as r:
        snap = commit_tree(r, src).snapshot
    with Repository.open_backend(backend, Mode.WRITE, cache_dir=tmp_path / "cache2") as r:  # a new cache
        assert len(next(r.snapshot_chunk_sets([snap.id]))) == 3
        restore_tree(r, snap, str(tmp_path / "out"))
    assert (tmp_path / "out" / "d" / "f").read_bytes() == (src / "d" / "f").read_bytes()


def test_a_damaged_index_leaves_tree_snapshots_readable_and_whole(tmp_path: Path) -> None:
    """Readers and verify carry on with a temporary index, found tree objects through it, and
    report the index alone; repair rebuilds it and counts the tree again."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(100_000))
    repo = tmp_path / "repo"
    with Repository.init(repo) as r:
        snap = commit_tree(r, src).snapshot
    data = repo / "index" / "data.mdb"
    blob = bytearray(data.read_bytes())
    blob[:8192] = bytes(range(256)) * 32  # both meta pages
    data.write_bytes(bytes(blob))
    check = run_snap("-r", str(repo), "verify", "--read-data")
    err = check.stderr.decode()
    assert check.returncode == 5 and "index" in err and "manifest" not in err, err
    assert run_snap("-r", str(repo), "checkout", snap.hex, "-o", str(tmp_path / "out")).returncode == 0
    assert (tmp_path / "out" / "d" / "f").read_bytes() == (src / "d" / "f").read_bytes()
    assert run_snap("-r", str(repo), "repair").returncode == 0
    assert run_snap("-r", str(repo), "verify", "--read-data").returncode == 0


def test_an_unreadable_file_in_a_tree_is_left_out_exit_15(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(As root nothing is unreadable by its mode: the refusal is injected at open here;
    tests/test_tree_select.py has the real thing, without the capability.)"""
    from tests.helpers import cli

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "ok").write_bytes(b"readable")
    (src / "d" / "secret").write_bytes(b"not for us")
    repo = tmp_path / "repo"
    Repository.init(repo).close()
    real_open = os.open

    def refusing_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if isinstance(path, bytes) and path.endswith(b"/secret"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", refusing_open)
    res = cli("-r", repo, "commit", src)
    assert res.code == 15
    warning, error = [line for line in res.err.splitlines() if line.startswith("snap: ")]
    assert warning.startswith("snap: warning: ") and "d/secret: Permission denied" in warning
    assert error.startswith("snap: error: snapshot ") and "partial" in error
    monkeypatch.undo()
    with Repository.open(repo) as r:
        (snap,) = r.list_snapshots()  # the snapshot was made, without the secret
        assert snap.tags == ("partial",)
        root = next(rec for rec in r.iter_records(snap.id) if isinstance(rec, TreeRoot)).entry
        assert root.subtree is not None
        (d,) = r.get_tree(root.subtree)
        assert d.subtree is not None
        assert [e.name for e in r.get_tree(d.subtree)] == [b"ok"]


_names = st.binary(min_size=1, max_size=40).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
_pieces = st.lists(
    st.one_of(
        st.builds(
            lambda c, n: RefPiece(ChunkId(c), n), st.binary(min_size=32, max_size=32), st.integers(1, 1 << 26)
        ),
        st.builds(ZeroPiece, st.integers(1, 1 << 40)),
    ),
    max_size=5,
)


@st.composite
def _entries(draw: st.DrawFn) -> TreeEntry:
    kind = draw(st.sampled_from(ENTRY_KINDS))
    pieces = tuple(draw(_pieces)) if kind == "file" else ()
    return TreeEntry(
        name=draw(_names),
        kind=kind,
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        mtime_ns=draw(st.integers(-(2**63), 2**63 - 1)),
        ctime_ns=draw(st.integers(-(2**63), 2**63 - 1)),
        inode=draw(st.integers(0, 2**64 - 1)),
        link_id=draw(st.integers(0, 2**64 - 1)),
        user=draw(st.binary(max_size=10)),
        group=draw(st.binary(max_size=10)),
        xattrs=tuple(
            sorted(
                draw(
                    st.dictionaries(st.binary(min_size=1, max_size=20), st.binary(max_size=50), max_size=3)
                ).items()
            )
        ),
        size=sum(p.raw_size if isinstance(p, RefPiece) else p.length for p in pieces),
        digest=draw(st.binary(min_size=32, max_size=32)) if kind == "file" else b"",
        pieces=pieces,
        subtree=ChunkId(draw(st.binary(min_size=32, max_size=32))) if kind == "dir" else None,
        target=draw(st.binary(min_size=1, max_size=60)) if kind == "symlink" else b"",
        rdev=(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
        if kind in ("chardev", "blockdev")
        else (0, 0),
    )


@given(st.lists(_entries(), max_size=8, unique_by=lambda e: e.name))
def test_tree_objects_round_trip(entries: list[TreeEntry]) -> None:
    """Encoding is a function of the entries alone (order given does not matter) and decodes
    back to them, sorted by name: what makes an unchanged directory the same chunk."""
    data = tree_fmt.encode_tree(entries)
    assert tree_fmt.decode_tree(data, "tree") == sorted(entries, key=lambda e: e.name)
    assert tree_fmt.encode_tree(list(reversed(entries))) == data


def test_a_device_the_restorer_may_not_make_is_left_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(As a user other than root, mknod of a device fails with EPERM: injected here.)"""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"kept")
    os.mkfifo(src / "fifo")
    if ROOT:
        os.mknod(src / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with Repository.init(tmp_path / "repo") as r:
        snap = commit_tree(r, src).snapshot
        real_mknod = os.mknod

        def no_devices(path: Any, mode: int = 0o600, device: int = 0, *, dir_fd: int | None = None) -> None:
            if not stat.S_ISFIFO(mode):
                raise PermissionError(errno.EPERM, "Operation not permitted")
            real_mknod(path, mode, device, dir_fd=dir_fd)

        monkeypatch.setattr(os, "mknod", no_devices)
        res = restore_tree(r, snap, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["f", "fifo"]
    assert res.entries == 2
    assert res.warnings == (("dev: chardev 1,3 not restored (Operation not permitted)",) if ROOT else ())
