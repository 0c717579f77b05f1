"""snap commit"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer

from snapstore.cli.common import (
    GLOBAL,
    JsonOption,
    RepoOption,
    ThreadsOption,
    emit_json,
    info,
    locate,
    open_located,
    progress_for,
    tell_state,
)
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import safe, when
from snapstore.errors import InputError, InputNotFoundError, PartialSnapshotError, UsageError
from snapstore.excludes import compile_excludes, pattern_lines
from snapstore.ops.commit import commit_command, commit_file, commit_stream
from snapstore.ops.treecommit import TreeCommitResult, commit_tree
from snapstore.repo import REPO_DIR_NAME, Mode, Repository
from snapstore.selection import check_host, parse_tags
from snapstore.units import format_size


def commit(
    file: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE | - | -- CMD ARGS...",
            help="The file or block device to snapshot; a directory (its tree); '-' for stdin; "
            "with --from-command, the command.",
            show_default=False,
            click_type=click.Path(readable=False, allow_dash=True),  # completes as file names; no checks
        ),
    ],
    message: Annotated[str, typer.Option("--message", "-m", help="A note kept with the snapshot.")] = "",
    name: Annotated[str | None, typer.Option(help="Snapshot name (default: the file's name).")] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", metavar="TAG[,TAG...]", help="Tag the snapshot (repeatable, or a,b)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="NAME", help="Host name to record (default: this one).")
    ] = None,
    threads: ThreadsOption = None,
    from_command: Annotated[
        bool,
        typer.Option(
            "--from-command",
            help="Run CMD ARGS... (after --) and store its stdout; no snapshot if it fails (exit 12).",
        ),
    ] = False,
    force_read: Annotated[
        bool,
        typer.Option(
            "--force-read", help="A directory: read every file, even those unchanged since its last snapshot."
        ),
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            "-e",
            metavar="PATTERN",
            help="A directory: leave out what PATTERN matches (gitignore-style: '*.tmp', '/top', 'dir/', "
            "'**/cache', '!keep'; repeatable).",
        ),
    ] = None,
    exclude_file: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-file",
            metavar="FILE",
            help="A directory: --exclude each pattern of FILE (one a line, '#' comments; repeatable).",
            click_type=click.Path(readable=False),
        ),
    ] = None,
    one_file_system: Annotated[
        bool,
        typer.Option(
            "--one-file-system",
            "-x",
            help="A directory: do not cross mount points (each is recorded as an empty directory).",
        ),
    ] = False,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Store FILE (or stdin, or a command's output) as a new snapshot; print its id."""
    tags = parse_tags(tag or ())
    if host is not None:
        check_host(host)
    if not from_command and len(file) != 1:
        raise UsageError(
            f"give one FILE, not {len(file)}",
            hint="to store a command's output: --from-command -- CMD ARGS...",
        )
    stream = from_command or file[0] == "-"
    if stream and not name:
        raise UsageError("a stream has no file name: give --name", hint="e.g. --name vm.img")
    tree = not stream and os.path.isdir(file[0])
    if force_read and not tree:
        raise UsageError("--force-read goes with a directory")
    if (exclude or exclude_file or one_file_system) and not tree:
        raise UsageError("--exclude, --exclude-file and --one-file-system go with a directory")
    excludes = compile_excludes([*(exclude or ()), *_pattern_files(exclude_file or ())])
    root = locate(repo)
    if root is None:
        root = Path(REPO_DIR_NAME)
        Repository.init(root).close()
        info(f"created snapstore repository at {root.absolute()}")
    with (
        open_located(root, Mode.WRITE) as r,
        progress_for(json_output) as progress,
    ):
        tell_state(r)
        if from_command:
            res = commit_command(
                r,
                file,
                name=str(name),
                message=message,
                threads=threads,
                progress=progress,
                tags=tags,
                host=host,
            )
        elif stream:
            res = commit_stream(
                r,
                sys.stdin.buffer,
                name=str(name),
                message=message,
                threads=threads,
                progress=progress,
                tags=tags,
                host=host,
            )
        elif tree:
            res = commit_tree(
                r,
                Path(file[0]),
                name=name,
                message=message,
                threads=threads,
                progress=progress,
                tags=tags,
                host=host,
                force_read=force_read,
                excludes=excludes,
                one_file_system=one_file_system,
            )
        else:
            res = commit_file(
                r,
                Path(file[0]),
                name=name,
                message=message,
                threads=threads,
                progress=progress,
                tags=tags,
                host=host,
            )
    if res.quota_deferred:
        info("warning: repository is over its quota; pruning deferred while a checkout runs")
    pruned = res.pruned
    for p in pruned:
        info(f"quota: dropped {p.hex[:12]} {safe(p.name)} {when(p.created, utc=GLOBAL.utc)}")
    s = res.snapshot
    tree_doc: dict[str, object] = {}
    if isinstance(res, TreeCommitResult):  # each warned as met
        tree_doc = {
            "unread_files": res.unread_files,
            "skipped": list(res.skipped),
            "unreadable": list(res.unreadable),
            "changed": list(res.changed),
            "partial": res.partial,
            "excludes": list(excludes.texts),
        }
    if json_output:
        emit_json(
            snapshot_doc(
                s,
                chunks=res.chunks,
                new_chunks=res.new_chunks,
                new_raw_bytes=res.new_raw_bytes,
                new_stored_bytes=res.new_stored_bytes,
                zero_bytes=res.zero_bytes,
                confirmed_chunks=res.confirmed_chunks,
                read_bytes=res.read_bytes,
                chunked_bytes=res.chunked_bytes,
                seconds=round(res.seconds, 3),
                pruned=[p.hex for p in pruned],
                **tree_doc,
            )
        )
        _partial(res)
        return
    rate = s.size / res.seconds if res.seconds > 0 else 0.0
    info(
        f"snapshot {s.hex[:12]} of {safe(s.name)}: {format_size(s.size)}, {res.new_chunks} new of "
        f"{res.chunks} chunks, {format_size(res.new_stored_bytes)} stored, "
        f"{res.seconds:.1f} s ({format_size(rate)}/s)"
    )
    typer.echo(s.hex)
    _partial(res)


def _partial(res: object) -> None:
    """Exit 15 once the snapshot's id is out, if the commit left out unreadable entries."""
    if isinstance(res, TreeCommitResult) and res.partial:
        raise PartialSnapshotError(res.snapshot.hex[:12], len(res.unreadable))


def _pattern_files(paths: Sequence[str]) -> list[str]:
    """The patterns of ``--exclude-file`` files, in order."""
    found = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                text = os.fsdecode(f.read())
        except FileNotFoundError as exc:
            raise InputNotFoundError(Path(path)) from exc
        except OSError as exc:
            raise InputError(path, exc.strerror or str(exc)) from exc
        found += pattern_lines(text)
    return found
