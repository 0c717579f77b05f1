"""``snap mount``: the repository's snapshots as a read-only file system (FUSE, via mfusepy).

Layout (fixed when mounted; mount again to see newer snapshots)::

    ids/<id>                every snapshot by its 12-digit id
    names/<name>/<id>       every snapshot of a name
    latest/<name>           the newest snapshot of each name

A file snapshot is a file whose bytes are read from its chunks, each checked against its id
(a damaged chunk is an EIO for the reads that need it, the rest of the file stays readable).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from snapstore.errors import SnapstoreError
from snapstore.model import SnapshotInfo
from snapstore.ops.snapread import SnapshotReader
from snapstore.repo import Repository

OPEN_READERS = 4  # snapshots whose piece tables stay in memory between opens


def escape(name: str) -> str:
    """A snapshot name as one path component: '/' and '%' percent-encoded."""
    return name.replace("%", "%25").replace("/", "%2F")


@dataclass(frozen=True)
class Tree:
    """The mount's directories and files: path -> names in it, path -> snapshot."""

    dirs: dict[str, list[str]]
    files: dict[str, SnapshotInfo]

    @classmethod
    def of(cls, snapshots: list[SnapshotInfo]) -> Tree:
        dirs: dict[str, list[str]] = {
            "/": ["ids", "names", "latest"],
            "/ids": [],
            "/names": [],
            "/latest": [],
        }
        files: dict[str, SnapshotInfo] = {}
        newest: dict[str, SnapshotInfo] = {}
        for s in sorted(snapshots, key=lambda s: (s.created, s.hex)):
            short = s.hex[:12]
            name = escape(s.name) or "-"
            files[f"/ids/{short}"] = s
            dirs["/ids"].append(short)
            if f"/names/{name}" not in dirs:
                dirs["/names"].append(name)
                dirs[f"/names/{name}"] = []
            dirs[f"/names/{name}"].append(short)
            files[f"/names/{name}/{short}"] = s
            newest[name] = s
        for name, s in newest.items():
            dirs["/latest"].append(name)
            files[f"/latest/{name}"] = s
        return cls(dirs, files)


class SnapshotFS:
    """The FUSE operations (mfusepy calls them from its threads)."""

    use_ns = True

    def __init__(self, repo: Repository, snapshots: list[SnapshotInfo]) -> None:
        self._repo = repo
        self._tree = Tree.of(snapshots)
        self._readers: OrderedDict[bytes, SnapshotReader] = OrderedDict()
        self._lock = threading.Lock()
        self._uid, self._gid = os.getuid(), os.getgid()
        self._mounted_ns = time.time_ns()  # the directories' times

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    # -- operations -----------------------------------------------------------------------------

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        if path in self._tree.dirs:
            return self._attrs(stat.S_IFDIR | 0o555, 0, self._mounted_ns, nlink=2)
        snap = self._tree.files.get(path)
        if snap is None:
            raise _error(errno.ENOENT)
        return self._attrs(stat.S_IFREG | 0o444, snap.size, int(snap.created.timestamp() * 1e9))

    def readdir(self, path: str, fh: Any) -> list[str]:
        names = self._tree.dirs.get(path)
        if names is None:
            raise _error(errno.ENOTDIR if path in self._tree.files else errno.ENOENT)
        return [".", "..", *names]

    def open(self, path: str, flags: int) -> int:
        snap = self._tree.files.get(path)
        if snap is None:
            raise _error(errno.EISDIR if path in self._tree.dirs else errno.ENOENT)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise _error(errno.EROFS)
        self._reader(snap)  # reads the piece table now: a damaged manifest fails the open
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        snap = self._tree.files.get(path)
        if snap is None:
            raise _error(errno.ENOENT)
        return self._reader(snap).read(offset, size)

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # -- inside ---------------------------------------------------------------------------------

    def _attrs(self, mode: int, size: int, time_ns: int, nlink: int = 1) -> dict[str, int]:
        return {
            "st_mode": mode,
            "st_size": size,
            "st_nlink": nlink,
            "st_uid": self._uid,
            "st_gid": self._gid,
            "st_mtime": time_ns,
            "st_ctime": time_ns,
            "st_atime": time_ns,
            "st_blocks": (size + 511) // 512,
        }

    def _reader(self, snap: SnapshotInfo) -> SnapshotReader:
        with self._lock:
            reader = self._readers.get(snap.id)
            if reader is not None:
                self._readers.move_to_end(snap.id)
                return reader
        try:
            reader = SnapshotReader(self._repo, snap)
        except SnapstoreError as exc:
            raise _error(errno.EIO) from exc
        with self._lock:
            self._readers[snap.id] = reader
            while len(self._readers) > OPEN_READERS:  # dropped, not closed: a read under way
                self._readers.popitem(last=False)  # keeps its reader until it ends
        return reader


def _error(code: int) -> Exception:
    """The FUSE library's errno-carrying exception (imported with it, lazily)."""
    from mfusepy import FuseOSError

    error: Exception = FuseOSError(code)
    return error


def mount(
    repo: Repository, snapshots: list[SnapshotInfo], mountpoint: str, on_ready: Callable[[], None]
) -> None:
    """Mount the snapshots read-only at ``mountpoint`` and serve until unmounted (Ctrl-C,
    SIGTERM or ``fusermount -u``); libfuse unmounts on those signals."""
    from mfusepy import FUSE

    fs = SnapshotFS(repo, snapshots)
    on_ready()
    try:
        FUSE(fs, mountpoint, foreground=True, ro=True, fsname="snapstore", subtype="snapstore")
    finally:
        fs.close()
