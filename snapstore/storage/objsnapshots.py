"""Manifests kept as objects of a :class:`~snapstore.backends.base.Backend`: ``snapshots/<id>``
once published, ``tmp/pending-<id>`` while a commit registers it, ``tmp/trash-<id>`` while a
removal unregisters it (docs/FORMAT.md, "write order", restated for objects).

A backend has no rename, so the two atomic steps are puts and deletes: a snapshot is
published by one atomic put of ``snapshots/<id>`` (a copy of the pending object), then the
pending object is deleted; it is unpublished by putting ``tmp/trash-<id>`` and then deleting
``snapshots/<id>`` (the atomic step). A ``tmp/`` object whose snapshot is still published is
a leftover of a step killed between the two calls: it is never listed, and :meth:`tidy`
(recovery) deletes it. A manifest being written is spooled to a local temp file, not to the
backend. The local repository keeps its renames in storage/snapshots.py; both classes have
the same methods."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

from snapstore.backends.base import Backend
from snapstore.errors import ObjectNotFoundError, translate_os_error
from snapstore.format import manifest as fmt
from snapstore.hashing import StreamHasher
from snapstore.model import ChunkId, ManifestRecord, SnapshotId, SnapshotInfo
from snapstore.storage.snapshots import PENDING, TRASH, vanished, verified_records

log = logging.getLogger(__name__)
PUBLISHED = "snapshots/"
TMP = "tmp/"
_ID = re.compile(r"[0-9a-f]{64}")
_SPOOL = 8 << 20  # bytes of a manifest kept in memory before it spills to a temp file
_PART = 1 << 20  # bytes per get or put part when a manifest is streamed


class ObjectManifestWriter:
    """Writes one manifest to a local spool, hashing it as it goes; :meth:`finish` puts it
    as ``tmp/pending-<id>``."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        spool = tempfile.SpooledTemporaryFile(_SPOOL, prefix="snap-manifest-")  # noqa: SIM115 (closed by finish or abort)
        self._spool: IO[bytes] | None = spool
        self._hasher = StreamHasher()
        self.write(fmt.encode_header())

    def write(self, data: bytes) -> None:
        assert self._spool is not None, "manifest written after finish or abort"
        self._hasher.update(data)
        try:
            self._spool.write(data)
        except OSError as exc:
            raise translate_os_error(exc, "manifest") from exc

    def add(self, record: ManifestRecord) -> None:
        self.write(fmt.encode_record(record))

    def finish(self, trailer: bytes) -> SnapshotId:
        """Write the trailer and put the manifest as ``tmp/pending-<id>``; return the id."""
        self.write(trailer)
        snapshot_id = SnapshotId(self._hasher.digest())
        spool = self._spool
        assert spool is not None
        name = f"{TMP}{PENDING}{snapshot_id.hex()}"
        try:
            spool.seek(0)
            self._backend.put(name, iter(lambda: spool.read(_PART), b""), overwrite=True)
        except OSError as exc:
            raise translate_os_error(exc, "manifest") from exc
        finally:
            self._spool = None
            spool.close()
        return snapshot_id

    def abort(self) -> None:
        if self._spool is not None:
            with suppress(OSError):
                self._spool.close()
            self._spool = None


