"""Runs one tool through the phases, measuring each: wall time, peak RSS, repository size."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tools import IMAGE_NAME, Argv, Context, Tool
from workload import VERSIONS, Image, Workload, file_digest, sparse_copy

COMMIT, CHECKOUT, IN_PLACE = "commit", "checkout", "in-place"
BASE_TIME = 1_700_000_000  # rdiff-backup keys versions by time: v1 at this second, v2 a minute later...


@dataclass(frozen=True)
class Phase:
    action: str  # COMMIT, CHECKOUT or IN_PLACE
    version: str
    over: str = ""  # IN_PLACE: the version the output file holds before (a sparse copy of it)

    @property
    def name(self) -> str:
        return f"{self.action} {self.version}"


PHASES = (
    *(Phase(COMMIT, v) for v in VERSIONS),
    Phase(CHECKOUT, "v1"),  # the oldest: the most history to undo for reverse-delta tools
    Phase(CHECKOUT, "v3"),
    Phase(IN_PLACE, "v1", over="v3"),  # a rollback: day 1 over day 3, rewriting what differs
)


def phases_for(versions: tuple[str, ...]) -> tuple[Phase, ...]:
    """Phases for a user's own images (``--image``): commit each in order, check out the
    oldest and the newest, then the oldest over the newest in place."""
    checkouts = dict.fromkeys((versions[0], versions[-1]))
    rollback = (Phase(IN_PLACE, versions[0], over=versions[-1]),) if len(versions) > 1 else ()
    return (*(Phase(COMMIT, v) for v in versions), *(Phase(CHECKOUT, v) for v in checkouts), *rollback)


@dataclass
class Measurement:
    tool: str
    phase: str
    bytes: int  # logical size of the version
    status: str = "ok"  # ok, FAIL or skipped
    seconds: float | None = None  # wall time, including the sync of what the tool left unwritten
    sync_seconds: float | None = None  # of which: the sync after the tool exited
    all_seconds: list[float] = field(default_factory=list)  # every run's (seconds is the median)
    max_rss_kib: int | None = None
    repo_bytes: int | None = None  # allocated bytes of the repository, after commits
    restored_allocated: int | None = None  # allocated bytes of the checked-out file
    detail: str = ""
    workload: str = "synthetic"  # which workload's images (bench/workload.py, bench/realdata.py)
    threads: int | None = None  # --threads given to the tool (the scaling table); None: its default
    written_bytes: int | None = None  # bytes the tool's process sent to storage (wait4 ru_oublock)
    told_written_bytes: int | None = None  # in place: the bytes the tool says it wrote

    @property
    def mb_per_s(self) -> float | None:
        if self.status != "ok" or not self.seconds:
            return None
        return self.bytes / self.seconds / 1e6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mb_per_s": self.mb_per_s}


@dataclass(frozen=True)
class Settings:
    work: Path
    cold: bool  # drop the page cache before each phase
    runs: int = 1  # each phase is run this many times from the same state; the median counts


@dataclass(frozen=True)
class Run:
    returncode: int
    seconds: float  # until exit and sync
    sync_seconds: float
    max_rss_kib: int
    written_bytes: int  # as /proc/PID/io write_bytes counts them (ru_oublock: 512-byte units)
    stdout: str
    stderr_tail: str


def run_measured(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Run:
    """Run a command to completion and sync: a phase is done when its writes are on disk,
    whether the tool fsyncs them (snap, restic's and borg's repositories) or leaves them in
    the page cache (restic's and borg's restored files). Its peak RSS comes from wait4 on
    its own pid."""
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        err.write(f"$ {' '.join(argv)}\n".encode())
        err.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        exited = time.perf_counter()
        os.sync()
        finished = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace").strip().splitlines()
    return Run(
        proc.returncode,
        finished - started,
        finished - exited,
        usage.ru_maxrss,
        usage.ru_oublock * 512,
        out_path.read_text(errors="replace"),
        stderr[-1],
    )


def drop_caches() -> str | None:
    """Write back and drop the page cache (needs root); returns why it failed, if it did."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def allocated_bytes(path: Path) -> int:
    """What ``du -s`` counts: allocated blocks of every file below ``path``, hard links once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class ToolRun:
    """One tool, its own fresh repository, the phases in order."""

    def __init__(self, tool: Tool, workload: Workload, settings: Settings) -> None:
        self.tool = tool
        self.workload = workload
        self.settings = settings
        base = settings.work / "tools" / tool.name
        shutil.rmtree(base, ignore_errors=True)
        self.logs = fresh_dir(base / "logs")
        self.ctx = Context(repo=base / "repo", cache=base / "cache", stage=base / "stage", out=base / "out")
        self.refs: dict[str, str] = {}

    def run(self, phases: tuple[Phase, ...]) -> list[Measurement]:
        problem = self.init()
        results = []
        for phase in phases:
            if phase.action == IN_PLACE and self.tool.in_place is None:
                continue  # the tool cannot restore over an existing file
            m = Measurement(self.tool.name, phase.name, self.workload.images[phase.version].size)
            if problem:
                self.fail(m, problem)
            else:
                self.measure(phase, m)
            results.append(m)
        return results

    def init(self) -> str | None:
        self.ctx.cache.mkdir(parents=True)
        if self.tool.init is None:
            return None
        run = self.execute(self.tool.init, self.ctx, self.ctx.cache, "init")
        return None if run.returncode == 0 else f"init failed (exit {run.returncode}): {run.stderr_tail}"

    def measure(self, phase: Phase, m: Measurement) -> None:
        image = self.workload.images[phase.version]
        if phase.action != COMMIT and phase.version not in self.refs:
            self.fail(m, f"no {phase.version} to check out (its commit failed)", status="skipped")
            return
        ctx = replace(
            self.ctx,
            label=phase.version,
            when=BASE_TIME + 60 * list(self.workload.images).index(phase.version),
            ref=self.refs.get(phase.version, ""),
        )
        make = self.command(phase)
        saved = self.save_state() if phase.action == COMMIT and self.settings.runs > 1 else None
        runs: list[Run] = []
        for attempt in range(self.settings.runs):
            if saved is not None:  # the state the phase started from; the last run gets the original
                self.restore_state(saved, copy=attempt + 1 < self.settings.runs)
            cwd = self.stage(image) if phase.action == COMMIT else self.output(phase)
            if self.settings.cold:
                drop_caches()
            run = self.execute(make, ctx, cwd, phase.name)
            runs.append(run)
            if run.returncode != 0:
                break
            if phase.action != COMMIT and attempt + 1 < self.settings.runs:
                self.after_checkout(m, ctx.out, image)  # every checkout is verified
                if m.status != "ok":
                    break
        if saved is not None and saved.exists():  # a run failed before the last one
            self.restore_state(saved, copy=False)
        last = runs[-1]
        m.seconds = statistics.median(r.seconds for r in runs)
        m.sync_seconds = statistics.median(r.sync_seconds for r in runs)
        m.all_seconds = [r.seconds for r in runs]
        m.max_rss_kib = max(r.max_rss_kib for r in runs)
        m.written_bytes = int(statistics.median(r.written_bytes for r in runs))
        if m.status != "ok":
            return
        if last.returncode != 0:
            self.fail(m, f"exit {last.returncode}: {last.stderr_tail}")
        elif phase.action == COMMIT:
            self.after_commit(m, ctx, last.stdout)
        else:
            if phase.action == IN_PLACE and self.tool.told_writes is not None:
                m.told_written_bytes = self.tool.told_writes(last.stdout)
            self.after_checkout(m, ctx.out, image)

    def save_state(self) -> Path:
        """Move the tool's repository and cache aside, to run a commit several times from
        the same state."""
        saved = fresh_dir(self.settings.work / "tools" / f"{self.tool.name}.saved")
        for src in (self.ctx.repo, self.ctx.cache):
            if src.exists():
                src.rename(saved / src.name)
        return saved

    def restore_state(self, saved: Path, copy: bool) -> None:
        """Put the saved state back: a copy (sparse files stay sparse), or (the last run) the
        original itself, so that the repository measured afterwards is exactly what the
        tool made of it (a copy may turn preallocated space into holes)."""
        for dst in (self.ctx.repo, self.ctx.cache):
            shutil.rmtree(dst, ignore_errors=True)
            src = saved / dst.name
            if src.exists() and copy:
                subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
            elif src.exists():
                src.rename(dst)
        if not copy:
            shutil.rmtree(saved, ignore_errors=True)

    def execute(self, make: Argv, ctx: Context, cwd: Path, label: str) -> Run:
        log = self.logs / label.replace(" ", "-")
        return run_measured(self.tool.argv(make, ctx), cwd, self.tool.environment(ctx), log)

    def command(self, phase: Phase) -> Argv:
        if phase.action == COMMIT:
            return self.tool.commit
        if phase.action == CHECKOUT:
            return self.tool.checkout
        assert self.tool.in_place is not None  # run() leaves IN_PLACE out for tools without it
        return self.tool.in_place

    def output(self, phase: Phase) -> Path:
        """An empty output directory; for IN_PLACE, holding a sparse copy of ``phase.over`` as
        IMAGE_NAME, written back (and, when cold, dropped from the page cache after)."""
        out = fresh_dir(self.ctx.out)
        if phase.action == IN_PLACE:
            sparse_copy(self.workload.images[phase.over].path, out / IMAGE_NAME)
            os.sync()  # on disk: neither its time nor its bytes are the phase's
        return out

    def stage(self, image: Image) -> Path:
        """The stage directory with ``image`` as IMAGE_NAME (a hard link: same path every time)."""
        stage = fresh_dir(self.ctx.stage)
        os.link(image.path, stage / IMAGE_NAME)
        return stage

    def after_commit(self, m: Measurement, ctx: Context, stdout: str) -> None:
        try:
            self.refs[ctx.label] = self.tool.ref(stdout, ctx)
        except (ValueError, KeyError) as exc:
            self.fail(m, f"cannot read the new version's id from the output: {exc}")
            return
        m.repo_bytes = allocated_bytes(ctx.repo)

    def after_checkout(self, m: Measurement, out: Path, image: Image) -> None:
        found = sorted(out.rglob(IMAGE_NAME))
        if len(found) != 1:
            self.fail(m, f"expected one {IMAGE_NAME} under {out}, found {len(found)}")
            return
        restored = found[0]
        st = restored.stat()
        m.restored_allocated = st.st_blocks * 512
        if st.st_size != image.size:
            self.fail(m, f"restored {st.st_size} bytes, {image.name} has {image.size}")
        elif (digest := file_digest(restored)) != image.digest:
            self.fail(m, f"content differs from {image.name}: blake3 {digest[:16]} != {image.digest[:16]}")
        shutil.rmtree(out, ignore_errors=True)

    @staticmethod
    def fail(m: Measurement, why: str, status: str = "FAIL") -> None:
        m.status, m.detail = status, why
