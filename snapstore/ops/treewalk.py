"""Reading a directory tree's entries and their metadata, for a commit (no contents here).

Names are bytes throughout (a name that is not UTF-8 is kept as it is). What an entry
records is docs/FORMAT.md, "Trees": kind, mode with setuid/setgid/sticky, numeric owner and
the names for display, mtime_ns, ctime_ns and inode (the parent rule), a link id for
hard-linked inodes, every xattr the process can read, a symlink's target, a device's numbers.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from snapstore.errors import InputError, InputNotFoundError
from snapstore.hashing import chunk_id
from snapstore.model import TreeEntry

_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISCHR, "chardev"),
    (stat.S_ISBLK, "blockdev"),
    (stat.S_ISFIFO, "fifo"),
)
# xattrs a filesystem does not have, or that this process may not read, are left out.
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.ENODATA)


def kind_of(mode: int) -> str | None:
    """The entry kind of a file type; None for a socket (not recorded)."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None


def link_id(st: os.stat_result) -> int:
    """Equal for every name of one inode with several links; 0 for a directory or a single
    link (docs/FORMAT.md, "Hard links")."""
    if stat.S_ISDIR(st.st_mode) or st.st_nlink < 2:
        return 0
    key = st.st_dev.to_bytes(8, "little") + st.st_ino.to_bytes(8, "little")
    return int.from_bytes(chunk_id(key)[:8], "little") or 1


@dataclass
class Owners:
    """User and group names by number, looked up once each."""

    users: dict[int, bytes] = field(default_factory=dict)
    groups: dict[int, bytes] = field(default_factory=dict)

    def user(self, uid: int) -> bytes:
        if uid not in self.users:
            try:
                self.users[uid] = os.fsencode(pwd.getpwuid(uid).pw_name)
            except KeyError:
                self.users[uid] = b""
        return self.users[uid]

    def group(self, gid: int) -> bytes:
        if gid not in self.groups:
            try:
                self.groups[gid] = os.fsencode(grp.getgrgid(gid).gr_name)
            except KeyError:
                self.groups[gid] = b""
        return self.groups[gid]


def list_dir(
    path: bytes, keep: Callable[[bytes, bool], bool] | None = None
) -> tuple[list[tuple[bytes, os.stat_result]], list[tuple[bytes, str]]]:
    """The entries of the directory ``path`` with their ``lstat``, sorted by name (bytes), and
    those that could not be stat'ed (vanished since the listing...) with why. ``keep(name,
    is_dir)``: whether to have an entry at all, asked before its stat (from the listing's
    file type), so a left-out entry costs no system call."""
    found = []
    failed = []
    try:
        with os.scandir(path) as it:
            for e in it:
                try:
                    if keep is not None and not keep(e.name, e.is_dir(follow_symlinks=False)):
                        continue
                    found.append((e.name, e.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    failed.append((e.name, "vanished while it was read"))
                except OSError as exc:
                    failed.append((e.name, exc.strerror or str(exc)))
    except FileNotFoundError as exc:
        raise InputNotFoundError(_shown(path)) from exc
    except OSError as exc:
        raise InputError(_shown(path), exc.strerror or str(exc)) from exc
    found.sort(key=lambda pair: pair[0])
    failed.sort()
    return found, failed


def read_xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Every extended attribute of ``path`` (not followed if a symlink) that can be read."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        raise InputError(_shown(path), exc.strerror or str(exc)) from exc
    found = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                continue
            raise InputError(_shown(path), exc.strerror or str(exc)) from exc
        found.append((os.fsencode(name), value))
    return tuple(sorted(found))


def describe(path: bytes, name: bytes, st: os.stat_result, kind: str, owners: Owners) -> TreeEntry:
    """An entry's metadata (and a symlink's target, a device's numbers); no file contents."""
    target = b""
    if kind == "symlink":
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise InputError(_shown(path), exc.strerror or str(exc)) from exc
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chardev", "blockdev") else (0, 0)
    return TreeEntry(
        name=name,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        link_id=link_id(st),
        user=owners.user(st.st_uid),
        group=owners.group(st.st_gid),
        xattrs=read_xattrs(path),
        size=0,
        target=target,
        rdev=rdev,
    )


def root_name(path: bytes) -> bytes:
    """The root entry's name: the directory's own name ('root' for '/')."""
    name = os.path.basename(os.path.abspath(path))
    return name if name not in (b"", b".", b"..") else b"root"


def _shown(path: bytes) -> Path:
    return Path(os.fsdecode(path))
