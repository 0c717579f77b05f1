"""snapstore's tree benchmark: snap side by side with restic, borg and rsync on a directory of
real files (issue 13).

Run from the repository root::

    python bench/treebench.py                          # ~1 GB tree, every installed tool, cold cache
    python bench/treebench.py --tree-size 16M --warm   # a quick look
    python bench/treebench.py --tools snap,rsync --json tree.json

The workload (bench/treeload.py) is a seeded selection of this machine's files (the Python
installation running this, /usr/share, /usr/lib) with every special entry kind, then a day of
changes made to the same directory in place. Phases, each tool in turn within a phase:

- commit day 1: the first snapshot (rsync: a copy into its mirror);
- commit day 2: the second, after the day of changes (rsync: --delete into the mirror);
- restore day 2: a full restore into an empty directory;
- in-place day 2: day 2 synced into a restore of day 1 (snap checkout --in-place --delete,
  rsync -aHAX --delete from the mirror, restic restore --overwrite if-changed --delete where
  its version has them; the others: n/a).

Every restore is compared with the source field by field (type, mode, owner, mtime, content,
link target, device numbers, xattrs, hard links: bench/treecheck.py). As root the page cache
is dropped before every phase (--warm keeps it). Progress goes to stderr, the report to
stdout. Exit status: 0 when every restore verified, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import treecheck
import treeload
from report import machine_info, print_failures, print_header, source_state
from runner import Run, allocated_bytes, drop_caches, fresh_dir, run_measured
from tools import Argv, Context, compile_snap, snap_env
from treereport import COMMIT_1, COMMIT_2, RESTORE, SYNC, TreeMeasurement, print_tree_results
from treetools import TREE_NAME, TreeTool, make_tree_tools

from bench import cache_mode, progress
from snapstore.errors import UsageError
from snapstore.units import parse_size

GiB = 1024**3
T = TypeVar("T")


def tree_size(text: str) -> int:
    try:
        size = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if size < 1024 * 1024:
        raise argparse.ArgumentTypeError("use at least 1M")
    return size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="treebench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", type=Path, default=Path("bench-work-tree"), help="work directory")
    p.add_argument(
        "--tree-size", type=tree_size, default=GiB, help="bytes of files in day 1 (default 1G; at least 1M)"
    )
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("--tools", default="snap,restic,borg,rsync", help="comma-separated (default: all four)")
    p.add_argument("--threads", type=int, default=None, help="passed to snap commit/checkout")
    p.add_argument("--warm", action="store_true", help="do not drop the page cache before each phase")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write all figures here")
    return p.parse_args(argv)


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a fresh process: the workload's and the manifests' memory stays out of
    this one, whose resident pages a tool's peak RSS could otherwise inherit."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def make_day1(tree: Path, size: int, seed: int, manifest: Path) -> tuple[str, int, int]:
    summary = treeload.build_tree(tree, size, seed)
    found = treecheck.capture(tree)
    treecheck.save(found, manifest)
    return (summary, *treecheck.totals(found))


def make_day2(tree: Path, seed: int, manifest: Path) -> tuple[str, int, int]:
    summary = treeload.day_of_changes(tree, seed)
    found = treecheck.capture(tree)
    treecheck.save(found, manifest)
    return (summary, *treecheck.totals(found))


class TreeRun:
    """One tool, its own fresh repository; the phases are called in order by :func:`run_all`."""

    def __init__(self, tt: TreeTool, work: Path, source: Path, cold: bool) -> None:
        self.tt, self.work, self.cold = tt, work, cold
        base = work / "tools" / tt.name
        shutil.rmtree(base, ignore_errors=True)
        self.logs = fresh_dir(base / "logs")
        self.ctx = Context(repo=base / "repo", cache=base / "cache", stage=source, out=base / "out")
        self.refs: dict[str, str] = {}
        self.problem: str | None = None
        self.ctx.cache.mkdir(parents=True)
        if tt.tool.init is not None:
            run = self.execute(tt.tool.init, self.ctx, self.ctx.cache, "init", timed=False)
            if run.returncode:
                self.problem = f"init failed (exit {run.returncode}): {run.stderr_tail}"

    def execute(self, make: Argv, ctx: Context, cwd: Path, label: str, timed: bool = True) -> Run:
        if timed and self.cold:
            drop_caches()
        tool = self.tt.tool
        return run_measured(tool.argv(make, ctx), cwd, tool.environment(ctx), self.logs / label)

    def measured(self, m: TreeMeasurement, make: Argv, ctx: Context, cwd: Path) -> Run | None:
        """Run a timed phase into ``m``; the run, or None (``m`` says why) if it failed."""
        run = self.execute(make, ctx, cwd, m.phase.replace(" ", "-"))
        m.seconds, m.sync_seconds, m.max_rss_kib = run.seconds, run.sync_seconds, run.max_rss_kib
        m.written_bytes = run.written_bytes
        if run.returncode:
            m.status, m.detail = "FAIL", f"exit {run.returncode}: {run.stderr_tail}"
            return None
        return run

    def commit(self, m: TreeMeasurement, label: str) -> None:
        ctx = replace(self.ctx, label=label)
        if run := self.measured(m, self.tt.tool.commit, ctx, self.ctx.stage):
            try:
                self.refs[label] = self.tt.tool.ref(run.stdout, ctx)
            except (ValueError, KeyError) as exc:
                m.status, m.detail = "FAIL", f"cannot read the snapshot's id from the output: {exc}"
            m.repo_bytes = allocated_bytes(self.ctx.repo)

    def restore(self, m: TreeMeasurement, label: str, manifest: Path) -> None:
        ctx = replace(self.ctx, ref=self.refs[label])
        fresh_dir(self.ctx.out)
        if self.measured(m, self.tt.tool.checkout, ctx, self.ctx.out):
            self.verify(m, ctx, manifest)

    def sync(self, m: TreeMeasurement, label: str, over: str, reference: Path, manifest: Path) -> None:
        """``label`` into a tree of ``over`` (a restore of it, or for a tool without history a
        copy of ``reference``), in place."""
        assert self.tt.tool.in_place is not None
        out = fresh_dir(self.ctx.out)
        if self.tt.seeded_by_copy:
            subprocess.run(["cp", "-a", str(reference), str(out / TREE_NAME)], check=True)
        else:
            setup = self.execute(
                self.tt.tool.checkout, replace(self.ctx, ref=self.refs[over]), out, "sync-setup", timed=False
            )
            if setup.returncode:
                m.status = "FAIL"
                m.detail = f"restoring {over} to sync into: exit {setup.returncode}: {setup.stderr_tail}"
                return
        os.sync()
        ctx = replace(self.ctx, ref=self.refs[label])
        if self.measured(m, self.tt.tool.in_place, ctx, out):
            self.verify(m, ctx, manifest)

    def verify(self, m: TreeMeasurement, ctx: Context, manifest: Path) -> None:
        problems = in_child(treecheck.verify, self.tt.restored(ctx), manifest)
        if problems:
            m.status, m.detail = "FAIL", "; ".join(problems)
        shutil.rmtree(self.ctx.out, ignore_errors=True)


def run_all(
    tools: list[TreeTool], work: Path, size: int, seed: int, cold: bool
) -> tuple[list[str], list[TreeMeasurement]]:
    """Build the workload and run every phase; returns the workload's notes and the results."""
    source = fresh_dir(work / "source")
    tree, reference = source / TREE_NAME, work / "reference-day1"
    manifests = {day: work / f"manifest-{day}.pickle" for day in ("day1", "day2")}
    progress("building day 1 ...")
    note1, bytes1, files1 = in_child(make_day1, tree, size, seed, manifests["day1"])
    shutil.rmtree(reference, ignore_errors=True)
    if any(t.seeded_by_copy for t in tools):
        subprocess.run(["cp", "-a", str(tree), str(reference)], check=True)
    runs = [TreeRun(t, work, source, cold) for t in tools]
    results: list[TreeMeasurement] = []

    def phase(name: str, size: int, files: int, act: Callable[[TreeRun, TreeMeasurement], None]) -> None:
        for run in runs:
            m = TreeMeasurement(run.tt.name, name, size, workload="tree", files=files)
            if run.problem:
                m.status, m.detail = "FAIL", run.problem
            else:
                act(run, m)
            took = f"{m.seconds:.1f} s" if m.seconds is not None else "-"
            progress(f"  {m.tool} {name}: {m.status}, {took}" + (f": {m.detail}" if m.detail else ""))
            results.append(m)

    progress("committing day 1 ...")
    phase(COMMIT_1, bytes1, files1, lambda r, m: r.commit(m, "day1"))
    progress("changing the tree into day 2 ...")
    note2, bytes2, files2 = in_child(make_day2, tree, seed, manifests["day2"])
    progress("committing day 2 ...")
    phase(COMMIT_2, bytes2, files2, lambda r, m: r.commit(m, "day2"))
    progress("restoring day 2 ...")
    phase(RESTORE, bytes2, files2, lambda r, m: _restore(r, m, manifests["day2"]))
    progress("syncing day 2 into day 1 in place ...")
    problems = {run.tt.name: run.tt.sync_problem(run.tt) for run in runs}
    phase(SYNC, bytes2, files2, lambda r, m: _sync(r, m, problems[r.tt.name], reference, manifests["day2"]))
    notes = [
        note1,
        f"        {bytes1 / 1e6:.1f} MB in {files1} entries",
        note2,
        f"        {bytes2 / 1e6:.1f} MB in {files2} entries",
    ]
    return notes, results


