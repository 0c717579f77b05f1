"""The repository facade: init/open, put and get chunks, list and register snapshots.

Operations (commit, checkout, gc, prune) are written against this class, never against
the files underneath.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import socket
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from snapstore import chunkset, codec, ids, recovery
from snapstore.chunker import validate
from snapstore.errors import (
    CorruptError,
    IntegrityError,
    RepositoryNotFoundError,
    SnapshotRemovedError,
    SnapstoreError,
    StorageIOError,
    UnknownSnapshotError,
    UnsupportedFormatError,
    UsageError,
    translate_os_error,
)
from snapstore.format import FORMAT_VERSION, READABLE_VERSIONS
from snapstore.format import config as config_fmt
from snapstore.format import manifest as manifest_fmt
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import (
    Buffer,
    ChunkerParams,
    ChunkId,
    ChunkLocation,
    CodecParams,
    Config,
    ManifestRecord,
    SnapshotId,
    SnapshotInfo,
)
from snapstore.snapshotbuilder import SnapshotBuilder
from snapstore.storage import fsio
from snapstore.storage.appender import PackAppender
from snapstore.storage.dirs import RepoDirs
from snapstore.storage.index import Index
from snapstore.storage.lock import DATA, WRITE, Lock
from snapstore.storage.packstore import PackStore
from snapstore.storage.pins import PinStore
from snapstore.storage.snapshots import PENDING, ManifestWriter, SnapshotStore

log = logging.getLogger(__name__)
REPO_DIR_NAME = ".snapstore"
RESERVE_SIZE = 16 * 1024 * 1024


class Mode(enum.Enum):
    READ = "read"  # shared data lock: checkout, log, show
    CHECK = "check"  # write lock (nothing changes meanwhile) + shared data lock, no writes: verify
    WRITE = "write"  # write lock: commit, rm, config
    EXCLUSIVE = "exclusive"  # write lock + exclusive data lock: gc, prune, repair

    @property
    def writes(self) -> bool:
        return self in (Mode.WRITE, Mode.EXCLUSIVE)


def find_root(start: Path) -> Path | None:
    """The nearest ``.snapstore`` directory at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / REPO_DIR_NAME
        try:
            st = os.stat(candidate / "config")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # e.g. a .snapstore this user may not search: say so
            raise translate_os_error(exc, str(candidate)) from exc
        if stat.S_ISREG(st.st_mode):
            return candidate
    return None


