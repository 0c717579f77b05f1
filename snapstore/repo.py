"""The repository facade: init/open, put and get chunks, list and register snapshots.

Operations (commit, checkout, gc, prune) are written against this class, never against
the files underneath.
"""

from __future__ import annotations

import enum
import secrets
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from snapstore import codec, ids, recovery
from snapstore.chunker import validate
from snapstore.errors import (
    CorruptError,
    IntegrityError,
    RepositoryError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    UsageError,
    translate_os_error,
)
from snapstore.format import FORMAT_VERSION
from snapstore.format import config as config_fmt
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
from snapstore.storage import fsio
from snapstore.storage.appender import PackAppender
from snapstore.storage.index import Index
from snapstore.storage.lock import DATA, WRITE, Lock
from snapstore.storage.packstore import PackStore
from snapstore.storage.pins import PinStore
from snapstore.storage.snapshots import ManifestWriter, SnapshotStore

REPO_DIR_NAME = ".snapstore"
RESERVE_SIZE = 16 * 1024 * 1024
_LAYOUT = ("packs", "snapshots", "tmp", "locks", "pins")


class Mode(enum.Enum):
    READ = "read"  # shared data lock: checkout, log, show, verify
    WRITE = "write"  # write lock: commit, rm, config
    EXCLUSIVE = "exclusive"  # write lock + exclusive data lock: gc, prune, repair


def find_root(start: Path) -> Path | None:
    """The nearest ``.snapstore`` directory at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / REPO_DIR_NAME
        if (candidate / "config").is_file():
            return candidate
    return None


class Repository:
    def __init__(self, root: Path, config: Config, mode: Mode, locks: list[Lock]) -> None:
        self.root = root
        self.config = config
        self.mode = mode
        self._locks = locks
        self.file_mode = 0o644 if config.shared else 0o600
        self.packs = PackStore(root / "packs", self.file_mode)
        self.snapshots = SnapshotStore(root / "snapshots", root / "tmp", self.file_mode)
        self.pins = PinStore(root / "pins", self.file_mode)
        self.index = self._open_index()
        self._appender = PackAppender(self.packs, self.index, config.pack_target_size)
        if mode is not Mode.READ:
            recovery.recover(self.index, self.snapshots)

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
        dir_mode = 0o755 if shared else 0o700
        file_mode = 0o644 if shared else 0o600
        try:
            root.mkdir(mode=dir_mode, parents=True, exist_ok=True)
            for name in (*_LAYOUT, "index"):
                (root / name).mkdir(mode=dir_mode, exist_ok=True)
            Index(root / "index", mode=file_mode, create=True).close()
            fsio.reserve_space(root / "reserve", RESERVE_SIZE, file_mode)
        except OSError as exc:
            raise translate_os_error(exc, str(root)) from exc
        # The config is written last: a directory without it is not a repository yet.
        fsio.write_durable(root / "config", config_fmt.encode(config), file_mode)
        return cls.open(root, Mode.WRITE)

    @classmethod
    def open(cls, root: Path, mode: Mode = Mode.READ) -> Repository:
        config = load_config(root)
        file_mode = 0o644 if config.shared else 0o600
        locks: list[Lock] = []
        try:
            if mode is not Mode.READ:
                lock = Lock(root / "locks" / WRITE, file_mode)
                lock.acquire(exclusive=True, repo=root, what="another writer")
                locks.append(lock)
            data = Lock(root / "locks" / DATA, file_mode)
            data.acquire(
                exclusive=mode is Mode.EXCLUSIVE,
                repo=root,
                what="a running checkout or verify" if mode is Mode.EXCLUSIVE else "gc or prune",
            )
            locks.append(data)
            return cls(root, config, mode, locks)
        except BaseException:
            for lock in reversed(locks):
                lock.release()
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
        self.index.close()
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open_index(self) -> Index:
        path = self.root / "index"
        if (path / "data.mdb").exists():
            return Index(path, mode=self.file_mode, create=False)
        if self.mode is Mode.READ:
            raise RepositoryError(
                f"{self.root}: the index is missing",
                hint="run 'snap repair' to rebuild it from the packs",
            )
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700 | (self.file_mode & 0o055))
        index = Index(path, mode=self.file_mode, create=True)
        recovery.rebuild(index, self.packs, self.snapshots)
        return index

    def save_config(self, config: Config) -> None:
        self._require(Mode.WRITE)
        fsio.write_durable(self.root / "config", config_fmt.encode(config), self.file_mode)
        self.config = config

    def _require(self, mode: Mode) -> None:
        if self.mode is Mode.READ or (mode is Mode.EXCLUSIVE and self.mode is not Mode.EXCLUSIVE):
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
        return self.get_location(chunk_id) is not None

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
        """Pack data durable first, then the index entries that point at it."""
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
        with self.index.write() as w:
            if not w.is_counted(snapshot_id):
                w.add_refs(chunk_ids, +1)
                w.set_counted(snapshot_id, True)
        self.snapshots.publish(snapshot_id)
        return snapshot_id

    def remove_snapshot(self, snapshot_id: SnapshotId) -> None:
        """Unpublish (atomic rename to tmp/), uncount, unpin, then delete the manifest."""
        self._require(Mode.WRITE)
        refs = recovery.chunk_set(self.snapshots, snapshot_id)
        self.snapshots.trash(snapshot_id)
        with self.index.write() as w:
            w.add_refs(refs, -1, strict=False)
            w.set_counted(snapshot_id, False)
        self.pins.unpin(snapshot_id)
        self.snapshots.purge_trash(snapshot_id)

    def list_snapshots(self) -> list[SnapshotInfo]:
        """Every published snapshot, oldest first."""
        infos = [self.snapshots.load_info(sid) for sid in self.snapshots.list_ids()]
        return sorted(infos, key=lambda s: (s.created, s.hex))

    def resolve(self, ref: str, *, name: str | None = None) -> SnapshotInfo:
        return ids.resolve(ref, self.list_snapshots(), name=name)

    def iter_records(self, snapshot_id: SnapshotId) -> Iterator[ManifestRecord]:
        return self.snapshots.iter_records(snapshot_id)

    # -- space ---------------------------------------------------------------------------------

    def disk_usage(self) -> int:
        """Allocated bytes of the whole repository, as ``du`` counts them."""
        return fsio.allocated_bytes(self.root)

    def release_reserve(self) -> None:
        (self.root / "reserve").unlink(missing_ok=True)

    def restore_reserve(self) -> bool:
        return fsio.reserve_space(self.root / "reserve", RESERVE_SIZE, self.file_mode)


def load_config(root: Path) -> Config:
    path = root / "config"
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RepositoryNotFoundError(root) from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        raise RepositoryNotFoundError(root) from exc
    except OSError as exc:
        raise translate_os_error(exc, str(path)) from exc
    version = config_fmt.peek_version(data)
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(root, version, FORMAT_VERSION)
    return config_fmt.decode(data)
