"""The local file system backend: one file per object below a root directory.

Objects are files named by their name (``packs/ab/<id>.pack`` is that path below the root);
directories are created as puts need them and left when emptied. Every file and directory
below the root is opened by :mod:`snapstore.storage.fsio` (no symbolic link followed, regular
files only: a link planted inside is a CorruptError), relative to the root opened once. Puts
write a hidden temp file in the object's directory (``.<base>.tmp-<random>``), fsync it, then
link (refusing to overwrite) or rename it into place and fsync the directory: a crash at any
moment leaves the object absent or whole, and at most a hidden temp file that
:meth:`LocalBackend.remove_temp` clears.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from snapstore.backends import local_walk
from snapstore.backends.base import (
    AppendWriter,
    Backend,
    Capabilities,
    Data,
    check_name,
    check_prefix,
    check_range,
    parts_of,
)
from snapstore.backends.local_append import LocalAppendWriter
from snapstore.errors import (
    CorruptError,
    LockedError,
    ObjectExistsError,
    ObjectNotFoundError,
    ShortObjectError,
    translate_os_error,
)
from snapstore.model import Buffer
from snapstore.storage import fsio

_TEMP_MARK = ".tmp-"
_HINT = "snapstore never follows links or reads special files inside a repository; remove or restore it"


class LocalBackend(Backend):
    capabilities = Capabilities(append=True, punch=True, flock=True, create_exclusive=True, local_path=True)

    def __init__(self, root: Path, *, file_mode: int = 0o600, create: bool = False) -> None:
        """Open ``root`` (as named: a link to it is the user's choice); ``create``: make it if
        missing. Files are created with ``file_mode``, directories with its fsio.dir_mode."""
        self.root = root
        self._mode = file_mode
        self._dir_mode = fsio.dir_mode(file_mode)
        try:
            if create:
                with suppress(FileExistsError):
                    os.mkdir(root, self._dir_mode)
            self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate_os_error(exc, str(root)) from exc

    def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    # -- the base interface -------------------------------------------------------------------

    def put(self, name: str, data: Data, *, overwrite: bool = False) -> None:
        with self._parent(name, create=True) as (dfd, base):
            if self._kind(dfd, base, name) is not None and not overwrite:
                raise ObjectExistsError(name)
            tmp = f".{base}{_TEMP_MARK}{secrets.token_hex(6)}"
            try:
                fd = fsio.open_file(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._mode, what=self._what(name), dir_fd=dfd
                )
                try:
                    for part in parts_of(data):
                        fsio.write_all(fd, part)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if overwrite:
                    os.rename(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
                else:  # link refuses an existing name, atomically (rename would replace it)
                    try:
                        os.link(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        raise ObjectExistsError(name) from None
                    finally:
                        with suppress(OSError):
                            os.unlink(tmp, dir_fd=dfd)
                os.fsync(dfd)
            except BaseException as exc:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                if isinstance(exc, OSError):
                    raise translate_os_error(exc, self._what(name)) from exc
                raise

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        with self._open(name, os.O_RDONLY) as fd:
            try:
                size = os.fstat(fd).st_size
                end = size if length is None else offset + length
                if end > size or offset > size:
                    raise ShortObjectError(name, size, max(end, offset))
                data = os.pread(fd, end - offset, offset)
                if len(data) < end - offset:  # a pread may return less (or the file shrank)
                    parts = [data]
                    got = len(data)
                    while got < end - offset:
                        more = os.pread(fd, end - offset - got, offset + got)
                        if not more:
                            raise ShortObjectError(name, offset + got, end)
                        parts.append(more)
                        got += len(more)
                    data = b"".join(parts)
                return data
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc

    def stat(self, name: str) -> int:
        with self._parent(name, create=False) as (dfd, base):
            st = self._kind(dfd, base, name)
            if st is None:
                raise ObjectNotFoundError(name)
            return st.st_size

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        root = self._reopen_root()
        try:
            yield from local_walk.names(root, "", prefix, self.root)
        finally:
            os.close(root)

    def delete(self, name: str) -> None:
        try:
            with self._parent(name, create=False) as (dfd, base):
                os.unlink(base, dir_fd=dfd)
                os.fsync(dfd)
        except (ObjectNotFoundError, FileNotFoundError):
            return
        except OSError as exc:
            raise translate_os_error(exc, self._what(name)) from exc

    def usage(self) -> int:
        """Allocated bytes of everything below the root (as ``du`` counts: the root, its
        directories, temp files), never following a link."""
        root = fsio.pinned(self._root)  # a link itself: what is below it is counted
        try:
            total = os.fstat(self._root).st_blocks * 512
            names = os.listdir(root)
        except OSError as exc:
            raise translate_os_error(exc, str(self.root)) from exc
        return total + sum(fsio.allocated_bytes(root / name) for name in names)

    # -- capabilities -----------------------------------------------------------------------------

    def open_append(self, name: str) -> AppendWriter:
        with self._parent(name, create=True) as (dfd, base):
            try:
                fd = fsio.open_file(
                    base, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._mode, what=self._what(name), dir_fd=dfd
                )
            except FileExistsError:
                raise ObjectExistsError(name) from None
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc
            return LocalAppendWriter(os.dup(dfd), base, fd, self._what(name))

    def punch(self, name: str, offset: int, length: int) -> None:
        check_range(offset, length)
        with self._open(name, os.O_WRONLY) as fd:
            try:
                size = os.fstat(fd).st_size
                if offset + length > size:
                    raise ShortObjectError(name, size, offset + length)
                fsio.punch_hole(fd, offset, length)
                os.fsync(fd)
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc

    @contextmanager
    def _locked(self, name: str, exclusive: bool) -> Iterator[None]:
        with self._parent(name, create=True) as (dfd, base):
            try:
                fd = fsio.open_file(
                    base, os.O_RDWR | os.O_CREAT, self._mode, what=self._what(name), dir_fd=dfd
                )
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(self.root, f"another holder of {name}") from None
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc
            yield
        finally:
            os.close(fd)

    def lock(self, name: str, *, exclusive: bool) -> AbstractContextManager[None]:
        return self._locked(name, exclusive)

    def create_exclusive(self, name: str, data: Buffer) -> bool:
        try:
            self.put(name, data)
        except ObjectExistsError:
            return False
        return True

    def local_path(self, name: str) -> Path:
        """The object's path below the pinned root (``/proc/self/fd/N/<name>``): the caller
        opens it and answers for links planted along it."""
        return fsio.pinned(self._root) / check_name(name)

    def remove_temp(self, *, skip: Sequence[str] = ()) -> int:
        """Remove the temp files puts killed midway left; returns how many. Only while no
        put runs below it (the repository's write lock); ``skip``: top-level directories
        left alone (``locks``: readers put lock objects beside a writer)."""
        removed = 0
        root = self._reopen_root()
        try:
            for dfd, entry in local_walk.temp_files(root, _TEMP_MARK, skip=frozenset(skip)):
                with suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=dfd)
                    removed += 1
        finally:
            os.close(root)
        return removed

    # -- below the root ---------------------------------------------------------------------------

    def _reopen_root(self) -> int:
        """A descriptor of its own (a directory's read position is shared by its dups)."""
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root)

    def _what(self, name: str) -> str:
        return f"stored object {self.root / name}"

    @contextmanager
    def _parent(self, name: str, *, create: bool) -> Iterator[tuple[int, str]]:
        """The directory of ``name`` opened (created when ``create``), and its base name.
        ObjectNotFoundError if missing; CorruptError if a part is a link or a file."""
        *dirs, base = check_name(name).split("/")
        fd = os.dup(self._root)
        try:
            for part in dirs:
                what = f"directory {self.root / part}"
                try:
                    try:
                        sub = fsio.open_dir(part, what=what, dir_fd=fd)
                    except FileNotFoundError:
                        if not create:
                            raise ObjectNotFoundError(name) from None
                        with suppress(FileExistsError):
                            os.mkdir(part, self._dir_mode, dir_fd=fd)
                            os.fsync(fd)
                        sub = fsio.open_dir(part, what=what, dir_fd=fd)
                except OSError as exc:
                    raise translate_os_error(exc, what) from exc
                os.close(fd)
                fd = sub
            yield fd, base
        finally:
            os.close(fd)

    @contextmanager
    def _open(self, name: str, flags: int) -> Iterator[int]:
        with self._parent(name, create=False) as (dfd, base):
            try:
                fd = fsio.open_file(base, flags, what=self._what(name), dir_fd=dfd)
            except FileNotFoundError:
                raise ObjectNotFoundError(name) from None
            except OSError as exc:
                raise translate_os_error(exc, self._what(name)) from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def _kind(self, dfd: int, base: str, name: str) -> os.stat_result | None:
        """The stat of an existing regular file ``base``, None if missing; CorruptError for
        anything else (a link, a directory, a FIFO)."""
        try:
            st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate_os_error(exc, self._what(name)) from exc
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise CorruptError(self._what(name), kind, hint=_HINT)
        return st
