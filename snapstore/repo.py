"""The repository facade: init/open, put and get chunks, list and register snapshots.

Operations (commit, checkout, gc, prune) are written against this class, never against
the files underneath.
"""

from __future__ import annotations

import enum
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType

from snapstore import chunkset, codec, recovery, repo_delta, repo_files, repo_index, repo_verify
from snapstore.backends.base import Backend
from snapstore.errors import AccessDeniedError, CorruptError, SnapstoreError, UsageError
from snapstore.format import manifest as manifest_fmt
from snapstore.gcplan import record_span
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import (
    Buffer,
    ChunkerParams,
    ChunkId,
    ChunkLocation,
    Config,
    ManifestRecord,
    PackId,
    SnapshotId,
    SnapshotInfo,
)
from snapstore.repo_files import REPO_DIR_NAME, find_root, load_config
from snapstore.repo_listing import Listing
from snapstore.repo_location import BackendLocation, LocalLocation, RepoLock, create_objects, new_config
from snapstore.repo_maintenance import Maintenance
from snapstore.repo_trees import Trees, tree_loader
from snapstore.snapshotbuilder import SnapshotBuilder
from snapstore.storage.appender import PackAppender
from snapstore.storage.index import IndexTxn
from snapstore.storage.kinds import ManifestWriting
from snapstore.storage.lock import DATA, WRITE
from snapstore.storage.prefetch import Prefetch
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


