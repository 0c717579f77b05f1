"""The tools of the tree benchmark: snap, restic, borg (bench/tools.py's drivers, given a
directory instead of an image) and rsync (a mirror: no history, the copy is its repository).

Conventions: a commit runs in the directory holding the tree as TREE_NAME (the same directory,
changed in place, for every commit, so each tool may find its previous snapshot's files
unchanged); a restore runs in an empty output directory and leaves TREE_NAME in it, or (restic)
at the tree's absolute path below it. An in-place sync runs where that restore of day 1 is and
brings it to day 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tools import Context, Tool, make_tools, snap_env

TREE_NAME = "tree"
RSYNC = "-aHAX"  # archive, hard links, ACLs, xattrs


@dataclass(frozen=True)
class TreeTool:
    tool: Tool
    sync_problem: Callable[[TreeTool], str | None]  # why its in-place sync cannot run, or None
    seeded_by_copy: bool = False  # its day-1 tree for the sync is a copy of day 1 (no history)

    @property
    def name(self) -> str:
        return self.tool.name

    def restored(self, ctx: Context) -> Path:
        """Where its restore left the tree."""
        direct = ctx.out / TREE_NAME
        if direct.exists():
            return direct
        return ctx.out / ctx.stage.relative_to(ctx.stage.anchor) / TREE_NAME


def _help_has(tool: Tool, args: list[str], *options: str) -> bool:
    try:
        done = subprocess.run(
            [*tool.command, *args],
            env=tool.environment(Context(Path(), Path(), Path(), Path())),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except OSError:
        return False
    return all(option in done.stdout for option in options)


def snap_sync_problem(t: TreeTool) -> str | None:
    """snap syncs a tree in place once its checkout has --delete."""
    if _help_has(t.tool, ["checkout", "--help"], "--in-place", "--delete"):
        return None
    return "n/a (not supported by this snap)"


def restic_sync_problem(t: TreeTool) -> str | None:
    if _help_has(t.tool, ["restore", "--help"], "--overwrite", "--delete"):
        return None
    version = " ".join(t.tool.version().split()[:2])
    return f"n/a (no restore --overwrite/--delete in {version}; restic 0.17 added them)"


def snap_tree_tool(command: list[str] | None = None, threads: int | None = None) -> TreeTool:
    """snap of this checkout (or ``command``, a stand-in, in the tests)."""
    jobs = ["--threads", str(threads)] if threads else []
    (image_snap,) = [t for t in make_tools(threads) if t.name == "snap"]
    tool = replace(
        image_snap,
        command=command or [sys.executable, "-m", "snapstore"],
        commit=lambda c: ["commit", TREE_NAME, "-r", str(c.repo), "--json", *jobs],
        checkout=lambda c: ["checkout", c.ref, "-r", str(c.repo), "-o", TREE_NAME, "--json", *jobs],
        ref=lambda out, c: str(json.loads(out)["id"]),
        env=snap_env,
        in_place=lambda c: [
            "checkout",
            c.ref,
            "-r",
            str(c.repo),
            "-o",
            TREE_NAME,
            "--in-place",
            "--delete",
            "--json",
            *jobs,
        ],
        told_writes=None,
        note="defaults" + (f", --threads {threads}" if threads else ""),
    )
    return TreeTool(tool, snap_sync_problem)


def make_tree_tools(threads: int | None) -> list[TreeTool]:
    peers = {t.name: t for t in make_tools(threads)}
    restic = replace(
        peers["restic"],
        commit=lambda c: ["-r", str(c.repo), "backup", "--json", TREE_NAME],
        in_place=lambda c: [
            "-r",
            str(c.repo),
            "restore",
            c.ref,
            "--target",
            ".",
            "--overwrite",
            "if-changed",
            "--delete",
        ],
    )
    borg = replace(
        peers["borg"],
        commit=lambda c: ["create", "--compression", "zstd,3", f"{c.repo}::{c.label}", TREE_NAME],
        note="-e none, --compression zstd,3, extract --sparse; no in-place sync",
    )
    rsync = Tool(
        name="rsync",
        command=["rsync"],
        version_cmd=["rsync", "--version"],
        init=None,
        commit=lambda c: [RSYNC, "--delete", f"{TREE_NAME}/", f"{c.repo}/"],
        checkout=lambda c: [RSYNC, f"{c.repo}/", f"{TREE_NAME}/"],
        ref=lambda out, c: c.label,
        in_place=lambda c: [RSYNC, "--delete", f"{c.repo}/", f"{TREE_NAME}/"],
        note=f"rsync {RSYNC} --delete into a mirror (no history: its repository is a plain copy)",
    )
    return [
        snap_tree_tool(threads=threads),
        TreeTool(restic, restic_sync_problem),
        TreeTool(borg, lambda t: "n/a (borg extract has no in-place sync)"),
        TreeTool(rsync, lambda t: None, seeded_by_copy=True),
    ]
