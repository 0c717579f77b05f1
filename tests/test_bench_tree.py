"""Smoke test of the tree benchmark (bench/treebench.py): a tiny tree of real files, warm
cache; its field-by-field verifier; and its in-place row, run only when snap can sync a tree."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = ("restic", "borg", "rsync")
PHASES = ["commit day 1", "commit day 2", "restore day 2", "in-place day 2"]


def bench_module(name: str) -> ModuleType:
    """A module of bench/ (which imports its neighbours by their bare names)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def treebench(tmp_path: Path, tools: list[str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = tmp_path / "tree.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "treebench.py"),
            "--tree-size",
            "4M",
            "--warm",
            "--tools",
            ",".join(tools),
            "--work",
            str(tmp_path / "w"),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done, json.loads(report.read_text()) if report.exists() else {}


def check_report(done: subprocess.CompletedProcess[str], doc: dict[str, Any], tools: list[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "Traceback" not in done.stderr
    results = doc["results"]
    assert [(r["phase"], r["tool"]) for r in results] == [(p, t) for p in PHASES for t in tools]
    for r in results:
        if r["phase"] == "in-place day 2" and r["status"] == "n/a":
            assert r["detail"].startswith("n/a (")
            continue
        # every restore was compared with the source field by field (treecheck.py)
        assert r["status"] == "ok", r
        assert r["mb_per_s"] > 0 and r["files_per_s"] > 0 and r["max_rss_kib"] > 0
    day1, day2 = doc["workload"][0], doc["workload"][2]
    assert "hard-link group" in day1 and "FIFO" in day1 and "sparse file" in day1
    assert "renamed" in day2 and "mode changes" in day2
    assert "== results" in done.stdout
    for phase in PHASES:
        assert phase in done.stdout


def test_tree_benchmark_with_snap_alone(tmp_path: Path) -> None:
    done, doc = treebench(tmp_path, ["snap"])
    check_report(done, doc, ["snap"])


@pytest.mark.slow
def test_tree_benchmark_with_the_installed_peers(tmp_path: Path) -> None:
    tools = ["snap", *(p for p in PEERS if shutil.which(p))]
    if len(tools) == 1:
        pytest.skip("none of restic, borg, rsync is installed")
    done, doc = treebench(tmp_path, tools)
    check_report(done, doc, tools)
    assert "== issue 13's targets" in done.stdout
    by = {(r["phase"], r["tool"]): r for r in doc["results"]}
    if "rsync" in tools:  # rsync always syncs in place
        assert by[("in-place day 2", "rsync")]["status"] == "ok"
    if "borg" in tools:
        assert by[("in-place day 2", "borg")]["detail"] == "n/a (borg extract has no in-place sync)"


def test_verifier_sees_every_kind_of_difference(tmp_path: Path) -> None:
    treecheck, treeload = bench_module("treecheck"), bench_module("treeload")
    import random

    source = tmp_path / "source"
    treeload.make_specials(source, 4 << 20, random.Random(1))
    (source / "plain.txt").write_bytes(b"x" * 5000)
    expected = treecheck.capture(source)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(source), str(copy)], check=True)
    assert treecheck.compare(expected, treecheck.capture(copy)) == []

    def touched(path: Path, change: Any) -> None:
        """``change`` the path, keeping its mtime (as a tool that forgot the content would)."""
        st = os.lstat(path)
        change(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    touched(copy / "plain.txt", lambda p: p.write_bytes(b"y" * 5000))
    (copy / "hardlinks" / "b").unlink()
    shutil.copy2(copy / "hardlinks" / "a", copy / "hardlinks" / "b")  # a copy, not a link
    touched(copy / "links" / "dangling", lambda p: (p.unlink(), p.symlink_to("elsewhere")))
    (copy / "disk.img").chmod(0o600)
    (copy / "fifo").unlink()
    problems = "\n".join(treecheck.compare(expected, treecheck.capture(copy), limit=20))
    assert "plain.txt: digest" in problems
    assert "hardlinks/a: links" in problems and "hardlinks/b: links" in problems
    assert "links/dangling: target" in problems
    assert "disk.img: mode" in problems
    assert "fifo: missing" in problems


FAKE_SNAP = """\
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["checkout", "--help"]:
    print("--in-place  rewrite OUTPUT where it differs" + ({delete!r}))
    sys.exit(0)
def option(name):
    return args[args.index(name) + 1]
if args[0] == "init":
    os.makedirs(args[1])
elif args[0] == "commit":
    repo = option("-r")
    ref = str(len(os.listdir(repo)))
    subprocess.run(["cp", "-a", args[1], os.path.join(repo, ref)], check=True)
    print(json.dumps({{"id": ref}}))
elif args[0] == "checkout":
    out = option("-o")
    if "--in-place" in args:
        shutil.rmtree(out)
    subprocess.run(["cp", "-a", os.path.join(option("-r"), args[1]), out], check=True)
"""


@pytest.mark.parametrize("supported", [False, True], ids=["without-delete", "with-delete"])
def test_in_place_row_runs_when_snap_checkout_has_delete(tmp_path: Path, supported: bool) -> None:
    """A stand-in snap (copies with cp -a) whose checkout --help shows --delete or not."""
    treebench, treetools = bench_module("treebench"), bench_module("treetools")
    fake = tmp_path / "fake_snap.py"
    fake.write_text(FAKE_SNAP.format(delete="  --delete  remove what is not in it" if supported else ""))
    tool = treetools.snap_tree_tool(command=[sys.executable, str(fake)])
    assert (tool.sync_problem(tool) is None) is supported
    work = tmp_path / "work"
    _, results = treebench.run_all([tool], work, 2 << 20, 1, False)
    assert [m.phase for m in results] == PHASES
    assert [m.status for m in results[:3]] == ["ok", "ok", "ok"]
    sync, log = results[3], work / "tools" / "snap" / "logs" / "in-place-day-2.err"
    if supported:
        assert sync.status == "ok", sync.detail
        assert "--in-place --delete" in log.read_text()
    else:
        assert (sync.status, sync.detail) == ("n/a", "n/a (not supported by this snap)")
        assert not log.exists()
