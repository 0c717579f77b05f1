"""Selection and robustness of a tree commit (issue 13, point 7), and the restore's refusal of
paths that would lead outside OUTDIR.

- The exclude matcher (snapstore/excludes.py): a table of gitignore cases and properties.
- ``--exclude``/``--exclude-file``/``--one-file-system`` end to end (a real tmpfs mount).
- Unreadable entries: real ones. As root nothing is unreadable by its mode, so the commit runs
  without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv; still uid 0, so the repository
  stays writable); as another user chmod 000 is enough. Skips only without setpriv as root.
- A file that changes while it is read: a real writer process appends to it all along.
- Restore: crafted tree objects with unsafe names are refused; nothing lands outside OUTDIR.
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import CorruptError, PartialSnapshotError, UsageError
from snapstore.excludes import compile_excludes, parse_pattern, pattern_lines
from snapstore.format import tree as tree_fmt
from snapstore.model import ChunkId, SnapshotId, SnapshotInfo, TreeEntry, TreeRoot
from snapstore.repo import Mode, Repository
from tests.conftest import SNAP, have, run_snap
from tests.helpers import cli, one_error_line

MiB = 1 << 20

# (patterns, path, is a directory, left out)
CASES = [
    (["*.tmp"], "a.tmp", False, True),
    (["*.tmp"], "d/e/a.tmp", False, True),
    (["*.tmp"], "a.tmpx", False, False),
    (["*.tmp"], "d.tmp/a", False, False),  # only the last component: d.tmp itself is matched
    (["/top"], "top", False, True),
    (["/top"], "d/top", False, False),
    (["d/e"], "d/e", True, True),
    (["d/e"], "x/d/e", True, False),  # a slash in the middle anchors
    (["cache/"], "cache", True, True),
    (["cache/"], "cache", False, False),  # a file named cache stays
    (["cache/"], "a/b/cache", True, True),
    (["**/cache"], "cache", False, True),
    (["**/cache"], "a/b/cache", False, True),
    (["a/**"], "a", True, False),  # everything inside a, not a
    (["a/**"], "a/b/c", False, True),
    (["a/**/z"], "a/z", False, True),
    (["a/**/z"], "a/b/c/z", False, True),
    (["a/**/z"], "b/a/z", False, False),
    (["**"], "any/thing", False, True),
    (["f?o"], "foo", False, True),
    (["f?o"], "f/o", False, False),
    (["[a-c]x"], "bx", False, True),
    (["[a-c]x"], "dx", False, False),
    (["[!a-c]x"], "dx", False, True),
    (["[!a-c]x"], "ax", False, False),
    (["[^a-c]x"], "dx", False, True),
    (["[]]"], "]", False, True),
    (["[ab"], "[ab", False, True),  # unclosed: a literal '['
    (["\\*"], "*", False, True),
    (["\\*"], "x", False, False),
    (["\\!x"], "!x", False, True),
    (["*.log", "!keep.log"], "keep.log", False, False),
    (["*.log", "!keep.log"], "d/keep.log", False, False),
    (["*.log", "!keep.log"], "other.log", False, True),
    (["!keep.log", "*.log"], "keep.log", False, True),  # the last match decides
    (["fo**o"], "foxo", False, True),  # not a whole component: a '*'
    (["*"], "new\nline", False, True),  # names may hold a newline
    (["x*"], "x\udcff", False, True),  # and bytes that are not UTF-8
]


@pytest.mark.parametrize(("patterns", "path", "is_dir", "left_out"), CASES)
def test_the_table_of_gitignore_cases(patterns: list[str], path: str, is_dir: bool, left_out: bool) -> None:
    assert compile_excludes(patterns).excluded(os.fsencode(path), is_dir) is left_out


@pytest.mark.parametrize("bad", ["", "!", "/", "//", "!/"])
def test_patterns_that_match_nothing_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_pattern(bad)


def test_exclude_file_lines() -> None:
    text = "# a comment\n\n*.tmp  \n\\#hash\r\nend\\ \n  \n!keep"
    assert pattern_lines(text) == ["*.tmp", "\\#hash", "end\\ ", "!keep"]
    assert compile_excludes(pattern_lines(text)).excluded(b"#hash", False)


_names = st.text("ab.*?", min_size=1, max_size=6)
_plain = st.text("ab.", min_size=1, max_size=6)
_paths = st.lists(_plain, min_size=1, max_size=4).map("/".join)


@given(pattern=_names, name=_plain)
def test_one_component_patterns_mean_what_fnmatch_means(pattern: str, name: str) -> None:
    """Without '/' or '[', a pattern is fnmatch's on one name (which has no '/')."""
    assert compile_excludes([pattern]).excluded(name.encode(), False) is fnmatch.fnmatchcase(name, pattern)


