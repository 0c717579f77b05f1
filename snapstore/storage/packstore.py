"""Pack files under ``packs/``: append-only while written, then sealed; later only
hole-punched (dead chunk records) or removed whole (docs/FORMAT.md, "packs" and "gc")."""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

from snapstore.errors import CorruptError, translate_os_error
from snapstore.format import pack as fmt
from snapstore.model import Buffer, ChunkLocation, PackId
from snapstore.storage import fsio

_OPEN_FILES = 64
_SCAN_BLOCK = 8 << 20


class PackWriter:
    """One pack being written by the current process.

    After any failed write or fsync the writer is broken: what the pack holds past the last
    successful fsync is unknown (a failed fsync may have dropped those pages), so it can no
    longer be synced or sealed, only aborted back to what the index already points at."""

    def __init__(self, path: Path, pack_id: PackId, mode: int) -> None:
        self.path = path
        self.pack_id = pack_id
        try:
            path.parent.mkdir(mode=fsio.dir_mode(mode), exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as exc:
            raise translate_os_error(exc, str(path)) from exc
        self.size = 0
        self.durable_size = 0  # bytes made durable by sync(); index entries may point below it
        self.indexed_size = 0  # bytes the index points into (set by the repository); kept by abort
        self._broken: OSError | None = None  # the failure that broke it
        try:
            self._write(fmt.encode_pack_header())
        except BaseException:
            self.abort()
            raise

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
        return ChunkLocation(self.pack_id, offset, stored_size, raw_size, codec, 0)

    def sync(self, upto: int) -> None:
        """Make the first ``upto`` bytes durable, keeping the pack open (a checkpoint; other
        threads may go on appending meanwhile)."""
        self._check_usable()
        try:
            os.fsync(self._fd)
            if not self.durable_size:
                fsio.fsync_dir(self.path.parent)
        except OSError as exc:
            raise self._fail(exc) from exc
        self.durable_size = max(self.durable_size, upto)

    def seal(self) -> None:
        """Make every appended record durable (fsync file and directory) and close. Sealing
        a sealed pack does nothing."""
        if self._fd < 0 and self._broken is None:
            return
        self.sync(self.size)
        try:
            os.close(self._fd)
        except OSError as exc:
            raise self._fail(exc) from exc
        finally:
            self._fd = -1

    def abort(self) -> None:
        """Drop what no index entry points at (a failed commit): the whole pack, or after a
        checkpoint only the records appended since (the tail is truncated away)."""
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self.indexed_size:
            with suppress(OSError):
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, self.indexed_size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            # Left behind if this fails: gc removes packs no index entry points into.
            with suppress(OSError):
                self.path.unlink()


class PackStore:
    def __init__(self, root: Path, file_mode: int) -> None:
        self.root = root
        self.file_mode = file_mode
        self._local = threading.local()  # each thread its own LRU of open packs
        self._all_fds: set[int] = set()
        self._fds_lock = threading.Lock()

    def path(self, pack_id: PackId) -> Path:
        h = pack_id.hex()
        return self.root / h[:2] / f"{h}.pack"

    def create(self) -> PackWriter:
        pack_id = secrets.token_bytes(16)
        return PackWriter(self.path(pack_id), pack_id, self.file_mode)

    def iter_pack_ids(self) -> Iterator[PackId]:
        try:
            subs = sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, str(self.root)) from exc
        for sub in subs:
            try:
                names = sorted(os.listdir(self.root / sub))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise translate_os_error(exc, str(self.root / sub)) from exc
            for name in names:
                stem, dot, suffix = name.partition(".")
                if not (dot and suffix == "pack" and len(stem) == 32 and stem[:2] == sub):
                    continue
                try:
                    pack_id = bytes.fromhex(stem)
                except ValueError:
                    continue
                if pack_id.hex() == stem:  # the name path() gives it
                    yield pack_id

    def _fd(self, pack_id: PackId) -> int:
        files: OrderedDict[PackId, int] | None = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = OrderedDict()
        fd = files.get(pack_id)
        if fd is not None:
            files.move_to_end(pack_id)
            return fd
        try:
            fd = os.open(self.path(pack_id), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CorruptError(f"pack {pack_id.hex()}", "missing") from exc
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc
        with self._fds_lock:
            self._all_fds.add(fd)
        files[pack_id] = fd
        if len(files) > _OPEN_FILES:
            self._close_fd(files.popitem(last=False)[1])
        return fd

    def _close_fd(self, fd: int) -> None:
        with self._fds_lock:
            self._all_fds.discard(fd)
        with suppress(OSError):
            os.close(fd)

    def read_record(self, loc: ChunkLocation, chunk_id: bytes) -> memoryview:
        """The stored payload of the record at ``loc`` (a view, not a copy), after checking
        its header."""
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack_id.hex()[:16]}"
        size = fmt.RECORD_HEADER_SIZE + loc.stored_size
        try:
            data = os.pread(self._fd(loc.pack_id), size, loc.offset)
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        header = fmt.decode_record_header(data, what)
        if header.chunk_id != chunk_id or header.stored_size != loc.stored_size or len(data) != size:
            raise CorruptError(what, "record does not match the index")
        return memoryview(data)[fmt.RECORD_HEADER_SIZE :]

    def check_header(self, pack_id: PackId) -> None:
        """Raise CorruptError unless the pack starts with a valid pack header."""
        what = f"pack {pack_id.hex()}"
        try:
            with open(self.path(pack_id), "rb") as f:
                header = f.read(fmt.PACK_HEADER_SIZE)
        except FileNotFoundError as exc:
            raise CorruptError(what, "missing") from exc
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        fmt.check_pack_header(header, what)

    def scan(self, pack_id: PackId) -> Iterator[tuple[int, fmt.RecordHeader]]:
        """Every valid record of a pack with its offset, skipping zeroed or damaged bytes.

        A torn tail (a crash mid-append) ends the scan: its record is not whole. The pack
        header is not checked here (see :meth:`check_header`): each record carries its own
        magic and checksum, and each chunk is checked against its id when it is read, so a
        damaged pack header costs no chunk."""
        path = self.path(pack_id)
        what = f"pack {pack_id.hex()}"
        try:
            with open(path, "rb") as f:
                fd = f.fileno()
                file_size = os.fstat(fd).st_size
                pos = fmt.PACK_HEADER_SIZE
                while pos + fmt.RECORD_HEADER_SIZE <= file_size:
                    pos = _next_data(fd, pos, file_size)
                    if pos < 0:
                        return
                    try:
                        header = fmt.decode_record_header(os.pread(fd, fmt.RECORD_HEADER_SIZE, pos), what)
                    except CorruptError:
                        window = os.pread(fd, _SCAN_BLOCK, pos)
                        found = fmt.find_record(window, 1)
                        pos += found if found > 0 else max(1, len(window) - fmt.RECORD_HEADER_SIZE)
                        continue
                    if pos + header.record_size > file_size:
                        return
                    yield pos, header
                    pos += header.record_size
        except FileNotFoundError:
            return  # removed meanwhile (a gc beside a reader building a temporary index)
        except OSError as exc:
            raise translate_os_error(exc, what) from exc

    def rewrite_header(self, pack_id: PackId) -> None:
        """Write the pack header again (repair: its 16 bytes are the same in every pack)."""
        try:
            fd = os.open(self.path(pack_id), os.O_WRONLY)
            try:
                os.pwrite(fd, fmt.encode_pack_header(), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def punch(self, pack_id: PackId, offset: int, length: int) -> None:
        """Free ``[offset, offset+length)`` of a pack (it reads as zeros), durably."""
        self._modify(pack_id, lambda fd: fsio.punch_hole(fd, offset, length))

    def truncate(self, pack_id: PackId, length: int) -> None:
        """Cut a pack back to ``length`` bytes (never below its header), durably."""

        def cut(fd: int) -> None:
            if os.fstat(fd).st_size > max(length, fmt.PACK_HEADER_SIZE):
                os.ftruncate(fd, max(length, fmt.PACK_HEADER_SIZE))

        self._modify(pack_id, cut)

    def _modify(self, pack_id: PackId, change: Callable[[int], None]) -> None:
        """Apply ``change`` to a stored pack and fsync it; a pack already gone is left so."""
        try:
            fd = os.open(self.path(pack_id), os.O_WRONLY)
            try:
                change(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def sizes(self, pack_id: PackId) -> tuple[int, int]:
        """(allocated bytes, length) of a pack; (0, 0) if it is gone."""
        try:
            st = os.stat(self.path(pack_id))
        except FileNotFoundError:
            return 0, 0
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc
        return st.st_blocks * 512, st.st_size

    def delete(self, pack_id: PackId) -> None:
        self.forget(pack_id)
        path = self.path(pack_id)
        try:
            path.unlink()
            fsio.fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, f"pack {pack_id.hex()}") from exc

    def forget(self, pack_id: PackId) -> None:
        """Close this thread's cached descriptor of a pack (before it is deleted)."""
        files: OrderedDict[PackId, int] | None = getattr(self._local, "files", None)
        fd = files.pop(pack_id, None) if files else None
        if fd is not None:
            self._close_fd(fd)

    def close(self) -> None:
        with self._fds_lock:
            fds, self._all_fds = self._all_fds, set()
        for fd in fds:
            with suppress(OSError):
                os.close(fd)
        self._local = threading.local()


def _next_data(fd: int, pos: int, size: int) -> int:
    """The next offset at or after ``pos`` that is not in a hole, or -1."""
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        return pos if pos < size else -1
