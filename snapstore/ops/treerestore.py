"""Restore of a tree snapshot into a directory (``snap checkout ID -o OUTDIR [--path P]``).

Every entry is created relative to an open descriptor of its directory (``openat``-style:
``dir_fd``, ``O_NOFOLLOW``, ``O_EXCL``), never through a path string, so nothing planted in
the target (a symlink in place of a directory, ``..``) can make the restore write outside
OUTDIR; names were checked to be single components when their tree object was decoded.

Order: a file's contents, then its owner (as root), xattrs, mode (after the owner, which
clears setuid/setgid) and times; a directory's metadata after everything in it, so that
directory times are set last. Entries of one hard-link group are one file: the first
restored gets the contents, the others are hard links to it. Zero runs stay holes.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from snapstore.errors import UsageError, translate_os_error
from snapstore.model import SnapshotInfo, TreeEntry
from snapstore.ops.checkout import fill_file
from snapstore.ops.treeread import children, find, split_path, tree_root
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository

log = logging.getLogger(__name__)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TYPES = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


@dataclass(frozen=True)
class RestoreResult:
    snapshot: SnapshotInfo
    path: str
    entries: int  # entries created (OUTDIR itself not counted)
    size: int  # bytes of file contents written (hard links counted once)
    zero_bytes: int  # left as holes
    warnings: tuple[str, ...] = ()  # metadata the target refused (an xattr namespace, say)


@dataclass
class Restorer:
    repo: Repository
    root_fd: int
    threads: int | None
    progress: Progress
    selections: list[list[bytes]]
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    linked: dict[int, list[bytes]] = field(default_factory=dict)  # link id -> path of its first entry
    entries: int = 0
    size: int = 0
    zero_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def wanted(self, parts: list[bytes]) -> bool:
        """Whether the entry at ``parts`` is selected, or on the way to one that is."""
        return any(s[: len(parts)] == parts or parts[: len(s)] == s for s in self.selections)

    def directory(self, dir_fd: int, entry: TreeEntry, parts: list[bytes]) -> None:
        """Create what the directory ``entry`` holds inside ``dir_fd`` (already created)."""
        for child in children(self.repo, entry):
            at = [*parts, child.name]
            if not self.wanted(at):
                continue
            shown = shown_path(at)
            try:
                if child.kind == "dir":
                    os.mkdir(child.name, 0o700, dir_fd=dir_fd)
                    self.entries += 1
                    fd = os.open(child.name, _DIR_FLAGS, dir_fd=dir_fd)
                    try:
                        self.directory(fd, child, at)
                        self.set_meta(fd, child, shown)
                    finally:
                        os.close(fd)
                else:
                    self.leaf(dir_fd, child, at, shown)
            except OSError as exc:
                raise translate_os_error(exc, shown, output=True) from exc

    def leaf(self, dir_fd: int, entry: TreeEntry, parts: list[bytes], shown: str) -> None:
        self.entries += 1
        name = entry.name
        first = self.linked.get(entry.link_id) if entry.link_id else None
        if first is not None:  # another name of an inode already restored
            src_fd = self.open_dir(first[:-1])
            try:
                os.link(first[-1], name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            finally:
                if src_fd != self.root_fd:
                    os.close(src_fd)
            return
        if entry.link_id:
            self.linked[entry.link_id] = parts
        if entry.kind == "file":
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
            try:
                self.zero_bytes += fill_file(
                    self.repo, fd, entry.pieces, entry.size, entry.digest, shown,
                    threads=self.threads, progress=self.progress,
                )  # fmt: skip
                self.size += entry.size
                self.set_meta(fd, entry, shown)
            except BaseException:  # (a lost connection, a signal): no half-written file is left
                with suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                raise
            finally:
                os.close(fd)
        elif entry.kind == "symlink":
            os.symlink(entry.target, name, dir_fd=dir_fd)
            if self.as_root:
                os.chown(name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
            proc = b"/proc/self/fd/%d/%s" % (dir_fd, name)
            self.set_xattrs(proc, entry, shown, follow=False)
            os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        else:
            kind = _TYPES[entry.kind]
            try:
                os.mknod(name, 0o600 | kind, os.makedev(*entry.rdev), dir_fd=dir_fd)
            except PermissionError as exc:  # a device node, and not root: left out, as rsync does
                if entry.kind == "fifo":
                    raise
                self.entries -= 1
                self.warn(
                    f"{shown}: {entry.kind} {entry.rdev[0]},{entry.rdev[1]} not restored ({exc.strerror})"
                )
                return
            # Its metadata through an O_PATH descriptor: the node itself, never opened for I/O
            # (a device may act on open) and never a link planted in its place.
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
                    raise UsageError(f"{shown}: replaced while it was restored")
                self.set_meta(f"/proc/self/fd/{fd}".encode(), entry, shown)
            finally:
                os.close(fd)

    def open_dir(self, parts: list[bytes]) -> int:
        """A descriptor of the restored directory at ``parts``, reached from the root one
        component at a time without following any link."""
        fd = self.root_fd
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != self.root_fd:
                os.close(fd)
            fd = nxt
        return fd

    def set_meta(self, target: int | bytes, entry: TreeEntry, shown: str) -> None:
        """Owner (as root), xattrs, mode, then times, of an open file or directory (or an
        O_PATH node through its /proc path)."""
        if self.as_root:
            os.chown(target, entry.uid, entry.gid)
        self.set_xattrs(target, entry, shown, follow=True)
        os.chmod(target, entry.mode)
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))

    def set_xattrs(self, target: int | bytes, entry: TreeEntry, shown: str, *, follow: bool) -> None:
        for name, value in entry.xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.EINVAL):
                    raise
                self.warn(f"{shown}: xattr {name.decode('utf-8', 'replace')} not restored ({exc.strerror})")

    def warn(self, note: str) -> None:
        """Metadata or an entry the target refused: reported, and the restore goes on."""
        self.warnings.append(note)
        log.warning("%s", note)


def restore_tree(
    repo: Repository,
    snapshot: SnapshotInfo,
    out: str,
    *,
    paths: Sequence[str] = (),
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> RestoreResult:
    """Rebuild the tree snapshot ``snapshot`` in the directory ``out`` (created if missing;
    an existing one must be empty), with all its metadata; with ``paths``, only those
    entries (and the directories on the way to them). Every file is verified."""
    root = tree_root(repo, snapshot)
    selections = [split_path(p) for p in paths] or [[]]
    for parts in selections:
        find(repo, root, parts)  # EntryNotFoundError before anything is written
    fd = _open_target(out)
    restorer = Restorer(repo, fd, threads, progress, selections)
    progress.start(snapshot.size, f"checkout {snapshot.name}")
    try:
        restorer.directory(fd, root, [])
        try:
            restorer.set_meta(fd, root, out)
        except OSError as exc:
            raise translate_os_error(exc, out, output=True) from exc
    finally:
        progress.finish()
        os.close(fd)
    return RestoreResult(
        snapshot, out, restorer.entries, restorer.size, restorer.zero_bytes, tuple(restorer.warnings)
    )


def _open_target(out: str) -> int:
    """OUTDIR, created if missing; an existing one must be an empty directory."""
    try:
        os.mkdir(out, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError as exc:
        raise UsageError(f"{os.path.dirname(out) or '.'} does not exist") from exc
    except OSError as exc:
        raise translate_os_error(exc, out, output=True) from exc
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError as exc:
        raise UsageError(
            f"{out} exists and is not a directory", hint="a tree restores into a directory"
        ) from exc
    except OSError as exc:
        raise translate_os_error(exc, out, output=True) from exc
    if os.listdir(fd):
        os.close(fd)
        raise UsageError(f"{out} is not empty", hint="restore into a new or empty directory")
    return fd


def shown_path(parts: list[bytes]) -> str:
    return b"/".join(parts).decode("utf-8", "backslashreplace")