@given(pattern=_names, path=_paths, is_dir=st.booleans())
def test_an_unanchored_pattern_looks_at_the_last_name_only(pattern: str, path: str, is_dir: bool) -> None:
    last = path.rsplit("/", 1)[-1].encode()
    ex = compile_excludes([pattern])
    assert ex.excluded(path.encode(), is_dir) is ex.excluded(last, is_dir)


@given(pattern=_names, path=_paths, is_dir=st.booleans())
def test_a_negation_after_takes_back_what_a_pattern_leaves_out(pattern: str, path: str, is_dir: bool) -> None:
    assert not compile_excludes([pattern, "!" + pattern]).excluded(path.encode(), is_dir)
    alone = compile_excludes([pattern]).excluded(path.encode(), is_dir)
    assert compile_excludes(["!" + pattern, pattern]).excluded(path.encode(), is_dir) is alone


@given(path=_paths)
def test_an_anchored_literal_matches_one_path(path: str) -> None:
    literal = "".join("\\" + c if c in "*?[\\" else c for c in path)
    ex = compile_excludes(["/" + literal])
    assert ex.excluded(path.encode(), False)
    assert not ex.excluded(b"x/" + path.encode(), False)
    assert not ex.excluded(path.encode() + b"x", False)


# -- the commit side ----------------------------------------------------------------------------


def _tree(repo: Path, snap: SnapshotInfo) -> dict[str, TreeEntry]:
    """Every entry of a tree snapshot by its path."""
    found: dict[str, TreeEntry] = {}
    with Repository.open(repo) as r:
        root = next(rec for rec in r.iter_records(snap.id) if isinstance(rec, TreeRoot)).entry

        def walk(entry: TreeEntry, prefix: str) -> None:
            assert entry.subtree is not None
            for child in r.get_tree(entry.subtree):
                path = prefix + os.fsdecode(child.name)
                found[path] = child
                if child.kind == "dir":
                    walk(child, path + "/")

        walk(root, "")
    return found


def _latest(repo: Path) -> SnapshotInfo:
    with Repository.open(repo) as r:
        return r.list_snapshots()[-1]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(path).close()
    return path