def _restore(run: TreeRun, m: TreeMeasurement, manifest: Path) -> None:
    if "day2" not in run.refs:
        m.status, m.detail = "skipped", "no day 2 (its commit failed)"
    else:
        run.restore(m, "day2", manifest)


def _sync(run: TreeRun, m: TreeMeasurement, problem: str | None, reference: Path, manifest: Path) -> None:
    if problem is not None or run.tt.tool.in_place is None:
        m.status, m.detail = "n/a", problem or "n/a"
    elif not {"day1", "day2"} <= run.refs.keys():
        m.status, m.detail = "skipped", "a commit failed"
    else:
        run.sync(m, "day2", "day1", reference, manifest)


def choose(spec: str, known: list[TreeTool]) -> tuple[list[TreeTool], list[str]]:
    """The requested tools that are installed, in the order asked, and notes about the others."""
    by = {t.name: t for t in known}
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by]
    if unknown:
        print(
            f"treebench.py: unknown tool(s) {', '.join(unknown)}; choose from {', '.join(by)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    chosen = [by[name] for name in wanted if by[name].tool.available()]
    return chosen, [f"{name}: not installed, skipped" for name in wanted if not by[name].tool.available()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # interleave with progress
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tools, tool_notes = choose(args.tools, make_tree_tools(args.threads))
    cold, cache_note = cache_mode(args.warm)
    started = datetime.now(UTC)
    command = shlex.join(["python", "bench/treebench.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"snapstore tree benchmark, {started:%Y-%m-%d %H:%M} UTC: {command}")
    machine = machine_info(work)
    settings = [
        f"cache:      {cache_note}",
        f"tree:       {args.tree_size / 1e6:.0f} MB of files wanted, seed {args.seed}, work dir {work}",
        *tool_notes,
    ]
    if any(t.tool.env is snap_env for t in tools):
        settings.append(compile_snap())
    print_header(
        machine, {t.name: t.tool.version() for t in tools}, {t.name: t.tool.note for t in tools}, settings
    )
    notes, results = run_all(tools, work, args.tree_size, args.seed, cold)
    print("== workload: tree")
    for line in notes:
        print(line)
    rows = print_tree_results(results)
    print_failures([m for m in results if m.status != "n/a"])
    if source_state() != machine["snapstore"]:
        print("WARNING: snapstore changed during the run; the figures may mix versions")
    if args.json:
        doc = {
            "date": started.isoformat(),
            "command": command,
            "machine": machine,
            "settings": {"cold_cache": cold, "tree_size": args.tree_size, "seed": args.seed},
            "tools": {t.name: {"version": t.tool.version(), "note": t.tool.note} for t in tools},
            "skipped_tools": tool_notes,
            "workload": notes,
            "results": [m.as_dict() for m in results],
            "ratios": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(m.status == "FAIL" for m in results) else 0


if __name__ == "__main__":
    sys.exit(main())
