"""Background threads at the edge of commit and checkout: one reads the input ahead, one
keeps the whole-file digest. Both hand results over bounded queues, so memory stays bounded
and errors reach the caller."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from snapstore.errors import InputChangedError, InputError
from snapstore.extents import data_extents
from snapstore.hashing import StreamHasher

READ_BLOCK = 8 * 1024 * 1024
_ZERO_STEP = 64 * 1024 * 1024  # zeros hashed between two looks at the stop flag
_DONE = object()


@dataclass(frozen=True)
class Block:
    """``data`` read at ``offset``; ``extent_end`` is where its data extent ends."""

    offset: int
    data: bytes
    extent_end: int


@dataclass(frozen=True)
class Hole:
    offset: int
    length: int


class _Worker:
    """A thread fed or drained through one bounded queue; its exception is re-raised."""

    def __init__(self, name: str, depth: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class BlockReader(_Worker):
    """Reads a file's data extents ahead of the consumer, several reads in flight (a disk
    serves parallel reads faster); holes are reported, never read."""

    def __init__(self, fd: int, size: int, path: Path, depth: int = 4, readers: int = 3) -> None:
        super().__init__("snap-reader", depth)
        self._fd, self._size, self._path = fd, size, path
        self._readers = readers
        self._thread.start()

    def _main(self) -> None:
        try:
            with ThreadPoolExecutor(self._readers, thread_name_prefix="snap-read") as pool:
                inflight: deque[tuple[int, int, Future[bytes]]] = deque()
                for item in self._plan():
                    if isinstance(item, Hole):
                        if not self._flush(inflight, 0) or not self._put(item):
                            return
                        continue
                    offset, length, end = item
                    inflight.append((offset, end, pool.submit(os.pread, self._fd, length, offset)))
                    if not self._flush(inflight, self._readers):
                        return
                self._flush(inflight, 0)
        except OSError as exc:
            self._error = InputError(self._path, exc.strerror or str(exc))
        except BaseException as exc:
            self._error = exc
        self._put(_DONE)

    def _plan(self) -> Iterator[Hole | tuple[int, int, int]]:
        """Holes, and the (offset, length, extent end) of every block to read, in order."""
        pos = 0
        for offset, length in (*data_extents(self._fd, self._size), (self._size, 0)):
            if offset > pos:
                yield Hole(pos, offset - pos)
            end = offset + length
            while offset < end:
                n = min(READ_BLOCK, end - offset)
                yield offset, n, end
                offset += n
            pos = end

    def _flush(self, inflight: deque[tuple[int, int, Future[bytes]]], keep: int) -> bool:
        """Hand over finished reads in order until at most ``keep`` are in flight."""
        while len(inflight) > keep:
            offset, end, future = inflight.popleft()
            data = future.result()
            if not data:
                raise InputChangedError(self._path)
            if not self._put(Block(offset, data, end)):
                return False
        return True

    def __iter__(self) -> Iterator[Block | Hole]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            assert isinstance(item, Block | Hole)
            yield item


class DigestWorker(_Worker):
    """BLAKE3 of a whole stream, fed in order (blake3 releases the GIL while hashing)."""

    def __init__(self, depth: int = 8) -> None:
        super().__init__("snap-digest", depth)
        self._hasher = StreamHasher()
        self._thread.start()

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                if isinstance(item, int):
                    while item > 0 and not self._stop.is_set():  # a zero run can be 4 EiB
                        self._hasher.update_zeros(min(item, _ZERO_STEP))
                        item -= _ZERO_STEP
                else:
                    self._hasher.update(item)  # type: ignore[arg-type]
            except BaseException as exc:  # pragma: no cover - blake3 does not fail
                self._error = exc

    def update(self, data: bytes | memoryview) -> None:
        self._put(data)

    def update_zeros(self, length: int) -> None:
        self._put(length)

    def digest(self) -> bytes:
        self.close()
        if self._error is not None:
            raise self._error
        return self._hasher.digest()

    def close(self) -> None:
        """End the thread (idempotent); after an error, what was hashed is discarded."""
        if self._thread.is_alive():
            self._put(_DONE)
            self._thread.join()

    def cancel(self) -> None:
        """End the thread now, dropping what is queued and what it is hashing (an error)."""
        self._stop.set()
        with suppress(queue.Full):
            self._queue.put_nowait(_DONE)
        self._thread.join()
