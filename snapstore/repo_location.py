"""Where a repository is kept: a local directory (its files, with every fast path of a local
disk) or any storage backend (its objects, with the index in a local cache directory). The
Repository asks its location for its stores, locks, index directory and config, and never
looks at a path itself (docs/BACKENDS.md, "repositories over a backend")."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PosixPath
from typing import Self

from snapstore.backends.base import Backend
from snapstore.backends.local import LocalBackend
from snapstore.chunkparams import validate
from snapstore.errors import (
    CorruptError,
    ObjectNotFoundError,
    RemoteError,
    RepositoryNotFoundError,
    SnapstoreError,
    UsageError,
    translate_os_error,
)
from snapstore.format import DELTA_VERSION, FORMAT_VERSION
from snapstore.format import config as config_fmt
from snapstore.format import generation as generation_fmt
from snapstore.model import ChunkerParams, CodecParams, Config
from snapstore.repo_files import RESERVE_SIZE, decode_config, load_config, open_dirs, save_config
from snapstore.repo_index import CacheState, mark_synced
from snapstore.storage import fsio
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, Pins, Snapshots
from snapstore.storage.lock import Lock
from snapstore.storage.objlock import BackendFlock, ObjectLock
from snapstore.storage.objpacks import ObjectPackStore
from snapstore.storage.objpins import ObjectPinStore
from snapstore.storage.objsnapshots import ObjectSnapshotStore
from snapstore.storage.packstore import PackStore
from snapstore.storage.pins import PinStore
from snapstore.storage.snapshots import SnapshotStore

CONFIG = "config"
GENERATION = "generation"
log = logging.getLogger(__name__)
RepoLock = Lock | ObjectLock | BackendFlock


class LocalLocation:
    """A repository directory, each layout directory pinned (storage/dirs.py)."""

    append_only = False

    def __init__(self, root: Path) -> None:
        self.root = root  # as the user named it (messages)
        self._dirs = open_dirs(root)

    def load_config(self, *, ignore_bad_quota: bool) -> Config:
        return load_config(self.root, self._dirs.path(), ignore_bad_quota=ignore_bad_quota)

    def open_layout(self, file_mode: int, *, writes: bool) -> None:
        """Writers create the directories that are missing; readers find them empty."""
        self._dirs.open_layout(fsio.dir_mode(file_mode) if writes else None)

    def stores(self, config: Config, file_mode: int) -> tuple[Packs, Snapshots, Pins]:
        dirs = self._dirs
        packs = PackStore(
            dirs.path("packs"), file_mode, config.format_version, shown_root=self.root / "packs"
        )
        return (
            packs,
            SnapshotStore(dirs.path("snapshots"), dirs.path("tmp"), file_mode),
            PinStore(dirs.path("pins"), file_mode),
        )

    def index_dirs(self) -> tuple[Path, Path]:
        """(the directory holding ``index/``, where a new index is built): both pinned."""
        return self._dirs.path(), self._dirs.path("tmp")

    def cache_state(self) -> CacheState | None:
        """None while no client over a backend (ssh) has used the directory: the index is
        the repository's own, kept in step by recovery. Once one has, the ``generation``
        object says whether ``index/`` is in step, as for a cache: the clients' writes
        (and their gc) are not in it (docs/FORMAT.md, "the index as a cache")."""
        with self._generation() as backend:
            if backend is None:
                return None
            state = _read_generation(backend)
        return CacheState(state.synced, readers_rebuild=False)  # a reader may be on read-only media

    def begin_writing(self) -> None:
        with self._generation() as backend:
            if backend is not None:
                _begin_writing(backend)

    def end_writing(self, index: Index) -> None:
        with self._generation() as backend:
            if backend is not None:
                _end_writing(backend, index)

    @contextmanager
    def _generation(self) -> Iterator[LocalBackend | None]:
        """The directory as a local backend, to read and put ``generation`` as the clients
        do (files made with the mode of the one there); None if there is none."""
        root = self._dirs.path()
        try:
            st = os.stat(root / GENERATION, follow_symlinks=False)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise translate_os_error(exc, str(self.root / GENERATION)) from exc
        backend = LocalBackend(root, file_mode=st.st_mode & 0o666)
        try:
            yield backend
        finally:
            backend.close()

    def lock(self, name: str, file_mode: int) -> RepoLock:
        return Lock(self._dirs.path("locks") / name, file_mode)

    def save_config(self, config: Config, file_mode: int) -> None:
        save_config(self._dirs, config, file_mode)

    def usage(self) -> int:
        return fsio.allocated_bytes(self.root)

    def remove_temp(self) -> None:
        return None  # the layout's own temp names are recovery's (recovery.recover)

    def release_reserve(self) -> None:
        fsio.remove(self._dirs.path() / "reserve", "the reserve file")

    def restore_reserve(self, file_mode: int) -> bool:
        return fsio.reserve_space(self._dirs.path() / "reserve", RESERVE_SIZE, file_mode)

    def close(self) -> None:
        self._dirs.close()


class BackendLocation:
    """A repository kept as objects of ``backend`` (which the caller owns and closes); its
    index is a cache in ``cache_dir`` (default :func:`default_cache_dir`). ``owns_backend``:
    closing the location closes the backend too."""

    def __init__(self, backend: Backend, cache_dir: Path | None = None, owns_backend: bool = False) -> None:
        self.backend = backend
        self._where = getattr(backend, "where", None)  # a remote backend's address
        self.root: Path = Shown(self._where or f"{type(backend).__name__.lower()}:")  # messages only
        self._cache_dir = cache_dir
        self._owns_backend = owns_backend
        self._repository_id = ""
        # a server that refuses removals (snap serve --append-only): no rm, gc, prune, repair
        self.append_only = bool(getattr(backend, "append_only", False))

    def load_config(self, *, ignore_bad_quota: bool) -> Config:
        try:
            data = self.backend.get(CONFIG)
        except ObjectNotFoundError as exc:
            raise RepositoryNotFoundError(self.root) from exc
        config = decode_config(data, self.root, ignore_bad_quota=ignore_bad_quota)
        self._repository_id = config.repository_id
        if self._where is None:
            self.root = Path(f"{type(self.backend).__name__.lower()}:{config.repository_id[:12]}")
        return config

    def open_layout(self, file_mode: int, *, writes: bool) -> None:
        return None  # objects need no directories

    def stores(self, config: Config, file_mode: int) -> tuple[Packs, Snapshots, Pins]:
        packs = ObjectPackStore(self.backend, config.format_version, shown_root=f"{self.root}packs")
        return packs, ObjectSnapshotStore(self.backend), ObjectPinStore(self.backend)

    def index_dirs(self) -> tuple[Path, Path]:
        """(the cache directory holding ``index/``, its ``tmp/``), created if missing."""
        cache = self._cache_dir or default_cache_dir(self._repository_id)
        tmp = cache / "tmp"
        try:
            tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, str(tmp)) from exc
        return cache, tmp

    def cache_state(self) -> CacheState:
        """Which index cache is in step with the objects now (docs/FORMAT.md, "the index as
        a cache"): the settled generation's token, or none while a writer is at work."""
        return _read_generation(self.backend)

    def begin_writing(self) -> None:
        """Before a writer changes any object: every cache is out of step from now on."""
        _begin_writing(self.backend)

    def end_writing(self, index: Index) -> None:
        """A writer done: a new settled generation, which its own cache is in step with. If
        it cannot be written, the generation stays *writing* and every cache is rebuilt."""
        _end_writing(self.backend, index)

    def lock(self, name: str, file_mode: int) -> RepoLock:
        caps = self.backend.capabilities
        if caps.flock and not caps.local_path:  # a server's flock: released with the session
            return BackendFlock(self.backend, f"locks/{name}")
        return ObjectLock(self.backend, f"locks/{name}")

    def save_config(self, config: Config, file_mode: int) -> None:
        self.backend.put(CONFIG, config_fmt.encode(config), overwrite=True)

    def usage(self) -> int:
        return self.backend.usage()

    def remove_temp(self) -> None:
        """Under the write lock: what puts killed midway left (not below ``locks/``, where
        readers put their lock objects beside a writer)."""
        self.backend.remove_temp(skip=("locks",))

    def release_reserve(self) -> None:
        return None  # no reserve: a backend's space is not a local disk's

    def restore_reserve(self, file_mode: int) -> bool:
        return True

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()


class Shown(PosixPath):
    """A name for messages that is no local path (a remote address: ``Path`` would fold the
    two slashes of ``ssh://``), shown as given."""

    _shown = ""

    def __new__(cls, shown: str) -> Self:
        self = super().__new__(cls, shown)
        self._shown = shown
        return self

    def __str__(self) -> str:
        return self._shown or super().__str__()  # (a path made from it is a plain one)


def default_cache_dir(repository_id: str) -> Path:
    """``$XDG_CACHE_HOME/snapstore/<repository id>`` (``~/.cache`` when unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "snapstore" / repository_id


def create_objects(backend: Backend, config: Config) -> None:
    """A new repository over ``backend``: only its config (put last, like the local layout's:
    a store without it is not a repository). Refused unless the backend holds no object."""
    if backend.exists_many([CONFIG]):
        raise UsageError(f"{type(backend).__name__} already holds a snapstore repository")
    if next(iter(backend.list()), None) is not None:
        raise UsageError(f"{type(backend).__name__} is not empty")
    backend.put(CONFIG, config_fmt.encode(config))


def new_config(
    chunker: ChunkerParams | None,
    codec_level: int,
    shared: bool,
    pack_target_size: int,
    *,
    delta: bool = False,
) -> Config:
    """The config of a new repository (format FORMAT_VERSION, a new random id; with
    ``delta``, format DELTA_VERSION: changed chunks may be stored as deltas)."""
    if not 1 <= codec_level <= 22:
        raise UsageError(f"zstd level must be 1..22, not {codec_level}")
    return Config(
        format_version=DELTA_VERSION if delta else FORMAT_VERSION,
        delta=delta,
        repository_id=secrets.token_hex(16),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        chunker=validate(chunker or ChunkerParams()),
        codec=CodecParams("zstd", codec_level),
        pack_target_size=pack_target_size,
        shared=shared,
    )


# -- the generation object (docs/FORMAT.md, "the index as a cache") -------------------------------


def _read_generation(backend: Backend) -> CacheState:
    try:
        found = generation_fmt.decode(backend.get(GENERATION), GENERATION)
    except ObjectNotFoundError:
        return CacheState(None)
    except CorruptError as exc:
        log.warning("%s; the index cache is rebuilt", exc.message)
        return CacheState(None)
    return CacheState(None if found.writing else found.token)


def _begin_writing(backend: Backend) -> None:
    backend.put(GENERATION, generation_fmt.encode(generation_fmt.new(writing=True)), overwrite=True)


def _end_writing(backend: Backend, index: Index) -> None:
    settled = generation_fmt.new(writing=False)
    try:
        backend.put(GENERATION, generation_fmt.encode(settled), overwrite=True)
        mark_synced(index, settled.token)
    except RemoteError:
        pass  # the connection is gone: the command says so (the generation stays writing)
    except SnapstoreError as exc:
        log.warning("%s; index caches of this repository will be rebuilt", exc.message)
