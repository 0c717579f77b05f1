"""Appending to one local object in place, with durable checkpoints (the way packs are
written today: no second copy, a crash keeps what the last checkpoint made durable)."""

from __future__ import annotations

import os
from contextlib import suppress

from snapstore.backends.base import AppendWriter
from snapstore.errors import translate_os_error
from snapstore.model import Buffer
from snapstore.storage import fsio


class LocalAppendWriter(AppendWriter):
    """Owns ``dfd`` (the object's directory) and ``fd`` (the object, open for writing).

    After a failed write or fsync the writer is broken: what the file holds past the last
    checkpoint is unknown (a failed fsync may have dropped those pages), so every later
    write, checkpoint or seal raises that failure again; only abort is left."""

    def __init__(self, dfd: int, base: str, fd: int, what: str) -> None:
        self._dir = dfd
        self._base = base
        self._fd = fd
        self._what = what
        self.size = 0
        self._synced_dir = False
        self._broken: OSError | None = None

    def write(self, data: Buffer) -> int:
        self._check_usable()
        offset = self.size
        try:
            self.size += fsio.pwritev_all(self._fd, [data], offset)
        except OSError as exc:
            raise self._fail(exc) from exc
        return offset

    def checkpoint(self) -> None:
        self._check_usable()
        try:
            os.fsync(self._fd)
            if not self._synced_dir:  # the object's name is durable too
                os.fsync(self._dir)
                self._synced_dir = True
        except OSError as exc:
            raise self._fail(exc) from exc

    def seal(self) -> None:
        if self._fd < 0 and self._broken is None:
            return
        self.checkpoint()
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        except OSError as exc:
            raise self._fail(exc) from exc
        finally:
            self._close_dir()

    def abort(self) -> None:
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._dir < 0:
            return  # sealed or aborted already
        with suppress(OSError):
            os.unlink(self._base, dir_fd=self._dir)
            os.fsync(self._dir)
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir >= 0:
            with suppress(OSError):
                os.close(self._dir)
            self._dir = -1

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise translate_os_error(self._broken, self._what) from self._broken
        if self._fd < 0:
            raise ValueError(f"{self._what}: written after seal or abort")

    def _fail(self, exc: OSError) -> Exception:
        self._broken = self._broken or exc
        return translate_os_error(exc, self._what)
