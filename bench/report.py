"""What the benchmark prints: the machine, the workload, the results table and snap's ratios."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner import Measurement
from tools import SOURCE_ROOT
from workload import CHANGE_FRACTION, INSERT_AT, INSERT_LEN, Workload

MiB = 1024 * 1024
SNAP = "snap"
CELL = 9  # a right-aligned value and a space
PHASE_WIDTH = 16


# The machine ----------------------------------------------------------------------------


def machine_info(work: Path) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "memory_bytes": _meminfo_kib("MemTotal") * 1024,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "work_filesystem": _filesystem_of(work),
        "snapstore": source_state(),
    }


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def _meminfo_kib(name: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _filesystem_of(path: Path) -> str:
    """The type and device of the mount holding ``path`` (longest matching mount point)."""
    best, found = "", "unknown"
    target = str(path.resolve())
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        device, mount_point, fstype, *_ = line.split()
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, f"{fstype} on {device} ({mount_point})"
    return found


def source_state() -> str:
    """The commit of the snapstore being measured, and whether its code has local changes."""
    head = _git("log", "-1", "--format=%h %s")
    dirty = _git("status", "--porcelain", "--", "snapstore")
    return (head or "unknown") + (" + uncommitted changes in snapstore/" if dirty else "")


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def print_header(
    machine: dict[str, Any], versions: dict[str, str], notes: dict[str, str], settings: list[str]
) -> None:
    print("== machine")
    print(f"cpu:        {machine['nproc']} x {machine['cpu']}")
    print(f"memory:     {machine['memory_bytes'] / 2**30:.1f} GiB")
    print(f"python:     {machine['python']}, kernel {machine['kernel']}")
    print(f"work dir:   {machine['work_filesystem']}")
    print(f"snapstore:  {machine['snapstore']} ({SOURCE_ROOT})")
    print("== tools")
    for name, version in versions.items():
        print(f"{name + ':':<13} {version}  [{notes[name]}]")
    print("== settings")
    for line in settings:
        print(line)


def print_workload(work: Workload) -> None:
    print(f"== workload: {work.kind}")
    for image in work.images.values():
        print(
            f"{image.name:<8} {_mib(image.size):>9} MiB, {_mib(image.allocated):>8} MiB allocated, "
            f"blake3 {image.digest[:16]}  {image.path}"
        )
    mix = ", ".join(f"{kind} {_mib(n)} MiB" for kind, n in work.composition.items())
    if mix:
        print(f"v1 {'regions' if work.kind == 'synthetic' else 'files'}: {mix}")
    for note in work.notes:
        print(note)
    if work.writes_per_version:
        print(
            f"v2, v3: each {work.writes_per_version} scattered in-place writes of 4 KiB..1 MiB "
            f"({CHANGE_FRACTION:.1%} of the size)"
        )
    if "shifted" in work.images:
        print(
            f"shifted: v3 with {INSERT_LEN} bytes inserted at {INSERT_AT // 1024} KiB (all later bytes move)"
        )
    print(f"generated in {work.seconds:.1f} s")


# The results ----------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def _cells(m: Measurement | None, *values: Callable[[Measurement], str]) -> list[str]:
    """One group of cells; a failed or skipped phase shows its status instead of figures."""
    if m is None:
        return ["-"] * len(values)
    if m.status != "ok":
        return [m.status] + [""] * (len(values) - 1)
    return [value(m) for value in values]


def _index(results: list[Measurement]) -> dict[tuple[str, str], Measurement]:
    return {(m.tool, m.phase): m for m in results}


def _phases(results: list[Measurement]) -> list[str]:
    return list(dict.fromkeys(m.phase for m in results))


def _row(label: str, groups: list[list[str]]) -> str:
    cells = "|".join("".join(f"{c:>{CELL - 1}} " for c in group) for group in groups)
    return f"{label:<{PHASE_WIDTH}}|{cells}"


def _title(label: str, names: list[str], columns: int) -> str:
    return f"{label:<{PHASE_WIDTH}}|" + "|".join(f"{n:^{CELL * columns}}" for n in names)


def results_table(results: list[Measurement], tools: list[str]) -> list[str]:
    by = _index(results)
    lines = [
        _title("", tools, 3),
        _row("phase", [["MB/s", "RSS MiB", "repo MiB"] for _ in tools]),
    ]
    for phase in _phases(results):
        groups = [
            _cells(
                by.get((tool, phase)),
                lambda m: f"{m.mb_per_s:.1f}",
                lambda m: _mib((m.max_rss_kib or 0) * 1024),
                lambda m: "" if m.repo_bytes is None else _mib(m.repo_bytes),
            )
            for tool in tools
        ]
        lines.append(_row(phase, groups))
    return lines


def scaling_table(results: list[Measurement]) -> list[str]:
    """One row per thread count: each phase's MB/s and peak RSS, and the speed-up over one thread."""
    phases = list(dict.fromkeys(m.phase for m in results))
    header = "threads  " + "".join(f"| {p:<28}" for p in phases)
    lines = [header.rstrip(), "         " + "| MB/s     RSS MiB  speed-up    " * len(phases)]
    one = {m.phase: m.mb_per_s for m in results if m.threads == 1}
    for threads in sorted({m.threads or 0 for m in results}):
        cells = []
        for phase in phases:
            m = next((r for r in results if r.threads == threads and r.phase == phase), None)
            if m is None or m.mb_per_s is None:
                cells.append(f"| {'FAIL' if m else '-':<28}")
                continue
            base = one.get(phase)
            gain = f"{m.mb_per_s / base:.2f}x" if base else "-"
            cells.append(f"| {m.mb_per_s:<8.1f} {_mib((m.max_rss_kib or 0) * 1024):<8} {gain:<10}")
        lines.append((f"{threads:<9}" + "".join(cells)).rstrip())
    return lines


