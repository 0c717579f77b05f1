"""diff of two tree snapshots: the paths added, removed and modified, for a modified one
which fields differ, and for a regular file whose content differs the byte ranges that
changed (from the two chunk lists, as the file diff does: snapstore/changes.py).

Both trees are walked side by side in name order; a directory whose tree id is the same in
both is not entered (tree objects are content-addressed: the same id is the same entries,
all the way down), so the cost follows what changed, not the size of the tree. No file
content is read, only tree objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from snapstore.changes import ChangedRange, Piece, changed_ranges
from snapstore.errors import UsageError
from snapstore.model import ChunkRef, SnapshotInfo, TreeEntry
from snapstore.ops.treeread import children, tree_root, walk
from snapstore.repo import Repository

FIELDS = ("type", "content", "owner", "mode", "mtime", "xattrs", "target", "rdev", "hardlink")
CHANGES = ("added", "removed", "modified")


@dataclass(frozen=True)
class TreeChange:
    path: bytes  # inside the snapshots; b"": the root
    change: str  # added | removed | modified
    kind: str  # the new entry's kind (removed: the old one's)
    old_kind: str = ""  # a change of type: the old entry's kind
    fields: tuple[str, ...] = ()  # modified: which of FIELDS differ
    ranges: tuple[ChangedRange, ...] = ()  # content of a regular file: where it changed

    @property
    def changed_bytes(self) -> int:
        return sum(r.length for r in self.ranges)


@dataclass(frozen=True)
class TreeDiffResult:
    old: SnapshotInfo
    new: SnapshotInfo
    changes: list[TreeChange]

    def count(self, change: str) -> int:
        return sum(c.change == change for c in self.changes)

    @property
    def changed_bytes(self) -> int:
        return sum(c.changed_bytes for c in self.changes)


def diff_trees(repo: Repository, old: SnapshotInfo, new: SnapshotInfo) -> TreeDiffResult:
    """What changed from the tree snapshot ``old`` to the tree snapshot ``new``, in path
    order (a directory before what is in it). Raises UsageError unless both are trees."""
    if (old.kind == "tree") != (new.kind == "tree"):
        raise UsageError("a tree snapshot and a file snapshot cannot be compared")
    return TreeDiffResult(old, new, list(_compare(repo, b"", tree_root(repo, old), tree_root(repo, new))))


def _compare(repo: Repository, path: bytes, a: TreeEntry, b: TreeEntry) -> Iterator[TreeChange]:
    fields = entry_fields(a, b)
    if fields:
        ranges = tuple(changed_ranges(_pieces(a), _pieces(b))) if "content" in fields else ()
        old_kind = a.kind if "type" in fields else ""
        yield TreeChange(path, "modified", b.kind, old_kind, fields, ranges)
    if "type" in fields:  # what one of them holds is all removed, or all added
        yield from _all("removed", repo, path, a)
        yield from _all("added", repo, path, b)
        return
    if a.kind != "dir" or a.subtree == b.subtree:
        return
    left, right = children(repo, a), children(repo, b)
    i = j = 0
    while i < len(left) or j < len(right):
        x = left[i] if i < len(left) else None
        y = right[j] if j < len(right) else None
        if y is None or (x is not None and x.name < y.name):
            assert x is not None
            yield from _all("removed", repo, _join(path, x.name), x, top=True)
            i += 1
        elif x is None or y.name < x.name:
            yield from _all("added", repo, _join(path, y.name), y, top=True)
            j += 1
        else:
            yield from _compare(repo, _join(path, x.name), x, y)
            i += 1
            j += 1


def _all(
    change: str, repo: Repository, path: bytes, entry: TreeEntry, *, top: bool = False
) -> Iterator[TreeChange]:
    """``entry`` (with ``top``) and everything under it, each added or removed."""
    for at, e in walk(repo, entry, path):
        if top or at != path:
            yield TreeChange(at, change, e.kind)


def _join(path: bytes, name: bytes) -> bytes:
    return path + b"/" + name if path else name


def _pieces(entry: TreeEntry) -> Iterator[Piece]:
    for p in entry.pieces:
        yield (p.raw_size, p.chunk_id) if isinstance(p, ChunkRef) else (p.length, None)


def entry_fields(a: TreeEntry, b: TreeEntry) -> tuple[str, ...]:
    """The fields (of FIELDS, in that order) in which entry ``b`` differs from entry ``a``;
    names, owners' names, ctime and inode are not compared. ``hardlink``: the hard-link
    group (its link id) is another."""
    if a.kind != b.kind:
        return ("type",)
    found = []
    if a.kind == "file" and (a.size, a.digest) != (b.size, b.digest):
        found.append("content")
    if (a.uid, a.gid) != (b.uid, b.gid):
        found.append("owner")
    if a.mode != b.mode:
        found.append("mode")
    if a.mtime_ns != b.mtime_ns:
        found.append("mtime")
    if a.xattrs != b.xattrs:
        found.append("xattrs")
    if a.target != b.target:
        found.append("target")
    if a.rdev != b.rdev:
        found.append("rdev")
    if a.link_id != b.link_id:
        found.append("hardlink")
    return tuple(found)
