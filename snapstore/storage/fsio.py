"""Durable file operations: the one place that opens repository files, fsyncs, renames,
punches holes and counts blocks.

Stored files are never modified in place: they are added (temp file, fsync, rename, fsync
the directory), hole-punched, or removed. Every file and directory inside a repository is
opened by :func:`open_file` or :func:`open_dir`: without following a symbolic link, without
blocking on a FIFO, and checked to be a regular file or a directory (docs/FORMAT.md,
"trust"): a hostile repository cannot make snapstore write outside it or hang.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

# Input reading lives in snapstore.directio; re-exported for older callers.
from snapstore.directio import PAGE as PAGE
from snapstore.directio import cached as cached
from snapstore.directio import open_direct as open_direct
from snapstore.errors import CorruptError, translate_os_error
from snapstore.model import Buffer

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
SYNC_FILE_RANGE_WRITE = 0x02
# The C library this process already runs on (find_library would spawn ldconfig at start-up).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def dir_mode(file_mode: int) -> int:
    """The mode of a repository directory whose files get ``file_mode``: 0700, or 0755 when
    the files are readable by others (a shared repository)."""
    return 0o755 if file_mode & 0o044 else 0o700


_PROC_FD = "/proc/self/fd/"


def open_file(
    path: Path | str, flags: int, mode: int = 0o600, *, what: str, dir_fd: int | None = None
) -> int:
    """Open a repository file (``path`` relative to ``dir_fd`` when given) as ``flags`` ask,
    never through a symbolic link and never blocking on a FIFO; CorruptError naming ``what``
    unless it is a regular file. Other failures are the OSError (FileNotFoundError...)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            raise CorruptError(what, _not_regular(exc.errno), hint=_HINT) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptError(what, "not a regular file", hint=_HINT)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: Path | str, *, what: str, dir_fd: int | None = None) -> int:
    """Open a repository directory (``path`` relative to ``dir_fd`` when given), never
    through a symbolic link; CorruptError naming ``what`` unless it is a directory."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CorruptError(
                what, "not a directory (a symbolic link or another kind of file)", hint=_HINT
            ) from exc
        raise


_HINT = "snapstore never follows links or reads special files inside a repository; remove or restore it"


def _not_regular(err: int) -> str:
    return "a symbolic link, not a regular file" if err == errno.ELOOP else "not a regular file"


def pinned(fd: int) -> Path:
    """A path that names the directory open as ``fd`` itself: the kernel resolves it to that
    directory whatever is renamed or planted meanwhile along the path it was opened by."""
    return Path(f"{_PROC_FD}{fd}")


def shown(path: Path | str) -> str:
    """``path`` as a user knows it: a :func:`pinned` directory replaced by where it is."""
    text = str(path)
    if not text.startswith(_PROC_FD):
        return text
    number, _, rest = text[len(_PROC_FD) :].partition("/")
    try:
        real = os.readlink(_PROC_FD + number)
    except OSError:
        return text
    return f"{real}/{rest}" if rest else real


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` (os.write may write less than asked); raises OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove(path: Path, where: str) -> None:
    """Remove a file if it exists; any other failure is a snapstore error."""
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        return  # not a file this repository wrote: left for the user
    except OSError as exc:
        raise translate_os_error(exc, where) from exc


def temp_name(target: Path) -> Path:
    """A unique temp path next to ``target`` (same filesystem, so rename is atomic)."""
    return target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")


def write_durable(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` with ``data``: temp file, fsync, rename, fsync directory."""
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise translate_os_error(exc, shown(path)) from exc


def rename_durable(src: Path, dst: Path, *, output: bool = False) -> None:
    """Rename ``src`` (already fsynced) to ``dst`` and fsync the directories, so the rename
    survives a power cut. ``output``: ``dst`` is a checkout's output, not a repository file
    (a full disk there is not the repository's)."""
    try:
        os.rename(src, dst)
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
    except OSError as exc:
        raise translate_os_error(exc, shown(dst), output=output) from exc


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the blocks of ``[offset, offset+length)``; the bytes read back as zeros."""
    if length <= 0:
        return
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pwritev_all(fd: int, parts: list[Buffer], offset: int) -> int:
    """Write every byte of ``parts`` at ``offset`` (as few system calls as the kernel allows);
    returns the bytes written."""
    views = [memoryview(p).cast("B") for p in parts]
    total = 0
    while views:
        done = os.pwritev(fd, views, offset + total)
        total += done
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views:
            views[0] = views[0][done:]
    return total


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``[offset, offset+length)`` back to disk without waiting for it (a later
    fsync then has less to wait for). A hint: failures are ignored."""
    _libc.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def allocated_bytes(path: Path) -> int:
    """Disk usage of a file or tree as ``du`` counts it: allocated blocks, not apparent size.
    What is removed while it is counted is not counted; what cannot be read (permissions, an
    I/O error) is a snapstore error naming it."""
    total = 0
    for st in _walk_stats(path):
        total += st.st_blocks * 512
    return total


def _walk_stats(path: Path) -> Iterator[os.stat_result]:
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):  # symlinks are not followed
            yield st
            return
        with os.scandir(path) as it:
            entries = [Path(entry.path) for entry in it]
    except (FileNotFoundError, NotADirectoryError):
        return  # removed (or replaced) meanwhile
    except OSError as exc:
        raise translate_os_error(exc, str(path)) from exc
    yield st
    for entry in entries:
        yield from _walk_stats(entry)


def reserve_space(path: Path, size: int, mode: int) -> bool:
    """Create ``path`` with ``size`` really allocated bytes; False when that fails (a full
    disk, a filesystem without fallocate, an I/O error), and then no reserve file is left.

    The reserve is only room kept for a later gc on a full disk: failing to make it is never
    an error of the command that tried (the next rm, gc or prune tries again)."""
    try:
        fd = open_file(path, os.O_WRONLY | os.O_CREAT, mode, what="the reserve file")
    except (OSError, CorruptError):
        return False
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        return True
    except OSError:
        with suppress(OSError):
            path.unlink()
        return False
    finally:
        os.close(fd)
