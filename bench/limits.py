"""The machine's limits on this workload, and where snap's time goes (``bench.py --profile``).

Building blocks are timed here on the workload's own data: a cold sequential read of v1's
data, a write + fsync of as much, and one core's speed for BLAKE3, FastCDC and snap's zstd
encoding and decoding (probe included, so incompressible chunks count at the speed snap
handles them). From them, each snap phase gets a floor: start-up, then the largest of its
I/O time, its serial chunking time and its CPU work spread over every core. The phase's
"of limit" figure is that floor over the time it really took (100% = at the machine's
limit). With ``perf`` installed, each phase is also run once under ``perf record`` and its
CPU time split by where it was spent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import blake3
from runner import CHECKOUT, Phase, drop_caches, fresh_dir
from tools import IMAGE_NAME, Context, Tool
from workload import Workload, data_extents

from snapstore import codec
from snapstore.chunker import iter_cuts
from snapstore.model import ChunkerParams

SAMPLE = 256 * 1024 * 1024  # bytes of v1's data the CPU building blocks are timed on
GB = 1e9
PERF_HZ = 999
# perf's shared objects, grouped by what snap does there.
COMPONENTS = (
    ("chunker", ("fastcdc", "_cdc")),
    ("blake3", ("blake3",)),
    ("zstd", ("backend_c", "zstd")),
    ("lmdb", ("lmdb", "cpython.cpython")),
    ("kernel", ("kernel",)),
    ("python", ("python", "libpython")),
    ("libc", ("libc",)),
)


@dataclass(frozen=True)
class Limits:
    cores: int
    startup_s: float  # `snap log` on an empty repository (cold cache when the run is cold)
    read_gbs: float  # sequential read of v1's data extents (cold when the run is cold)
    write_gbs: float  # write + fsync of as much data
    blake3_gbs: float  # one core
    fastcdc_gbs: float  # one core
    encode_gbs: float  # snap's chunk encoding (probe, zstd 3 or raw), one core, per raw byte
    decode_gbs: float  # its decoding, one core, per raw byte

    def lines(self) -> list[str]:
        return [
            f"cores {self.cores}; snap start-up {self.startup_s * 1000:.0f} ms",
            f"disk: read {self.read_gbs:.2f} GB/s, write+fsync {self.write_gbs:.2f} GB/s",
            f"one core: BLAKE3 {self.blake3_gbs:.2f} GB/s, FastCDC {self.fastcdc_gbs:.2f} GB/s, "
            f"encode {self.encode_gbs:.2f} GB/s, decode {self.decode_gbs:.2f} GB/s",
        ]

    def floor(self, phase: Phase, doc: dict[str, Any]) -> tuple[float, str]:
        """The least time ``phase`` could take on this machine, and what bounds it."""
        size = float(doc["size"])
        if phase.action == CHECKOUT:
            data = size - float(doc.get("zero_bytes", 0))
            io = data / (self.write_gbs * GB)
            cpu = (data + size) / (self.blake3_gbs * GB) + data / (self.decode_gbs * GB)
            serial = 0.0
        else:
            read, chunked = float(doc["read_bytes"]), float(doc["chunked_bytes"])
            io = read / (self.read_gbs * GB)
            serial = chunked / (self.fastcdc_gbs * GB)  # the chunker holds the GIL
            cpu = (
                (read + size) / (self.blake3_gbs * GB)
                + serial
                + float(doc["new_raw_bytes"]) / (self.encode_gbs * GB)
            )
        parts = {"I/O": io, "chunker": serial, "CPU": cpu / self.cores}
        bound = max(parts, key=lambda k: parts[k])
        return self.startup_s + parts[bound], bound


def measure(work: Workload, scratch: Path, snap: Tool, cold: bool) -> Limits:
    v1 = work.images["v1"].path
    sample = _sample(v1)
    params = ChunkerParams()
    chunks = [memoryview(sample)[o : o + n] for o, n in _cuts(params, sample)]
    blake3_s = _best(lambda: blake3.blake3(sample).digest())
    fastcdc_s = _best(lambda: sum(1 for _ in iter_cuts(params, sample, True)))
    encoded = [codec.encode(c, 3) for c in chunks]
    encode_s = _best(lambda: [codec.encode(c, 3) for c in chunks], runs=1)
    decode_s = _best(lambda: [codec.decode(k, p, len(c)) for (k, p), c in zip(encoded, chunks, strict=True)])
    n = len(sample)
    return Limits(
        cores=len(os.sched_getaffinity(0)),
        startup_s=_startup(scratch, snap, cold),
        read_gbs=_read_speed(v1, cold),
        write_gbs=_write_speed(scratch, sample),
        blake3_gbs=n / blake3_s / GB,
        fastcdc_gbs=n / fastcdc_s / GB,
        encode_gbs=n / encode_s / GB,
        decode_gbs=n / decode_s / GB,
    )


def _sample(path: Path) -> bytes:
    """The first SAMPLE bytes of the file's data extents (its holes left out)."""
    out = bytearray()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset, length in data_extents(f.fileno(), size):
            out += os.pread(f.fileno(), min(length, SAMPLE - len(out)), offset)
            if len(out) >= SAMPLE:
                break
    return bytes(out)


