"""commit of a directory: the whole tree -> one tree snapshot (docs/FORMAT.md, "Trees").

The tree is walked depth first in name order (ops/treewalk.py reads each entry's metadata,
ops/treefiles.py each regular file's chunk list: small files on a thread pool, larger ones
through the same pipeline as a single file's). Each directory's entries are then stored as
one tree object (Repository.put_tree: a chunk, so an unchanged directory costs nothing new),
its parent's after it, and the root entry ends the manifest.

The parent: the newest tree snapshot of the same name. A file whose size, mtime, ctime and
inode equal its entry's at the same path there reuses that chunk list without being read
(``force_read`` reads everything); one that did change is still confirmed in place against
its previous chunk list, as a single file is.

Selection and robustness: ``--exclude`` patterns (snapstore/excludes.py) are asked before an
entry's stat, so a left-out subtree costs nothing; ``--one-file-system`` records a mount
point as an empty directory. An entry that cannot be read is left out, reported, and makes
the snapshot partial (tagged ``partial``); a file that changes while it is read is read once
more (ops/treefiles.py).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from snapstore.errors import InputError, InputNotFoundError, SnapstoreError
from snapstore.excludes import NO_EXCLUDES, Excludes
from snapstore.model import ChunkId, SnapshotInfo, TreeEntry, TreeRoot
from snapstore.ops.commit import CommitResult, commit_labels, default_threads, keep_what_is_stored
from snapstore.ops.prune import keep_within_quota
from snapstore.ops.treefiles import UNREADABLE, FileReader, Slot, reason_of
from snapstore.ops.treewalk import Owners, describe, kind_of, list_dir, root_name
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import SnapshotBuilder

log = logging.getLogger(__name__)
PARTIAL_TAG = "partial"  # the tag of a snapshot that left out entries it could not read


@dataclass
class _Walk:
    """One commit's walk: where things go and what it counted."""

    repo: Repository
    builder: SnapshotBuilder
    files: FileReader
    owners: Owners = field(default_factory=Owners)
    skipped: list[str] = field(default_factory=list)  # sockets and the repository, not recorded
    repository: tuple[int, int] | None = None  # (st_dev, st_ino) of the repository's directory
    excludes: Excludes = NO_EXCLUDES
    device: int | None = None  # --one-file-system: the committed directory's st_dev

    def directory(self, path: bytes, rel: bytes, parent: dict[bytes, TreeEntry] | None) -> ChunkId:
        """Store the tree object of the directory ``path`` (``rel``: relative to the committed
        directory, b"" for it) and everything under it."""
        report = self.files.report
        keep = None
        if self.excludes:
            excludes = self.excludes
            keep = lambda name, is_dir: not excludes.excluded(rel + name, is_dir)  # noqa: E731
        listed, failed = list_dir(path, keep)
        for name, why in failed:
            report.left_out(os.fsdecode(path + b"/" + name), why)
        slots: list[Slot] = []
        for name, st in listed:
            child = path + b"/" + name
            kind = kind_of(st.st_mode)
            if kind is None or (kind == "dir" and (st.st_dev, st.st_ino) == self.repository):
                self.skip(child, "a socket" if kind is None else "the repository itself")
                continue
            elsewhere = self.device is not None and st.st_dev != self.device
            if elsewhere and kind != "dir":
                self.skip(child, "on another file system")
                continue
            try:
                entry = describe(child, name, st, kind, self.owners)
                old = parent.get(name) if parent is not None else None
                if kind == "dir" and elsewhere:  # a mount point: recorded empty, as rsync -x does
                    entry = replace(entry, subtree=self.repo.put_tree(self.builder, []))
                elif kind == "dir":
                    subtree = self.directory(child, rel + name + b"/", self.previous(old))
                    entry = replace(entry, subtree=subtree)
                elif kind == "file":
                    slots.append(self.files.file(child, st, entry, old))
                    continue
            except UNREADABLE as exc:  # an entry's metadata, a directory's listing
                report.left_out(os.fsdecode(child), reason_of(exc))
                continue
            slots.append(entry)
        entries = [self.files.taken(slot) for slot in slots]
        return self.repo.put_tree(self.builder, [e for e in entries if e is not None])

    def skip(self, child: bytes, why: str) -> None:
        self.skipped.append(f"{os.fsdecode(child)}: {why}, not recorded")
        log.warning("%s: %s, not recorded", os.fsdecode(child), why)

    def previous(self, old: TreeEntry | None) -> dict[bytes, TreeEntry] | None:
        """The parent's entries of a directory, by name (None: none, or unreadable)."""
        if old is None or old.kind != "dir" or old.subtree is None:
            return None
        try:
            return {e.name: e for e in self.repo.get_tree(old.subtree)}
        except SnapstoreError as exc:
            log.warning("the previous snapshot's directory cannot be read (%s); reading all", exc.message)
            return None