class _ObjectReader:
    """An object read in order by ranged gets (the ``read`` of a file)."""

    def __init__(self, backend: Backend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._size = backend.stat(name)
        self._pos = 0
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n and self._pos < self._size:
            length = min(max(_PART, n - len(self._buffer)), self._size - self._pos)
            self._buffer += self._backend.get(self._name, self._pos, length)
            self._pos += length
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


class ObjectSnapshotStore:
    """The methods of storage/snapshots.SnapshotStore over a backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._warned: set[str] = set()
        self.load_tree: Callable[[ChunkId], bytes] | None = None  # as SnapshotStore.load_tree

    def name(self, snapshot_id: SnapshotId) -> str:
        return f"{PUBLISHED}{snapshot_id.hex()}"

    def path(self, snapshot_id: SnapshotId) -> Path:
        """The manifest's object name as a path, for messages only."""
        return Path(self.name(snapshot_id))

    def where(self, prefix: str, snapshot_id: SnapshotId) -> str:
        """What :meth:`iter_records` reads for a pending or trashed manifest."""
        return f"{TMP}{prefix}{snapshot_id.hex()}"

    def writer(self) -> ObjectManifestWriter:
        return ObjectManifestWriter(self._backend)

    def list_ids(self) -> list[SnapshotId]:
        return self._list(PUBLISHED)

    def list_pending(self) -> list[SnapshotId]:
        published = set(self.list_ids())
        return [sid for sid in self._list(TMP + PENDING) if sid not in published]

    def list_trash(self) -> list[SnapshotId]:
        published = set(self.list_ids())
        return [sid for sid in self._list(TMP + TRASH) if sid not in published]

    def tidy(self) -> None:
        """Delete ``tmp/`` objects of published snapshots (a publish or a removal killed
        between its put and its delete; the snapshot exists, so they are done with)."""
        published = set(self.list_ids())
        for prefix in (PENDING, TRASH):
            for sid in self._list(TMP + prefix):
                if sid in published:
                    self._backend.delete(self.where(prefix, sid))

    def _list(self, prefix: str) -> list[SnapshotId]:
        ids = []
        stray = []
        for name in self._backend.list(prefix):
            if _ID.fullmatch(name, len(prefix)):
                ids.append(SnapshotId(bytes.fromhex(name[len(prefix) :])))
            else:
                stray.append(name)
        new = sorted(set(stray) - self._warned)
        if new:
            self._warned.update(new)
            log.warning("ignoring %d stray name(s) (not snapshot ids): %s", len(new), ", ".join(new[:3]))
        return sorted(ids)

    def publish(self, snapshot_id: SnapshotId) -> None:
        """The atomic step that makes a snapshot exist: one put of ``snapshots/<id>``."""
        pending = self.where(PENDING, snapshot_id)
        self._copy(pending, self.name(snapshot_id))
        self._backend.delete(pending)

    def discard_pending(self, snapshot_id: SnapshotId) -> None:
        self._backend.delete(self.where(PENDING, snapshot_id))

    def trash(self, snapshot_id: SnapshotId) -> None:
        """The atomic step that makes a snapshot not exist: the delete of ``snapshots/<id>``,
        once its manifest is kept as ``tmp/trash-<id>``."""
        name = self.name(snapshot_id)
        try:
            self._copy(name, self.where(TRASH, snapshot_id))
        except ObjectNotFoundError as exc:
            raise vanished(snapshot_id, f"manifest {snapshot_id.hex()[:12]}", "") from exc
        self._backend.delete(name)

    def purge_trash(self, snapshot_id: SnapshotId) -> None:
        self._backend.delete(self.where(TRASH, snapshot_id))

    def _copy(self, src: str, dst: str) -> None:
        size = self._backend.stat(src)
        parts = (self._backend.get(src, at, min(_PART, size - at)) for at in range(0, size, _PART))
        self._backend.put(dst, parts, overwrite=True)

    def load_info(self, snapshot_id: SnapshotId, *, where: str = "") -> SnapshotInfo:
        """The trailer of a manifest, read from its end (the chunk list is not read)."""
        name = where or self.name(snapshot_id)
        what = f"manifest {snapshot_id.hex()[:12]}"
        try:
            size = self._backend.stat(name)
            fmt.check_header(self._backend.get(name, 0, min(size, fmt.HEADER_SIZE)), what)
            at = max(0, size - fmt.FOOTER_SIZE)
            length = fmt.trailer_length(self._backend.get(name, at), size, what)
            trailer = self._backend.get(name, size - fmt.FOOTER_SIZE - length, length)
        except ObjectNotFoundError as exc:
            raise vanished(snapshot_id, what, where) from exc
        return fmt.decode_trailer(snapshot_id, trailer, what)

    def iter_records(self, snapshot_id: SnapshotId, *, where: str = "") -> Iterator[ManifestRecord]:
        """Every record of a manifest in order, hashed as it is read: IntegrityError at the
        end if it does not match the snapshot id."""
        name = where or self.name(snapshot_id)
        what = f"manifest {snapshot_id.hex()[:12]}"
        try:
            source = _ObjectReader(self._backend, name)
        except ObjectNotFoundError as exc:
            raise vanished(snapshot_id, what, where) from exc
        yield from verified_records(source, snapshot_id, what)
