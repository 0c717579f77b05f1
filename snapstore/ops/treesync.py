"""In-place sync of a tree snapshot into an existing directory (``snap checkout ID -o DIR
--in-place [--delete] [--dry-run] [--checksum]``): rsync's job, done from a snapshot.

Each entry of the snapshot is compared with what the target holds at its path, and only what
differs is written:

- a regular file whose size and mtime_ns equal the entry's is taken as holding its content
  (rsync's quick check; ``checksum``: its bytes are hashed along the entry's chunk boundaries
  instead); any other has its content rewritten in place by the file ``--in-place`` code
  (snapstore.ops.inplace.rewrite: only the 4 KiB blocks that differ are written, zero runs
  are punched); then only the metadata that differs (owner as root, xattrs, mode, mtime, in
  that order) is set, so a file that already matches is not touched at all (same inode, same
  ctime);
- an entry of another type (a symlink where the snapshot has a file, a symlink with another
  target, a device with other numbers) is replaced: the new one is made under a temp name
  and renamed over it; a directory in the way of a non-directory only with ``delete``;
- entries the snapshot does not have are removed only with ``delete`` (leftover temp names
  of an interrupted sync always);
- hard links end up as in the snapshot: the target's inode a file keeps is claimed by it, and
  another entry found on a claimed inode gets a file (or link) of its own; an entry of a
  hard-link group found on another inode than the group's first becomes a link to it;
- a directory's metadata is set after everything in it (directory times last).

Nothing is followed: every entry is reached from an open descriptor of its directory
(``O_NOFOLLOW``, ``O_PATH``), names are single components (checked when decoded), and a
symlink planted in the target where the snapshot has a directory is replaced, never entered.
Every step compares before it writes, so a sync interrupted (kill -9) and run again finishes
the job. Files are not fsynced (as a restore).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from snapstore.errors import UsageError, translate_os_error
from snapstore.model import SnapshotInfo, TreeEntry
from snapstore.ops.commit import default_threads
from snapstore.ops.inplace import Rewrite, rewrite
from snapstore.ops.treemeta import KINDS, PATH_FLAGS, differing, read_xattrs, set_differing
from snapstore.ops.treeread import children, find, split_path, tree_root, walk
from snapstore.ops.treerestore import Restorer, shown_path
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import ChunkPrefetch, Repository

TEMP_PREFIX = b".snap-sync-tmp-"  # an entry being made, renamed over its name when whole
SMALL_FILE = 4 << 20  # files up to this size are compared in the calling thread
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ACTIONS = ("created", "updated", "metadata", "replaced", "deleted")


@dataclass(frozen=True)
class SyncAction:
    """One thing the sync did (dry run: would do) at ``path`` (inside the snapshot)."""

    action: str  # created | updated | metadata | replaced | deleted
    path: bytes
    kind: str  # the snapshot's kind (deleted: the target's)
    size: int = 0  # created/replaced: content bytes; updated: bytes written; deleted: file size
    fields: tuple[str, ...] = ()  # updated/metadata: content, owner, xattrs, mode, mtime


@dataclass
class SyncResult:
    snapshot: SnapshotInfo
    path: str
    dry_run: bool
    delete: bool
    actions: list[SyncAction] = field(default_factory=list)
    unchanged: int = 0  # entries left as they were
    rewrite: Rewrite = field(default_factory=Rewrite)  # the in-place content rewrites, summed
    warnings: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(a.action == action for a in self.actions)

    def bytes_of(self, action: str) -> int:
        return sum(a.size for a in self.actions if a.action == action)

    @property
    def written_bytes(self) -> int:
        """File bytes written: whole files made, blocks rewritten (hard links once)."""
        return self.bytes_of("created") + self.bytes_of("replaced") + self.bytes_of("updated")


def sync_tree(
    repo: Repository,
    snapshot: SnapshotInfo,
    out: str,
    *,
    delete: bool = False,
    dry_run: bool = False,
    checksum: bool = False,
    paths: Sequence[str] = (),
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> SyncResult:
    """Bring the existing directory ``out`` to the state of the tree snapshot ``snapshot``,
    writing only what differs (module docstring); with ``paths``, only those entries (and
    the directories on the way to them). ``dry_run``: nothing is changed, the result lists
    what would be. Raises UsageError (``out`` not a directory), IntegrityError,
    StorageIOError, NoSpaceError (snapstore.errors)."""
    root = tree_root(repo, snapshot)
    selections = [split_path(p) for p in paths] or [[]]
    for parts in selections:
        find(repo, root, parts)  # EntryNotFoundError before anything is written
    root_fd = _open_target(out)
    n = threads or default_threads()
    res = SyncResult(snapshot, out, dry_run, delete)
    progress.start(snapshot.size, f"checkout --in-place {snapshot.name}")
    try:
        with repo.prefetch_chunks() as chunks, ThreadPoolExecutor(n, thread_name_prefix="sync") as pool:
            syncer = _Syncer(
                repo, root_fd, Restorer(repo, root_fd, threads, progress, selections), res,
                chunks, pool, n, checksum, progress,
            )  # fmt: skip
            try:
                syncer.directory(root_fd, root, [], os.fstat(root_fd))
            except OSError as exc:
                raise translate_os_error(exc, out, output=True) from exc
    finally:
        progress.finish()
        os.close(root_fd)
    res.warnings.extend(syncer.restorer.warnings)
    return res


@dataclass
class _Syncer:
    repo: Repository
    root_fd: int
    restorer: Restorer  # makes what is missing (its hard-link map is shared)
    res: SyncResult
    chunks: ChunkPrefetch
    pool: ThreadPoolExecutor
    threads: int
    checksum: bool
    progress: Progress
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    claimed: dict[tuple[int, int], int] = field(default_factory=dict)  # target inode -> link id
    group_inode: dict[int, tuple[int, int] | None] = field(default_factory=dict)  # None: to be made

    @property
    def dry_run(self) -> bool:
        return self.res.dry_run

    def act(
        self, action: str, parts: list[bytes], kind: str, size: int = 0, fields: Sequence[str] = ()
    ) -> None:
        self.res.actions.append(SyncAction(action, b"/".join(parts), kind, size, tuple(fields)))

    # -- directories

    def directory(self, fd: int, entry: TreeEntry, parts: list[bytes], before: os.stat_result) -> None:
        """Sync what the directory ``entry`` holds into the open directory ``fd``, then its
        own metadata (as it was ``before``)."""
        whole = any(parts[: len(s)] == s for s in self.restorer.selections)
        wanted = children(self.repo, entry)
        names = {c.name for c in wanted}
        if not self.dry_run and not self.as_root and before.st_mode & 0o700 != 0o700:
            os.chmod(fd, stat.S_IMODE(before.st_mode) | 0o700)  # to write in it; set back below
        for name in sorted(os.fsencode(n) for n in os.listdir(fd)):
            if name in names:
                continue
            if name.startswith(TEMP_PREFIX):
                self.remove(fd, name, [*parts, name], quiet=True)
            elif whole and self.res.delete:
                self.remove(fd, name, [*parts, name])
        for child in wanted:
            at = [*parts, child.name]
            if self.restorer.wanted(at):
                try:
                    self.entry(fd, child, at)
                except OSError as exc:
                    raise translate_os_error(exc, shown_path(at), output=True) from exc
        self.metadata(fd, entry, parts, before, fd=fd)

    def entry(self, dir_fd: int, entry: TreeEntry, parts: list[bytes]) -> None:
        name = entry.name
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and entry.kind != "dir":
            if not self.res.delete:
                self.warn(
                    f"{shown_path(parts)}: a directory is in the way of a {entry.kind} (--delete replaces it)"
                )
                return
            self.remove(dir_fd, name, parts)
            st = None
        if entry.kind == "dir":
            if st is not None and not stat.S_ISDIR(st.st_mode):
                self.remove(dir_fd, name, parts, quiet=True)
                self.create(dir_fd, entry, parts, "replaced")
            elif st is None:
                self.create(dir_fd, entry, parts, "created")
            else:
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self.directory(fd, entry, parts, st)
                finally:
                    os.close(fd)
            return
        if st is None:
            self.create(dir_fd, entry, parts, "created")
        elif KINDS.get(stat.S_IFMT(st.st_mode)) != entry.kind or not self.same_node(dir_fd, entry, st):
            self.create(dir_fd, entry, parts, "replaced")
        elif entry.kind == "file":
            self.file(dir_fd, entry, parts, st)
        else:
            self.metadata(dir_fd, entry, parts, st)

    def same_node(self, dir_fd: int, entry: TreeEntry, st: os.stat_result) -> bool:
        """Whether a non-directory of the entry's kind is the entry's: a symlink's target,
        a device's numbers."""
        if entry.kind == "symlink":
            return os.readlink(entry.name, dir_fd=dir_fd) == entry.target
        if entry.kind in ("chardev", "blockdev"):
            return (os.major(st.st_rdev), os.minor(st.st_rdev)) == entry.rdev
        return True

    # -- files

    def file(self, dir_fd: int, entry: TreeEntry, parts: list[bytes], st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        group = self.group(entry.link_id) if entry.link_id else False
        if group is not False:  # a later name of a hard-link group
            if group == key:
                self.res.unchanged += 1
                self.progress.skip(entry.size)
            else:
                self.create(dir_fd, entry, parts, "replaced")
            return
        if key in self.claimed:  # another entry keeps this inode: this one gets its own
            self.create(dir_fd, entry, parts, "replaced")
            return
        self.claimed[key] = entry.link_id
        if entry.link_id:
            self.group_inode[entry.link_id] = key
            self.restorer.linked[entry.link_id] = parts
        written: Rewrite | None = None
        if self.checksum or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            written = self.content(dir_fd, entry, parts, st)
        else:
            self.progress.skip(entry.size)
        self.metadata(dir_fd, entry, parts, st, written=written)

    def content(self, dir_fd: int, entry: TreeEntry, parts: list[bytes], st: os.stat_result) -> Rewrite:
        """Rewrite the file's bytes where they differ from the entry's."""
        node = os.open(entry.name, PATH_FLAGS, dir_fd=dir_fd)
        try:
            now = os.fstat(node)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                raise UsageError(f"{shown_path(parts)}: replaced while it was synced")
            proc = f"/proc/self/fd/{node}"
            flags = (os.O_RDONLY if self.dry_run else os.O_RDWR) | os.O_CLOEXEC
            try:
                fd = os.open(proc, flags)
            except PermissionError:
                if self.as_root or self.dry_run or now.st_uid != os.geteuid():
                    raise
                os.chmod(proc, stat.S_IMODE(now.st_mode) | 0o600)  # its mode is set after
                fd = os.open(proc, flags)
        finally:
            os.close(node)
        counts = Rewrite()
        try:
            if not self.dry_run and now.st_size != entry.size:
                os.ftruncate(fd, entry.size)
            rewrite(
                self.chunks, self.pool if entry.size > SMALL_FILE else None, self.threads, fd,
                entry.pieces, entry.size, now.st_size, device=False, dry_run=self.dry_run,
                what=shown_path(parts), counts=counts, progress=self.progress,
            )  # fmt: skip
        finally:
            os.close(fd)
        total = self.res.rewrite
        total.write_bytes += counts.write_bytes
        total.zeroed_bytes += counts.zeroed_bytes
        total.punched_bytes += counts.punched_bytes
        total.unchanged_bytes += counts.unchanged_bytes
        total.chunks_written += counts.chunks_written
        return counts

    # -- metadata

    def metadata(
        self,
        dir_fd: int,
        entry: TreeEntry,
        parts: list[bytes],
        before: os.stat_result,
        *,
        fd: int | None = None,
        written: Rewrite | None = None,
    ) -> None:
        """Set the entry's metadata that differs from the target's, reported as it was
        ``before`` (a content rewrite or the entries made in a directory change some)."""
        path: int | bytes = fd if fd is not None else b"/proc/self/fd/%d/%s" % (dir_fd, entry.name)
        fields = differing(entry, before, read_xattrs(path), owner=self.as_root)
        if written is not None and (
            written.write_bytes + written.zeroed_bytes + written.punched_bytes or before.st_size != entry.size
        ):
            self.act(
                "updated", parts, entry.kind, written.write_bytes + written.zeroed_bytes, ("content", *fields)
            )
        elif fields:
            self.act("metadata", parts, entry.kind, 0, fields)
        else:
            self.res.unchanged += 1
        if self.dry_run or (written is None and fd is None and not fields):
            return  # (a directory's own entries, made or removed, may have moved its mtime)
        now = os.fstat(fd) if fd is not None else os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        if KINDS.get(stat.S_IFMT(now.st_mode)) != entry.kind:
            raise UsageError(f"{shown_path(parts) or '.'}: replaced while it was synced")
        xattrs = read_xattrs(path) if "xattrs" in fields else entry.xattrs
        todo = differing(entry, now, xattrs, owner=self.as_root)
        if not todo:
            return
        set_differing(self.restorer, dir_fd, entry, parts, todo, xattrs, fd)

    # -- making and removing

    def create(self, dir_fd: int, entry: TreeEntry, parts: list[bytes], action: str) -> None:
        """Make the entry (a directory with everything in it) where there is none
        ("created"), or under a temp name renamed over what is there ("replaced")."""
        shown = shown_path(parts)
        if entry.kind == "dir":
            self.act(action, parts, "dir")
            for at, e in list(walk(self.repo, entry, b"/".join(parts)))[1:]:
                if self.restorer.wanted(at.split(b"/")):
                    linked = e.link_id in self.restorer.linked or e.link_id in self.group_inode
                    self.act(
                        "created", at.split(b"/"), e.kind, e.size if e.kind == "file" and not linked else 0
                    )
                    if self.dry_run and e.link_id:
                        self.group_inode.setdefault(e.link_id, None)
            if self.dry_run:
                return
            os.mkdir(entry.name, 0o700, dir_fd=dir_fd)
            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                self.restorer.directory(fd, entry, parts)
                self.restorer.set_meta(fd, entry, shown)
            finally:
                os.close(fd)
            return
        linked = entry.link_id in self.restorer.linked or entry.link_id in self.group_inode
        self.act(action, parts, entry.kind, entry.size if entry.kind == "file" and not linked else 0)
        if self.dry_run:
            if entry.link_id:
                self.group_inode.setdefault(entry.link_id, None)
            return
        if action == "replaced":
            temp = TEMP_PREFIX + secrets.token_hex(6).encode()
            self.restorer.leaf(dir_fd, replace(entry, name=temp), parts, shown)
            try:
                os.rename(temp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileNotFoundError:  # not made (a device node, not root): warned
                return
        else:
            self.restorer.leaf(dir_fd, entry, parts, shown)

    def group(self, link_id: int) -> tuple[int, int] | bool | None:
        """The target inode of a hard-link group's first entry: False before it was synced,
        None if it is to be made (a dry run)."""
        if link_id in self.group_inode:
            return self.group_inode[link_id]
        first = self.restorer.linked.get(link_id)
        if first is None:
            return False
        fd = self.restorer.open_dir(first[:-1])
        try:
            st = os.stat(first[-1], dir_fd=fd, follow_symlinks=False)
        finally:
            if fd != self.root_fd:
                os.close(fd)
        key = self.group_inode[link_id] = (st.st_dev, st.st_ino)
        self.claimed[key] = link_id
        return key

    def remove(self, dir_fd: int, name: bytes, parts: list[bytes], *, quiet: bool = False) -> None:
        """Remove what the target has at ``name`` (a directory with everything in it),
        never following a link; reported as deleted unless ``quiet``."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "unknown")
        if kind == "dir":
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                if not self.dry_run and not self.as_root and st.st_mode & 0o700 != 0o700:
                    os.chmod(fd, 0o700)
                for child in sorted(os.fsencode(n) for n in os.listdir(fd)):
                    self.remove(fd, child, [*parts, child], quiet=quiet)
            finally:
                os.close(fd)
            if not self.dry_run:
                os.rmdir(name, dir_fd=dir_fd)
        elif not self.dry_run:
            os.unlink(name, dir_fd=dir_fd)
        if not quiet:
            self.act("deleted", parts, kind, st.st_size if kind == "file" else 0)

    def warn(self, note: str) -> None:
        self.restorer.warn(note)


def _open_target(out: str) -> int:
    """The existing directory ``out`` (followed if a symlink: the user named it)."""
    try:
        return os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise UsageError(
            f"{out} does not exist", hint="--in-place syncs an existing directory; drop it to restore"
        ) from exc
    except NotADirectoryError as exc:
        raise UsageError(f"{out} is not a directory", hint="a tree snapshot syncs into a directory") from exc
    except OSError as exc:
        raise translate_os_error(exc, out, output=True) from exc
