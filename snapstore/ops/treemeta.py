"""An entry's metadata as a tree sync compares and sets it (snapstore.ops.treesync): which
fields of the target differ from the snapshot's entry, and setting only those, in the order
a restore sets them (owner as root, xattrs, mode, mtime). The target is reached through its
directory's descriptor and never followed: a symlink's own metadata by name with
``follow_symlinks=False``, any other node through an ``O_PATH`` descriptor of it."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from snapstore.errors import UsageError
from snapstore.model import TreeEntry
from snapstore.ops.treerestore import Restorer, shown_path

PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC  # the node itself, never opened for I/O
KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_NO_XATTRS = (errno.ENOTSUP, errno.ENODATA, errno.EPERM, errno.EACCES)


def set_differing(
    restorer: Restorer,
    dir_fd: int,
    entry: TreeEntry,
    parts: list[bytes],
    todo: tuple[str, ...],
    held: tuple[tuple[bytes, bytes], ...],
    fd: int | None,
) -> None:
    """Set the fields ``todo`` (from ``differing``) of the entry ``entry.name`` in ``dir_fd``
    (or of the open directory ``fd``) that now has the xattrs ``held``."""
    if entry.kind == "symlink":
        if "owner" in todo:
            os.chown(entry.name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
        if "xattrs" in todo:
            path = b"/proc/self/fd/%d/%s" % (dir_fd, entry.name)
            sync_xattrs(restorer, path, entry, parts, held, follow=False)
        os.utime(entry.name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        return
    node = fd if fd is not None else os.open(entry.name, PATH_FLAGS, dir_fd=dir_fd)
    try:
        target: int | bytes = fd if fd is not None else b"/proc/self/fd/%d" % node
        if KINDS.get(stat.S_IFMT(os.fstat(node).st_mode)) != entry.kind:
            raise UsageError(f"{shown_path(parts) or '.'}: replaced while it was synced")
        if "owner" in todo:
            os.chown(target, entry.uid, entry.gid)
        if "xattrs" in todo:
            sync_xattrs(restorer, target, entry, parts, held, follow=True)
        if "mode" in todo or "owner" in todo:  # chown clears setuid and setgid
            os.chmod(target, entry.mode)
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        if fd is None:
            os.close(node)


def sync_xattrs(
    restorer: Restorer,
    target: int | bytes,
    entry: TreeEntry,
    parts: list[bytes],
    held: tuple[tuple[bytes, bytes], ...],
    *,
    follow: bool,
) -> None:
    """Remove the target's xattrs the entry has not, then set the entry's that differ; what
    the target refuses is a warning."""
    wanted = dict(entry.xattrs)
    for name, _ in held:
        if name not in wanted:
            try:
                os.removexattr(target, name, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno not in _NO_XATTRS:
                    raise
                shown = name.decode("utf-8", "replace")
                restorer.warn(f"{shown_path(parts)}: xattr {shown} not removed ({exc.strerror})")
    have = dict(held)
    differ = tuple((n, v) for n, v in entry.xattrs if have.get(n) != v)
    restorer.set_xattrs(target, replace(entry, xattrs=differ), shown_path(parts), follow=follow)


def read_xattrs(path: int | bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The xattrs of an open file or of ``path`` (never followed) this process can read,
    sorted by name."""
    follow = isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        raise
    found = []
    for name in names:
        try:
            found.append((os.fsencode(name), os.getxattr(path, name, follow_symlinks=follow)))
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return tuple(sorted(found))


def differing(
    entry: TreeEntry, st: os.stat_result, xattrs: tuple[tuple[bytes, bytes], ...], *, owner: bool
) -> tuple[str, ...]:
    """The metadata fields in which the target (``st``, its ``xattrs``) differs from the
    entry, in the order they are set; the owner only when it can be set (``owner``: root)."""
    fields = []
    if owner and (st.st_uid, st.st_gid) != (entry.uid, entry.gid):
        fields.append("owner")
    if xattrs != entry.xattrs:
        fields.append("xattrs")
    if entry.kind != "symlink" and stat.S_IMODE(st.st_mode) != entry.mode:
        fields.append("mode")
    if st.st_mtime_ns != entry.mtime_ns:
        fields.append("mtime")
    return tuple(fields)