def _cuts(params: ChunkerParams, data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    for length in iter_cuts(params, data, True):
        out.append((pos, length))
        pos += length
    return out


def _best(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _read_speed(path: Path, cold: bool) -> float:
    if cold:
        drop_caches()
    buf = bytearray(8 * 1024 * 1024)
    view = memoryview(buf)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.perf_counter()
        for offset, length in data_extents(fd, os.fstat(fd).st_size):
            end = offset + length
            while offset < end:
                got = os.preadv(fd, [view[: min(len(buf), end - offset)]], offset)
                offset += got
                total += got
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
    return total / seconds / GB


def _write_speed(scratch: Path, data: bytes) -> float:
    with tempfile.NamedTemporaryFile(dir=scratch) as f:
        started = time.perf_counter()
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return len(data) / (time.perf_counter() - started) / GB


def _startup(scratch: Path, snap: Tool, cold: bool) -> float:
    repo = scratch / "empty-repo"
    shutil.rmtree(repo, ignore_errors=True)
    env = snap.environment(Context(repo=repo, cache=repo, stage=repo, out=repo))
    subprocess.run([*snap.command, "init", str(repo)], env=env, capture_output=True, check=True)
    best = float("inf")
    for _ in range(3):
        if cold:
            drop_caches()
        started = time.perf_counter()
        subprocess.run([*snap.command, "log", "-r", str(repo)], env=env, capture_output=True, check=True)
        best = min(best, time.perf_counter() - started)
    return best


# -- where the time goes -------------------------------------------------------------------


def have_perf() -> bool:
    if shutil.which("perf") is None:
        return False
    done = subprocess.run(["perf", "stat", "-e", "task-clock", "true"], capture_output=True, check=False)
    return done.returncode == 0


def run_profiled(argv: list[str], cwd: Path, env: dict[str, str], log: Path, perf: bool) -> dict[str, float]:
    """Run ``argv`` (under perf record when ``perf``); CPU seconds per component and in
    "total" (empty without perf). Its stdout goes to ``log``."""
    data = log.with_suffix(".perf")
    prefix = ["perf", "record", "-F", str(PERF_HZ), "-o", str(data), "--"] if perf else []
    with open(log, "wb") as out:
        subprocess.run([*prefix, *argv], cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL, check=True)
    if not perf:
        return {}
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-q", "-n", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seconds: dict[str, float] = {name: 0.0 for name, _ in COMPONENTS} | {"other": 0.0}
    for line in report.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].endswith("%"):
            continue
        samples, dso = int(fields[1]), fields[2]
        name = next((n for n, keys in COMPONENTS if any(k in dso for k in keys)), "other")
        seconds[name] += samples / PERF_HZ
    seconds["total"] = sum(seconds.values())
    return seconds


@dataclass(frozen=True)
class Profiled:
    phase: Phase
    cpu: dict[str, float]  # seconds by component (empty without perf)
    doc: dict[str, Any]  # snap's --json output


def profile_snap(
    snap: Tool, work: Workload, scratch: Path, phases: tuple[Phase, ...], cold: bool, perf: bool
) -> list[Profiled]:
    """Run snap's phases again in a fresh repository, each under perf when ``perf``."""
    base = fresh_dir(scratch / "profile")
    ctx = Context(repo=base / "repo", cache=base, stage=base / "stage", out=base / "out")
    env = snap.environment(ctx)
    assert snap.init is not None
    subprocess.run(snap.argv(snap.init, ctx), env=env, capture_output=True, check=True)
    refs: dict[str, str] = {}
    rows = []
    for phase in phases:
        if phase.action == CHECKOUT:
            cwd = fresh_dir(ctx.out)
            argv = snap.argv(snap.checkout, replace(ctx, ref=refs[phase.version]))
        else:
            cwd = fresh_dir(ctx.stage)
            os.link(work.images[phase.version].path, cwd / IMAGE_NAME)
            argv = snap.argv(snap.commit, ctx)
        if cold:
            drop_caches()
        log = base / f"{phase.name.replace(' ', '-')}.json"
        cpu = run_profiled(argv, cwd, env, log, perf)
        doc = json.loads(log.read_text())
        if phase.action != CHECKOUT:
            refs[phase.version] = doc["id"]
        rows.append(Profiled(phase, cpu, doc))
    return rows


def profile_table(limits: Limits, rows: list[Profiled], seconds: dict[str, float]) -> list[str]:
    """One line per phase: snap's time, the floor, the fraction of the limit reached, and
    (with perf) where the CPU time went. ``seconds``: phase name -> timed wall time."""
    names = [n for n, _ in COMPONENTS] + ["other"]
    head = f"{'phase':<16}{'snap s':>8}{'floor s':>8}  {'bound':<8}{'of limit':>9}"
    if rows and rows[0].cpu:
        head += f"{'CPU s':>8}  " + " ".join(f"{n:>7}" for n in names)
    lines = [head]
    for r in rows:
        took = seconds.get(r.phase.name)
        floor, bound = limits.floor(r.phase, r.doc)
        reached = f"{floor / took:.0%}" if took else "-"
        line = f"{r.phase.name:<16}{took or 0:>8.2f}{floor:>8.2f}  {bound:<8}{reached:>9}"
        if r.cpu:
            line += f"{r.cpu['total']:>8.2f}  " + " ".join(f"{r.cpu[n]:>7.2f}" for n in names)
        lines.append(line)
    return lines
