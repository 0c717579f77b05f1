"""What the benchmark runs: one small description per tool, no per-tool code elsewhere.

Conventions every tool follows: commits run in the stage directory, which holds the version
being committed as IMAGE_NAME; checkouts run in an empty output directory and leave a file
named IMAGE_NAME somewhere below it. A tool that can restore over an existing file (``in_place``)
runs in an output directory whose IMAGE_NAME holds another version, and rewrites it.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_NAME = "disk.img"
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout this benchmark belongs to


@dataclass(frozen=True)
class Context:
    """What a command may refer to."""

    repo: Path  # the tool's own fresh repository
    cache: Path  # a directory for the tool's client-side cache and state
    stage: Path  # holds the version to commit as IMAGE_NAME
    out: Path  # an empty directory for a checkout
    label: str = ""  # the version: v1, v2, v3, shifted
    when: int = 0  # a distinct, increasing time (epoch seconds) for this version
    ref: str = ""  # what the commit returned to name the version


Argv = Callable[[Context], list[str]]


@dataclass(frozen=True)
class Tool:
    name: str
    command: list[str]  # the program (a name on PATH or a path) and any leading arguments
    version_cmd: list[str]  # prints the version on its first line
    init: Argv | None  # None: the first commit creates the repository
    commit: Argv
    checkout: Argv
    ref: Callable[[str, Context], str]  # (commit's stdout, context) -> the version's reference
    env: Callable[[Context], dict[str, str]] = field(default=lambda ctx: {})
    note: str = ""  # settings worth knowing when reading the numbers
    in_place: Argv | None = None  # rewrites IMAGE_NAME, which holds another version, in place
    told_writes: Callable[[str], int] | None = None  # in_place's stdout -> the bytes it says it wrote

    def available(self) -> bool:
        return shutil.which(self.command[0]) is not None

    def argv(self, make: Argv, ctx: Context) -> list[str]:
        return [*self.command, *make(ctx)]

    def environment(self, ctx: Context) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SNAP_", "RESTIC_", "BORG_"))}
        return base | self.env(ctx)

    def version(self) -> str:
        try:
            env = self.environment(Context(Path(), Path(), Path(), Path()))
            done = subprocess.run(
                self.version_cmd, env=env, capture_output=True, text=True, timeout=60, check=False
            )
        except OSError as exc:
            return f"unknown ({exc})"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"


def snap_env(ctx: Context) -> dict[str, str]:
    """Run the snapstore of this checkout, whatever is installed (and never snapd's snap)."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(SOURCE_ROOT) + (os.pathsep + path if path else "")}


def compile_snap() -> str:
    """Compile this checkout's bytecode, as ``pip install`` does for an installed snapstore:
    with PYTHONDONTWRITEBYTECODE set (as in some CI shells) every snap command would
    otherwise compile its modules again at start-up. Returns a line for the report."""
    compileall.compile_dir(SOURCE_ROOT / "snapstore", quiet=1)
    return "bytecode:   snapstore compiled before the run (as an installed package is)"


def snap_told_writes(stdout: str) -> int:
    doc = json.loads(stdout)
    return int(doc["write_bytes"]) + int(doc["zeroed_bytes"])


def restic_snapshot_id(stdout: str, ctx: Context) -> str:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and '"summary"' in line:
            return str(json.loads(line)["snapshot_id"])
    raise ValueError("restic printed no summary with a snapshot_id")


_SNAP_VERSION = (
    "import snapstore, snapstore.chunker as c; print('snapstore', snapstore.__version__, "
    "'(C chunker)' if c.accelerated() else '(fastcdc package only)')"
)


def snap_tool(name: str, chunker: str | None, note: str, threads: int | None) -> Tool:
    """snap of this checkout; ``chunker`` None: the default (FastCDC)."""
    jobs = ["--threads", str(threads)] if threads else []
    chosen = ["--chunker", chunker] if chunker else []
    return Tool(
        name=name,
        command=[sys.executable, "-m", "snapstore"],  # the snap command
        version_cmd=[sys.executable, "-c", _SNAP_VERSION],
        init=lambda c: ["init", str(c.repo), *chosen],
        commit=lambda c: ["commit", IMAGE_NAME, "-r", str(c.repo), "--json", *jobs],
        checkout=lambda c: ["checkout", c.ref, "-r", str(c.repo), "-o", IMAGE_NAME, "--json", *jobs],
        ref=lambda out, c: str(json.loads(out)["id"]),
        env=snap_env,
        in_place=lambda c: [
            "checkout",
            c.ref,
            "-r",
            str(c.repo),
            "-o",
            IMAGE_NAME,
            "--in-place",
            "--json",
            *jobs,
        ],
        told_writes=snap_told_writes,
        note=note + (f", --threads {threads}" if threads else ""),
    )


def make_tools(threads: int | None) -> list[Tool]:
    return [
        snap_tool(
            "snap",
            None,
            "defaults (FastCDC 256K/1M/4M, 64K zero runs, zstd 3; repo includes its 16 MiB reserve file)",
            threads,
        ),
        snap_tool("snap-fixed", "fixed:1M", "snap init --chunker fixed:1M (zstd 3)", threads),
        Tool(
            name="restic",
            command=["restic"],
            version_cmd=["restic", "version"],
            init=lambda c: ["-r", str(c.repo), "init"],
            commit=lambda c: ["-r", str(c.repo), "backup", "--json", IMAGE_NAME],
            checkout=lambda c: ["-r", str(c.repo), "restore", c.ref, "--target", "."],
            ref=restic_snapshot_id,
            env=lambda c: {"RESTIC_PASSWORD": "x", "RESTIC_CACHE_DIR": str(c.cache)},
            note="defaults (repository v2, compression auto, encrypted)",
        ),
        Tool(
            name="borg",
            command=["borg"],
            version_cmd=["borg", "--version"],
            init=lambda c: ["init", "-e", "none", str(c.repo)],
            commit=lambda c: ["create", "--compression", "zstd,3", f"{c.repo}::{c.label}", IMAGE_NAME],
            checkout=lambda c: ["extract", "--sparse", f"{c.repo}::{c.ref}"],
            ref=lambda out, c: c.label,
            env=lambda c: {
                "BORG_BASE_DIR": str(c.cache),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            },
            note="-e none, --compression zstd,3, extract --sparse",
        ),
        Tool(
            name="rdiff-backup",
            command=["rdiff-backup"],
            version_cmd=["rdiff-backup", "--version"],
            init=None,
            commit=lambda c: ["--current-time", str(c.when), "backup", str(c.stage), str(c.repo)],
            checkout=lambda c: ["restore", "--at", c.ref, str(c.repo), "restored"],
            ref=lambda out, c: str(c.when),
            note="defaults (mirror + gzip'd reverse diffs)",
        ),
    ]
