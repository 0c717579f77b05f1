"""What every command shares: options, opening the repository, output, progress."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from snapstore.backends.base import Backend
from snapstore.cli.options import GLOBAL as GLOBAL
from snapstore.cli.options import REPO_HELP as REPO_HELP
from snapstore.cli.options import GlobalOptions as GlobalOptions
from snapstore.errors import RepositoryNotFoundError, UsageError
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.remote.address import SshAddress, parse_location
from snapstore.repo import Mode, Repository, find_root
from snapstore.selection import SnapshotFilter
from snapstore.units import parse_duration

# a path or a remote address: a string (a Path would fold ssh://'s slashes), completed as a file name
RepoOption = Annotated[str | None, typer.Option("--repo", "-r", help=REPO_HELP, click_type=click.Path())]
NoLockOption = Annotated[
    bool,
    typer.Option(
        "--no-lock",
        envvar="SNAP_NO_LOCK",
        show_envvar=True,
        help="Take no lock (read-only media); a gc or prune running meanwhile could remove data read.",
    ),
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", "-j", min=1, help="Worker threads (default: all cores).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TagFilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        metavar="TAG[,TAG...]",
        help="Only snapshots with all these tags; repeat for alternatives (--tag a,b --tag c).",
    ),
]
HostFilterOption = Annotated[
    list[str] | None,
    typer.Option("--host", metavar="HOST", help="Only snapshots taken on HOST (repeatable)."),
]


def snapshot_filter(tags: list[str] | None, hosts: list[str] | None) -> SnapshotFilter:
    """The filter of a command's ``--tag`` and ``--host`` options (UsageError if a tag is bad)."""
    return SnapshotFilter.from_options(tags or (), hosts or ())


def locate(repo: str | None) -> Path | SshAddress | None:
    """The repository named by the command's ``-r``, else the global ``-r``, else
    ``$SNAP_REPO``, else the nearest ``.snapstore`` up from the working directory: a local
    path, or a remote repository's address (snapstore.remote.address)."""
    named = repo or GLOBAL.repo or os.environ.get("SNAP_REPO") or None
    if named is not None:
        return parse_location(named) or Path(named)
    return find_root(Path.cwd())


def open_repo(
    repo: str | None,
    mode: Mode = Mode.READ,
    *,
    rebuild_index: bool = False,
    reports_index: bool = False,
    ignore_bad_quota: bool = False,
    no_lock: bool = False,
) -> Repository:
    """Open the repository a command names (``reports_index``: the command itself reports a
    missing or damaged index, so no warning is needed; ``ignore_bad_quota``: the command
    repairs a quota out of range; ``no_lock``: a reader takes no lock)."""
    root = locate(repo)
    if root is None:
        raise RepositoryNotFoundError(None)
    opened = open_located(
        root,
        mode,
        rebuild_index=rebuild_index,
        ignore_bad_quota=ignore_bad_quota,
        lock=not (no_lock or GLOBAL.no_lock),
    )
    tell_state(opened, index=not reports_index)
    return opened


def open_located(
    root: Path | SshAddress,
    mode: Mode,
    *,
    rebuild_index: bool = False,
    ignore_bad_quota: bool = False,
    lock: bool = True,
) -> Repository:
    """Open the repository at a local path or a remote address (its backend closed with it)."""
    if isinstance(root, SshAddress):
        return Repository.open_backend(
            connect(root),
            mode,
            rebuild_index=rebuild_index,
            ignore_bad_quota=ignore_bad_quota,
            lock=lock,
            lock_wait=GLOBAL.lock_wait,
            owns_backend=True,
        )
    return Repository.open(
        root,
        mode,
        rebuild_index=rebuild_index,
        ignore_bad_quota=ignore_bad_quota,
        lock=lock,
        lock_wait=GLOBAL.lock_wait,
    )


def connect(address: SshAddress, *, create: bool = False) -> Backend:
    """The backend of a remote repository: ``$SNAP_RSH`` (default ``ssh``) runs
    ``--remote-snap``/``$SNAP_REMOTE_SNAP`` (default ``snap``) ``serve --stdio`` on its host;
    a request not answered in ``--remote-timeout``/``$SNAP_REMOTE_TIMEOUT`` (default 120 s)
    fails with exit 13."""
    from snapstore.remote.client import RemoteBackend

    timeout_text = GLOBAL.remote_timeout or os.environ.get("SNAP_REMOTE_TIMEOUT") or "120"
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = parse_duration(timeout_text).total_seconds()
    if timeout <= 0:
        raise UsageError(f"--remote-timeout {timeout_text!r} is not a positive duration")
    return RemoteBackend.connect(
        address,
        rsh=os.environ.get("SNAP_RSH") or "ssh",
        remote_snap=GLOBAL.remote_snap or "snap",
        create=create,
        timeout=timeout,
    )


def tell_state(r: Repository, *, index: bool = True) -> None:
    """Say on stderr what the user should know about the repository just opened."""
    for line in state_notes(r, index=index):
        warn(line)


def state_notes(r: Repository, *, index: bool = True) -> list[str]:
    """The lines :func:`tell_state` says (a server running a command sends them along)."""
    notes = []
    if index and r.index_problem is not None:
        notes.append(
            f"snap: warning: {r.index_problem}; using a temporary index rebuilt from the packs "
            "(run 'snap repair' to rebuild it)"
        )
    if r.interrupted_writer is not None:
        then = "its work was recovered" if r.mode.writes else "the next writing command recovers its work"
        notes.append(f"snap: note: the last writer ({r.interrupted_writer}) did not finish; {then}")
    return notes


def info(message: str) -> None:
    """A human line on stderr (stdout is for ids and JSON); none with ``-q``."""
    if not GLOBAL.quiet:
        typer.echo(message, err=True)


def warn(message: str) -> None:
    """A ``snap: warning:`` or ``snap: note:`` line on stderr, even with ``-q``."""
    typer.echo(message, err=True)


def out(message: str) -> None:
    typer.echo(message)


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that nothing more written (or
    flushed at exit) to it fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit_json(doc: Any) -> None:
    GLOBAL.json_emitted = True
    typer.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


@contextmanager
def progress_for(json_output: bool) -> Iterator[Progress]:
    """``--progress``: auto (default) draws a bar when stderr is a terminal and nothing
    otherwise; log writes a one-line record every $SNAP_PROGRESS_INTERVAL seconds (30)."""
    if GLOBAL.progress == "log":
        from snapstore.cli.progresslog import DEFAULT_INTERVAL, LogProgress

        yield LogProgress(float(os.environ.get("SNAP_PROGRESS_INTERVAL") or DEFAULT_INTERVAL))
        return
    if GLOBAL.progress == "none":
        yield NULL_PROGRESS
        return
    bar = GLOBAL.progress == "bar" or sys.stderr.isatty()
    if bar and not json_output and not GLOBAL.quiet:
        # Imported only on a terminal: rich.progress costs ~35 ms of start-up.
        from snapstore.cli.progressbar import BarProgress

        bar = BarProgress()
        try:
            yield bar
        finally:
            bar.finish()  # (again: the operation may have failed before it started)
    else:
        yield NULL_PROGRESS
