"""Repository locks (flock, so a killed holder's lock is released by the kernel).

Two lock files: ``locks/write`` is held exclusively by every command that writes (commit,
rm, gc, prune, config, repair); ``locks/data`` is held shared by readers (checkout, verify)
and exclusively by commands that destroy chunk data (gc, prune), so a checkout never sees
data vanish under it while a commit may run beside it. The holder writes its pid, host and
command into ``locks/write`` so a blocked user is told who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from snapstore.errors import LockedError, translate_os_error

WRITE = "write"
DATA = "data"


class Lock:
    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self._mode = mode
        self._fd: int | None = None

    def acquire(self, *, exclusive: bool, repo: Path, what: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self._mode)
        except OSError as exc:
            raise translate_os_error(exc, str(self.path)) from exc
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd) or what
            os.close(fd)
            raise LockedError(repo, holder) from None
        self._fd = fd
        if exclusive and self.path.name == WRITE:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(sys.argv[:2]),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)

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
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _describe_holder(fd: int) -> str | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {info['pid']} on {info['host']} ({info['command']})"
    except (ValueError, KeyError, TypeError, OSError):
        return None
