"""Tags and host names (issue 18, point 7): ``snap commit --tag/--host`` records them in the
manifest's trailer, log/show/stats print them, and log, stats and prune select snapshots by
them with restic's meaning (prune considers only the matching snapshots)."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import snapstore
from snapstore.errors import UsageError
from snapstore.model import SnapshotId, SnapshotInfo
from snapstore.selection import MAX_TAG_LENGTH, SnapshotFilter, check_tag, parse_tags
from tests.conftest import run_snap

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def snap_json(*args: str) -> Any:
    done = run_snap(*args, "--json")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def commit(repo: Path, src: Path, *args: str) -> str:
    src.write_bytes(os.urandom(100_000))
    return str(snap_json("commit", str(src), "-r", str(repo), *args)["id"])


@pytest.fixture
def tagged(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    assert run_snap("init", str(repo)).returncode == 0
    src = tmp_path / "vm.img"
    ids = {
        "nightly-a": commit(repo, src, "--tag", "nightly", "--host", "alpha"),
        "nightly-vm-b": commit(repo, src, "--tag", "nightly,vm", "--host", "beta"),
        "manual": commit(repo, src, "-t", "manual", "--tag", "vm"),
        "plain": commit(repo, src),
        "nightly-a2": commit(repo, src, "--tag", "nightly", "--host", "alpha"),
    }
    return repo, ids


def test_commit_records_tags_and_host_and_every_command_shows_them(
    tagged: tuple[Path, dict[str, str]],
) -> None:
    repo, ids = tagged
    r = ("-r", str(repo))
    shown = snap_json("show", ids["nightly-vm-b"], *r)
    assert shown["tags"] == ["nightly", "vm"] and shown["hostname"] == "beta"
    plain = snap_json("show", ids["plain"], *r)
    assert plain["tags"] == [] and plain["hostname"] == socket.gethostname()  # the default host
    assert snap_json("show", ids["manual"], *r)["tags"] == ["manual", "vm"]
    text = run_snap("show", ids["nightly-vm-b"], *r).stdout.decode()
    assert "tags:       nightly, vm" in text and "host:       beta" in text
    table = run_snap("log", *r).stdout.decode().splitlines()
    assert "HOST" in table[0] and "TAGS" in table[0]
    row = next(line for line in table if line.startswith(ids["nightly-vm-b"][:12]))
    assert " beta " in row and " nightly,vm " in row


def test_log_and_stats_filter_by_tag_and_host_as_restic_does(tagged: tuple[Path, dict[str, str]]) -> None:
    repo, ids = tagged
    r = ("-r", str(repo))

    def listed(*args: str) -> set[str]:
        return {s["id"] for s in snap_json("log", *r, *args)}

    nightly = {ids["nightly-a"], ids["nightly-vm-b"], ids["nightly-a2"]}
    assert listed("--tag", "nightly") == nightly
    assert listed("--tag", "nightly,vm") == {ids["nightly-vm-b"]}  # all of a list
    assert listed("--tag", "nightly,vm", "--tag", "manual") == {ids["nightly-vm-b"], ids["manual"]}  # or
    assert listed("--host", "alpha") == {ids["nightly-a"], ids["nightly-a2"]}
    assert listed("--host", "alpha", "--host", "beta") == nightly
    assert listed("--tag", "vm", "--host", "beta") == {ids["nightly-vm-b"]}  # both filters
    assert listed("--tag", "nope") == set()
    stats = snap_json("stats", *r, "--tag", "vm")
    assert {s["id"] for s in stats["snapshots"]} == {ids["nightly-vm-b"], ids["manual"]}
    assert stats["snapshot_count"] == 2


def test_prune_considers_only_the_snapshots_the_filter_matches(tagged: tuple[Path, dict[str, str]]) -> None:
    repo, ids = tagged
    r = ("-r", str(repo))
    plan = snap_json("prune", "--keep-last", "1", "--tag", "nightly", "--host", "alpha", "--dry-run", *r)
    # Among alpha's nightly snapshots the newest is kept, the older one dropped; the others
    # (older than it, or newer, of the same name) are neither kept nor dropped.
    assert [s["id"] for s in plan["drop"]] == [ids["nightly-a"]]
    assert [s["id"] for s in plan["keep"]] == [ids["nightly-a2"]]
    for kept in plan["keep"]:  # the snapshot object here too
        assert kept["name"] == "vm.img" and kept["tags"] == ["nightly"] and kept["reasons"]
    done = snap_json("prune", "--keep-last", "1", "--tag", "nightly", "--host", "alpha", *r)
    assert [s["id"] for s in done["drop"]] == [ids["nightly-a"]]
    left = {s["id"] for s in snap_json("log", *r)}
    assert left == set(ids.values()) - {ids["nightly-a"]}
    # Without a filter, the same rule considers all five: only the newest stays.
    assert {s["id"] for s in snap_json("prune", "--keep-last", "1", "-n", *r)["keep"]} == {ids["nightly-a2"]}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--tag", ""), "empty tag"),
        (("--tag", "a,,b"), "empty tag"),
        (("--tag", "bad\x1b[31m"), "control character"),
        (("--tag", "x" * (MAX_TAG_LENGTH + 1)), "longer than"),
        (("--host", ""), "empty host"),
        (("--host", "a\nb"), "control character"),
    ],
)
def test_bad_tags_and_hosts_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, str], said: str) -> None:
    repo = tmp_path / "repo"
    assert run_snap("init", str(repo)).returncode == 0
    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    for command in (["commit", str(src)], ["log"], ["prune", "--keep-last", "1", "-n"]):
        done = run_snap(*command, "-r", str(repo), *args)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and said in lines[0], (command, lines)
        assert "\x1b" not in lines[0]
    assert snap_json("log", "-r", str(repo)) == []  # nothing was committed


def test_python_api_commits_tags_and_prunes_by_filter(tmp_path: Path) -> None:
    src = tmp_path / "vm.img"
    with snapstore.open_repository(tmp_path / "repo", snapstore.Mode.WRITE, create=True) as repo:
        made = []
        for i, tags in enumerate((["nightly"], ["nightly"], [])):
            src.write_bytes(os.urandom(50_000))
            made.append(
                snapstore.commit_file(repo, src, tags=tags, host="h", now=T0 + timedelta(hours=i)).snapshot
            )
        assert made[0].tags == ("nightly",) and made[0].hostname == "h" and made[2].tags == ()
        with pytest.raises(UsageError):
            snapstore.commit_file(repo, src, tags=["a,b"])
    with snapstore.open_repository(tmp_path / "repo", snapstore.Mode.EXCLUSIVE) as repo:
        select = snapstore.SnapshotFilter.from_options(tags=["nightly"])
        assert select.select(repo.list_snapshots()) == made[:2]
        res = snapstore.prune(repo, snapstore.KeepPolicy(last=1), select=select)
        assert [s.id for s in res.plan.drop] == [made[0].id]
        assert [s.id for s in repo.list_snapshots()] == [made[1].id, made[2].id]


def _info(n: int, tags: tuple[str, ...], host: str) -> SnapshotInfo:
    return SnapshotInfo(SnapshotId(bytes([n]) * 32), "n", T0, "", 0, 1, 0, hostname=host, tags=tags)


TAG = st.sampled_from(["a", "b", "c", "d"])


@given(
    st.lists(st.tuples(st.frozensets(TAG), st.sampled_from(["h1", "h2"])), max_size=8),
    st.lists(st.frozensets(TAG, min_size=1), max_size=3),
    st.lists(st.sampled_from(["h1", "h2", "h3"]), max_size=2),
)
def test_filter_is_restics_or_of_ands(
    snaps: list[tuple[frozenset[str], str]], wanted: list[frozenset[str]], hosts: list[str]
) -> None:
    infos = [_info(i, tuple(sorted(tags)), host) for i, (tags, host) in enumerate(snaps)]
    select = SnapshotFilter.from_options([",".join(sorted(w)) for w in wanted], hosts)
    expected = [
        s
        for s in infos
        if (not wanted or any(w <= set(s.tags) for w in wanted)) and (not hosts or s.hostname in hosts)
    ]
    assert select.select(infos) == expected


def test_parse_tags_splits_sorts_and_dedups() -> None:
    assert parse_tags(["b,a", "a", "c"]) == ("a", "b", "c")
    assert check_tag("ünï cödé") == "ünï cödé"  # printable, not only ASCII
    with pytest.raises(UsageError):
        check_tag("a\u202eb")  # a bidirectional override is not printable
