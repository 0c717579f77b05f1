"""snap diff"""

from __future__ import annotations

from typing import Annotated

import typer

from snapstore.cli.common import JsonOption, NoLockOption, RepoOption, emit_json, open_repo
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.ops.diff import diff as do_diff
from snapstore.units import format_size


def diff(
    old: Annotated[str, typer.Argument(help="The older snapshot: id, unique prefix or 'latest'.")],
    new: Annotated[str, typer.Argument(help="The newer snapshot: id, unique prefix or 'latest'.")],
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Print the byte ranges that changed from OLD to NEW (from the chunk lists, no data read)."""
    with open_repo(repo, no_lock=no_lock) as r:
        res = do_diff(r, r.resolve(old), r.resolve(new))
    if json_output:
        emit_json(
            {
                "old": snapshot_doc(res.old),
                "new": snapshot_doc(res.new),
                "ranges": [{"start": c.start, "end": c.end, "length": c.length} for c in res.ranges],
                "changed_ranges": len(res.ranges),
                "changed_bytes": res.changed_bytes,
            }
        )
        return
    for c in res.ranges:
        typer.echo(f"{c.start}-{c.end}\t{c.length}\t{format_size(c.length)}")
    typer.echo(
        f"{len(res.ranges)} ranges, {res.changed_bytes} bytes ({format_size(res.changed_bytes)}) "
        f"changed of {res.new.size}"
    )
