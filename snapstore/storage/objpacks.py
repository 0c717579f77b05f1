"""Packs kept as objects of a :class:`~snapstore.backends.base.Backend` without local files
(``packs/<xx>/<pack id>.pack``, as on a local disk): appended with checkpoints where the
backend can append, else built in memory and put whole when sealed. gc's changes (a punched
range, a cut tail, a trailer written again, repair's header) are made by reading the pack,
changing it and putting it back whole (one atomic put). The local repository keeps its
own fast paths in storage/packstore.py; both have the same methods."""

from __future__ import annotations

import bisect
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from snapstore.backends.base import AppendWriter, Backend
from snapstore.errors import CorruptError, ObjectNotFoundError, RemoteError, SnapstoreError
from snapstore.format import pack as fmt
from snapstore.gcplan import merge
from snapstore.model import Buffer, ChunkLocation, PackId
from snapstore.storage import packread
from snapstore.storage.packread import BufferBytes

log = logging.getLogger(__name__)
PREFIX = "packs/"
_NAME = re.compile(r"packs/([0-9a-f]{2})/([0-9a-f]{32})\.pack")


def pack_name(pack_id: PackId) -> str:
    h = pack_id.hex()
    return f"{PREFIX}{h[:2]}/{h}.pack"


class ObjectPackWriter:
    """One pack being written (the methods of storage/packstore.PackWriter). ``checkpoints``:
    whether :meth:`sync` makes a prefix durable (an appending backend); if not, nothing is
    stored before :meth:`seal`, and the index must wait for it."""

    def __init__(self, backend: Backend, pack_id: PackId, version: int) -> None:
        self.pack_id = pack_id
        self.name = pack_name(pack_id)
        self._backend = backend
        self._table = bytearray() if version >= 2 else None
        self.checkpoints = backend.capabilities.append
        self._out: AppendWriter | None = backend.open_append(self.name) if self.checkpoints else None
        self._parts: list[bytes] = []
        self._open = True
        self.size = 0
        self.durable_size = 0
        self.indexed_size = 0
        self._broken: SnapstoreError | None = None
        try:
            self._write(fmt.encode_pack_header(version))
        except BaseException:
            self.abort()
            raise

    def _write(self, *parts: Buffer) -> None:
        if self._broken is not None:
            raise self._broken
        try:
            for part in parts:
                if self._out is not None:
                    self._out.write(part)
                else:
                    self._parts.append(bytes(part))
                self.size += memoryview(part).nbytes
        except SnapstoreError as exc:
            self._broken = exc
            raise

    def append(self, chunk_id: bytes, codec: int, raw_size: int, payload: Buffer) -> ChunkLocation:
        offset = self.size
        stored_size = len(payload)
        self._write(fmt.encode_record_header(chunk_id, codec, raw_size, stored_size), payload)
        if self._table is not None:
            self._table += fmt.encode_table_entry(chunk_id, offset, codec, raw_size, stored_size)
        base = fmt.delta_base(codec, payload)
        return ChunkLocation(self.pack_id, offset, stored_size, raw_size, codec, 0, base=base)

    def sync(self, upto: int) -> None:
        if self._broken is not None:
            raise self._broken
        if self._out is not None:
            self._out.checkpoint()
            self.durable_size = max(self.durable_size, upto)

    def seal(self) -> None:
        if not self._open:
            return
        if self._table is not None:
            self._write(fmt.encode_trailer(bytes(self._table), self.size))
            self._table = None
        if self._broken is not None:
            raise self._broken
        if self._out is not None:
            self._out.seal()
        else:
            self._backend.put(self.name, self._parts)
            self._parts = []
        self.durable_size = self.size
        self._open = False

    def abort(self) -> None:
        """Drop what no index entry points at: the whole pack, or after a checkpoint the
        records appended since (the first ``indexed_size`` bytes are put back whole)."""
        if not self._open:
            return
        self._open = False
        self._parts = []
        out, self._out = self._out, None
        if out is None:
            return
        if not self.indexed_size:
            out.abort()
            return
        try:  # best effort, like a local truncate: gc cuts the pack back otherwise
            out.seal()
            kept = self._backend.get(self.name, 0, self.indexed_size)
            self._backend.put(self.name, kept, overwrite=True)
        except RemoteError:
            pass  # the connection is gone: the command says so, and gc cuts the pack back
        except SnapstoreError as exc:
            log.warning("could not cut pack %s back: %s", self.pack_id.hex(), exc.message)


