"""commit of a directory: the whole tree -> one tree snapshot (docs/FORMAT.md, "Trees").

The tree is walked depth first in name order (ops/treewalk.py reads each entry's metadata).
A regular file's contents go through the same pipeline as a single file's (ops/pipeline.py),
its chunk list gathered into its entry; each directory's entries are then stored as one tree
object (Repository.put_tree: a chunk, so an unchanged directory costs nothing new), its
parent's after it, and the root entry ends the manifest.

The parent rule: the newest tree snapshot of the same name is the parent; a file whose size,
mtime, ctime and inode equal its entry's at the same path there reuses that chunk list
without being read (``force_read`` reads everything). A file that did change is still
confirmed in place against its previous chunk list, as a single file is.
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

from snapstore.chunker import is_zero
from snapstore.errors import InputChangedError, InputError, InputNotFoundError, SnapstoreError
from snapstore.hashing import chunk_id as blake3_of
from snapstore.model import ChunkId, ChunkRef, EntryEnd, Piece, SnapshotInfo, TreeEntry, TreeRoot, ZeroRun
from snapstore.ops.commit import CommitResult, commit_labels, default_threads, keep_what_is_stored
from snapstore.ops.commitstats import CommitStats
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.ops.prune import keep_within_quota
from snapstore.ops.treewalk import Owners, describe, kind_of, list_dir, root_name
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import EntryPieces, SnapshotBuilder

log = logging.getLogger(__name__)


@dataclass
class _Walk:
    """One commit's walk: where things go and what it counted."""

    repo: Repository
    builder: SnapshotBuilder
    progress: Progress
    threads: int
    force_read: bool
    owners: Owners = field(default_factory=Owners)
    stats: CommitStats = field(default_factory=CommitStats)
    unread_files: int = 0  # files whose chunk list came from the parent unread
    skipped: list[str] = field(default_factory=list)  # sockets and the repository, not recorded
    repository: tuple[int, int] | None = None  # (st_dev, st_ino) of the repository's directory
    # link id -> a hard-linked file already read by this commit: its other names are not read
    links: dict[int, TreeEntry] = field(default_factory=dict)

    def directory(self, path: bytes, parent: dict[bytes, TreeEntry] | None) -> ChunkId:
        """Store the tree object of the directory ``path`` (and everything under it)."""
        entries = []
        for name, st in list_dir(path):
            child = path + b"/" + name
            kind = kind_of(st.st_mode)
            if kind is None or (kind == "dir" and (st.st_dev, st.st_ino) == self.repository):
                why = "a socket" if kind is None else "the repository itself"
                self.skipped.append(f"{os.fsdecode(child)}: {why}, not recorded")
                log.warning("%s: %s, not recorded", os.fsdecode(child), why)
                continue
            entry = describe(child, name, st, kind, self.owners)
            old = parent.get(name) if parent is not None else None
            if kind == "dir":
                entry = replace(entry, subtree=self.directory(child, self.previous(old)))
            elif kind == "file":
                entry = self.file(child, st, entry, old)
            entries.append(entry)
        return self.repo.put_tree(self.builder, entries)

    def previous(self, old: TreeEntry | None) -> dict[bytes, TreeEntry] | None:
        """The parent's entries of a directory, by name (None: none, or unreadable)."""
        if old is None or old.kind != "dir" or old.subtree is None:
            return None
        try:
            return {e.name: e for e in self.repo.get_tree(old.subtree)}
        except SnapstoreError as exc:
            log.warning("the previous snapshot's directory cannot be read (%s); reading all", exc.message)
            return None

    def file(self, path: bytes, st: os.stat_result, entry: TreeEntry, old: TreeEntry | None) -> TreeEntry:
        read = self.links.get(entry.link_id) if entry.link_id else None
        if read is not None and (read.size, read.mtime_ns, read.ctime_ns, read.inode) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        ):
            return replace(entry, size=read.size, digest=read.digest, pieces=read.pieces)
        entry = self.read_file(path, st, entry, old)
        if entry.link_id:
            self.links[entry.link_id] = entry
        return entry

    def read_file(
        self, path: bytes, st: os.stat_result, entry: TreeEntry, old: TreeEntry | None
    ) -> TreeEntry:
        """A file's entry with its chunk list: its parent's if unchanged, else read."""
        if (
            old is not None
            and old.kind == "file"
            and not self.force_read
            and (old.size, old.mtime_ns, old.ctime_ns, old.inode)
            == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        ):
            self.unread_files += 1
            self.progress.skip(old.size)
            return replace(entry, size=old.size, digest=old.digest, pieces=old.pieces)
        shown = Path(os.fsdecode(path))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise InputNotFoundError(shown) from exc
        except OSError as exc:
            raise InputError(shown, exc.strerror or str(exc)) from exc
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise InputChangedError(shown)
            os.set_blocking(fd, True)
            if before.st_size < self.small_limit:
                pieces, digest = self.small_file(fd, before.st_size, shown)
                size = before.st_size
            else:
                pieces, digest, size = self.large_file(fd, before.st_size, shown, old)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        ):
            raise InputChangedError(shown)
        return replace(
            entry,
            size=size,
            digest=digest,
            pieces=pieces,
            mtime_ns=before.st_mtime_ns,
            ctime_ns=before.st_ctime_ns,
        )

    @property
    def small_limit(self) -> int:
        """Files shorter than this are one piece: the chunker never cuts before ``min_size``,
        and no zero run (``zero_run`` bytes at least) fits in them (docs/FORMAT.md)."""
        params = self.repo.config.chunker
        return min(params.min_size, params.zero_run) if params.zero_run else params.min_size

    def small_file(self, fd: int, size: int, shown: Path) -> tuple[tuple[Piece, ...], bytes]:
        """The chunk list of a file below :attr:`small_limit`: the pipeline's, without its
        threads (no piece, one zero run, or one chunk), the chunk stored here."""
        data = os.pread(fd, size + 1, 0)
        if len(data) != size:
            raise InputChangedError(shown)
        self.stats.read_bytes += size
        self.progress.advance(size)
        digest = blake3_of(data)
        if size == 0:
            return (), digest
        if is_zero(data):
            self.stats.zero_bytes += size
            return (ZeroRun(size),), digest
        self.stats.chunked_bytes += size
        chunk_id, stored = self.repo.put_chunk(data)
        if stored:
            self.stats.new_chunks += 1
            self.stats.new_raw += size
            self.stats.new_stored += stored
        return (ChunkRef(chunk_id, size),), digest

    def large_file(
        self, fd: int, size: int, shown: Path, old: TreeEntry | None
    ) -> tuple[tuple[Piece, ...], bytes, int]:
        """A file's chunk list from the commit pipeline (confirmed in place against its
        previous chunk list, if any); its digest and the size read."""
        hints = None
        if old is not None and old.kind == "file" and old.pieces:
            records = [*old.pieces, EntryEnd(old.size, old.digest)]
            hints = HintCursor(confirmable_chunks(records, size))
        sink = EntryPieces()
        job = CommitPipeline(self.repo, sink, self.progress, hints, self.threads)
        digest = job.run(fd, size, shown)
        self._add(job.stats)
        return tuple(sink.pieces), digest, job.size

    def _add(self, s: CommitStats) -> None:
        t = self.stats
        t.new_chunks += s.new_chunks
        t.new_raw += s.new_raw
        t.new_stored += s.new_stored
        t.zero_bytes += s.zero_bytes
        t.confirmed += s.confirmed
        t.read_bytes += s.read_bytes
        t.chunked_bytes += s.chunked_bytes