@dataclass(frozen=True)
class TreeCommitResult(CommitResult):
    unread_files: int = 0  # files whose chunk list was taken from the parent unread
    skipped: tuple[str, ...] = ()  # entries not recorded (sockets)
    unreadable: tuple[str, ...] = ()  # entries left out as unreadable: the snapshot is partial
    changed: tuple[str, ...] = ()  # files recorded although they changed while read, twice

    @property
    def partial(self) -> bool:
        return bool(self.unreadable)


def commit_tree(
    repo: Repository,
    path: Path,
    *,
    name: str | None = None,
    message: str = "",
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
    now: datetime | None = None,
    force_read: bool = False,
    quota: bool = True,
    tags: Iterable[str] = (),
    host: str | None = None,
    excludes: Excludes = NO_EXCLUDES,
    one_file_system: bool = False,
) -> TreeCommitResult:
    """Commit the directory at ``path`` and everything under it as a new tree snapshot named
    ``name`` (default: the directory's name) in ``repo``, opened ``Mode.WRITE``. Files
    unchanged since the newest tree snapshot of that name (size, mtime, ctime, inode) are not
    read unless ``force_read``. Quota, tags and host as :func:`snapstore.commit_file`.

    Entries that ``excludes`` match are left out, their subtrees never read; with
    ``one_file_system`` a directory on another file system (a mount point) is recorded
    empty and other entries there are left out. An entry that cannot be read is left out
    and listed in the result's ``unreadable``; the snapshot is then tagged
    :data:`PARTIAL_TAG`. Raises InputError (the directory itself cannot be read),
    QuotaError..."""
    labels = commit_labels(tags, host)
    raw = os.fsencode(path)
    try:
        st = os.stat(raw)
    except FileNotFoundError as exc:
        raise InputNotFoundError(path) from exc
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(path, "not a directory")
    snap_name = name or os.fsdecode(root_name(raw))
    before = keep_within_quota(repo, now or datetime.now(UTC)) if quota else None
    started = time.perf_counter()
    builder = repo.begin_snapshot()
    files = FileReader(repo, progress, threads or default_threads(), force_read)
    walk = _Walk(
        repo,
        builder,
        files,
        repository=_identity(repo.root),
        excludes=excludes,
        device=st.st_dev if one_file_system else None,
    )
    try:
        known = repo.list_snapshots(skip_damaged=True)
        sequence = 1 + max((s.sequence or 0 for s in known), default=0)
        progress.start(0, f"commit {snap_name}")
        root = describe(raw, root_name(raw), st, "dir", walk.owners)
        parent = None if force_read else walk.previous(_parent_root(repo, known, snap_name))
        root = replace(root, subtree=walk.directory(raw, b"", parent))
        builder.set_root(root)
        partial = (PARTIAL_TAG,) if files.report.unreadable else ()
        info = repo.publish_snapshot(
            builder,
            name=snap_name,
            created=now or datetime.now(UTC),
            message=message,
            source=str(path.absolute()),
            sequence=sequence,
            tags=tuple(sorted({*labels.tags, *partial})),
            hostname=labels.host,
            excludes=excludes.texts,
        )
    except BaseException as exc:
        files.close()  # no thread may store a chunk while what is stored is flushed or dropped
        builder.abort()
        keep_what_is_stored(repo, exc)
        raise
    finally:
        files.close()
        progress.finish()
    pruned: tuple[SnapshotInfo, ...] = ()
    deferred = False
    if quota:
        after = keep_within_quota(repo, now or datetime.now(UTC), info.id)
        outcomes = [o for o in (before, after) if o is not None and o.pruned is not None]
        pruned = tuple(s for o in outcomes if o.pruned is not None for s in o.pruned.plan.drop)
        deferred = after.deferred
    s = files.stats
    return TreeCommitResult(
        snapshot=info,
        chunks=builder.chunk_refs,
        new_chunks=s.new_chunks,
        new_raw_bytes=s.new_raw,
        new_stored_bytes=s.new_stored,
        zero_bytes=s.zero_bytes,
        seconds=time.perf_counter() - started,
        confirmed_chunks=s.confirmed,
        read_bytes=s.read_bytes,
        chunked_bytes=s.chunked_bytes,
        pruned=pruned,
        quota_deferred=deferred,
        unread_files=files.unread_files,
        skipped=tuple(walk.skipped),
        unreadable=tuple(files.report.unreadable),
        changed=tuple(files.report.changed),
    )


def _identity(path: object) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a local repository's directory: a tree holding it leaves it out."""
    try:
        st = os.stat(os.fspath(path))  # type: ignore[call-overload]
    except (OSError, TypeError):
        return None
    return (st.st_dev, st.st_ino)


def _parent_root(repo: Repository, known: list[SnapshotInfo], name: str) -> TreeEntry | None:
    """The root entry of the newest tree snapshot named ``name`` (None: there is none)."""
    same = [s for s in known if s.name == name and s.kind == "tree"]
    if not same:
        return None
    try:
        for record in repo.iter_records(same[-1].id):
            if isinstance(record, TreeRoot):
                return record.entry
    except SnapstoreError as exc:
        log.warning("the previous snapshot of %s cannot be read (%s); reading all", name, exc.message)
    return None
