"""snap checkout"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from snapstore.cli.common import (
    JsonOption,
    NoLockOption,
    RepoOption,
    ThreadsOption,
    emit_json,
    info,
    open_repo,
    progress_for,
    silence_stdout,
)
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import safe
from snapstore.errors import UsageError
from snapstore.model import SnapshotInfo
from snapstore.ops.checkout import checkout as do_checkout
from snapstore.ops.inplace import checkout_in_place
from snapstore.ops.treerestore import restore_tree
from snapstore.ops.treesync import ACTIONS, SyncResult, sync_tree
from snapstore.repo import Repository
from snapstore.units import format_size


def checkout(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Output file ('-': stdout); a directory for a tree snapshot."),
    ],
    name: Annotated[str | None, typer.Option(help="With 'latest': newest of this name.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace OUTPUT if it exists.")] = False,
    sparse: Annotated[bool, typer.Option(help="Leave holes for zero runs.")] = True,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="Rewrite the existing OUTPUT (file, device or directory) where it differs, nothing else.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --in-place: only tell what would be written.")
    ] = False,
    delete: Annotated[
        bool,
        typer.Option("--delete", help="With --in-place of a tree: remove what the snapshot does not have."),
    ] = False,
    checksum: Annotated[
        bool,
        typer.Option(
            "--checksum",
            "-c",
            help="With --in-place of a tree: hash files whose size and mtime match too.",
        ),
    ] = False,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", "-p", metavar="P", help="A tree snapshot: restore only P (repeatable)."),
    ] = None,
    threads: ThreadsOption = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Rebuild a snapshot's file (or directory tree), verifying every byte."""
    for flag, given in (("--dry-run", dry_run), ("--delete", delete), ("--checksum", checksum)):
        if given and not in_place:
            raise UsageError(f"{flag} goes with --in-place")
    if in_place:
        if output == "-":
            raise UsageError("--in-place needs a file, block device or directory, not stdout")
        with open_repo(repo, no_lock=no_lock) as r:
            snap = r.resolve(snapshot, name=name)
            if snap.kind == "tree":
                _sync(r, snap, output, (delete, dry_run, checksum), path or [], threads, json_output)
                return
            if path or delete or checksum:
                raise UsageError(
                    "--path, --delete and --checksum go with a tree snapshot",
                    hint=f"{snap.hex[:12]} is a single file",
                )
            _in_place(r, snap, output, dry_run, threads, json_output)
        return
    with open_repo(repo, no_lock=no_lock) as r:
        snap = r.resolve(snapshot, name=name)
        if snap.kind == "tree":
            _restore(r, snap, output, path or [], threads, json_output)
            return
        if path:
            raise UsageError("--path goes with a tree snapshot", hint=f"{snap.hex[:12]} is a single file")
        with progress_for(json_output or output == "-") as progress:
            try:
                res = do_checkout(
                    r, snap, output, force=force, sparse=sparse, threads=threads, progress=progress
                )
            except BrokenPipeError:
                if output != "-":
                    raise
                # The reader of stdout went away (e.g. '| head'): stop quietly, as cat does.
                silence_stdout()
                return
    if json_output and output != "-":
        emit_json(snapshot_doc(snap, path=os.path.abspath(res.path), zero_bytes=res.zero_bytes))
    elif output != "-":
        info(f"checked out {snap.hex[:12]} ({safe(snap.name)}, {format_size(res.size)}) to {safe(res.path)}")


def _restore(
    r: Repository, snap: SnapshotInfo, output: str, paths: list[str], threads: int | None, json_output: bool
) -> None:
    if output == "-":
        raise UsageError("a tree snapshot restores into a directory, not stdout")
    with progress_for(json_output) as progress:
        res = restore_tree(r, snap, output, paths=paths, threads=threads, progress=progress)
    if json_output:
        emit_json(
            snapshot_doc(
                snap,
                path=os.path.abspath(res.path),
                entries=res.entries,
                written_bytes=res.size,
                zero_bytes=res.zero_bytes,
                warnings=list(res.warnings),
            )
        )
        return
    info(
        f"checked out {snap.hex[:12]} ({safe(snap.name)}, {res.entries} entries, "
        f"{format_size(res.size)}) to {safe(res.path)}"
    )