class Repository:
    """A snapstore repository on a local filesystem: its snapshots, chunks, index and locks.
    Made with :meth:`init`, opened with :meth:`open` (or ``snapstore.open_repository``) in a
    :class:`Mode` that takes the locks the work needs; a context manager that releases them."""

    def __init__(
        self,
        dirs: RepoDirs,
        config: Config,
        mode: Mode,
        locks: list[Lock],
        *,
        rebuild_index: bool = False,
    ) -> None:
        self.root = dirs.root  # as the user named it (messages); files are reached through dirs
        self.dirs = dirs
        self.config = config
        self.mode = mode
        self._locks = locks
        self.file_mode = 0o644 if config.shared else 0o600
        self.packs = PackStore(
            dirs.path("packs"), self.file_mode, config.format_version, shown_root=dirs.root / "packs"
        )
        self.snapshots = SnapshotStore(dirs.path("snapshots"), dirs.path("tmp"), self.file_mode)
        self.pins = PinStore(dirs.path("pins"), self.file_mode)
        self._usable_packs: dict[bytes, bool] = {}  # pack id -> whether a commit may dedup against it
        try:
            opened = recovery.open_index(
                dirs.path(),
                self.file_mode,
                self.packs,
                self.snapshots,
                writes=mode.writes,
                rebuild=rebuild_index,
            )
        except BaseException:
            self.packs.close()
            raise
        self.index = opened.index
        self.index_problem = opened.problem  # why a temporary index is used (None: the repository's)
        self.rebuild_report = opened.report
        self._opened = opened
        self._appender = PackAppender(self.packs, self.index, config.pack_target_size)
        try:
            if mode.writes:
                recovery.recover(self.index, self.snapshots)
        except BaseException:
            self._appender.close()
            opened.close()
            self.packs.close()
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
    ) -> Repository:
        """Create a repository at ``root`` (which must not hold one) and open it for writing."""
        if (root / "config").exists():
            raise UsageError(f"{root} is already a snapstore repository")
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} exists and is not empty")
        if not 1 <= codec_level <= 22:
            raise UsageError(f"zstd level must be 1..22, not {codec_level}")
        config = Config(
            format_version=FORMAT_VERSION,
            repository_id=secrets.token_hex(16),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            chunker=validate(chunker or ChunkerParams()),
            codec=CodecParams("zstd", codec_level),
            pack_target_size=pack_target_size,
            shared=shared,
        )
        file_mode = 0o644 if shared else 0o600
        dir_mode = fsio.dir_mode(file_mode)
        try:
            root.mkdir(mode=dir_mode, parents=True, exist_ok=True)
            (root / "index").mkdir(mode=dir_mode, exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, str(root)) from exc
        dirs = RepoDirs(root)
        try:
            dirs.open_layout(dir_mode)
            Index(dirs.path() / "index", mode=file_mode, create=True).close()
            fsio.reserve_space(dirs.path() / "reserve", RESERVE_SIZE, file_mode)
            # The config is written last: a directory without it is not a repository yet.
            fsio.write_durable(dirs.path() / "config", config_fmt.encode(config), file_mode)
        finally:
            dirs.close()
        return cls.open(root, Mode.WRITE)

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
        if rebuild_index and mode is not Mode.EXCLUSIVE:
            raise AssertionError("rebuilding the index needs the repository opened EXCLUSIVE")
        if not lock and mode.writes:
            raise UsageError("--no-lock is for commands that do not write")
        dirs = _open_dirs(root)
        locks: list[Lock] = []
        try:
            config = load_config(root, dirs.path(), ignore_bad_quota=ignore_bad_quota)
            file_mode = 0o644 if config.shared else 0o600
            # Writers create what is missing; readers find it empty.
            dirs.open_layout(fsio.dir_mode(file_mode) if mode.writes else None)
            reader = not mode.writes  # goes on without a lock it cannot open (read-only media)
            if mode is not Mode.READ and lock:
                writer = Lock(dirs.path("locks") / WRITE, file_mode)
                writer.acquire(
                    exclusive=True, repo=root, what="another writer", reader=reader, wait=lock_wait
                )
                locks.append(writer)
            data = Lock(dirs.path("locks") / DATA, file_mode)
            if lock:
                data.acquire(
                    exclusive=mode is Mode.EXCLUSIVE,
                    repo=root,
                    what="a running checkout or verify" if mode is Mode.EXCLUSIVE else "gc or prune",
                    reader=reader,
                    wait=lock_wait,
                )
            locks.append(data)
            return cls(dirs, config, mode, locks, rebuild_index=rebuild_index)
        except BaseException:
            for held in reversed(locks):
                held.release()
            dirs.close()
            raise

    def upgrade(self) -> None:
        """WRITE -> EXCLUSIVE: wait for no reader (fails with LockedError if one is running)."""
        self._require(Mode.WRITE)
        if self.mode is not Mode.EXCLUSIVE:
            self._locks[-1].upgrade(repo=self.root, what="a running checkout or verify")
            self.mode = Mode.EXCLUSIVE

    def close(self) -> None:
        self._appender.close()
        self.packs.close()
        self._opened.close()
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()
        self.dirs.close()

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
        fsio.write_durable(self.dirs.path() / "config", config_fmt.encode(config), self.file_mode)
        self.config = config

    def _require(self, mode: Mode) -> None:
        if not self.mode.writes or (mode is Mode.EXCLUSIVE and self.mode is not Mode.EXCLUSIVE):
            raise AssertionError(f"repository opened {self.mode.value}, {mode.value} needed")

    # -- chunks --------------------------------------------------------------------------------

    def get_location(self, chunk_id: ChunkId) -> ChunkLocation | None:
        """Where a chunk is stored (safe to call from several threads)."""
        loc = self._appender.get(chunk_id)
        if loc is not None:
            return loc
        with self.index.read() as r:
            return r.get(chunk_id)

    def has_chunk(self, chunk_id: ChunkId) -> bool:
        """Whether the chunk is stored where it can be read: a chunk indexed in a pack that
        is not a readable regular file (replaced by a directory, say) is not, and a commit
        stores it again (its index entry then moves, keeping its count). Checked once per
        pack, not per chunk."""
        if self._appender.get(chunk_id) is not None:
            return True
        with self.index.read() as r:
            loc = r.get(chunk_id)
        return loc is not None and self._pack_usable(loc.pack_id)

    def _pack_usable(self, pack_id: bytes) -> bool:
        usable = self._usable_packs.get(pack_id)
        if usable is None:
            usable = self._usable_packs[pack_id] = self.packs.usable(pack_id)
            if not usable:
                log.warning("pack %s cannot be read; its chunks are stored again", pack_id.hex())
        return usable

    def get_chunk(self, chunk_id: ChunkId, loc: ChunkLocation | None = None) -> Buffer:
        """A chunk's plaintext, checked against its id (``loc``: where it is, if known)."""
        loc = loc or self.get_location(chunk_id)
        if loc is None:
            raise CorruptError(f"chunk {chunk_id.hex()[:16]}", "not in the index")
        return self.decode_chunk(chunk_id, loc, self.packs.read_record(loc, chunk_id))

    @staticmethod
    def decode_chunk(chunk_id: ChunkId, loc: ChunkLocation, payload: Buffer) -> Buffer:
        data = codec.decode(loc.codec, payload, loc.raw_size)
        actual = hash_chunk(data)
        if actual != chunk_id:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]}", chunk_id.hex(), actual.hex())
        return data

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

    def manifest_writer(self) -> ManifestWriter:
        self._require(Mode.WRITE)
        return self.snapshots.writer()

    def register_snapshot(
        self, writer: ManifestWriter, trailer: bytes, chunk_ids: Iterable[ChunkId]
    ) -> SnapshotId:
        """Publish a snapshot: packs, then index and counts, then one atomic rename."""
        self.flush()
        snapshot_id = writer.finish(trailer)
        try:
            ids = chunkset.collect(chunk_ids)
            recovery.count(self.index, snapshot_id, ids, True, strict=True)
            self.snapshots.publish(snapshot_id)
        except BaseException:
            self._roll_back(snapshot_id)
            raise
        return snapshot_id

    # -- building a snapshot (commit): the repository writes every byte of the manifest ---

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
    ) -> SnapshotInfo:
        """Close ``builder``'s manifest with its trailer and publish it (packs, then index and
        counts, then one atomic rename: :meth:`register_snapshot`)."""
        trailer = manifest_fmt.encode_trailer(
            name=name,
            created=created,
            message=message,
            size=builder.size,
            entries=builder.entries,
            chunk_refs=builder.chunk_refs,
            hostname=socket.gethostname(),
            source=source,
            sequence=sequence,
        )
        snapshot_id = self.register_snapshot(builder.writer, trailer, builder.chunk_ids)
        return self.snapshots.load_info(snapshot_id)

    def _roll_back(self, snapshot_id: SnapshotId) -> None:
        """After a failed registration, undo what recovery would undo for a killed commit
        (uncount, delete the pending manifest) unless the snapshot was published. Best
        effort: if this fails too, the next writer's recovery does it."""
        if snapshot_id not in self.snapshots.list_pending():
            return
        pending = str(self.snapshots.tmp_dir / f"{PENDING}{snapshot_id.hex()}")
        try:
            with self.index.read() as r:
                counted = r.is_counted(snapshot_id)
            if counted:
                refs = recovery.chunk_set(self.snapshots, snapshot_id, pending, damaged_ok=True)
                recovery.count(self.index, snapshot_id, refs, False)
            self.snapshots.discard_pending(snapshot_id)
        except SnapstoreError:
            pass

    def remove_snapshot(self, snapshot_id: SnapshotId) -> None:
        """Unpublish (atomic rename to tmp/), uncount (in batches), unpin, then delete the
        manifest. A damaged manifest counted whole before it was damaged names chunks it can
        no longer tell: all counts are then recomputed, so that none of them stays held."""
        self._require(Mode.WRITE)
        refs, damage = recovery.read_chunk_set(self.snapshots, snapshot_id)
        with self.index.read() as r:
            listed = snapshot_id in set(r.iter_damaged())
        if damage is not None:
            log.warning("%s; removing it", damage.message)
        self.snapshots.trash(snapshot_id)
        recovery.count(self.index, snapshot_id, refs, False)
        if listed:
            with self.index.write() as w:
                w.set_damaged(snapshot_id, False)
        self.pins.unpin(snapshot_id)
        self.snapshots.purge_trash(snapshot_id)
        if damage is not None and not listed:
            recovery.recount(self.index, self.snapshots)

    def damaged_manifests(self) -> list[SnapshotId]:
        """Published snapshots whose manifest could not be read whole when it was counted:
        the chunks they name are not known, so gc must free nothing (see ops/gc.py)."""
        with self.index.read() as r:
            return list(r.iter_damaged())

    def list_snapshots(self, *, skip_damaged: bool = False) -> list[SnapshotInfo]:
        """Every published snapshot, oldest first (SnapshotInfo.order). A damaged manifest is
        a CorruptError, or with ``skip_damaged`` is left out (with a warning)."""
        infos, damaged = self._load_infos()
        if damaged and not skip_damaged:
            raise damaged[0][1]
        for sid, exc in damaged:
            log.warning("snapshot %s left out: %s", sid.hex()[:12], exc.message)
        return infos

    def _load_infos(self) -> tuple[list[SnapshotInfo], list[tuple[SnapshotId, SnapstoreError]]]:
        infos: list[SnapshotInfo] = []
        damaged: list[tuple[SnapshotId, SnapstoreError]] = []
        for sid in self.snapshots.list_ids():
            try:
                infos.append(self.snapshots.load_info(sid))
            except SnapshotRemovedError:
                continue  # removed since it was listed
            except (CorruptError, IntegrityError) as exc:
                damaged.append((sid, exc))
        return sorted(infos, key=lambda s: s.order), damaged

    def resolve(self, ref: str, *, name: str | None = None) -> SnapshotInfo:
        """The snapshot ``ref`` names. A damaged manifest does not stop the others from being
        found (it is left out, with a warning); naming it gives its error."""
        infos, damaged = self._load_infos()
        try:
            found = ids.resolve(ref, infos, name=name)
        except UnknownSnapshotError:
            wanted = ref.strip().lower()
            for sid, exc in damaged:
                if len(wanted) >= ids.MIN_PREFIX and sid.hex().startswith(wanted):
                    raise exc from None
            raise
        for _, exc in damaged:
            log.warning("%s; it was left out when looking for %r (run 'snap verify')", exc.message, ref)
        return found

    def find_damaged(self, ref: str) -> SnapshotId | None:
        """The one snapshot whose manifest is damaged and whose id starts with ``ref`` (at
        least 4 hex digits), or None: so that it can be removed."""
        wanted = ref.strip().lower()
        if len(wanted) < ids.MIN_PREFIX:
            return None
        hits = [sid for sid, _ in self._load_infos()[1] if sid.hex().startswith(wanted)]
        return hits[0] if len(hits) == 1 else None

    def iter_records(self, snapshot_id: SnapshotId) -> Iterator[ManifestRecord]:
        return self.snapshots.iter_records(snapshot_id)

    # -- space ---------------------------------------------------------------------------------

    def disk_usage(self) -> int:
        """Allocated bytes of the whole repository, as ``du`` counts them."""
        return fsio.allocated_bytes(self.root)

    def release_reserve(self) -> None:
        fsio.remove(self.dirs.path() / "reserve", "the reserve file")

    def restore_reserve(self) -> bool:
        return fsio.reserve_space(self.dirs.path() / "reserve", RESERVE_SIZE, self.file_mode)


def _open_dirs(root: Path) -> RepoDirs:
    try:
        return RepoDirs(root)
    except StorageIOError as exc:
        if not root.is_dir():
            raise RepositoryNotFoundError(root) from exc
        raise


def load_config(root: Path, pinned_root: Path | None = None, *, ignore_bad_quota: bool = False) -> Config:
    """The config of the repository at ``root`` (read through ``pinned_root`` when given)."""
    path = (pinned_root or root) / "config"
    try:
        fd = fsio.open_file(path, os.O_RDONLY, what=f"{root / 'config'}")
        try:
            data = b""
            while len(data) <= config_fmt.MAX_CONFIG_SIZE and (part := os.read(fd, 1 << 16)):
                data += part
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        raise RepositoryNotFoundError(root) from exc
    except NotADirectoryError as exc:
        raise RepositoryNotFoundError(root) from exc
    except OSError as exc:
        raise translate_os_error(exc, str(root / "config")) from exc
    version = config_fmt.peek_version(data)
    if version not in READABLE_VERSIONS:
        raise UnsupportedFormatError(root, version, READABLE_VERSIONS)
    return config_fmt.decode(data, ignore_bad_quota=ignore_bad_quota)
