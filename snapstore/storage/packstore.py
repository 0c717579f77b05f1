"""Pack files under ``packs/``: append-only while written, then sealed; later only
hole-punched (dead chunk records) or removed whole (docs/FORMAT.md, "packs" and "gc")."""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
import os
import re
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

from snapstore.errors import CorruptError, SnapstoreError, StorageIOError, translate_os_error
from snapstore.format import pack as fmt
from snapstore.gcplan import merge
from snapstore.model import Buffer, ChunkLocation, PackId
from snapstore.storage import fsio, packread
from snapstore.storage.packread import FdBytes

log = logging.getLogger(__name__)
_OPEN_FILES = 64  # pack descriptors kept open by the whole process (every thread)


class PackWriter:
    """One pack being written by the current process.

    After any failed write or fsync the writer is broken: what the pack holds past the last
    successful fsync is unknown (a failed fsync may have dropped those pages), so it can no
    longer be synced or sealed, only aborted back to what the index already points at."""

    checkpoints = True  # sync() makes a prefix durable (see storage/objpacks.py)

    def __init__(self, path: Path, pack_id: PackId, mode: int, version: int) -> None:
        self.path = path
        self.pack_id = pack_id
        self._table = bytearray() if version >= 2 else None  # the trailer's entries, so far
        self._dir = -1
        self._fd = -1
        try:
            with suppress(FileExistsError):
                os.mkdir(path.parent, fsio.dir_mode(mode))
            self._dir = fsio.open_dir(path.parent, what=f"pack directory {fsio.shown(path.parent)}")
            self._fd = fsio.open_file(
                path.name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                mode,
                what=f"pack {pack_id.hex()}",
                dir_fd=self._dir,
            )
        except OSError as exc:
            self._close_dir()
            raise translate_os_error(exc, fsio.shown(path)) from exc
        except BaseException:
            self._close_dir()
            raise
        self.size = 0
        self.durable_size = 0  # bytes made durable by sync(); index entries may point below it
        self.indexed_size = 0  # bytes the index points into (set by the repository); kept by abort
        self._broken: OSError | None = None  # the failure that broke it
        try:
            self._write(fmt.encode_pack_header(version))
        except BaseException:
            self.abort()
            raise

    def _close_dir(self) -> None:
        if self._dir >= 0:
            with suppress(OSError):
                os.close(self._dir)
            self._dir = -1

    def _fail(self, exc: OSError) -> Exception:
        self._broken = self._broken or exc
        return translate_os_error(exc, f"pack {self.path.name}")

    def _check_usable(self) -> None:
        """A broken writer keeps reporting what broke it (a full disk stays a full disk for
        every thread that appends after it)."""
        if self._broken is not None:
            raise translate_os_error(self._broken, f"pack {self.path.name}") from self._broken

    def _write(self, *parts: Buffer) -> None:
        """Append ``parts``."""
        self._check_usable()
        try:
            self.size += fsio.pwritev_all(self._fd, list(parts), self.size)
        except OSError as exc:
            raise self._fail(exc) from exc

    def append(self, chunk_id: bytes, codec: int, raw_size: int, payload: Buffer) -> ChunkLocation:
        offset = self.size
        stored_size = len(payload)
        self._write(fmt.encode_record_header(chunk_id, codec, raw_size, stored_size), payload)
        if self._table is not None:
            self._table += fmt.encode_table_entry(chunk_id, offset, codec, raw_size, stored_size)
        base = fmt.delta_base(codec, payload)
        return ChunkLocation(self.pack_id, offset, stored_size, raw_size, codec, 0, base=base)

    def sync(self, upto: int) -> None:
        """Make the first ``upto`` bytes durable, keeping the pack open (a checkpoint; other
        threads may go on appending meanwhile)."""
        self._check_usable()
        try:
            os.fsync(self._fd)
            if not self.durable_size:
                os.fsync(self._dir)
        except OSError as exc:
            raise self._fail(exc) from exc
        self.durable_size = max(self.durable_size, upto)

    def seal(self) -> None:
        """Make every appended record durable (fsync file and directory) and close. Sealing
        a sealed pack does nothing."""
        if self._fd < 0 and self._broken is None:
            return
        if self._table is not None:
            self._write(fmt.encode_trailer(bytes(self._table), self.size))
            self._table = None
        self.sync(self.size)
        try:
            os.close(self._fd)
        except OSError as exc:
            raise self._fail(exc) from exc
        finally:
            self._fd = -1
        self._close_dir()

    def abort(self) -> None:
        """Drop what no index entry points at (a failed commit): the whole pack, or after a
        checkpoint only the records appended since (the tail is truncated away)."""
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._dir < 0:
            return  # sealed, or aborted already
        try:
            if self.indexed_size:
                with suppress(OSError, CorruptError):
                    fd = fsio.open_file(self.path.name, os.O_WRONLY, what="pack", dir_fd=self._dir)
                    try:
                        os.ftruncate(fd, self.indexed_size)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            else:
                # Left behind if this fails: gc removes packs no index entry points into.
                with suppress(OSError):
                    os.unlink(self.path.name, dir_fd=self._dir)
        finally:
            self._close_dir()


