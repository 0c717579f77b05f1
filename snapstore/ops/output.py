"""Where a checkout's bytes go: what kind of file OUT is, and opening it as that kind.

A regular file (or a path that does not exist yet) is replaced through a temp file and a
rename, only with ``force`` when it exists. Special files are never replaced: a block device
is written in place (never unlinked nor truncated, refused when smaller than the snapshot, and
only with ``force``: its old contents are overwritten); a character device or a FIFO is
written as a stream, in order, zeros included.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from snapstore.errors import OutputExistsError, UsageError, translate_os_error
from snapstore.units import format_size


class TargetKind(enum.Enum):
    FILE = "file"  # replaced by a temp file renamed over it
    DEVICE = "block device"  # written in place at offsets
    STREAM = "stream"  # a character device or a FIFO: written in order


@dataclass(frozen=True)
class OpenTarget:
    """A special file opened for writing (``fd`` is the caller's to close)."""

    kind: TargetKind
    fd: int
    path: Path


def open_special(target: Path, *, force: bool, size: int) -> OpenTarget | None:
    """Open ``target`` when it is a special file that takes the bytes in place; None when it
    is a regular file (or missing) to be replaced, which needs ``force`` if it exists."""
    try:
        st = os.stat(target)  # through symlinks: /dev/disk/by-id/... names a device
    except (FileNotFoundError, NotADirectoryError):
        return None  # (a missing parent directory is told when the temp file is created)
    except OSError as exc:  # e.g. a directory on the way that this user may not search
        raise translate_os_error(exc, str(target), output=True) from exc
    kind = target_kind(st.st_mode)
    if kind is None:
        raise UsageError(
            f"{target} is {describe(st.st_mode)}", hint="give the output file's path or a device"
        )
    if kind is TargetKind.FILE:
        if not force:
            raise OutputExistsError(target)
        return None
    if kind is TargetKind.DEVICE and not force:
        raise UsageError(
            f"{target} is a block device", hint="pass --force to overwrite the device's contents"
        )
    fd = open_output(target, os.O_WRONLY, device=kind is TargetKind.DEVICE)
    try:
        if target_kind(os.fstat(fd).st_mode) is not kind:  # replaced since the stat
            raise UsageError(f"{target} changed while it was being opened")
        if kind is TargetKind.DEVICE:
            check_device_size(target, os.lseek(fd, 0, os.SEEK_END), size)
            os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return OpenTarget(kind, fd, target)


def open_output(target: Path, flags: int, *, device: bool) -> int:
    """Open an existing output target. A block device is opened O_EXCL: refused (exit 2)
    while it is mounted or otherwise in exclusive use."""
    try:
        return os.open(target, flags | os.O_CLOEXEC | (os.O_EXCL if device else 0))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise UsageError(f"{target} is in use (mounted?)", hint="unmount it first") from exc
        raise translate_os_error(exc, str(target), output=True) from exc


def check_device_size(target: Path, device_bytes: int, snapshot_bytes: int) -> None:
    if device_bytes < snapshot_bytes:
        raise UsageError(
            f"{target} holds {format_size(device_bytes)} ({device_bytes} bytes), less than the "
            f"snapshot's {format_size(snapshot_bytes)} ({snapshot_bytes} bytes)",
            hint="give a device at least as large as the snapshot",
        )


def target_kind(mode: int) -> TargetKind | None:
    """How a file of this mode is written, or None when it cannot be an output."""
    if stat.S_ISREG(mode):
        return TargetKind.FILE
    if stat.S_ISBLK(mode):
        return TargetKind.DEVICE
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return TargetKind.STREAM
    return None


def describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file, device or FIFO"
