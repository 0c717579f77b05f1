"""snap checkout"""

from __future__ import annotations

import os
from typing import Annotated

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
from snapstore.ops.checkout import checkout as do_checkout
from snapstore.units import format_size


def checkout(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output file; '-' for stdout.")],
    name: Annotated[str | None, typer.Option(help="With 'latest': newest of this name.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace OUTPUT if it exists.")] = False,
    sparse: Annotated[bool, typer.Option(help="Leave holes for zero runs.")] = True,
    threads: ThreadsOption = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Rebuild a snapshot's file, verifying every byte."""
    with open_repo(repo, no_lock=no_lock) as r:
        snap = r.resolve(snapshot, name=name)
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
