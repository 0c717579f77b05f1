"""snap diff"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from snapstore.cli.common import JsonOption, NoLockOption, RepoOption, emit_json, open_repo
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import safe
from snapstore.ops.diff import diff as do_diff
from snapstore.ops.treediff import CHANGES, TreeDiffResult, diff_trees
from snapstore.units import format_size


def diff(
    old: Annotated[str, typer.Argument(help="The older snapshot: id, unique prefix or 'latest'.")],
    new: Annotated[str, typer.Argument(help="The newer snapshot: id, unique prefix or 'latest'.")],
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Print what changed from OLD to NEW: a file's byte ranges, a tree's paths (no file data read)."""
    with open_repo(repo, no_lock=no_lock) as r:
        a, b = r.resolve(old), r.resolve(new)
        if a.kind == "tree" or b.kind == "tree":
            _tree(diff_trees(r, a, b), json_output)
            return
        res = do_diff(r, a, b)
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


def _tree(res: TreeDiffResult, json_output: bool) -> None:
    if json_output:
        emit_json(tree_diff_doc(res))
        return
    for c in res.changes:
        path = safe(c.path.decode("utf-8", "backslashreplace")) or "."
        kind = f"{c.old_kind}->{c.kind}" if c.old_kind else c.kind
        typer.echo(f"{c.change}\t{kind}\t{','.join(c.fields) or '-'}\t{c.changed_bytes}\t{path}")
    typer.echo(
        ", ".join(f"{res.count(change)} {change}" for change in CHANGES)
        + f"; {res.changed_bytes} bytes ({format_size(res.changed_bytes)}) of file content changed"
    )


def tree_diff_doc(res: TreeDiffResult) -> dict[str, Any]:
    """The JSON of a diff of two trees (docs/snap.schema.json, diff_tree)."""
    changes = []
    for c in res.changes:
        doc: dict[str, Any] = {
            "path": c.path.decode("utf-8", "surrogateescape"),
            "change": c.change,
            "kind": c.kind,
            "fields": list(c.fields),
        }
        if c.old_kind:
            doc["old_kind"] = c.old_kind
        if "content" in c.fields:
            doc["ranges"] = [{"start": r.start, "end": r.end, "length": r.length} for r in c.ranges]
            doc["changed_bytes"] = c.changed_bytes
        changes.append(doc)
    return {
        "old": snapshot_doc(res.old),
        "new": snapshot_doc(res.new),
        "kind": "tree",
        "changes": changes,
        **{change: res.count(change) for change in CHANGES},
        "changed_bytes": res.changed_bytes,
    }
