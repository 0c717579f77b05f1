"""The regular files of a tree commit: each one's chunk list and digest (ops/treecommit.py
walks the tree and asks here for every file).

- A file unchanged since the parent snapshot (size, mtime, ctime, inode) takes its chunk list
  over unread (the parent rule), unless ``force_read``.
- A file below :attr:`FileReader.small_limit` is one piece (the chunker never cuts before
  ``min_size`` and no zero run fits in it): it is read, hashed and stored on a thread pool,
  many at a time while the walk goes on, and its entry taken back in order (:meth:`taken`).
- A larger file goes through the commit pipeline (ops/pipeline.py), as a single file does,
  confirmed in place against its previous chunk list.
- The other names of an inode already read (a hard-link group) are not read again.
- A file that cannot be read (refused, vanished, an I/O error) is left out and reported
  (:class:`Report`); one that changes while it is read (size, mtime or ctime differ after
  from before) is read once more, and if it changes again it is recorded as read the second
  time, with a warning.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from snapstore.chunker import is_zero
from snapstore.errors import InputChangedError, InputError, InputNotFoundError
from snapstore.hashing import chunk_id as blake3_of
from snapstore.model import ChunkRef, EntryEnd, Piece, TreeEntry, ZeroRun
from snapstore.ops.commitstats import CommitStats
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.progress import Progress
from snapstore.repo import Repository
from snapstore.snapshotbuilder import EntryPieces

_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What makes one entry unreadable (it is left out); any other error ends the commit.
UNREADABLE = (InputError, InputNotFoundError, InputChangedError)
READS = 2  # a file that changes while it is read is read once more, then recorded as read

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    GREW = 1  # a small file grew past the limit: read it through the pipeline
    SKIPPED = 2  # it could not be read (reported)


@dataclass
class Report:
    """What a commit left out or recorded in doubt, one line each, as met (also logged as
    warnings: one ``snap: warning:`` line each on stderr)."""

    unreadable: list[str] = field(default_factory=list)  # left out: the snapshot is partial
    changed: list[str] = field(default_factory=list)  # changed while read, twice: as read
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def left_out(self, shown: str, reason: str) -> None:
        line = f"{shown}: {reason}; not recorded"
        with self._lock:
            self.unreadable.append(line)
        log.warning("%s", line)

    def unstable(self, shown: str) -> None:
        line = f"{shown}: changed while it was read, twice; recorded as read the second time"
        with self._lock:
            self.changed.append(line)
        log.warning("%s", line)


def reason_of(exc: Exception) -> str:
    """Why an entry could not be read, for :meth:`Report.left_out`."""
    if isinstance(exc, InputError):
        return exc.reason
    if isinstance(exc, InputNotFoundError):
        return "vanished while it was read"
    return "shrank while it was read, twice"


@dataclass
class Pending:
    """A small file being read on the pool (:attr:`Outcome.GREW`: it grew past the limit;
    read it here)."""

    future: Future[TreeEntry | Outcome]
    path: bytes
    entry: TreeEntry
    old: TreeEntry | None
    done: TreeEntry | Outcome | None = None  # once taken


Slot = TreeEntry | Pending | None  # None: left out (reported)


class FileReader:
    def __init__(self, repo: Repository, progress: Progress, threads: int, force_read: bool) -> None:
        self.repo = repo
        self.progress = progress
        self.threads = threads
        self.force_read = force_read
        params = repo.config.chunker
        self.small_limit = min(params.min_size, params.zero_run) if params.zero_run else params.min_size
        self.stats = CommitStats()
        self.unread_files = 0  # taken over from the parent unread
        self.report = Report()
        self.links: dict[int, Slot] = {}  # link id -> the first name of the inode read
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tree-files")
        self._queued = threading.BoundedSemaphore(4 * threads)  # small files queued at most
        self._lock = threading.Lock()  # over stats, for the pool's threads

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def file(self, path: bytes, st: os.stat_result, entry: TreeEntry, old: TreeEntry | None) -> Slot:
        """The entry of the regular file ``path`` (``st``: its lstat) with its chunk list, or
        a :class:`Pending` one to be :meth:`taken` later. ``old``: its parent entry."""
        first = self.links.get(entry.link_id) if entry.link_id else None
        if first is not None:
            read = self.taken(first)
            if read is not None and (read.size, read.mtime_ns, read.ctime_ns, read.inode) == (
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
            ):
                return replace(entry, size=read.size, digest=read.digest, pieces=read.pieces)
        slot = self._start(path, st, entry, old)
        if entry.link_id:
            self.links[entry.link_id] = slot
        return slot

    def taken(self, slot: Slot) -> TreeEntry | None:
        """A slot's entry, waiting for a small file's thread if need be (None: left out)."""
        if not isinstance(slot, Pending):
            return slot
        if slot.done is None:
            done = slot.future.result()
            if done is Outcome.GREW:  # no longer small: read here, through the pipeline
                done = self._read_or_skip(slot.path, slot.entry, slot.old, small=False)
            elif isinstance(done, TreeEntry):
                self.progress.advance(done.size)
            slot.done = done
        return slot.done if isinstance(slot.done, TreeEntry) else None

    def _start(self, path: bytes, st: os.stat_result, entry: TreeEntry, old: TreeEntry | None) -> Slot:
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
        if st.st_size >= self.small_limit:
            read = self._read_or_skip(path, entry, old, small=False)
            return read if isinstance(read, TreeEntry) else None
        self._queued.acquire()
        try:
            future = self._pool.submit(self._read_small, path, entry)
        except BaseException:
            self._queued.release()
            raise
        return Pending(future, path, entry, old)

    def _read_small(self, path: bytes, entry: TreeEntry) -> TreeEntry | Outcome:
        try:
            return self._read_or_skip(path, entry, None, small=True)
        finally:
            self._queued.release()

    def _read_or_skip(
        self, path: bytes, entry: TreeEntry, old: TreeEntry | None, *, small: bool
    ) -> TreeEntry | Outcome:
        """:meth:`_read`, or :attr:`Outcome.SKIPPED` (reported) if the file cannot be read."""
        try:
            return self._read(path, entry, old, small=small)
        except UNREADABLE as exc:
            self.report.left_out(os.fsdecode(path), reason_of(exc))
            return Outcome.SKIPPED

    def _read(
        self, path: bytes, entry: TreeEntry, old: TreeEntry | None, *, small: bool
    ) -> TreeEntry | Outcome:
        """Read the file (``small``: only if it is still small, else :attr:`Outcome.GREW`),
        once more if it changed while it was read."""
        shown = Path(os.fsdecode(path))
        try:
            fd = os.open(path, _OPEN)
        except FileNotFoundError as exc:
            raise InputNotFoundError(shown) from exc
        except OSError as exc:
            raise InputError(shown, exc.strerror or str(exc)) from exc
        try:
            for attempt in range(1, READS + 1):
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise InputError(shown, "is no longer a regular file")
                os.set_blocking(fd, True)
                try:
                    if before.st_size < self.small_limit:
                        pieces, digest, size = self._small(fd, before.st_size)
                    elif small:
                        return Outcome.GREW
                    else:
                        pieces, digest, size = self._large(fd, before.st_size, shown, old)
                except InputChangedError:  # it shrank under the pipeline
                    if attempt == READS:
                        raise
                    continue
                after = os.fstat(fd)
                if size == before.st_size and _same(before, after):
                    break
                if attempt == READS:
                    self.report.unstable(str(shown))
        finally:
            os.close(fd)
        return replace(
            entry,
            size=size,
            digest=digest,
            pieces=pieces,
            mtime_ns=before.st_mtime_ns,
            ctime_ns=before.st_ctime_ns,
        )

    def _small(self, fd: int, size: int) -> tuple[tuple[Piece, ...], bytes, int]:
        """The chunk list the pipeline gives a file below the limit (no piece, one zero run,
        or one chunk), the chunk stored here; its digest, and the size read (one byte more
        than ``size`` if the file grew: it changed)."""
        data = os.pread(fd, size + 1, 0)
        size = len(data)
        digest = blake3_of(data)
        pieces: tuple[Piece, ...] = ()
        stored = 0
        if size and is_zero(data):
            pieces = (ZeroRun(size),)
        elif size:
            chunk_id, stored = self.repo.put_chunk(data)
            pieces = (ChunkRef(chunk_id, size),)
        with self._lock:
            s = self.stats
            s.read_bytes += size
            if pieces and isinstance(pieces[0], ZeroRun):
                s.zero_bytes += size
            elif size:
                s.chunked_bytes += size
            if stored:
                s.new_chunks += 1
                s.new_raw += size
                s.new_stored += stored
        return pieces, digest, size

    def _large(
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
        with self._lock:
            t, s = self.stats, job.stats
            t.new_chunks += s.new_chunks
            t.new_raw += s.new_raw
            t.new_stored += s.new_stored
            t.zero_bytes += s.zero_bytes
            t.confirmed += s.confirmed
            t.read_bytes += s.read_bytes
            t.chunked_bytes += s.chunked_bytes
        return tuple(sink.pieces), digest, job.size


def _same(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether a file's size, mtime and ctime are as they were (it did not change)."""
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )
