"""The repository facade: init/open, put and get chunks, list and register snapshots.

Operations (commit, checkout, gc, prune) are written against this class, never against
the files underneath.
"""

from __future__ import annotations

import enum
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType

from snapstore import chunkset, recovery, repo_delta, repo_files, repo_index
from snapstore.backends.base import Backend
from snapstore.errors import AccessDeniedError, SnapstoreError, UsageError
from snapstore.format import manifest as manifest_fmt
from snapstore.model import (
    ChunkerParams,
    ChunkId,
    Config,
    ManifestRecord,
    SnapshotId,
    SnapshotInfo,
)
from snapstore.repo_chunks import ChunkPrefetch, Chunks
from snapstore.repo_files import REPO_DIR_NAME, find_root, load_config
from snapstore.repo_listing import Listing
from snapstore.repo_location import BackendLocation, LocalLocation, RepoLock, create_objects, new_config
from snapstore.repo_maintenance import Maintenance
from snapstore.repo_trees import Trees, tree_loader
from snapstore.snapshotbuilder import SnapshotBuilder
from snapstore.storage.appender import PackAppender
from snapstore.storage.kinds import ManifestWriting
from snapstore.storage.lock import DATA, WRITE
from snapstore.storage.snapshots import PENDING

__all__ = ["REPO_DIR_NAME", "ChunkPrefetch", "Mode", "Repository", "find_root", "load_config"]

log = logging.getLogger(__name__)
Location = LocalLocation | BackendLocation


class Mode(enum.Enum):
    READ = "read"  # shared data lock: checkout, log, show
    CHECK = "check"  # write lock (nothing changes meanwhile) + shared data lock, no writes: verify
    WRITE = "write"  # write lock: commit, rm, config
    EXCLUSIVE = "exclusive"  # write lock + exclusive data lock: gc, prune, repair

    @property
    def writes(self) -> bool:
        return self in (Mode.WRITE, Mode.EXCLUSIVE)


class Repository(Chunks, Listing, Maintenance, Trees):
    """A snapstore repository: its snapshots, chunks, index and locks, in a local directory
    (:meth:`init`, :meth:`open`, or ``snapstore.open_repository``) or in any storage backend
    (:meth:`init_backend`, :meth:`open_backend`), opened in a :class:`Mode` that takes the
    locks the work needs; a context manager that releases them."""

    def __init__(
        self,
        location: Location,
        config: Config,
        mode: Mode,
        locks: list[RepoLock],
        *,
        rebuild_index: bool = False,
    ) -> None:
        self.root = location.root  # as the user named it (messages); reached through location
        self._location = location
        self.config = config
        self.mode = mode
        self._locks = locks
        self.file_mode = 0o644 if config.shared else 0o600
        self._packs, self._snapshots, self._pins = location.stores(config, self.file_mode)
        self._usable_packs: dict[bytes, bool] = {}  # pack id -> whether a commit may dedup against it
        self._bases = repo_delta.BaseCache()  # delta bases read lately, verified
        index_root, self._tmp = location.index_dirs()
        try:
            opened = repo_index.open_index(
                index_root,
                self._tmp,
                self.file_mode,
                self._packs,
                self._snapshots,
                writes=mode.writes,
                rebuild=rebuild_index,
                cache=location.cache_state(),
            )
        except BaseException:
            self._packs.close()
            raise
        self._index = opened.index
        self.index_problem = opened.problem  # why a temporary index is used (None: the repository's)
        self.rebuild_report = opened.report
        self._opened = opened
        self._snapshots.load_tree = tree_loader(self._index, self._packs)
        self._appender = PackAppender(self._packs, self._index, config.pack_target_size)
        try:
            if mode.writes:
                location.begin_writing()
                recovery.recover(self._index, self._snapshots, self._tmp)
                location.remove_temp()
        except BaseException:
            self._appender.close()
            opened.close()
            self._packs.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path,
        *,
        chunker: ChunkerParams | None = None,
        codec_level: int = 3,
        shared: bool = False,
        pack_target_size: int = 64 * 1024 * 1024,
        delta: bool = False,
    ) -> Repository:
        """Create a repository at ``root`` (which must not hold one) and open it for writing.
        ``delta``: changed chunks may be stored as deltas (format 3)."""
        if (root / "config").exists():
            raise UsageError(f"{root} is already a snapstore repository")
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} exists and is not empty")
        config = new_config(chunker, codec_level, shared, pack_target_size, delta=delta)
        repo_files.create_layout(root, config)
        return cls.open(root, Mode.WRITE)

    @classmethod
    def init_backend(
        cls,
        backend: Backend,
        *,
        cache_dir: Path | None = None,
        chunker: ChunkerParams | None = None,
        codec_level: int = 3,
        pack_target_size: int = 64 * 1024 * 1024,
        delta: bool = False,
    ) -> Repository:
        """Create a repository in ``backend`` (which must hold no object) and open it for
        writing; its index is kept in ``cache_dir`` (see :meth:`open_backend`)."""
        config = new_config(chunker, codec_level, False, pack_target_size, delta=delta)
        create_objects(backend, config)
        return cls.open_backend(backend, Mode.WRITE, cache_dir=cache_dir)

    @classmethod
    def open_backend(
        cls,
        backend: Backend,
        mode: Mode = Mode.READ,
        *,
        cache_dir: Path | None = None,
        rebuild_index: bool = False,
        ignore_bad_quota: bool = False,
        lock: bool = True,
        lock_wait: float = 0.0,
        owns_backend: bool = False,
    ) -> Repository:
        """Open the repository kept as objects of ``backend`` (the caller closes the backend
        after the repository, unless ``owns_backend``: closing the repository, or failing to
        open it, closes the backend too). Its index is a cache in ``cache_dir``, by default
        ``$XDG_CACHE_HOME/snapstore/<repository id>/`` (``~/.cache/...``); the rest is as
        :meth:`open`. Locks are lock objects (docs/BACKENDS.md, "locks without flock")."""
        return cls._open_at(
            partial(BackendLocation, backend, cache_dir, owns_backend),
            mode,
            rebuild_index=rebuild_index,
            ignore_bad_quota=ignore_bad_quota,
            lock=lock,
            lock_wait=lock_wait,
        )

    @classmethod
    def open(
        cls,
        root: Path,
        mode: Mode = Mode.READ,
        *,
        rebuild_index: bool = False,
        ignore_bad_quota: bool = False,
        lock: bool = True,
        lock_wait: float = 0.0,
    ) -> Repository:
        """Open for reading or writing (taking the locks ``mode`` needs). ``rebuild_index``
        (EXCLUSIVE only: repair) replaces the index by one rebuilt from packs and manifests.
        ``ignore_bad_quota``: a quota out of range reads as none (``snap config`` repairs it).
        ``lock`` False (READ and CHECK only): take no lock at all (``--no-lock``).
        ``lock_wait``: seconds to wait for a lock another process holds (``--lock-wait``)."""
        return cls._open_at(
            partial(LocalLocation, root),
            mode,
            rebuild_index=rebuild_index,
            ignore_bad_quota=ignore_bad_quota,
            lock=lock,
            lock_wait=lock_wait,
        )

    @classmethod
    def _open_at(
        cls,
        make_location: Callable[[], Location],
        mode: Mode,
        *,
        rebuild_index: bool,
        ignore_bad_quota: bool,
        lock: bool,
        lock_wait: float,
    ) -> Repository:
        if rebuild_index and mode is not Mode.EXCLUSIVE:
            raise AssertionError("rebuilding the index needs the repository opened EXCLUSIVE")
        if not lock and mode.writes:
            raise UsageError("--no-lock is for commands that do not write")
        location = make_location()
        locks: list[RepoLock] = []
        try:
            if mode is Mode.EXCLUSIVE and location.append_only:
                raise _append_only(location.root)
            config = location.load_config(ignore_bad_quota=ignore_bad_quota)
            root = location.root
            file_mode = 0o644 if config.shared else 0o600
            # Writers create what is missing; readers find it empty.
            location.open_layout(file_mode, writes=mode.writes)
            reader = not mode.writes  # goes on without a lock it cannot open (read-only media)
            if mode is not Mode.READ and lock:
                writer = location.lock(WRITE, file_mode)
                writer.acquire(
                    exclusive=True, repo=root, what="another writer", reader=reader, wait=lock_wait
                )
                locks.append(writer)
            data = location.lock(DATA, file_mode)
            if lock:
                data.acquire(
                    exclusive=mode is Mode.EXCLUSIVE,
                    repo=root,
                    what="a running checkout or verify" if mode is Mode.EXCLUSIVE else "gc or prune",
                    reader=reader,
                    wait=lock_wait,
                )
            locks.append(data)
            return cls(location, config, mode, locks, rebuild_index=rebuild_index)
        except BaseException:
            for held in reversed(locks):
                held.release()
            location.close()
            raise

    def upgrade(self) -> None:
        """WRITE -> EXCLUSIVE: wait for no reader (fails with LockedError if one is running)."""
        self._require(Mode.WRITE)
        if self.mode is not Mode.EXCLUSIVE:
            self._locks[-1].upgrade(repo=self.root, what="a running checkout or verify")
            self.mode = Mode.EXCLUSIVE

    def close(self) -> None:
        self._appender.close()
        if self.mode.writes and self._locks:
            self._location.end_writing(self._index)
        self._packs.close()
        self._opened.close()
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()
        self._location.close()

    @property
    def interrupted_writer(self) -> str | None:
        """The writer that held the write lock before this one and did not finish (killed),
        as ``pid N on HOST (COMMAND)``; None if the last writer finished or for readers."""
        return self._locks[0].interrupted_holder if self.mode is not Mode.READ else None

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def save_config(self, config: Config) -> None:
        self._require(Mode.WRITE)
        self._location.save_config(config, self.file_mode)
        self.config = config

    def _require_write(self) -> None:
        self._require(Mode.WRITE)

    def _require_exclusive(self) -> None:
        self._require(Mode.EXCLUSIVE)

    def _require(self, mode: Mode) -> None:
        if not self.mode.writes or (mode is Mode.EXCLUSIVE and self.mode is not Mode.EXCLUSIVE):
            raise AssertionError(f"repository opened {self.mode.value}, {mode.value} needed")

    # -- snapshots -----------------------------------------------------------------------------

    def manifest_writer(self) -> ManifestWriting:
        self._require(Mode.WRITE)
        return self._snapshots.writer()

    def register_snapshot(
        self, writer: ManifestWriting, trailer: bytes, chunk_ids: Iterable[ChunkId]
    ) -> SnapshotId:
        """Publish a snapshot: packs, then index and counts, then one atomic rename."""
        self.flush()
        snapshot_id = writer.finish(trailer)
        try:
            ids = chunkset.collect(chunk_ids)
            recovery.count(self._index, snapshot_id, ids, True, strict=True)
            self._snapshots.publish(snapshot_id)
        except BaseException:
            self._roll_back(snapshot_id)
            raise
        return snapshot_id

    def begin_snapshot(self) -> SnapshotBuilder:
        """A new snapshot to append records to (then :meth:`publish_snapshot`, or its
        ``abort()`` after a failure)."""
        return SnapshotBuilder(self.manifest_writer())

    def publish_snapshot(
        self,
        builder: SnapshotBuilder,
        *,
        name: str,
        created: datetime,
        message: str,
        source: str,
        sequence: int | None,
        tags: tuple[str, ...] = (),
        hostname: str | None = None,
        excludes: tuple[str, ...] = (),
    ) -> SnapshotInfo:
        """Close ``builder``'s manifest with its trailer and publish it (packs, then index and
        counts, then one atomic rename: :meth:`register_snapshot`). ``hostname``: recorded
        as the snapshot's host (default: this machine's name)."""
        trailer = manifest_fmt.encode_trailer(
            name=name,
            created=created,
            message=message,
            size=builder.size,
            entries=builder.entries,
            chunk_refs=builder.chunk_refs,
            hostname=socket.gethostname() if hostname is None else hostname,
            source=source,
            sequence=sequence,
            tags=tags,
            kind=builder.kind,
            excludes=excludes,
        )
        snapshot_id = self.register_snapshot(builder.writer, trailer, builder.chunk_ids)
        return self._snapshots.load_info(snapshot_id)

    def _roll_back(self, snapshot_id: SnapshotId) -> None:
        """After a failed registration, undo what recovery would undo for a killed commit
        (uncount, delete the pending manifest) unless the snapshot was published. Best
        effort: if this fails too, the next writer's recovery does it."""
        if snapshot_id not in self._snapshots.list_pending():
            return
        pending = self._snapshots.where(PENDING, snapshot_id)
        try:
            with self._index.read() as r:
                counted = r.is_counted(snapshot_id)
            if counted:
                refs = recovery.chunk_set(self._snapshots, snapshot_id, pending, damaged_ok=True)
                recovery.count(self._index, snapshot_id, refs, False)
            self._snapshots.discard_pending(snapshot_id)
        except SnapstoreError:
            pass

    def remove_snapshot(self, snapshot_id: SnapshotId) -> None:
        """Unpublish (atomic rename to tmp/), uncount (in batches), unpin, then delete the
        manifest. A damaged manifest counted whole before it was damaged names chunks it can
        no longer tell: all counts are then recomputed, so that none of them stays held."""
        self._require(Mode.WRITE)
        if self._location.append_only:
            raise _append_only(self.root)
        refs, damage = recovery.read_chunk_set(self._snapshots, snapshot_id)
        with self._index.read() as r:
            listed = snapshot_id in set(r.iter_damaged())
        if damage is not None:
            log.warning("%s; removing it", damage.message)
        self._snapshots.trash(snapshot_id)
        recovery.count(self._index, snapshot_id, refs, False)
        if listed:
            with self._index.write() as w:
                w.set_damaged(snapshot_id, False)
        self._pins.unpin(snapshot_id)
        self._snapshots.purge_trash(snapshot_id)
        if damage is not None and not listed:
            recovery.recount(self._index, self._snapshots)

    def iter_records(self, snapshot_id: SnapshotId) -> Iterator[ManifestRecord]:
        return self._snapshots.iter_records(snapshot_id)

    # -- space ---------------------------------------------------------------------------------

    def disk_usage(self) -> int:
        """Allocated bytes of the whole repository, as ``du`` counts them (over a backend:
        what the backend reports, see Backend.usage)."""
        return self._location.usage()

    def release_reserve(self) -> None:
        self._location.release_reserve()

    def restore_reserve(self) -> bool:
        return self._location.restore_reserve(self.file_mode)


def _append_only(root: Path) -> AccessDeniedError:
    return AccessDeniedError(
        f"{root} is served append-only: snapshots cannot be removed nor space freed",
        hint="run rm, gc, prune or repair with a key the server does not restrict",
    )
