"""Random access to a file snapshot's bytes, for the NBD export and the FUSE mount: any byte
range, read from the chunks that hold it, every chunk checked against its id.

The reader keeps the snapshot's piece table in memory (40 bytes a piece: where it starts and
its chunk id, or none for a zero run; 20 MiB for 500 GiB in 1 MiB chunks), a cache of
recently read chunks (bounded in bytes), and reads ahead when reads come in order.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from snapstore.errors import UsageError
from snapstore.model import Buffer, ChunkId, ChunkRef, EntryStart, SnapshotInfo, ZeroRun
from snapstore.repo import Repository

CACHE_BYTES = 64 * 1024 * 1024  # decoded chunks kept for the next reads
READ_AHEAD = 8  # chunks fetched ahead of reads in order
_NO_ID = bytes(32)  # a zero run's place in the id table (no chunk hashes to 32 zero bytes)


@dataclass(frozen=True, slots=True)
class Extent:
    """``length`` bytes from ``offset``: stored data, or zeros stored as nothing."""

    offset: int
    length: int
    zero: bool


class SnapshotReader:
    """Reads of one file snapshot at any offset. Thread-safe: an NBD server reads from a
    thread per connection."""

    def __init__(
        self,
        repo: Repository,
        snapshot: SnapshotInfo,
        *,
        cache_bytes: int = CACHE_BYTES,
        read_ahead: int = READ_AHEAD,
        threads: int = 4,
    ) -> None:
        if snapshot.kind != "file":
            raise UsageError(f"snapshot {snapshot.hex[:12]} is a directory tree, not a file")
        self.snapshot = snapshot
        self._get = repo.get_chunk
        self._starts = array("Q")
        self._ids = bytearray()
        entries = 0
        pos = 0
        for record in repo.iter_records(snapshot.id):  # checks the manifest's hash at its end
            if isinstance(record, EntryStart):
                entries += 1
                if entries > 1:
                    raise UsageError(f"snapshot {snapshot.hex[:12]} holds more than one file")
            elif isinstance(record, ChunkRef | ZeroRun):
                length = record.raw_size if isinstance(record, ChunkRef) else record.length
                if length == 0:
                    continue
                self._starts.append(pos)
                self._ids += record.chunk_id if isinstance(record, ChunkRef) else _NO_ID
                pos += length
        self._starts.append(pos)
        self.size = pos
        self._cache: OrderedDict[int, Future[Buffer]] = OrderedDict()  # piece -> its bytes
        self._cached = 0  # bytes of the finished entries
        self._cache_bytes = cache_bytes
        self._ahead = read_ahead
        self._next = -1  # the piece after the last one read: reading it means reads in order
        self._lock = threading.RLock()  # a fetch done at once runs its callback in _fetch
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="snap-read")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        """The bytes ``[offset, offset+length)``, fewer only past the end of the snapshot."""
        return b"".join(self.iter_read(offset, length))

    def iter_read(self, offset: int, length: int) -> Iterator[Buffer]:
        """:meth:`read` as parts, without joining them (zero runs as zeros)."""
        for piece, start, end in self._pieces(offset, length):
            if self._is_zero(piece):
                yield bytes(end - start)
                continue
            data = self._chunk(piece)
            base = self._starts[piece]
            yield memoryview(data)[start - base : end - base]

    def extents(self, offset: int, length: int) -> list[Extent]:
        """Where ``[offset, offset+length)`` is data and where zero runs, neighbours of the
        same kind merged (NBD block status, FUSE SEEK_HOLE)."""
        out: list[Extent] = []
        for piece, start, end in self._pieces(offset, length):
            zero = self._is_zero(piece)
            if out and out[-1].zero == zero:
                last = out.pop()
                out.append(Extent(last.offset, end - last.offset, zero))
            else:
                out.append(Extent(start, end - start, zero))
        return out

    # -- inside ---------------------------------------------------------------------------------

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(piece, start, end) for each piece that ``[offset, offset+length)`` touches."""
        stop = min(self.size, offset + length)
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        pos = offset
        piece = bisect_right(self._starts, pos) - 1
        while pos < stop:
            end = min(stop, self._starts[piece + 1])
            yield piece, pos, end
            pos = end
            piece += 1

    def _is_zero(self, piece: int) -> bool:
        return self._ids[piece * 32 : piece * 32 + 32] == _NO_ID

    def _chunk_id(self, piece: int) -> ChunkId:
        return ChunkId(bytes(self._ids[piece * 32 : piece * 32 + 32]))

    def _chunk(self, piece: int) -> Buffer:
        with self._lock:
            future = self._cache.get(piece)
            if future is None:
                future = self._fetch(piece)
            else:
                self._cache.move_to_end(piece)
            if piece == self._next:  # reads in order: fetch the next pieces before they are asked
                for ahead in range(piece + 1, min(piece + 1 + self._ahead, len(self._starts) - 1)):
                    if ahead not in self._cache and not self._is_zero(ahead):
                        self._fetch(ahead)
            self._next = piece + 1
        return future.result()

    def _fetch(self, piece: int) -> Future[Buffer]:
        """Start reading a piece's chunk (the lock held)."""
        future = self._pool.submit(self._get, self._chunk_id(piece))
        future.add_done_callback(_counted(self, piece))
        self._cache[piece] = future
        return future

    def _account(self, piece: int, future: Future[Buffer]) -> None:
        """A fetch finished: count its bytes, and drop the oldest entries past the bound."""
        if future.exception() is not None:
            with self._lock:
                if self._cache.get(piece) is future:
                    del self._cache[piece]  # the next read tries again (and gets the error)
            return
        with self._lock:
            if self._cache.get(piece) is not future:
                return
            self._cached += len(future.result())
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                oldest, old = next(iter(self._cache.items()))
                if not old.done():
                    break
                del self._cache[oldest]
                if old.exception() is None:
                    self._cached -= len(old.result())


def _counted(reader: SnapshotReader, piece: int) -> Callable[[Future[Buffer]], None]:
    return lambda future: reader._account(piece, future)