def _in_place(
    r: Repository, snap: SnapshotInfo, output: str, dry_run: bool, threads: int | None, json_output: bool
) -> None:
    with progress_for(json_output) as progress:
        res = checkout_in_place(r, snap, output, dry_run=dry_run, threads=threads, progress=progress)
    if json_output:
        emit_json(
            snapshot_doc(
                snap,
                path=os.path.abspath(res.path),
                in_place=True,
                dry_run=res.dry_run,
                old_size=res.old_size,
                write_bytes=res.write_bytes,
                chunks_written=res.chunks_written,
                zeroed_bytes=res.zeroed_bytes,
                punched_bytes=res.punched_bytes,
                unchanged_bytes=res.unchanged_bytes,
            )
        )
        return
    verb = "would write" if dry_run else "wrote"
    info(
        f"{'dry run: ' if dry_run else ''}{safe(res.path)} {verb} {format_size(res.write_bytes)} "
        f"({res.write_bytes} bytes, {res.chunks_written} chunks) of {snap.hex[:12]} "
        f"({safe(snap.name)}, {format_size(res.size)}); {format_size(res.unchanged_bytes)} already matched, "
        f"{format_size(res.punched_bytes)} punched, {format_size(res.zeroed_bytes)} zeroed"
        + (f"; resized from {res.old_size} bytes" if res.old_size != res.size and not dry_run else "")
    )
    if dry_run:
        typer.echo(res.write_bytes + res.zeroed_bytes)


def _sync(
    r: Repository,
    snap: SnapshotInfo,
    output: str,
    flags: tuple[bool, bool, bool],
    paths: list[str],
    threads: int | None,
    json_output: bool,
) -> None:
    delete, dry_run, checksum = flags
    with progress_for(json_output) as progress:
        res = sync_tree(
            r, snap, output, delete=delete, dry_run=dry_run, checksum=checksum, paths=paths,
            threads=threads, progress=progress,
        )  # fmt: skip
    if json_output:
        emit_json(sync_doc(res))
        return
    if dry_run:
        for a in res.actions:
            path = safe(a.path.decode("utf-8", "backslashreplace")) or "."
            typer.echo(f"{a.action}\t{a.kind}\t{a.size}\t{','.join(a.fields) or '-'}\t{path}")
    counts = ", ".join(
        f"{res.count(action)} {action}"
        for action in ("created", "updated", "metadata", "replaced", "deleted")
    )
    info(
        f"{'dry run: ' if dry_run else ''}{safe(res.path)} {'would be' if dry_run else 'is'} synced to "
        f"{snap.hex[:12]} ({safe(snap.name)}): {counts}, {res.unchanged} unchanged; "
        f"{format_size(res.written_bytes)} {'to write' if dry_run else 'written'}"
    )


def sync_doc(res: SyncResult) -> dict[str, Any]:
    """The JSON of an in-place sync of a tree (docs/snap.schema.json, checkout_tree_in_place)."""
    return snapshot_doc(
        res.snapshot,
        path=os.path.abspath(res.path),
        in_place=True,
        dry_run=res.dry_run,
        delete=res.delete,
        counts={action: res.count(action) for action in ACTIONS},
        unchanged=res.unchanged,
        written_bytes=res.written_bytes,
        deleted_bytes=res.bytes_of("deleted"),
        actions=[
            {
                "action": a.action,
                "path": a.path.decode("utf-8", "surrogateescape"),
                "kind": a.kind,
                "bytes": a.size,
                "fields": list(a.fields),
            }
            for a in res.actions
        ],
        warnings=res.warnings,
    )
