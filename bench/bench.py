"""snapstore benchmark: snap side by side with restic, borg and rdiff-backup on VM-image history.

Run from the repository root::

    python bench/bench.py                       # 1 GiB image, every installed tool, cold cache
    python bench/bench.py --size 64M --warm     # a quick look
    python bench/bench.py --tools snap,borg --threads 4 --json results.json
    python bench/bench.py --rss-check 8G        # snap's peak memory on a sparse 8 GiB image
    python bench/bench.py --profile             # also: the machine's limits, where snap's time goes
    python bench/bench.py --tools snap,snap-fixed,borg   # FastCDC against fixed-size chunks
    python bench/bench.py --workload real       # only the image of real files
    python bench/bench.py --chain scattered     # issue 15's 12-day chain (bench/chain.py)

(Repositories on another machine over ssh, against borg serve and restic over SFTP:
bench/remote.py.)

Two workloads (--workload, default both), each built in --work:
- real (bench/realdata.py; needs root for a loop mount): a raw ext4 image filled with a seeded
  selection of this machine's own files (executables, libraries, text, compressed archives);
  v2 and v3 made by a day of guest use inside the file system (logs appended, large files
  rewritten in their middle, files deleted and created, a package upgrade replacing whole
  directories); "shifted" (v3 with 5000 bytes inserted near the start).
- synthetic: a seeded, sparse, ext4-looking raw image (half holes; random, log-text,
  inode-table and explicit-zero data), then v2 and v3 (2.5% rewritten in place by scattered
  4 KiB..1 MiB writes) and "shifted" likewise.
Each tool gets its own fresh repository and runs: commit v1, v2, v3, shifted, then checkout
v1 and v3, then (snap: `checkout --in-place`; the peers here have no such restore) v1 over a
copy of v3, each checkout verified byte for byte; the in-place row is compared with checkout v1
(issue 16: >= 5x faster) and tells the bytes written. For every phase it reports MB/s (logical size /
wall time until the phase's writes are on disk: the tool's run plus a sync, since some tools
fsync what they write and others leave it in the page cache), the peak RSS of the tool's
process (wait4) and the repository's allocated size.
As root the page cache is dropped before every phase (--warm keeps it). With --profile the
machine's building blocks are timed on the workload's data, each snap phase gets the least
time it could take on this machine (its floor) and the fraction of that limit it reached,
and (with perf installed) its CPU time is split by component (bench/limits.py). Progress goes
to stderr, the report to stdout. Exit status: 0 when everything verified (and, with --rss-check,
the peak RSS is under target), 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chain
import limits
from realdata import RealDataUnavailable, build_real_workload
from report import (
    machine_info,
    print_failures,
    print_header,
    print_results,
    print_workload,
    scaling_table,
    source_state,
)
from runner import (
    CHECKOUT,
    COMMIT,
    IN_PLACE,
    PHASES,
    Measurement,
    Phase,
    Settings,
    ToolRun,
    drop_caches,
    phases_for,
)
from startup import StartupTime, measure_startup, startup_lines
from tools import Tool, compile_snap, make_tools, snap_env
from workload import VERSIONS, Workload, build_workload, describe, sparse_copy

from snapstore.errors import UsageError
from snapstore.units import format_size, parse_size

GiB = 1024**3
RSS_TARGET_MIB = 200
RSS_DATA_BYTES = 1 * GiB  # the --rss-check image holds about this much data, the rest holes
# A larger synthetic image holds at most this much data, the rest holes, as the real-data
# workload does (realdata.MAX_DATA): --size 16G fits the disk (four versions, each tool's
# repository and a checkout), and a user's large image is mostly free space too.
SYNTHETIC_MAX_DATA = 4 * GiB


def size_arg(text: str) -> int:
    try:
        size = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if size < 16 * 1024 * 1024:
        raise argparse.ArgumentTypeError("use at least 16M")
    return size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", type=Path, default=Path("bench-work"), help="work directory (./bench-work)")
    p.add_argument(
        "--size",
        type=size_arg,
        default=GiB,
        help="image size, e.g. 64M, 1G or 16G (default 1G; at most 4 GiB of it is data, the rest holes)",
    )
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument(
        "--workload",
        choices=("both", "real", "synthetic"),
        default="both",
        help="real: an ext4 image of this machine's files changed as a guest changes it (needs root "
        "for the loop mount); synthetic: the generated image; both (default; synthetic alone "
        "where real cannot be built)",
    )
    p.add_argument(
        "--tools",
        default="snap,restic,borg,rdiff-backup",
        help="comma-separated tools to run (default: snap,restic,borg,rdiff-backup)",
    )
    p.add_argument(
        "--image",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="instead of a generated workload: your own versions of an image, oldest first "
        "(committed in order, then the oldest and newest checked out)",
    )
    p.add_argument("--threads", type=int, default=None, help="passed to snap commit/checkout")
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="run every phase this many times from the same state and report the median "
        "(default 3; a phase of a second varies by 10%% from run to run)",
    )
    p.add_argument("--warm", action="store_true", help="do not drop the page cache before each phase")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write all figures here")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also time the machine's building blocks, each snap phase's floor, and (with perf) "
        "where snap's CPU time goes",
    )
    p.add_argument(
        "--scaling",
        action="store_true",
        help="also: snap's commit and checkout of v1 with 1, 2, ... threads (one per core at most), "
        "on the last workload",
    )
    p.add_argument(
        "--chain",
        choices=("scattered", "clustered"),
        default=None,
        help="instead: the chain of bench/chain.py (issue 15) on v1 of the workload (real where it "
        "can be built, else synthetic; or the first --image), --size of it: --days days, each "
        "rewriting 1%% of its allocated 4 KiB blocks at scattered places (clustered: in runs of "
        "64); repository size after each day and restore times of the oldest and newest day, for "
        "snap, snap --delta and the peers of --tools",
    )
    p.add_argument("--days", type=int, default=12, help="with --chain: the number of days (default 12)")
    p.add_argument(
        "--rss-check",
        type=size_arg,
        default=None,
        metavar="SIZE",
        help=f"instead: snap's peak RSS on a sparse SIZE image with ~1 GiB of data (target < "
        f"{RSS_TARGET_MIB} MiB)",
    )
    return p.parse_args(argv)


def choose_tools(spec: str, threads: int | None) -> tuple[list[Tool], list[str]]:
    """The requested tools that are installed, and notes about the others."""
    known = {t.name: t for t in make_tools(threads)}
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(
            f"bench.py: unknown tool(s) {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr
        )
        raise SystemExit(2)
    chosen = [known[name] for name in wanted if known[name].available()]
    notes = [f"{name}: not installed, skipped" for name in wanted if not known[name].available()]
    return chosen, notes


def cache_mode(warm: bool) -> tuple[bool, str]:
    if warm:
        return False, "warm page cache (--warm)"
    if os.geteuid() != 0:
        return False, "warm page cache (not root: cannot drop it)"
    problem = drop_caches()
    if problem:
        return False, f"warm page cache (dropping it failed: {problem})"
    return True, "cold: page cache dropped before every phase"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_all(
    tools: list[Tool], work: Workload, settings: Settings, phases: tuple[Phase, ...]
) -> list[Measurement]:
    results = []
    for tool in tools:
        progress(f"running {tool.name} ...")
        measured = ToolRun(tool, work, settings).run(phases)
        for m in measured:
            took = f"{m.seconds:.1f} s" if m.seconds is not None else "-"
            progress(f"  {tool.name} {m.phase}: {m.status}, {took}" + (f": {m.detail}" if m.detail else ""))
        results += measured
    return results


def rss_verdict(results: list[Measurement], threads: int | None) -> tuple[bool, list[str]]:
    workers = (
        f"--threads {threads}" if threads else f"default threads (all {len(os.sched_getaffinity(0))} cores)"
    )
    lines = [f"== rss-check (target: peak RSS < {RSS_TARGET_MIB} MiB; snap with {workers})"]
    ok = True
    for m in results:
        mib = (m.max_rss_kib or 0) / 1024
        good = m.status == "ok" and mib < RSS_TARGET_MIB
        ok = ok and good
        lines.append(
            f"snap {m.phase}: peak RSS {mib:.1f} MiB -> {'ok' if good else 'ABOVE TARGET or failed'}"
        )
    return ok, lines


@dataclass(frozen=True)
class Plan:
    """What to build and run: the full comparison, or snap alone for --rss-check."""

    tools: str
    size: int
    data_fraction: float
    versions: tuple[str, ...]
    phases: tuple[Phase, ...]
    workloads: tuple[str, ...] = ("synthetic",)
    images: tuple[Path, ...] = ()  # --image


def make_plan(args: argparse.Namespace) -> Plan:
    if args.image:
        names = tuple(f"v{i}" for i in range(1, len(args.image) + 1))
        return Plan(args.tools, 0, 0.0, names, phases_for(names), ("user",), tuple(args.image))
    if args.rss_check is None:
        kinds = ("synthetic", "real") if args.workload == "both" else (args.workload,)
        return Plan(args.tools, args.size, min(0.5, SYNTHETIC_MAX_DATA / args.size), VERSIONS, PHASES, kinds)
    size = args.rss_check
    rss_phases = (Phase(COMMIT, "v1"), Phase(CHECKOUT, "v1"))
    return Plan("snap", size, min(0.5, RSS_DATA_BYTES / size), ("v1",), rss_phases)


def user_workload(paths: tuple[Path, ...], directory: Path) -> Workload:
    """The user's images as v1..vN: hard-linked into the work directory (the tools commit a
    file of one name), or sparse-copied where the image is on another file system."""
    directory.mkdir(parents=True, exist_ok=True)
    work = Workload(kind="user")
    for number, path in enumerate(paths, 1):
        if not path.is_file():
            print(f"bench.py: {path}: not a regular file", file=sys.stderr)
            raise SystemExit(2)
        name = f"v{number}"
        linked = directory / f"user-{name}.img"
        linked.unlink(missing_ok=True)
        try:
            os.link(path, linked)
        except OSError:
            sparse_copy(path, linked)
        work.images[name] = describe(name, linked)
        work.notes.append(f"{name}: {path}")
    return work


def build(kind: str, plan: Plan, work_dir: Path, seed: int, explicit: bool) -> Workload | None:
    """The workload of ``kind``; None (with a note) when the real one cannot be built and was
    not asked for alone."""
    progress(f"generating the {kind} workload ...")
    if kind == "user":
        return user_workload(plan.images, work_dir / "images")
    if kind == "synthetic":
        return build_workload(work_dir / "images", plan.size, seed, plan.data_fraction, plan.versions)
    # Built in a child process: the parent's peak RSS would otherwise show in every tool's
    # (a forked child starts with its parent's resident pages counted in ru_maxrss).
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            images = work_dir / "images"
            return pool.submit(build_real_workload, images, plan.size, seed, versions=plan.versions).result()
    except RealDataUnavailable as exc:
        if explicit:
            print(f"bench.py: the real-data workload cannot be built here: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        print(f"== workload: real: skipped ({exc})")
        return None


def run_chain(args: argparse.Namespace, work_dir: Path) -> int:
    """--chain: day 0 built (v1 of the workload) or given (--image), then bench/chain.py."""
    if args.image:
        source = args.image[0]
    else:
        images = work_dir / "images"
        kind = "synthetic" if args.workload == "synthetic" else "real"
        if kind == "real":
            try:
                source = build_real_workload(images, args.size, args.seed, versions=("v1",)).images["v1"].path
            except RealDataUnavailable as exc:
                if args.workload == "real":
                    print(f"bench.py: the real-data workload cannot be built here: {exc}", file=sys.stderr)
                    return 2
                kind = "synthetic"
        if kind == "synthetic":
            source = build_workload(images, args.size, args.seed, versions=("v1",)).images["v1"].path
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    tools = [x for t in wanted for x in ((t, "snap-delta") if t == "snap" else (t,))]
    argv = ["--source", str(source), "--size", str(args.size), "--days", str(args.days)]
    argv += ["--work", str(work_dir / f"chain-{args.chain}"), "--tools", ",".join(tools)]
    chain.main(argv + (["--clustered"] if args.chain == "clustered" else []))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # interleave with progress
    work_dir = args.work.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.chain:
        return run_chain(args, work_dir)
    plan = make_plan(args)
    tools, tool_notes = choose_tools(plan.tools, args.threads)
    cold, cache_note = cache_mode(args.warm)

    started = datetime.now(UTC)
    command = shlex.join(["python", "bench/bench.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"snapstore benchmark, {started:%Y-%m-%d %H:%M} UTC: {command}")
    machine = machine_info(work_dir)
    settings_lines = [
        f"cache:      {cache_note}",
        f"image:      {format_size(plan.size)}, seed {args.seed}, {plan.data_fraction:.0%} data, "
        f"work dir {work_dir}",
        f"runs:       each phase {max(1, args.runs)} time(s) from the same state; the median is reported",
        *tool_notes,
    ]
    if any(t.env is snap_env for t in tools):
        settings_lines.append(compile_snap())
    print_header(
        machine, {t.name: t.version() for t in tools}, {t.name: t.note for t in tools}, settings_lines
    )
    results: list[Measurement] = []
    rows: list[dict[str, Any]] = []
    workloads: list[Workload] = []
    for kind in plan.workloads:
        built = build(kind, plan, work_dir, args.seed, explicit=args.workload == kind)
        if built is None:
            continue
        work = built
        workloads.append(work)
        print_workload(work)
        measured = run_all(tools, work, Settings(work_dir, cold, max(1, args.runs)), plan.phases)
        for m in measured:
            m.workload = work.kind
        rows += [row | {"workload": work.kind} for row in print_results(measured, [t.name for t in tools])]
        results += measured
    rss_ok, rss_lines = rss_verdict(results, args.threads) if args.rss_check else (True, [])
    for line in rss_lines:
        print(line)
    last = [m for m in results if m.workload == work.kind]  # the profile is of the last workload
    phases = tuple(p for p in plan.phases if p.version in work.images and p.action != IN_PLACE)
    profile_doc = run_profile(args, tools, work, work_dir, cold, last, phases) if args.profile else None
    scaling = run_scaling(work, Settings(work_dir, cold, max(1, args.runs))) if args.scaling else []
    results += scaling
    startup: list[StartupTime] = []
    snap = next((t for t in tools if t.name == "snap"), None)
    if snap is not None and args.rss_check is None:
        progress("timing snap's start-up ...")
        startup = measure_startup(snap, work_dir / "startup")
        for line in startup_lines(startup):
            print(line)
    print_failures(results)
    source_after = source_state()
    if source_after != machine["snapstore"]:
        print(f"WARNING: snapstore changed during the run: now {source_after}; the figures may mix versions")
    if args.json:
        doc = {
            "date": started.isoformat(),
            "command": command,
            "machine": machine | {"snapstore_after": source_after},
            "settings": {"cold_cache": cold, "size": plan.size, "seed": args.seed, "threads": args.threads},
            "tools": {t.name: {"version": t.version(), "note": t.note} for t in tools},
            "skipped_tools": tool_notes,
            "workloads": [workload_doc(w) for w in workloads],
            "results": [m.as_dict() for m in results],
            "ratios": rows,
            "rss_check": {"target_mib": RSS_TARGET_MIB, "ok": rss_ok} if args.rss_check else None,
            "profile": profile_doc,
            "startup": [m.as_dict() for m in startup],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    failed = any(m.status == "FAIL" for m in results)
    return 1 if failed or not rss_ok else 0


def run_scaling(work: Workload, settings: Settings) -> list[Measurement]:
    """snap's first commit and its checkout with 1..cores threads: how speed scales with cores."""
    cores = len(os.sched_getaffinity(0))
    phases = (Phase(COMMIT, "v1"), Phase(CHECKOUT, "v1"))
    measured: list[Measurement] = []
    for threads in range(1, cores + 1):
        (snap,) = [t for t in make_tools(threads) if t.name == "snap"]
        progress(f"running snap with {threads} thread(s) ...")
        for m in ToolRun(snap, work, settings).run(phases):
            m.workload, m.threads = work.kind, threads
            measured.append(m)
    print(f"== scaling with threads ({work.kind} workload, v1; MB/s, peak RSS MiB)")
    for line in scaling_table(measured):
        print(line)
    return measured


