"""``snap diff A B`` of two tree snapshots (issue 13, point 6): added, removed and modified
paths, which fields changed, byte ranges for files; unchanged subtrees are never entered.
The day-of-changes scenario (diff against a ground truth) is in tests/test_tree_sync.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from snapstore.model import ChunkId, TreeEntry
from snapstore.ops.treecommit import commit_tree
from snapstore.ops.treediff import diff_trees, entry_fields
from snapstore.repo import Repository
from tests.conftest import run_snap
from tests.helpers import one_error_line
from tests.test_json_schema import check

T = 1_600_000_000_000_000_000


def test_entry_fields_names_each_difference() -> None:
    f = TreeEntry(b"f", "file", size=3, digest=b"a" * 32, mtime_ns=T)
    assert entry_fields(f, f) == ()
    changed = TreeEntry(
        b"f", "file", mode=0o600, uid=5, size=4, digest=b"b" * 32, mtime_ns=T + 1,
        xattrs=((b"user.x", b"1"),), link_id=7,
    )  # fmt: skip
    assert entry_fields(f, changed) == ("content", "owner", "mode", "mtime", "xattrs", "hardlink")
    link = TreeEntry(b"f", "symlink", target=b"a")
    assert entry_fields(f, link) == ("type",)
    assert entry_fields(link, TreeEntry(b"f", "symlink", target=b"b")) == ("target",)
    dev = TreeEntry(b"d", "chardev", rdev=(1, 3))
    assert entry_fields(dev, TreeEntry(b"d", "chardev", rdev=(1, 5))) == ("rdev",)
    d = TreeEntry(b"d", "dir", subtree=ChunkId(b"\x01" * 32))
    assert entry_fields(d, TreeEntry(b"d", "dir", subtree=ChunkId(b"\x02" * 32))) == ()  # what is in it


def test_unchanged_subtrees_are_not_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    for d in ("same/deep/er", "changed/deep"):
        (src / d).mkdir(parents=True)
    (src / "same/deep/er/f").write_bytes(b"x" * 1000)
    (src / "changed/deep/g").write_bytes(os.urandom(8 << 20))
    (src / "was-dir").mkdir()
    (src / "was-dir/inside").write_bytes(b"in it")
    with Repository.init(tmp_path / "repo") as r:
        one = commit_tree(r, src).snapshot
        with open(src / "changed/deep/g", "r+b") as f:
            f.seek(5_000_000)
            f.write(b"new bytes")
        (src / "was-dir/inside").unlink()
        (src / "was-dir").rmdir()
        (src / "was-dir").write_bytes(b"now a file")
        two = commit_tree(r, src).snapshot
        fetched: list[bytes] = []
        real = r.get_tree

        def counting(tree_id: ChunkId) -> list[TreeEntry]:
            fetched.append(bytes(tree_id))
            return real(tree_id)

        monkeypatch.setattr(r, "get_tree", counting)
        res = diff_trees(r, one, two)
    got = {(c.path, c.change): c for c in res.changes}
    assert set(got) == {
        (b"", "modified"),  # its mtime: was-dir was made again
        (b"changed/deep/g", "modified"),  # its directories' mtimes did not move
        (b"was-dir", "modified"),
        (b"was-dir/inside", "removed"),
    }
    g = got[b"changed/deep/g", "modified"]
    assert g.fields[0] == "content"  # (and mtime, unless the clock did not move)
    assert len(g.ranges) == 1 and g.ranges[0].start <= 5_000_000 < g.ranges[0].end
    assert g.changed_bytes < 4 << 20  # a chunk or two, not the file
    assert got[b"was-dir", "modified"].fields == ("type",) and got[b"was-dir", "modified"].old_kind == "dir"
    # root (twice: both sides), changed, changed/deep, was-dir: never same/ or what is under it
    assert len(fetched) == 2 + 2 + 2 + 1


def test_cli_text_json_and_refusals(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_snap("init", repo).returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep").write_bytes(b"kept")
    (src / "edit").write_bytes(b"before")

    def commit(path: Path) -> str:
        done = run_snap("commit", str(path), "-r", repo, "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["id"])

    one = commit(src)
    (src / "edit").write_bytes(b"after!")
    os.utime(src / "edit", ns=(T, T))
    (src / "new\nline").write_bytes(b"added")
    two = commit(src)
    done = run_snap("diff", one, two, "-r", repo)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[:-1] == [
        "modified\tdir\tmtime\t0\t.",
        "modified\tfile\tcontent,mtime\t6\tedit",
        "added\tfile\t-\t0\tnew\\nline",
    ]
    assert lines[-1].startswith("1 added, 0 removed, 2 modified; 6 bytes")
    done = run_snap("diff", one, two, "-r", repo, "--json")
    doc = json.loads(done.stdout)
    check("diff_tree", doc)
    assert [c["path"] for c in doc["changes"]] == ["", "edit", "new\nline"]
    file_snap = commit(src / "keep")
    done = run_snap("diff", one, file_snap, "-r", repo)
    assert done.returncode == 2
    one_error_line(done.stderr.decode())
