"""A pack's records read from its bytes wherever they are kept (an open file, a stored
object, a buffer): from its trailer in one or two reads at its end, or by a scan; and its
trailer written again after gc changed it (docs/FORMAT.md, "pack trailer")."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Protocol

from snapstore.errors import CorruptError
from snapstore.format import pack as fmt
from snapstore.model import ChunkLocation
from snapstore.storage import fsio

log = logging.getLogger(__name__)
SCAN_BLOCK = 8 << 20
TAIL_READ = 16 << 10  # a pack's last bytes read at once: its footer and, mostly, its whole table


class PackBytes(Protocol):
    """A pack's bytes as :func:`read_table` and :func:`scan` read them."""

    def size(self) -> int: ...

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end, as a pread)."""
        ...

    def next_data(self, pos: int) -> int:
        """The next offset at or after ``pos`` that is not in a hole, or -1."""
        ...


class PackEdit(PackBytes, Protocol):
    """A pack's bytes being changed by gc (:func:`retable`)."""

    def truncate(self, length: int) -> None: ...

    def pwrite(self, data: bytes, offset: int) -> None: ...


class FdBytes:
    """An open pack file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def next_data(self, pos: int) -> int:
        try:
            return os.lseek(self.fd, pos, os.SEEK_DATA)
        except OSError:
            return pos if pos < self.size() else -1

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def pwrite(self, data: bytes, offset: int) -> None:
        fsio.pwritev_all(self.fd, [data], offset)


class BufferBytes:
    """A pack held whole in memory (an object read to be changed and put back)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def size(self) -> int:
        return len(self.data)

    def pread(self, length: int, offset: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def next_data(self, pos: int) -> int:
        return pos if pos < len(self.data) else -1

    def truncate(self, length: int) -> None:
        del self.data[length:]

    def pwrite(self, data: bytes, offset: int) -> None:
        if offset > len(self.data):
            self.data += bytes(offset - len(self.data))
        self.data[offset : offset + len(data)] = data


def scan(pack: PackBytes, what: str) -> Iterator[tuple[int, fmt.RecordHeader]]:
    """Every valid record of a pack with its offset, skipping zeroed or damaged bytes; a torn
    tail (a crash mid-append) ends the scan (see PackStore.scan)."""
    file_size = pack.size()
    pos = fmt.PACK_HEADER_SIZE
    while pos + fmt.RECORD_HEADER_SIZE <= file_size:
        pos = pack.next_data(pos)
        if pos < 0:
            return
        try:
            header = fmt.decode_record_header(pack.pread(fmt.RECORD_HEADER_SIZE, pos), what)
        except CorruptError:
            window = pack.pread(SCAN_BLOCK, pos)
            found = fmt.find_record(window, 1)
            pos += found if found > 0 else max(1, len(window) - fmt.RECORD_HEADER_SIZE)
            continue
        if pos + header.record_size > file_size:
            return
        yield pos, header
        pos += header.record_size


def read_table(pack: PackBytes, what: str) -> tuple[int, list[fmt.TableEntry]] | None:
    """(where the records end, the trailer's entries) of a pack, in one or two reads of its
    end; None when it has no whole trailer (a pack of format 1, a pack a commit was killed
    writing, a damaged trailer: scan it)."""
    size = pack.size()
    if size < fmt.PACK_HEADER_SIZE + fmt.FOOTER_SIZE:
        return None
    tail_at = max(fmt.PACK_HEADER_SIZE, size - TAIL_READ)
    tail = pack.pread(size - tail_at, tail_at)
    footer = fmt.decode_footer(tail[-fmt.FOOTER_SIZE :], size)
    if footer is None:
        return None
    count, table_offset, digest = footer
    length = count * fmt.TABLE_ENTRY_SIZE
    if table_offset >= tail_at:
        table = tail[table_offset - tail_at : table_offset - tail_at + length]
    else:
        table = pack.pread(length, table_offset)
    try:
        return table_offset, fmt.decode_table(table, digest, table_offset, what)
    except CorruptError as exc:
        log.warning("%s; scanning the pack instead", exc.message)
        return None


def records(pack: PackBytes, what: str) -> tuple[int, list[fmt.TableEntry]]:
    """(where the records end, every record) from the trailer, else by a scan."""
    found = read_table(pack, what)
    if found is not None:
        return found
    entries = [
        fmt.TableEntry(h.chunk_id, off, h.raw_size, h.stored_size, h.codec) for off, h in scan(pack, what)
    ]
    return (entries[-1].end if entries else fmt.PACK_HEADER_SIZE), entries


def retable(pack: PackEdit, keep: Callable[[fmt.TableEntry], bool], *, cut_at: int | None = None) -> None:
    """Write the trailer of a pack again with the records ``keep`` accepts, after its
    records (or after the first ``cut_at`` bytes)."""
    end, entries = records(pack, "pack")
    if cut_at is not None:
        end = min(end, cut_at)
    kept = [e for e in entries if keep(e) and e.end <= end]
    pack.truncate(end)
    pack.pwrite(fmt.encode_trailer(fmt.encode_table(kept), end), end)


def rescan_trailer(pack: PackEdit, what: str) -> None:
    """Write a pack's trailer again from a scan of its records (repair: a trailer that omits
    or misplaces a record). A pack without a trailer is left so (a rebuild scans it anyway)."""
    size = pack.size()
    footer = fmt.decode_footer(pack.pread(fmt.FOOTER_SIZE, max(0, size - fmt.FOOTER_SIZE)), size)
    if footer is None:
        return
    end = footer[1]  # where the records end: the old table is none of them
    entries = [
        fmt.TableEntry(h.chunk_id, off, h.raw_size, h.stored_size, h.codec)
        for off, h in scan(pack, what)
        if off + h.record_size <= end
    ]
    pack.truncate(end)
    pack.pwrite(fmt.encode_trailer(fmt.encode_table(entries), end), end)


def record_payload(data: bytes, loc: ChunkLocation, chunk_id: bytes, what: str) -> memoryview:
    """The payload of the record read at ``loc`` (a view), after checking its header."""
    header = fmt.decode_record_header(data, what)
    if (
        header.chunk_id != chunk_id
        or header.stored_size != loc.stored_size
        or len(data) != fmt.RECORD_HEADER_SIZE + loc.stored_size
    ):
        raise CorruptError(what, "record does not match the index")
    return memoryview(data)[fmt.RECORD_HEADER_SIZE :]
