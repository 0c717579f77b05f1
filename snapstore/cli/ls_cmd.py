"""snap ls"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from snapstore.cli.common import GLOBAL, JsonOption, NoLockOption, RepoOption, emit_json, open_repo
from snapstore.cli.text import safe, when
from snapstore.model import TreeEntry
from snapstore.ops.treeread import find, split_path, tree_root, walk

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def ls(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    path: Annotated[str | None, typer.Argument(help="Only this entry and what is under it.")] = None,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="Mode, owner, size and time of each entry.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="With 'latest': newest of this name.")] = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """List the entries of a directory snapshot (under PATH)."""
    with open_repo(repo, no_lock=no_lock) as r:
        snap = r.resolve(snapshot, name=name)
        root = tree_root(r, snap)
        parts = split_path(path or "")
        entry = find(r, root, parts)[-1]
        rows = list(walk(r, entry, b"/".join(parts)))
    if not parts:
        rows = rows[1:]  # the root itself is the snapshot
    if json_output:
        emit_json([_doc(at, e) for at, e in rows])
        return
    for at, e in rows:
        shown = safe(at.decode("utf-8", "backslashreplace"))
        if e.kind == "symlink":
            shown += " -> " + safe(e.target.decode("utf-8", "backslashreplace"))
        if not long:
            typer.echo(shown)
            continue
        owner = f"{_name(e.user, e.uid)}/{_name(e.group, e.gid)}"
        size = f"{e.rdev[0]},{e.rdev[1]}" if e.kind in ("chardev", "blockdev") else str(e.size)
        mtime = when(datetime.fromtimestamp(e.mtime_ns / 1e9, UTC), utc=GLOBAL.utc)
        typer.echo(f"{stat.filemode(_TYPE_BITS[e.kind] | e.mode)} {owner:<17} {size:>12} {mtime}  {shown}")


def _name(name: bytes, number: int) -> str:
    return safe(name.decode("utf-8", "backslashreplace")) if name else str(number)


def _doc(at: bytes, e: TreeEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "path": at.decode("utf-8", "surrogateescape"),
        "type": e.kind,
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "user": e.user.decode("utf-8", "surrogateescape"),
        "group": e.group.decode("utf-8", "surrogateescape"),
        "mtime_ns": e.mtime_ns,
        "size": e.size,
        "xattrs": [n.decode("utf-8", "surrogateescape") for n, _ in e.xattrs],
    }
    if e.link_id:
        doc["link_id"] = e.link_id
    if e.kind == "symlink":
        doc["target"] = e.target.decode("utf-8", "surrogateescape")
    if e.kind in ("chardev", "blockdev"):
        doc["rdev"] = list(e.rdev)
    return doc