def test_excludes_leave_out_what_they_match_and_nothing_else(tmp_path: Path, repo: Path) -> None:
    src = tmp_path / "src"
    for rel in ["a.tmp", "keep.tmp", "d/b.tmp", "d/c.txt", "top", "d/top", "build/x", "e/cache/y", "cache"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    (src / "junk\udcff").write_bytes(b"")  # the name's last byte is 0xff (not UTF-8)
    patterns = tmp_path / "patterns"
    patterns.write_bytes(b"# from a file\n**/cache/\n\n/build/\njunk\xff\n")
    res = cli("-r", repo, "commit", src, "--json", "-e", "*.tmp", "-e", "!keep.tmp", "-e", "/top",
              "--exclude-file", patterns)  # fmt: skip
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["excludes"] == ["*.tmp", "!keep.tmp", "/top", "**/cache/", "/build/", "junk\udcff"]
    assert doc["unreadable"] == [] and doc["partial"] is False
    assert sorted(_tree(repo, _latest(repo))) == ["cache", "d", "d/c.txt", "d/top", "e", "keep.tmp"]
    assert _latest(repo).excludes == tuple(doc["excludes"])  # recorded in the trailer


def test_excludes_in_the_trailer_round_trip_and_bad_ones_are_damage() -> None:
    from snapstore.format import manifest as mf

    fields = dict(name="n", created=datetime.now(UTC), message="", size=0, entries=1, chunk_refs=1,
                  hostname="h", source="/s", kind="tree")  # fmt: skip
    plain = mf.encode_trailer(**fields)  # type: ignore[arg-type]
    assert b"excludes" not in plain  # none: the bytes a trailer always had
    patterns = ("*.tmp", "!keep\udcff", "/top/")
    body = mf.encode_trailer(**fields, excludes=patterns)[1:-12]  # type: ignore[arg-type]
    sid = SnapshotId(bytes(32))
    assert mf.decode_trailer(sid, body, "m").excludes == patterns
    bads: list[object] = ["*.tmp", [""], [1], {}]
    for bad in bads:
        damaged = json.dumps({**json.loads(body), "excludes": bad}).encode()
        with pytest.raises(CorruptError):
            mf.decode_trailer(sid, damaged, "m")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A directory with a tmpfs mounted at src/mnt."""
    if os.geteuid() != 0 or not have("mount"):
        pytest.skip("needs root to mount a tmpfs")
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "here").write_bytes(b"on this file system")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "snaptest", str(src / "mnt")]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (src / "mnt" / "there").write_bytes(b"on another one")
        yield src
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=True)


def test_one_file_system_records_a_mount_point_empty(mounted: Path, repo: Path) -> None:
    assert cli("-r", repo, "commit", mounted).code == 0
    assert sorted(_tree(repo, _latest(repo))) == ["here", "mnt", "mnt/there"]
    res = cli("-r", repo, "commit", mounted, "--one-file-system")
    assert res.code == 0, res.err
    entries = _tree(repo, _latest(repo))
    assert sorted(entries) == ["here", "mnt"] and entries["mnt"].kind == "dir"
    out = mounted.parent / "out"
    assert cli("-r", repo, "checkout", "latest", "-o", out).code == 0
    assert list((out / "mnt").iterdir()) == [] and (out / "here").read_bytes() == b"on this file system"


def _without_dac() -> list[str]:
    """A command prefix under which mode bits bind (as root: no DAC capabilities)."""
    if os.geteuid() != 0:
        return []
    if not have("setpriv"):
        pytest.skip("as root, needs setpriv to drop CAP_DAC_OVERRIDE")
    return [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    ]


def _snap(prefix: list[str], *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    return subprocess.run(
        [*prefix, *SNAP, *map(str, args)], capture_output=True, env=env, timeout=300, check=False
    )


def test_unreadable_entries_are_left_out_and_the_snapshot_is_partial(tmp_path: Path, repo: Path) -> None:
    prefix = _without_dac()
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "inner").write_bytes(b"behind a closed door")
    (src / "ok").write_bytes(b"readable")
    (src / "secret").write_bytes(b"not for us")
    (src / "big").write_bytes(os.urandom(2 * MiB))  # through the pipeline, not the pool
    for name in ("locked", "secret", "big"):
        os.chmod(src / name, 0)
    try:
        probe = subprocess.run([*prefix, "cat", str(src / "secret")], capture_output=True, check=False)
        if probe.returncode == 0:
            pytest.skip("mode bits do not bind here (capabilities kept)")
        res = _snap(prefix, "-r", repo, "commit", src, "--json")
        assert res.returncode == PartialSnapshotError.exit_code, res.stderr
        lines = res.stderr.decode().strip().splitlines()
        assert "Traceback" not in res.stderr.decode()
        warnings = [line for line in lines if line.startswith("snap: warning: ")]
        assert len(warnings) == 3 and len(lines) == 4, lines
        assert lines[-1].startswith("snap: error: snapshot ") and "3 unreadable entries" in lines[-1]
        for name in ("big", "locked", "secret"):
            assert any(f"src/{name}: Permission denied; not recorded" in w for w in warnings), name
        doc = json.loads(res.stdout)
        assert doc["partial"] is True and len(doc["unreadable"]) == 3
        snap = _latest(repo)
        assert snap.tags == ("partial",) and snap.hex == doc["id"]
        assert sorted(_tree(repo, snap)) == ["ok"]
        out = tmp_path / "out"
        assert cli("-r", repo, "checkout", snap.hex, "-o", out).code == 0
        assert (out / "ok").read_bytes() == b"readable"

        # Left out by --exclude, the locked directory is never listed: no warning, whole.
        res = _snap(
            prefix, "-r", repo, "commit", src, "-e", "locked/", "-e", "/secret", "-e", "big", "--json"
        )
        assert res.returncode == 0 and res.stderr == b"", res.stderr
        assert json.loads(res.stdout)["partial"] is False and _latest(repo).tags == ()
    finally:
        for name in ("locked", "secret", "big"):
            os.chmod(src / name, 0o700)


WRITER = """
import os, sys, time
with open(sys.argv[1], "ab", buffering=0) as f:
    f.write(b"x" * 4096)
    print("ready", flush=True)
    while True:
        f.write(os.urandom(4096))
        time.sleep(0.002)
"""


def test_a_file_growing_all_along_is_read_twice_then_recorded_with_a_warning(
    tmp_path: Path, repo: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    start = os.urandom(8 * MiB)
    (src / "growing").write_bytes(start)
    (src / "still").write_bytes(b"quiet")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src / "growing")], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        res = run_snap("-r", str(repo), "commit", str(src), "--json")
    finally:
        writer.kill()
        writer.wait()
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["changed"]) == 1 and "src/growing: changed while it was read, twice" in doc["changed"][0]
    (line,) = res.stderr.decode().strip().splitlines()
    assert line.startswith("snap: warning: ") and "growing: changed while it was read" in line
    assert doc["read_bytes"] >= 2 * len(start)  # read once more
    assert doc["partial"] is False and doc["unreadable"] == []
    entry = _tree(repo, _latest(repo))["growing"]
    assert entry.size >= len(start) + 4096
    out = tmp_path / "out"
    assert cli("-r", repo, "checkout", "latest", "-o", out).code == 0
    assert (out / "growing").read_bytes()[: len(start) + 4096] == start + b"x" * 4096


# -- the restore side ---------------------------------------------------------------------------


def _raw_entry(entry: TreeEntry, name: bytes) -> bytes:
    """``entry`` encoded under ``name``, which the encoder would refuse."""
    placeholder = b"A" * max(1, len(name))
    encoded = tree_fmt.encode_entry(replace(entry, name=placeholder))
    return struct.pack("<H", len(name)) + name + encoded[2 + len(placeholder) :]


def _crafted_snapshot(repo: Path, entries: list[bytes]) -> str:
    """A tree snapshot whose root's tree object holds ``entries`` (raw) as they are."""
    with Repository.open(repo, Mode.WRITE) as r:
        data = b"SNAPTREE" + struct.pack("<II", 1, len(entries)) + b"".join(entries)
        tree_id, _ = r.put_chunk(data)
        builder = r.begin_snapshot()
        builder.set_root(TreeEntry(name=b"root", kind="dir", mode=0o755, subtree=tree_id))
        info = r.publish_snapshot(
            builder, name="crafted", created=datetime.now(UTC), message="", source="/x", sequence=None
        )
        return info.hex


FILE = TreeEntry(name=b"f", kind="file", mode=0o644)
ESCAPE = TreeEntry(name=b"l", kind="symlink", mode=0o777, target=b"/")


@pytest.mark.parametrize(
    "name", [b"..", b".", b"../escaped", b"/etc/escaped", b"a/b", b"", b"a\0b"], ids=repr
)
def test_a_tree_object_with_an_unsafe_name_is_refused(tmp_path: Path, repo: Path, name: bytes) -> None:
    raw = _raw_entry(FILE, name)
    with pytest.raises(CorruptError, match="unsafe entry name"):
        tree_fmt.decode_tree(b"SNAPTREE" + struct.pack("<II", 1, 1) + raw, "crafted")
    snap = _crafted_snapshot(repo, [raw])
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "in"
    res = cli("-r", repo, "checkout", snap, "-o", out)
    assert res.code == 4, res.err
    assert "is corrupt" in one_error_line(res.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "repo"]
    assert [p.name for p in (tmp_path / "out").iterdir()] in ([], ["in"])
    assert not out.exists() or list(out.iterdir()) == []


def test_a_symlink_then_a_directory_of_the_same_name_is_refused(tmp_path: Path, repo: Path) -> None:
    """An earlier entry cannot plant a symlink that a later one would go through: a name is
    once in a tree object, and a repeat is damage."""
    with Repository.open(repo, Mode.WRITE) as r:
        empty, _ = r.put_chunk(tree_fmt.encode_tree([]))
    link = _raw_entry(replace(ESCAPE, target=str(tmp_path / "outside").encode()), b"d")
    directory = _raw_entry(TreeEntry(name=b"x", kind="dir", mode=0o755, subtree=ChunkId(empty)), b"d")
    (tmp_path / "outside").mkdir()
    snap = _crafted_snapshot(repo, [link, directory])
    res = cli("-r", repo, "checkout", snap, "-o", tmp_path / "out")
    assert res.code == 4
    assert "not in ascending order" in one_error_line(res.err)
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_pre_existing_symlink_at_a_directory_s_place_is_not_followed(tmp_path: Path, repo: Path) -> None:
    """A restore (whole or --path) goes into an empty OUTDIR only; and OUTDIR named through
    a symlink left in its place by someone else is refused as not empty the same way."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    assert cli("-r", repo, "commit", src).code == 0
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "d")
    for extra in ([], ["--path", "d/f"]):
        res = cli("-r", repo, "checkout", "latest", "-o", out, *extra)
        assert res.code == 2
        assert "not empty" in one_error_line(res.err)
    assert list(outside.iterdir()) == []