class _ObjectBytes:
    """A stored pack read by ranged gets (packread.PackBytes)."""

    def __init__(self, backend: Backend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._size = backend.stat(name)

    def size(self) -> int:
        return self._size

    def pread(self, length: int, offset: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        return self._backend.get(self._name, offset, length) if length else b""

    def next_data(self, pos: int) -> int:
        return pos if pos < self._size else -1


class ObjectPackStore:
    """The methods of storage/packstore.PackStore over a backend."""

    local = False  # no pack file paths (no read-ahead hints, no fd cache)

    def __init__(self, backend: Backend, version: int, *, shown_root: str = "packs") -> None:
        self._backend = backend
        self.version = version
        self.shown_root = shown_root
        self._warned: set[str] = set()

    def path(self, pack_id: PackId) -> Path:
        """The pack's object name as a path, for messages only (no file is there)."""
        return Path(pack_name(pack_id))

    def create(self) -> ObjectPackWriter:
        return ObjectPackWriter(self._backend, PackId(secrets.token_bytes(16)), self.version)

    def iter_pack_ids(self) -> Iterator[PackId]:
        """Every stored pack; other names below ``packs/`` are left out with one warning each."""
        for name in self._backend.list(PREFIX):
            match = _NAME.fullmatch(name)
            if match is None or not match.group(2).startswith(match.group(1)):
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("ignoring %r in %s: not a pack name", name, self.shown_root)
                continue
            yield PackId(bytes.fromhex(match.group(2)))

    def usable(self, pack_id: PackId) -> bool:
        try:
            self._backend.stat(pack_name(pack_id))
        except SnapstoreError:
            return False
        return True

    def read_record(self, loc: ChunkLocation, chunk_id: bytes) -> memoryview:
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack_id.hex()[:16]}"
        size = fmt.RECORD_HEADER_SIZE + loc.stored_size
        try:
            data = self._backend.get(pack_name(loc.pack_id), loc.offset, size)
        except ObjectNotFoundError as exc:
            raise CorruptError(f"pack {loc.pack_id.hex()}", "missing") from exc
        return packread.record_payload(data, loc, chunk_id, what)

    def check_header(self, pack_id: PackId) -> None:
        what = f"pack {pack_id.hex()}"
        name = pack_name(pack_id)
        try:
            size = self._backend.stat(name)
            header = self._backend.get(name, 0, min(size, fmt.PACK_HEADER_SIZE))
        except ObjectNotFoundError as exc:
            raise CorruptError(what, "missing") from exc
        fmt.check_pack_header(header, what, repo_version=self.version)

    def is_empty(self, pack_id: PackId) -> bool | None:
        """Whether the pack holds no byte (None: it is gone)."""
        try:
            return self._backend.stat(pack_name(pack_id)) == 0
        except ObjectNotFoundError:
            return None

    def records(self, pack_id: PackId) -> Iterator[tuple[int, fmt.RecordHeader]]:
        """Every record of a pack with its offset: from its trailer where it has a whole one,
        else by a scan (a pack gone: nothing)."""
        entries = self.trailer(pack_id)
        if entries is None:
            yield from self.scan(pack_id)
            return
        for e in entries:
            yield e.offset, fmt.RecordHeader(e.chunk_id, e.codec, e.raw_size, e.stored_size)

    def scan(self, pack_id: PackId) -> Iterator[tuple[int, fmt.RecordHeader]]:
        try:
            pack = _ObjectBytes(self._backend, pack_name(pack_id))
        except ObjectNotFoundError:
            return
        yield from packread.scan(pack, f"pack {pack_id.hex()}")

    def rewrite_header(self, pack_id: PackId) -> None:
        self._modify(pack_id, lambda pack: pack.pwrite(fmt.encode_pack_header(self.version), 0))

    def punch(self, pack_id: PackId, ranges: list[tuple[int, int]]) -> None:
        """Zero the ``(offset, length)`` ranges of a pack (its trailer written again without
        the records in them): the pack is put back whole."""
        merged = merge(ranges)
        starts = [offset for offset, _ in merged]

        def outside(e: fmt.TableEntry) -> bool:
            i = bisect.bisect_left(starts, e.end) - 1
            return i < 0 or sum(merged[i]) <= e.offset

        def punch(pack: BufferBytes) -> None:
            if self.version >= 2:
                packread.retable(pack, outside)
            for offset, length in merged:
                end = min(offset + length, pack.size())
                if end > offset:
                    pack.pwrite(bytes(end - offset), offset)

        self._modify(pack_id, punch)

    def truncate(self, pack_id: PackId, length: int) -> None:
        length = max(length, fmt.PACK_HEADER_SIZE)

        def cut(pack: BufferBytes) -> None:
            if self.version >= 2:
                packread.retable(pack, lambda e: e.end <= length, cut_at=length)
            elif pack.size() > length:
                pack.truncate(length)

        self._modify(pack_id, cut)

    def _modify(self, pack_id: PackId, change: Callable[[BufferBytes], None]) -> None:
        """Read a pack, apply ``change`` and put it back whole; a pack already gone is left so."""
        name = pack_name(pack_id)
        try:
            pack = BufferBytes(bytearray(self._backend.get(name)))
        except ObjectNotFoundError:
            return
        change(pack)
        self._backend.put(name, pack.data, overwrite=True)

    def sizes(self, pack_id: PackId) -> tuple[int, int]:
        """(stored bytes, length) of a pack; (0, 0) if it is gone."""
        name = pack_name(pack_id)
        try:
            size = self._backend.stat(name)
            length = size
            if self.version >= 2 and size >= fmt.FOOTER_SIZE:
                footer = fmt.decode_footer(self._backend.get(name, size - fmt.FOOTER_SIZE), size)
                if footer is not None:
                    length = footer[1]
        except ObjectNotFoundError:
            return 0, 0
        return size, length

    def delete(self, pack_id: PackId) -> None:
        self._backend.delete(pack_name(pack_id))

    def trailer(self, pack_id: PackId) -> list[fmt.TableEntry] | None:
        """The entries of a pack's trailer; None when it has no whole trailer or is gone."""
        try:
            found = packread.read_table(
                _ObjectBytes(self._backend, pack_name(pack_id)), f"pack {pack_id.hex()}"
            )
        except ObjectNotFoundError:
            return None
        return None if found is None else found[1]

    def rewrite_trailer(self, pack_id: PackId) -> None:
        """Write a pack's trailer again from a scan of its records; the pack is put back whole."""
        self._modify(pack_id, lambda pack: packread.rescan_trailer(pack, f"pack {pack_id.hex()}"))

    def forget(self, pack_id: PackId) -> None:
        return None

    def close(self) -> None:
        return None