class _Open:
    """A cached pack descriptor and how many reads use it right now."""

    __slots__ = ("dropped", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 1
        self.dropped = False  # evicted or forgotten while in use: closed by its last user


class OpenPacks:
    """The process's open pack descriptors, shared by every thread: at most ``limit`` kept
    open (least recently used closed first), plus those being read right now. A descriptor
    is never closed while another thread reads from it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, PackId], _Open] = OrderedDict()

    def acquire(self, key: tuple[int, PackId], opener: Callable[[], int]) -> _Open:
        """The entry of ``key``, opened by ``opener`` if it is not cached; release() it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
                self._entries.move_to_end(key)
                return entry
        fd = opener()  # outside the lock: other threads read meanwhile
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # another thread opened it meanwhile
                entry.users += 1
                self._entries.move_to_end(key)
            else:
                entry = self._entries[key] = _Open(fd)
                fd = -1
                self._trim(self._limit)
        if fd >= 0:
            os.close(fd)
        return entry

    def release(self, entry: _Open) -> None:
        with self._lock:
            entry.users -= 1
            if entry.dropped and not entry.users:
                _close(entry.fd)

    def trim(self, keep: int = 0) -> None:
        """Close idle descriptors until at most ``keep`` are cached (too many open files)."""
        with self._lock:
            self._trim(keep)

    def drop(self, match: Callable[[tuple[int, PackId]], bool]) -> None:
        """Forget the descriptors whose key matches (closed once no read uses them)."""
        with self._lock:
            for key in [k for k in self._entries if match(k)]:
                self._discard(key)

    def _trim(self, keep: int) -> None:
        over = len(self._entries) - keep
        for key in list(self._entries):  # least recently used first
            if over <= 0:
                return
            if not self._entries[key].users:
                self._discard(key)
                over -= 1

    def _discard(self, key: tuple[int, PackId]) -> None:
        entry = self._entries.pop(key)
        entry.dropped = True
        if not entry.users:
            _close(entry.fd)


def _close(fd: int) -> None:
    with suppress(OSError):
        os.close(fd)


OPEN_PACKS = OpenPacks(_OPEN_FILES)
_STORES = itertools.count()
_PACK_NAME = re.compile(r"([0-9a-f]{32})\.pack")
_SUB_NAME = re.compile(r"[0-9a-f]{2}")


class PackStore:
    """Packs as files below a pinned local directory, with the fast paths of a local disk
    (a cache of open descriptors, pread, fallocate punch, ftruncate, read-ahead hints)."""

    local = True  # packs have paths (storage/prefetch.py); storage/objpacks.py has none

    def __init__(self, root: Path, file_mode: int, version: int, *, shown_root: Path | None = None) -> None:
        self.root = root  # pinned (storage/dirs.py): every open goes through it
        self.version = version  # the repository's format: packs of version 2 and up have trailers
        self.shown_root = shown_root or root  # packs/ as the user knows it
        self.file_mode = file_mode
        self._token = next(_STORES)  # this store's keys in OPEN_PACKS
        self._warned: set[str] = set()  # stray or unusable entries already reported

    def path(self, pack_id: PackId) -> Path:
        """Where a pack is, as the user knows it (messages, read-only hints)."""
        return _pack_path(self.shown_root, pack_id)

    def _pinned(self, pack_id: PackId) -> Path:
        return _pack_path(self.root, pack_id)

    def create(self) -> PackWriter:
        pack_id = PackId(secrets.token_bytes(16))
        return PackWriter(self._pinned(pack_id), pack_id, self.file_mode, self.version)

    def iter_pack_ids(self) -> Iterator[PackId]:
        """Every pack on disk. Names outside ``<xx>/<pack id>.pack`` (lowercase hex) and
        entries that are not regular files (directories, links, FIFOs) are left out, with one
        warning each: their chunks cannot be read."""
        try:
            with os.scandir(self.root) as it:
                entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, fsio.shown(self.root)) from exc
        for sub, is_dir in entries:
            if not (is_dir and _SUB_NAME.fullmatch(sub)):
                self._warn(sub, "not a pack directory")
                continue
            try:
                with os.scandir(self.root / sub) as it:
                    names = sorted((e.name, e.is_file(follow_symlinks=False)) for e in it)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise translate_os_error(exc, fsio.shown(self.root / sub)) from exc
            for name, is_file in names:
                match = _PACK_NAME.fullmatch(name)
                if not match or not name.startswith(sub):
                    self._warn(f"{sub}/{name}", "not a pack name")
                elif not is_file:
                    self._warn(f"{sub}/{name}", "not a regular file; its chunks cannot be read")
                else:
                    yield PackId(bytes.fromhex(match.group(1)))

    def _warn(self, name: str, why: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("ignoring %s in %s: %s", repr(name), self.shown_root, why)

    def _open(self, pack_id: PackId, flags: int) -> int:
        """A descriptor of a pack, through no link (``packs/<xx>`` included)."""
        what = f"pack {pack_id.hex()}"
        path = self._pinned(pack_id)
        sub = fsio.open_dir(path.parent, what=what)
        try:
            return fsio.open_file(path.name, flags, what=what, dir_fd=sub)
        finally:
            os.close(sub)

    def _open_for_reading(self, pack_id: PackId) -> int:
        what = f"pack {pack_id.hex()}"
        for attempt in range(2):
            try:
                return self._open(pack_id, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise CorruptError(what, "missing") from exc
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and not attempt:
                    OPEN_PACKS.trim()  # close idle packs, and try once more
                    continue
                raise _translate(exc, what) from exc
        raise AssertionError("unreachable")

    def usable(self, pack_id: PackId) -> bool:
        """Whether a pack can be opened for reading as a regular file (a commit may dedup
        against its chunks)."""
        try:
            OPEN_PACKS.release(
                OPEN_PACKS.acquire((self._token, pack_id), lambda: self._open_for_reading(pack_id))
            )
        except SnapstoreError:
            return False
        return True

    def read_record(self, loc: ChunkLocation, chunk_id: bytes) -> memoryview:
        """The stored payload of the record at ``loc`` (a view, not a copy), after checking
        its header."""
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack_id.hex()[:16]}"
        size = fmt.RECORD_HEADER_SIZE + loc.stored_size
        entry = OPEN_PACKS.acquire((self._token, loc.pack_id), lambda: self._open_for_reading(loc.pack_id))
        try:
            data = os.pread(entry.fd, size, loc.offset)
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        finally:
            OPEN_PACKS.release(entry)
        return packread.record_payload(data, loc, chunk_id, what)

    def check_header(self, pack_id: PackId) -> None:
        """Raise CorruptError unless the pack starts with a valid pack header."""
        what = f"pack {pack_id.hex()}"
        try:
            fd = self._open(pack_id, os.O_RDONLY)
            try:
                header = os.pread(fd, fmt.PACK_HEADER_SIZE, 0)
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise CorruptError(what, "missing") from exc
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        fmt.check_pack_header(header, what, repo_version=self.version)

    def is_empty(self, pack_id: PackId) -> bool | None:
        """Whether the pack holds no byte (a commit killed before it wrote any); None: gone."""
        try:
            return self.path(pack_id).stat().st_size == 0
        except FileNotFoundError:
            return None

    def records(self, pack_id: PackId) -> Iterator[tuple[int, fmt.RecordHeader]]:
        """Every record of a pack with its offset: from its trailer (a few reads at its end)
        where it has a whole one, else by :meth:`scan` (a pack gone: nothing)."""
        entries = self.trailer(pack_id)
        if entries is None:
            yield from self.scan(pack_id)
            return
        for e in entries:
            yield e.offset, fmt.RecordHeader(e.chunk_id, e.codec, e.raw_size, e.stored_size)

    def scan(self, pack_id: PackId) -> Iterator[tuple[int, fmt.RecordHeader]]:
        """Every valid record of a pack with its offset, skipping zeroed or damaged bytes.

        A torn tail (a crash mid-append) ends the scan: its record is not whole. The pack
        header is not checked here (see :meth:`check_header`): each record carries its own
        magic and checksum, and each chunk is checked against its id when it is read, so a
        damaged pack header costs no chunk."""
        what = f"pack {pack_id.hex()}"
        try:
            with os.fdopen(self._open(pack_id, os.O_RDONLY), "rb") as f:
                yield from packread.scan(FdBytes(f.fileno()), what)
        except FileNotFoundError:
            return  # removed meanwhile (a gc beside a reader building a temporary index)
        except OSError as exc:
            raise translate_os_error(exc, what) from exc

    def rewrite_header(self, pack_id: PackId) -> None:
        """Write the pack header again (repair: its 16 bytes are the same in every pack)."""
        try:
            fd = self._open(pack_id, os.O_WRONLY)
            try:
                os.pwrite(fd, fmt.encode_pack_header(self.version), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def punch(self, pack_id: PackId, ranges: list[tuple[int, int]]) -> None:
        """Free the ``(offset, length)`` ranges of a pack (they read as zeros), durably. A
        trailer is first written again without the records in them, so that it never lists a
        punched record."""

        merged = merge(ranges)
        starts = [offset for offset, _ in merged]

        def outside(e: fmt.TableEntry) -> bool:  # overlaps no range (the last starting before its end)
            i = bisect.bisect_left(starts, e.end) - 1
            return i < 0 or sum(merged[i]) <= e.offset

        def punch(fd: int) -> None:
            if self.version >= 2:
                self._retable(fd, outside)
            for offset, length in merged:
                fsio.punch_hole(fd, offset, length)

        self._modify(pack_id, punch)

    def truncate(self, pack_id: PackId, length: int) -> None:
        """Cut a pack's records back to the first ``length`` bytes (never below its header),
        durably; a trailer is written again after them, listing the records kept."""
        length = max(length, fmt.PACK_HEADER_SIZE)

        def cut(fd: int) -> None:
            if self.version >= 2:
                self._retable(fd, lambda e: e.end <= length, cut_at=length)
            elif os.fstat(fd).st_size > length:
                os.ftruncate(fd, length)

        self._modify(pack_id, cut)

    def _retable(self, fd: int, keep: Callable[[fmt.TableEntry], bool], *, cut_at: int | None = None) -> None:
        """Write the trailer of an open pack again with the records ``keep`` accepts, after
        its records (or after the first ``cut_at`` bytes)."""
        packread.retable(FdBytes(fd), keep, cut_at=cut_at)

    def _modify(self, pack_id: PackId, change: Callable[[int], None]) -> None:
        """Apply ``change`` to a stored pack and fsync it; a pack already gone, or one that
        is not a regular file (left for the user, with a warning), is left so."""
        try:
            fd = self._open(pack_id, os.O_RDWR)
            try:
                change(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return
        except CorruptError as exc:
            self._warn(pack_id.hex(), exc.detail)
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def sizes(self, pack_id: PackId) -> tuple[int, int]:
        """(allocated bytes, length) of a pack; (0, 0) if it is gone or not a regular file.
        The length of a pack with a trailer ends where its records end."""
        path = self._pinned(pack_id)
        try:
            sub = fsio.open_dir(path.parent, what=f"pack {pack_id.hex()}")
            try:
                st = os.stat(path.name, dir_fd=sub, follow_symlinks=False)
            finally:
                os.close(sub)
        except (FileNotFoundError, CorruptError):
            return 0, 0
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc
        if not stat.S_ISREG(st.st_mode):
            return 0, 0
        length = st.st_size
        if self.version >= 2:
            with suppress(FileNotFoundError, CorruptError):
                fd = self._open(pack_id, os.O_RDONLY)
                try:
                    footer = fmt.decode_footer(
                        os.pread(fd, fmt.FOOTER_SIZE, max(0, length - fmt.FOOTER_SIZE)), length
                    )
                finally:
                    os.close(fd)
                if footer is not None:
                    length = footer[1]
        return st.st_blocks * 512, length

    def delete(self, pack_id: PackId) -> None:
        self.forget(pack_id)
        path = self._pinned(pack_id)
        try:
            sub = fsio.open_dir(path.parent, what=f"pack {pack_id.hex()}")
            try:
                os.unlink(path.name, dir_fd=sub)
                os.fsync(sub)
            finally:
                os.close(sub)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def forget(self, pack_id: PackId) -> None:
        """Close the cached descriptor of a pack (before it is deleted)."""
        key = (self._token, pack_id)
        OPEN_PACKS.drop(lambda k: k == key)

    def close(self) -> None:
        token = self._token
        OPEN_PACKS.drop(lambda k: k[0] == token)

    def trailer(self, pack_id: PackId) -> list[fmt.TableEntry] | None:
        """The entries of a pack's trailer (one or two reads of its end); None when it has
        no whole trailer or is gone."""
        what = f"pack {pack_id.hex()}"
        try:
            fd = self._open(pack_id, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        try:
            found = packread.read_table(FdBytes(fd), what)
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        finally:
            os.close(fd)
        return None if found is None else found[1]

    def rewrite_trailer(self, pack_id: PackId) -> None:
        """Write a pack's trailer again from a scan of its records (repair: a trailer that
        omits or misplaces a record), durably."""

        self._modify(pack_id, lambda fd: packread.rescan_trailer(FdBytes(fd), f"pack {pack_id.hex()}"))


def _pack_path(root: Path, pack_id: PackId) -> Path:
    h = pack_id.hex()
    return root / h[:2] / f"{h}.pack"


def _translate(exc: OSError, what: str) -> SnapstoreError:
    error = translate_os_error(exc, what)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        error = StorageIOError(what, "too many open files")
        error.hint = "raise the limit of open files ('ulimit -n') or use fewer threads (--threads)"
    return error
