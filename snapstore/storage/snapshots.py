"""Manifest files: ``snapshots/<id>`` once published, ``tmp/pending-<id>`` while a commit
registers it, ``tmp/trash-<id>`` while a removal unregisters it (docs/FORMAT.md, "write order")."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from snapstore.errors import (
    CorruptError,
    IntegrityError,
    SnapshotRemovedError,
    SnapstoreError,
    translate_os_error,
)
from snapstore.format import manifest as fmt
from snapstore.hashing import StreamHasher
from snapstore.model import ChunkId, ManifestRecord, SnapshotId, SnapshotInfo
from snapstore.storage import fsio

log = logging.getLogger(__name__)
PENDING = "pending-"
TRASH = "trash-"
_ID = re.compile(r"[0-9a-f]{64}")  # a snapshot id as it names files: lowercase hex, nothing else
_READ_BUFFER = 1 << 20
_WRITE_BUFFER = 1 << 20


class ManifestWriter:
    """Writes one manifest to a temp file, hashing it as it goes."""

    def __init__(self, tmp_dir: Path, mode: int) -> None:
        self._tmp_dir = tmp_dir
        self._path = tmp_dir / f"part-{secrets.token_hex(8)}"
        self._pending: Path | None = None  # where finish() moved it
        self._buffer = bytearray()
        try:  # the mode as the umask allows, like every other repository file
            self._fd = fsio.open_file(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, what="manifest")
        except OSError as exc:
            raise translate_os_error(exc, "manifest") from exc
        self._hasher = StreamHasher()
        self.write(fmt.encode_header())

    def write(self, data: bytes) -> None:
        self._hasher.update(data)
        self._buffer += data
        if len(self._buffer) >= _WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        try:
            fsio.write_all(self._fd, self._buffer)
        except OSError as exc:
            raise translate_os_error(exc, "manifest") from exc
        self._buffer.clear()

    def add(self, record: ManifestRecord) -> None:
        self.write(fmt.encode_record(record))

    def finish(self, trailer: bytes) -> SnapshotId:
        """Write the trailer, make the file durable as ``tmp/pending-<id>``; return the id."""
        self.write(trailer)
        self._flush()
        snapshot_id = SnapshotId(self._hasher.digest())
        pending = self._tmp_dir / f"{PENDING}{snapshot_id.hex()}"
        try:
            os.fsync(self._fd)
            fd, self._fd = self._fd, -1
            os.close(fd)
            os.rename(self._path, pending)
            self._pending = pending  # abort() removes it if the next step fails
            fsio.fsync_dir(self._tmp_dir)
        except OSError as exc:
            raise translate_os_error(exc, "manifest") from exc
        self._pending = None  # from here on the caller owns it (and rolls it back)
        return snapshot_id

    def abort(self) -> None:
        """Remove the unfinished manifest (a pending one only if finish() failed: nothing
        has counted it then)."""
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        for path in (self._path, self._pending):
            if path is not None:
                with suppress(OSError):
                    path.unlink()


class SnapshotStore:
    def __init__(self, root: Path, tmp_dir: Path, file_mode: int) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self.file_mode = file_mode
        self._warned: set[str] = set()  # stray names already reported
        # The plaintext of a tree object's chunk (set by the repository, which owns the packs):
        # what counting a tree snapshot's chunks reads (recovery.read_chunk_set).
        self.load_tree: Callable[[ChunkId], bytes] | None = None

    def path(self, snapshot_id: SnapshotId) -> Path:
        return self.root / snapshot_id.hex()

    def where(self, prefix: str, snapshot_id: SnapshotId) -> str:
        """What :meth:`iter_records` reads for a pending or trashed manifest."""
        return str(self.tmp_dir / f"{prefix}{snapshot_id.hex()}")

    def tidy(self) -> None:
        """Nothing to do: a rename leaves no second copy (see storage/objsnapshots.py)."""
        return None

    def writer(self) -> ManifestWriter:
        return ManifestWriter(self.tmp_dir, self.file_mode)

    def list_ids(self) -> list[SnapshotId]:
        return self._list(self.root, "")

    def list_pending(self) -> list[SnapshotId]:
        return self._list(self.tmp_dir, PENDING)

    def list_trash(self) -> list[SnapshotId]:
        return self._list(self.tmp_dir, TRASH)

    def _list(self, directory: Path, prefix: str) -> list[SnapshotId]:
        found, stray = id_names(directory, prefix)
        new = sorted(set(stray) - self._warned)
        if new:
            self._warned.update(new)
            warn_stray(directory, new, "snapshot ids")
        return found

    def publish(self, snapshot_id: SnapshotId) -> None:
        """The atomic step that makes a snapshot exist."""
        fsio.rename_durable(self.tmp_dir / f"{PENDING}{snapshot_id.hex()}", self.path(snapshot_id))

    def discard_pending(self, snapshot_id: SnapshotId) -> None:
        fsio.remove(self.tmp_dir / f"{PENDING}{snapshot_id.hex()}", f"manifest {snapshot_id.hex()[:12]}")

    def trash(self, snapshot_id: SnapshotId) -> None:
        """The atomic step that makes a snapshot not exist (its manifest stays in tmp/)."""
        fsio.rename_durable(self.path(snapshot_id), self.tmp_dir / f"{TRASH}{snapshot_id.hex()}")

    def purge_trash(self, snapshot_id: SnapshotId) -> None:
        fsio.remove(self.tmp_dir / f"{TRASH}{snapshot_id.hex()}", f"manifest {snapshot_id.hex()[:12]}")

    def load_info(self, snapshot_id: SnapshotId, *, where: str = "") -> SnapshotInfo:
        """The trailer of a manifest, read from its end (the chunk list is not read)."""
        path = Path(where) if where else self.path(snapshot_id)
        what = f"manifest {snapshot_id.hex()[:12]}"
        try:
            with os.fdopen(fsio.open_file(path, os.O_RDONLY, what=what), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                fmt.check_header(f.read(fmt.HEADER_SIZE), what)
                f.seek(max(0, size - fmt.FOOTER_SIZE))
                length = fmt.trailer_length(f.read(fmt.FOOTER_SIZE), size, what)
                f.seek(size - fmt.FOOTER_SIZE - length)
                return fmt.decode_trailer(snapshot_id, f.read(length), what)
        except FileNotFoundError as exc:
            raise vanished(snapshot_id, what, where) from exc
        except OSError as exc:
            raise translate_os_error(exc, what) from exc

    def iter_records(self, snapshot_id: SnapshotId, *, where: str = "") -> Iterator[ManifestRecord]:
        """Every record of a manifest in order. The whole file is hashed while it is read and
        IntegrityError is raised at the end if it does not match the snapshot id."""
        path = Path(where) if where else self.path(snapshot_id)
        what = f"manifest {snapshot_id.hex()[:12]}"
        try:
            f = os.fdopen(fsio.open_file(path, os.O_RDONLY, what=what), "rb", buffering=_READ_BUFFER)
        except FileNotFoundError as exc:
            raise vanished(snapshot_id, what, where) from exc
        except OSError as exc:
            raise translate_os_error(exc, what) from exc
        with f:
            yield from verified_records(f, snapshot_id, what)


def verified_records(source: _Readable, snapshot_id: SnapshotId, what: str) -> Iterator[ManifestRecord]:
    """The records of the manifest ``source`` reads, in order; the whole of it is hashed as it
    is read, and IntegrityError raised at the end if it is not the snapshot id."""
    hasher = StreamHasher()
    reader = HashingReader(source, hasher, what)
    fmt.check_header(reader.read(fmt.HEADER_SIZE), what)
    yield from fmt.iter_records(reader.read, what)
    reader.read_rest()
    actual = hasher.digest()
    if actual != snapshot_id:
        raise IntegrityError(what, snapshot_id.hex(), actual.hex())


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class HashingReader:
    def __init__(self, f: _Readable, hasher: StreamHasher, what: str) -> None:
        self._f = f
        self._hasher = hasher
        self._what = what

    def read(self, n: int) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as exc:
            raise translate_os_error(exc, self._what) from exc
        self._hasher.update(data)
        return data

    def read_rest(self) -> None:
        while self.read(_READ_BUFFER):
            pass


def vanished(snapshot_id: SnapshotId, what: str, where: str) -> SnapstoreError:
    """A manifest that is not there: a published one was listed a moment ago, so it was
    removed meanwhile (``snap rm`` beside this reader); a pending or trashed one is
    damage."""
    if where:
        return CorruptError(what, "missing")
    return SnapshotRemovedError(snapshot_id.hex()[:12])


def id_names(directory: Path, prefix: str) -> tuple[list[SnapshotId], list[str]]:
    """The ids named by ``<prefix><lowercase hex id>`` entries of ``directory`` (sorted), and
    the other names starting with ``prefix`` (stray: never read, never indexed). Only
    lowercase hex of the exact length is an id: ``bytes.fromhex`` would also take white
    space and capitals, giving ids of the wrong length or a second name for one id."""
    ids = []
    stray = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise translate_os_error(exc, fsio.shown(directory)) from exc
    for name in names:
        if not name.startswith(prefix):
            continue
        if _ID.fullmatch(name, len(prefix)):
            ids.append(SnapshotId(bytes.fromhex(name[len(prefix) :])))
        else:
            stray.append(name)
    return sorted(ids), stray


def warn_stray(directory: Path, names: list[str], what: str) -> None:
    """One warning line for names in a repository directory outside the grammar."""
    shown = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    log.warning(
        "ignoring %d stray name(s) in %s (not %s): %s", len(names), fsio.shown(directory), what, shown
    )
