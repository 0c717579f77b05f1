"""Reading a tree snapshot: its root entry, an entry by path, every entry under a path.

Paths inside a snapshot are bytes, components joined by ``/``, relative to the snapshot's
root (the root itself is the empty path). Every name was checked when its tree object was
decoded (one component: no ``/``, ``.`` or ``..``), so a path built here never leaves the root.
"""

from __future__ import annotations

from collections.abc import Iterator

from snapstore.errors import CorruptError, EntryNotFoundError, UsageError
from snapstore.model import SnapshotInfo, TreeEntry, TreeRoot
from snapstore.repo import Repository


def tree_root(repo: Repository, snapshot: SnapshotInfo) -> TreeEntry:
    """The root entry of a tree snapshot (the manifest is read whole and its id checked)."""
    if snapshot.kind != "tree":
        raise UsageError(f"snapshot {snapshot.hex[:12]} is a single file, not a directory tree")
    root = None
    for record in repo.iter_records(snapshot.id):
        if isinstance(record, TreeRoot):
            root = record.entry
    if root is None:
        raise CorruptError(f"snapshot {snapshot.hex[:12]}", "a tree snapshot without a root")
    return root


def split_path(path: str | bytes) -> list[bytes]:
    """The components of a path given by the user (``a/b``, ``/a/b/``, ``.``: the root)."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UsageError(f"{path!r}: a path in a snapshot has no '..'")
    return parts


def children(repo: Repository, entry: TreeEntry) -> list[TreeEntry]:
    """A directory entry's entries, sorted by name ([] for any other kind)."""
    if entry.kind != "dir" or entry.subtree is None:
        return []
    return repo.get_tree(entry.subtree)


def find(repo: Repository, root: TreeEntry, parts: list[bytes]) -> list[TreeEntry]:
    """The entries from the root down to the entry at ``parts`` (the root alone for []).
    EntryNotFoundError if there is none."""
    chain = [root]
    for i, part in enumerate(parts):
        found = next((e for e in children(repo, chain[-1]) if e.name == part), None)
        if found is None:
            raise EntryNotFoundError(b"/".join(parts[: i + 1]).decode("utf-8", "surrogateescape"))
        chain.append(found)
    return chain


def walk(repo: Repository, entry: TreeEntry, path: bytes) -> Iterator[tuple[bytes, TreeEntry]]:
    """``entry`` at ``path`` and everything under it, depth first in name order."""
    stack = [(path, entry)]
    while stack:
        at, current = stack.pop()
        yield at, current
        below = children(repo, current)
        stack.extend((at + b"/" + e.name if at else e.name, e) for e in reversed(below))