def ratios(results: list[Measurement], peers: list[str]) -> list[dict[str, Any]]:
    """snap MB/s / peer MB/s (above 1: snap is faster) and snap repo / peer repo (below 1:
    snap's is smaller), per phase and peer."""
    by = _index(results)
    rows = []
    for phase in _phases(results):
        snap = by.get((SNAP, phase))
        for peer in peers:
            other = by.get((peer, phase))
            if snap is None or other is None:
                continue
            rows.append(
                {
                    "phase": phase,
                    "peer": peer,
                    "speed_ratio": _ratio(snap.mb_per_s, other.mb_per_s),
                    "size_ratio": _ratio(snap.repo_bytes, other.repo_bytes),
                }
            )
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratio_table(rows: list[dict[str, Any]], peers: list[str]) -> list[str]:
    by = {(r["phase"], r["peer"]): r for r in rows}

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    lines = [
        _title("snap / peer", peers, 2),
        _row("phase", [["speed", "size"] for _ in peers]),
    ]
    for phase in dict.fromkeys(r["phase"] for r in rows):
        groups = []
        for peer in peers:
            r = by.get((phase, peer), {})
            size = fmt(r.get("size_ratio")) if "commit" in phase else ""
            groups.append([fmt(r.get("speed_ratio")), size])
        lines.append(_row(phase, groups))
    return lines


def sync_table(results: list[Measurement], tools: list[str]) -> list[str]:
    """Per phase, each tool's seconds spent in the sync after it exited."""
    by = {(m.tool, m.phase): m.sync_seconds for m in results}
    phases = list(dict.fromkeys(m.phase for m in results))
    lines = [f"{'phase':<15} |" + "".join(f" {t:>12}" for t in tools)]
    for phase in phases:
        cells = [by.get((t, phase)) for t in tools]
        text = [f"{c:.2f}" if c is not None else "-" for c in cells]
        lines.append(f"{phase:<15} |" + "".join(f" {c:>12}" for c in text))
    return lines


def print_results(results: list[Measurement], tools: list[str]) -> list[dict[str, Any]]:
    """Print both tables; return the ratio rows."""
    print("== results (MB/s = logical size / wall time until its writes are on disk, i.e. to the")
    print("   tool's exit plus a sync; RSS = peak of the tool's process; repo = allocated bytes of")
    print("   the repository after the phase, like du)")
    for line in results_table(results, tools):
        print(line.rstrip())
    print("== of that wall time, the sync after the tool exited (s)")
    for line in sync_table(results, tools):
        print(line.rstrip())
    peers = [t for t in tools if t != SNAP]
    rows = ratios(results, peers) if SNAP in tools and peers else []
    if rows:
        print("== snap relative to each peer (speed = snap MB/s / peer MB/s, above 1 is faster;")
        print("   size = snap repo / peer repo, below 1 is smaller)")
        for line in ratio_table(rows, peers):
            print(line.rstrip())
    for line in in_place_lines(results):
        print(line.rstrip())
    return rows


def in_place_lines(results: list[Measurement]) -> list[str]:
    """Each in-place phase against the full checkout of the same version (issue 16: at least
    5x faster), with the bytes each one's process wrote."""
    by = _index(results)
    rows = [m for m in results if m.phase.startswith("in-place ") and m.status == "ok" and m.seconds]
    if not rows:
        return []
    lines = [
        "== in-place checkout: the oldest version written over a copy of the newest (only what",
        "   differs) against its full checkout. written = what the process sent to storage",
        "   (/proc/PID/io write_bytes: the page cache counts a 4 KiB write into a large folio as",
        "   the whole folio), told = the bytes the tool says it wrote (its --json)",
        f"{'tool':<12}{'phase':<14}{'in-place s':>11}{'checkout s':>11}{'speed-up':>10}"
        f"{'written MiB':>13}{'told MiB':>10}{'checkout MiB':>13}",
    ]
    for m in rows:
        full = by.get((m.tool, m.phase.replace("in-place", "checkout", 1)))
        base = full.seconds if full is not None and full.status == "ok" else None
        gain = f"{base / m.seconds:.2f}x" if base and m.seconds else "-"
        lines.append(
            f"{m.tool:<12}{m.phase:<14}{m.seconds:>11.2f}{base or 0:>11.2f}{gain:>10}"
            f"{_mib(m.written_bytes or 0):>13}"
            f"{'-' if m.told_written_bytes is None else _mib(m.told_written_bytes):>10}"
            f"{_mib(full.written_bytes or 0) if full else '-':>13}"
        )
    lines.append("   (issue 16's target: in-place >= 5x faster than the full checkout)")
    return lines


def print_failures(results: list[Measurement]) -> None:
    bad = [m for m in results if m.status != "ok"]
    if not bad:
        print("== all checkouts verified byte-identical to their source")
        return
    print("== PROBLEMS")
    for m in bad:
        loud = "*** FAIL" if m.status == "FAIL" else m.status
        print(f"{loud}: {m.tool} {m.phase}: {m.detail}")