def run_profile(
    args: argparse.Namespace,
    tools: list[Tool],
    work: Workload,
    work_dir: Path,
    cold: bool,
    results: list[Measurement],
    phases: tuple[Phase, ...],
) -> dict[str, Any] | None:
    """Print the machine's limits and snap's profile (see bench/limits.py)."""
    snap = next((t for t in tools if t.name == "snap"), None)
    if snap is None:
        print("== profile: skipped (snap is not among the tools)")
        return None
    progress("timing the building blocks ...")
    machine = limits.measure(work, work_dir, snap, cold)
    perf = limits.have_perf()
    progress("profiling snap" + (" under perf ..." if perf else " (perf is not installed) ..."))
    rows = limits.profile_snap(snap, work, work_dir, phases, cold, perf)
    timed = {m.phase: m.seconds for m in results if m.tool == "snap" and m.seconds is not None}
    print("== machine limits (measured on the workload's data)")
    for line in machine.lines():
        print(line)
    print("== profile: snap's time against its floor on this machine (floor = start-up + the largest")
    print("   of I/O, serial chunking and CPU work / cores);" + (" CPU seconds by component" if perf else ""))
    for line in limits.profile_table(machine, rows, timed):
        print(line)
    return {
        "limits": asdict(machine),
        "phases": [
            {
                "phase": r.phase.name,
                "seconds": timed.get(r.phase.name),
                "floor_seconds": machine.floor(r.phase, r.doc)[0],
                "bound": machine.floor(r.phase, r.doc)[1],
                "cpu_seconds": r.cpu,
            }
            for r in rows
        ],
    }


def workload_doc(work: Workload) -> dict[str, Any]:
    return {
        "kind": work.kind,
        "notes": work.notes,
        "images": {
            i.name: {"size": i.size, "allocated": i.allocated, "blake3": i.digest}
            for i in work.images.values()
        },
        "composition": work.composition,
        "writes_per_version": work.writes_per_version,
        "seconds": work.seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
