"""Repository locks (flock, so a killed holder's lock is released by the kernel).

Two lock files: ``locks/write`` is held exclusively by every command that writes (commit,
rm, gc, prune, config, repair) and by verify (nothing may change while it checks);
``locks/data`` is held shared by readers (checkout, verify) and exclusively by commands that
destroy chunk data (gc, prune, repair), so a checkout never sees data vanish under it while a
commit may run beside it.

The holder of ``locks/write`` records its pid, host and command in it, so a blocked user is
told who holds it, and replaces the record by ``{}`` when it releases the lock. A record
found by the next writer therefore names a writer that did not finish (killed, or its machine
went down): the lock itself was already released by the kernel, so nothing needs breaking,
and recovery finishes or rolls back what that writer left (docs/FORMAT.md, "locks"). The
record is best effort: failing to write it (a full disk) never stops a command.

Readers (commands that never write) also work where the lock file cannot be opened for
writing: on read-only media (EROFS) or in a ``--shared`` repository of another user (EACCES),
the lock file is opened read-only and locked all the same (flock needs no write access). Only
where even that fails (the lock file is missing on read-only media, or unreadable) does a
reader go on without the lock, saying so once (a warning on the ``snapstore`` logger).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path

from snapstore.errors import LockedError, translate_os_error
from snapstore.storage import fsio, holders

WRITE = "write"
DATA = "data"
_MAX_RECORD = 4096
_RELEASED = b"{}"  # the record of a writer that finished
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # the lock file cannot be written
_log = logging.getLogger(__name__)
_told_unlocked = False


class Lock:
    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self._mode = mode
        self._fd: int | None = None
        self._recorded = False
        # Set by acquire(): the record of a previous writer that did not release the lock.
        self.interrupted_holder: str | None = None

    def acquire(
        self, *, exclusive: bool, repo: Path, what: str, reader: bool = False, wait: float = 0.0
    ) -> None:
        """Take the lock (LockedError if another process holds it ``wait`` seconds, or at once
        by default). ``reader``: the command
        never writes, so a lock file that cannot be written is locked read-only, and one that
        cannot be opened at all (read-only media without it, no permission) is gone without."""
        name = f"lock file {repo / 'locks' / self.path.name}"
        try:  # never through a link (a planted locks/write -> ~/.bashrc would be cut to "{}")
            fd = fsio.open_file(self.path, os.O_RDWR | os.O_CREAT, self._mode, what=name)
        except OSError as exc:
            if not reader or exc.errno not in _READ_ONLY:
                raise translate_os_error(exc, name) from exc
            try:
                fd = fsio.open_file(self.path, os.O_RDONLY, what=name)
            except OSError as again:
                if again.errno not in (*_READ_ONLY, errno.ENOENT):
                    raise translate_os_error(again, name) from again
                tell_unlocked(repo, f"{exc.strerror or exc} on {name}")
                return
        try:
            _flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, wait)
        except BlockingIOError:
            holder = describe_holder(_read_record(fd), live_only=True) or what
            os.close(fd)
            raise LockedError(repo, holder) from None
        except OSError as exc:  # e.g. ENOLCK: the filesystem does not support locks
            os.close(fd)
            raise translate_os_error(exc, name) from exc
        if exclusive and self.path.name == WRITE:
            self.interrupted_holder = describe_holder(_read_record(fd), live_only=False)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:2])}
            _write_record(fd, json.dumps(info).encode())
            self._recorded = True
        self._fd = fd

    def upgrade(self, *, repo: Path, what: str) -> None:
        """Shared -> exclusive. On failure the shared lock is taken again and LockedError raised
        (flock conversion is not atomic: the shared lock is briefly dropped)."""
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            raise LockedError(repo, what) from None

    def release(self) -> None:
        """Empty the holder record (a finished writer leaves none) and unlock. Never fails:
        closing the file releases the lock whatever happens."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._recorded:
                _write_record(fd, _RELEASED)
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self._recorded = False

    @property
    def held(self) -> bool:
        return self._fd is not None


def _flock(fd: int, operation: int, wait: float) -> None:
    """flock without blocking, retried for ``wait`` seconds (BlockingIOError when still held)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def tell_unlocked(repo: Path, reason: str) -> None:
    """Say once per process that a reader goes on without the repository's locks."""
    global _told_unlocked
    if not _told_unlocked:
        _told_unlocked = True
        _log.warning(
            "reading %s without its lock (%s): a gc or prune running meanwhile elsewhere "
            "could remove data this command reads",
            repo,
            reason,
        )


def _write_record(fd: int, record: bytes) -> None:
    """Best effort (the record only informs): written over the old one, then the file cut to
    its length, so that on a full disk the block the file already has is reused."""
    try:
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
    except OSError:
        with suppress(OSError):
            os.ftruncate(fd, 0)


def _read_record(fd: int) -> bytes:
    try:
        return os.pread(fd, _MAX_RECORD, 0)
    except OSError:
        return b""


def describe_holder(record: bytes, *, live_only: bool) -> str | None:
    """``pid N on HOST (COMMAND)`` from a lock record, or None when there is none (or it is
    damaged). With ``live_only``, a record naming a process of this host that no longer
    exists is ignored too (the lock is then held by someone who has not written a record
    yet); otherwise such a holder is said to be no longer running."""
    try:
        info = json.loads(record or b"null")
        pid, host, command = int(info["pid"]), str(info["host"]), str(info["command"])
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
        return None
    text = f"pid {pid} on {host} ({command})"
    if host == socket.gethostname() and not holders.exists(pid):
        return None if live_only else f"{text}, no longer running"
    return text