@dataclass(frozen=True)
class TreeCommitResult(CommitResult):
    unread_files: int = 0  # files whose chunk list was taken from the parent unread
    skipped: tuple[str, ...] = ()  # entries not recorded (sockets)


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
) -> TreeCommitResult:
    """Commit the directory at ``path`` and everything under it as a new tree snapshot named
    ``name`` (default: the directory's name) in ``repo``, opened ``Mode.WRITE``. Files
    unchanged since the newest tree snapshot of that name (size, mtime, ctime, inode) are not
    read unless ``force_read``. Quota, tags and host as :func:`snapstore.commit_file`.
    Raises InputError (an unreadable entry), InputChangedError, QuotaError..."""
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
    walk = _Walk(repo, builder, progress, threads or default_threads(), force_read)
    walk.repository = _identity(repo.root)
    try:
        known = repo.list_snapshots(skip_damaged=True)
        sequence = 1 + max((s.sequence or 0 for s in known), default=0)
        progress.start(0, f"commit {snap_name}")
        root = describe(raw, root_name(raw), st, "dir", walk.owners)
        parent = None if force_read else walk.previous(_parent_root(repo, known, snap_name))
        root = replace(root, subtree=walk.directory(raw, parent))
        builder.set_root(root)
        info = repo.publish_snapshot(
            builder,
            name=snap_name,
            created=now or datetime.now(UTC),
            message=message,
            source=str(path.absolute()),
            sequence=sequence,
            tags=labels.tags,
            hostname=labels.host,
        )
    except BaseException as exc:
        builder.abort()
        keep_what_is_stored(repo, exc)
        raise
    finally:
        progress.finish()
    pruned: tuple[SnapshotInfo, ...] = ()
    deferred = False
    if quota:
        after = keep_within_quota(repo, now or datetime.now(UTC), info.id)
        outcomes = [o for o in (before, after) if o is not None and o.pruned is not None]
        pruned = tuple(s for o in outcomes if o.pruned is not None for s in o.pruned.plan.drop)
        deferred = after.deferred
    s = walk.stats
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
        unread_files=walk.unread_files,
        skipped=tuple(walk.skipped),
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