class Repository(Listing, Maintenance, Trees):
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

    # -- chunks --------------------------------------------------------------------------------

    def get_location(self, chunk_id: ChunkId) -> ChunkLocation | None:
        """Where a chunk is stored (safe to call from several threads)."""
        loc = self._appender.get(chunk_id)
        if loc is not None:
            return loc
        with self._index.read() as r:
            return r.get(chunk_id)

    def has_chunk(self, chunk_id: ChunkId) -> bool:
        """Whether the chunk is stored where it can be read: a chunk indexed in a pack that
        is not a readable regular file (replaced by a directory, say) is not, and a commit
        stores it again (its index entry then moves, keeping its count). Checked once per
        pack, not per chunk."""
        if self._appender.get(chunk_id) is not None:
            return True
        with self._index.read() as r:
            loc = r.get(chunk_id)
            return self._readable(r, loc)

    def _readable(self, r: IndexTxn, loc: ChunkLocation | None) -> bool:
        """Whether a commit may dedup against the chunk at ``loc``: its pack is usable and,
        for a delta, its base is indexed (a gc killed between freeing an unreferenced base
        and its unreferenced deltas leaves such a delta: it is stored again, full)."""
        if loc is None or not self._pack_usable(loc.pack_id):
            return False
        if loc.base is None:
            return True
        base = self._appender.get(loc.base) or r.get(loc.base)
        return base is not None and self._pack_usable(base.pack_id)

    def has_chunks(self, chunk_ids: Iterable[ChunkId]) -> list[bool]:
        """:meth:`has_chunk` for many chunks in one call (one index transaction)."""
        result = []
        with self._index.read() as r:
            for chunk_id in chunk_ids:
                if self._appender.get(chunk_id) is not None:
                    result.append(True)
                    continue
                result.append(self._readable(r, r.get(chunk_id)))
        return result

    @contextmanager
    def prefetch_chunks(self) -> Iterator[ChunkPrefetch]:
        """A reader of chunks in a known order: each chunk named to ``want`` is read ahead
        (its pack bytes asked for before a worker needs them); ``get`` returns it verified."""
        prefetch = Prefetch()
        try:
            yield ChunkPrefetch(self, prefetch)
        finally:
            prefetch.close()

    def _pack_usable(self, pack_id: PackId) -> bool:
        usable = self._usable_packs.get(pack_id)
        if usable is None:
            usable = self._usable_packs[pack_id] = self._packs.usable(pack_id)
            if not usable:
                log.warning("pack %s cannot be read; its chunks are stored again", pack_id.hex())
        return usable

    def get_chunk(self, chunk_id: ChunkId, loc: ChunkLocation | None = None) -> Buffer:
        """A chunk's plaintext, checked against its id (``loc``: where it is, if known)."""
        loc = loc or self.get_location(chunk_id)
        if loc is None:
            raise CorruptError(f"chunk {chunk_id.hex()[:16]}", "not in the index")
        payload = self._packs.read_record(loc, chunk_id)
        if loc.codec != codec.CODEC_DELTA:
            return self.decode_chunk(chunk_id, loc, payload)
        assert loc.base is not None  # (a delta's index entry names its base)
        return repo_delta.decode_delta(chunk_id, loc, payload, self._bases.get(loc.base, self._read_base))

    def _read_base(self, base_id: ChunkId) -> Buffer:
        return repo_delta.read_base(base_id, self.get_location, self.get_chunk)

    decode_chunk = staticmethod(repo_verify.decode_chunk)  # plaintext of a payload, checked

    @property
    def deltas(self) -> bool:
        """Whether a changed chunk may be stored as a delta (format 3, ``snap init --delta``)."""
        return self.config.delta

    def encode_changed(
        self, chunk_id: ChunkId, data: Buffer, level: int, prev: ChunkId
    ) -> tuple[int, Buffer]:
        """``(codec, payload)`` for a new chunk that stands where the previous snapshot had
        ``prev``: a delta against ``prev``'s keyframe when that pays, else stored full. Full
        too when the chunk is counted already (indexed in a pack that cannot be read, or in
        the lost table): the snapshots counting it do not count a base (safe from several
        threads)."""
        base_id = repo_delta.keyframe(prev, self.get_location)
        with self._index.read() as r:
            counted = self._appender.get(chunk_id) or r.get(chunk_id) or r.get_lost(chunk_id)
        if base_id is None or counted or base_id == chunk_id:
            return codec.encode(data, level)
        try:
            base = self._bases.get(base_id, self._read_base)
        except SnapstoreError as exc:
            log.warning("chunk %s stored full: its keyframe cannot be read (%s)", chunk_id.hex()[:16], exc)
            return codec.encode(data, level)
        return repo_delta.encode_changed(data, level, base_id, base)

    def put_encoded(self, chunk_id: ChunkId, codec_id: int, raw_size: int, payload: Buffer) -> int:
        """Store an encoded chunk unless present; return the bytes newly stored (0 if not).
        Safe to call from several threads; the chunk is indexed once its pack is durable."""
        self._require(Mode.WRITE)
        if self.has_chunk(chunk_id):
            return 0
        return self._appender.append(chunk_id, codec_id, raw_size, payload)

    def put_chunk(self, data: bytes) -> tuple[ChunkId, int]:
        chunk_id = hash_chunk(data)
        if self.has_chunk(chunk_id):
            return chunk_id, 0
        codec_id, payload = codec.encode(data, self.config.codec.level)
        return chunk_id, self.put_encoded(chunk_id, codec_id, len(data), payload)

    def flush(self) -> None:
        """Pack data durable first, then the index entries that point at it. If a step fails,
        what is not indexed stays for :meth:`abort_writes` to drop."""
        self._appender.flush()

    def abort_writes(self) -> None:
        """Drop what is not durable and indexed yet (nothing points at it)."""
        self._appender.abort()

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


class ChunkPrefetch:
    """Chunks about to be read, in order (Repository.prefetch_chunks)."""

    def __init__(self, repo: Repository, prefetch: Prefetch) -> None:
        self._repo = repo
        self._packs = repo._packs
        self._prefetch = prefetch
        # get(chunk_id, loc): the chunk's plaintext, verified (safe from several threads)
        self.get: Callable[[ChunkId, ChunkLocation | None], Buffer] = repo.get_chunk

    def want(self, chunk_id: ChunkId) -> ChunkLocation | None:
        """Where the chunk is (None: not stored); its bytes are read ahead."""
        loc = self._repo.get_location(chunk_id)
        if loc is not None and self._packs.local:  # a hint to the kernel about a pack file
            self._prefetch.want(self._packs.path(loc.pack_id), loc.offset, record_span(loc))
        return loc
