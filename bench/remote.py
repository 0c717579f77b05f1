"""The benchmark's remote mode (issue 14): snap, borg and restic each with its repository on
another machine reached over SSH, here a real OpenSSH server on a loopback port.

Run as root from the repository root::

    python bench/remote.py                                  # the 1 GiB real-data images
    python bench/remote.py --size 64M --warm                # a quick look
    python bench/remote.py --rate 100M                      # a 100 MiB/s link each way
    python bench/remote.py --workload synthetic --size 16M --tools snap   # no root needed

It starts ``sshd`` (tests/sshd.py: throwaway host and user keys, its own config) on
127.0.0.1, builds the image workload (bench/realdata.py: an ext4 image of this machine's
files, v2 and v3 changed as a guest changes them; or bench/workload.py's synthetic image),
and runs each tool against a fresh repository on the server:

- snap: ``ssh://`` repository, ``snap serve --stdio`` on the far side (this checkout's);
- borg: ``ssh://USER@127.0.0.1:PORT/PATH``, ``borg serve`` on the far side (-e none, zstd,3);
- restic: ``sftp:`` repository through ``-o sftp.command=...`` (the server's internal-sftp);
- snap-local: snap with a local repository on the same disk, the reference for what the
  link and the remote path cost (not a peer: the targets compare snap with borg and restic).

Every tool reaches the server through the same command, bench/wire_rsh.py wrapped around the
same ``ssh`` (same key, port and options), which counts the bytes the client sends to ssh
and receives from it (before ssh's encryption) and with ``--rate`` holds each direction to
that many bytes a second. The phases: commit v1, v2, v3, then checkout v1, v2, v3, each
verified byte for byte. For each: wall time (to the tool's exit plus a sync; the server's
writes are on the same disk), bytes sent and received, the client's peak RSS (wait4: the
largest process of its tree, ssh and the wrapper included) and the repository's allocated
size. Then snap against each peer, and issue 14's targets: an incremental commit >= 3x
faster than borg serve and restic/SFTP and fewer bytes sent than either, and the bytes
snap sends for it under 1.2x the compressed size of its new chunks plus 1% of the image.
As root the page cache is dropped before every phase (--warm keeps it). Exit status: 0 when
every checkout verified, 1 otherwise, 2 for bad arguments or no sshd.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from realdata import RealDataUnavailable, build_real_workload
from remote_report import WireCount, print_remote, remote_rows, targets
from report import machine_info, print_header, print_workload, source_state
from runner import CHECKOUT, COMMIT, Measurement, Phase, Run, Settings, ToolRun, drop_caches
from tools import IMAGE_NAME, SOURCE_ROOT, Argv, Context, Tool, compile_snap, make_tools, snap_env
from workload import Workload, build_workload

from snapstore.errors import UsageError
from snapstore.units import format_size, parse_size

sys.path.insert(0, str(SOURCE_ROOT))  # the test suite's sshd (a package of this checkout)
from tests.sshd import SSHD, SshServer, running_sshd

VERSIONS = ("v1", "v2", "v3")
TOOLS = ("snap", "snap-local", "restic", "borg")
WIRE_RSH = Path(__file__).resolve().with_name("wire_rsh.py")
WIRE_LOG = "wire.log"  # in each tool's cache directory: a line per connection of the phase
SYNTHETIC_DATA = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="remote.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", type=Path, default=Path("bench-work-remote"), help="work directory")
    p.add_argument("--size", type=_size, default=1 << 30, help="image size (default 1G; at least 16M)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument(
        "--workload",
        choices=("real", "synthetic"),
        default="real",
        help="real (default; needs root for the loop mount) or synthetic (bench/workload.py)",
    )
    p.add_argument(
        "--versions",
        type=int,
        choices=(2, 3),
        default=3,
        help="commit and check out v1..vN (default 3; 2 for a quicker smoke run)",
    )
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of " + ",".join(TOOLS))
    p.add_argument(
        "--rate", type=_rate, default=None, help="limit each direction to this many bytes/s, e.g. 12M"
    )
    p.add_argument("--warm", action="store_true", help="do not drop the page cache before each phase")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write all figures here")
    return p.parse_args(argv)


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if size < 16 << 20:
        raise argparse.ArgumentTypeError("use at least 16M")
    return size


def _rate(text: str) -> int:
    try:
        rate = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if rate < 1024:
        raise argparse.ArgumentTypeError("use at least 1K (bytes a second)")
    return rate


# The tools, over ssh --------------------------------------------------------------------


def remote_tools(server: SshServer, rate: int | None) -> list[Tool]:
    """snap, restic and borg (tools.py's settings) with their repository on ``server``, and
    snap with a local one."""
    host = f"{server.user}@127.0.0.1"

    def rsh(ctx: Context) -> str:
        """The ssh command every tool runs: the counting wrapper around the same ssh."""
        wrapper = [sys.executable, str(WIRE_RSH), str(ctx.cache / WIRE_LOG)]
        return shlex.join([*wrapper, *(["--rate", str(rate)] if rate else [])]) + " " + server.rsh()

    remote_snap = f"env PYTHONPATH={shlex.quote(str(SOURCE_ROOT))} {shlex.quote(sys.executable)} -m snapstore"
    local = {t.name: t for t in make_tools(None)}

    def snap_url(c: Context) -> list[str]:
        return ["-r", server.url(c.repo)]

    def sftp(c: Context) -> list[str]:
        return ["-r", f"sftp:{host}:{c.repo}", "-o", f"sftp.command={rsh(c)} {host} -s sftp"]

    def borg_url(c: Context) -> str:
        return f"ssh://{host}:{server.port}{c.repo}"

    snap = replace(
        local["snap"],
        init=lambda c: ["init", server.url(c.repo)],
        commit=lambda c: ["commit", IMAGE_NAME, *snap_url(c), "--json"],
        checkout=lambda c: ["checkout", c.ref, *snap_url(c), "-o", IMAGE_NAME, "--json"],
        env=lambda c: (
            snap_env(c)
            | {
                "SNAP_RSH": rsh(c),
                "SNAP_REMOTE_SNAP": remote_snap,
                "SNAP_REMOTE_TIMEOUT": "600",
                "XDG_CACHE_HOME": str(c.cache),  # its index cache
            }
        ),
        in_place=None,
        note="ssh:// repository, snap serve --stdio on the server; defaults (FastCDC, zstd 3)",
    )
    restic = replace(
        local["restic"],
        init=lambda c: [*sftp(c), "init"],
        commit=lambda c: [*sftp(c), "backup", "--json", IMAGE_NAME],
        checkout=lambda c: [*sftp(c), "restore", c.ref, "--target", "."],
        note="sftp: repository (-o sftp.command); defaults (repository v2, compression auto, encrypted)",
    )
    borg_env = local["borg"].env
    borg = replace(
        local["borg"],
        init=lambda c: ["init", "-e", "none", borg_url(c)],
        commit=lambda c: ["create", "--compression", "zstd,3", f"{borg_url(c)}::{c.label}", IMAGE_NAME],
        checkout=lambda c: ["extract", "--sparse", f"{borg_url(c)}::{c.ref}"],
        env=lambda c: borg_env(c) | {"BORG_RSH": rsh(c)},
        note="ssh:// repository, borg serve on the server; -e none, --compression zstd,3, extract --sparse",
    )
    reference = replace(
        local["snap"],
        name="snap-local",
        in_place=None,
        note="a local repository (no ssh): what the link costs",
    )
    return [snap, reference, restic, borg]


class WireRun(ToolRun):
    """ToolRun that also keeps each phase's wire counts and output."""

    def __init__(self, tool: Tool, workload: Workload, settings: Settings) -> None:
        super().__init__(tool, workload, settings)
        self.wire: dict[str, WireCount] = {}
        self.stdout: dict[str, str] = {}

    def execute(self, make: Argv, ctx: Context, cwd: Path, label: str) -> Run:
        log = self.ctx.cache / WIRE_LOG
        log.unlink(missing_ok=True)
        run = super().execute(make, ctx, cwd, label)
        self.wire[label] = WireCount.read(log)
        self.stdout[label] = run.stdout
        return run


# The run --------------------------------------------------------------------------------


def build(kind: str, size: int, seed: int, directory: Path, versions: tuple[str, ...]) -> Workload:
    progress(f"generating the {kind} workload ...")
    if kind == "synthetic":
        return build_workload(directory, size, seed, SYNTHETIC_DATA, versions)
    # In a child process, so that its memory does not count in the tools' peak RSS (bench.py).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(build_real_workload, directory, size, seed, versions=versions).result()


def phases(versions: tuple[str, ...]) -> tuple[Phase, ...]:
    """Commit each version in order, then check out each (verified byte for byte)."""
    return (*(Phase(COMMIT, v) for v in versions), *(Phase(CHECKOUT, v) for v in versions))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # interleave with progress
    if SSHD is None:
        print("remote.py: sshd is not installed (Debian: openssh-server)", file=sys.stderr)
        return 2
    wanted = [name.strip() for name in args.tools.split(",") if name.strip()]
    if unknown := [name for name in wanted if name not in TOOLS]:
        print(
            f"remote.py: unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}",
            file=sys.stderr,
        )
        return 2
    work_dir = args.work.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cold = not args.warm and os.geteuid() == 0 and drop_caches() is None
    started = datetime.now(UTC)
    command = shlex.join(["python", "bench/remote.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"snapstore remote benchmark, {started:%Y-%m-%d %H:%M} UTC: {command}")
    machine = machine_info(work_dir)
    try:
        versions = VERSIONS[: args.versions]
        work = build(args.workload, args.size, args.seed, work_dir / "images", versions)
    except RealDataUnavailable as exc:
        print(f"remote.py: the real-data workload cannot be built here: {exc}", file=sys.stderr)
        return 2
    with running_sshd(work_dir / "sshd") as server:
        chosen = [t for t in remote_tools(server, args.rate) if t.name in wanted]
        tools = [t for t in chosen if t.available()]
        skipped = [f"{t.name}: not installed, skipped" for t in chosen if not t.available()]
        settings = [
            f"cache:      {'cold: page cache dropped before every phase' if cold else 'warm page cache'}",
            f"link:       ssh to 127.0.0.1:{server.port} (OpenSSH, ed25519 key), through bench/wire_rsh.py"
            + (f", {format_size(args.rate)}/s each way" if args.rate else ", not throttled"),
            f"image:      {format_size(args.size)}, seed {args.seed}, work dir {work_dir}",
            "runs:       each phase once (the repository and the client's cache go on from phase to phase)",
            *skipped,
        ]
        if any(t.name == "snap" for t in tools):
            settings.append(compile_snap())
        print_header(machine, {t.name: t.version() for t in tools}, {t.name: t.note for t in tools}, settings)
        print_workload(work)
        measured: list[tuple[Measurement, WireCount, str]] = []
        for tool in tools:
            progress(f"running {tool.name} ...")
            run = WireRun(tool, work, Settings(work_dir / "remote", cold, 1))
            for m in run.run(phases(versions)):
                m.workload = work.kind
                wire = run.wire.get(m.phase, WireCount())
                progress(f"  {tool.name} {m.phase}: {m.status}, {m.seconds or 0:.1f} s, {wire}")
                measured.append((m, wire, run.stdout.get(m.phase, "")))
    rows = remote_rows(measured)
    verdicts = targets(rows, work)
    print_remote(rows, [t.name for t in tools], verdicts)
    source_after = source_state()
    if source_after != machine["snapstore"]:
        print(f"WARNING: snapstore changed during the run: now {source_after}; the figures may mix versions")
    if args.json:
        doc = {
            "date": started.isoformat(),
            "command": command,
            "machine": machine,
            "settings": {"cold_cache": cold, "size": args.size, "seed": args.seed, "rate": args.rate},
            "tools": {t.name: {"version": t.version(), "note": t.note} for t in tools},
            "workload": {
                "kind": work.kind,
                "notes": work.notes,
                "sizes": {i.name: i.size for i in work.images.values()},
            },
            "results": [row.as_dict() for row in rows],
            "targets": verdicts,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(row.status == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
