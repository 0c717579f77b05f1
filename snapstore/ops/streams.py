"""The edges of commit and checkout: where an input file's data and holes are, reading it
into blocks, and the thread that keeps the whole-file digest."""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from snapstore.directio import PAGE, cached, open_direct
from snapstore.errors import InputChangedError, InputError
from snapstore.extents import MIN_HOLE, data_extents
from snapstore.hashing import StreamHasher
from snapstore.model import Buffer

_DONE = object()
_ZERO_STEP = 64 * 1024 * 1024  # zeros hashed between two looks at the stop flag
STREAM_END = 1 << 62  # a stream's size until its end is read: past any real input
_PIPE_SIZE = 1024 * 1024  # a pipe's buffer while a commit reads it (F_SETPIPE_SZ)
_F_SETPIPE_SZ = 1031


@dataclass(frozen=True, slots=True)
class Segment:
    """``[start, end)`` of the input: data to read, or a hole that reads as zeros."""

    start: int
    end: int
    hole: bool


def segments(fd: int, size: int, min_hole: int = 0) -> Iterator[Segment]:
    """The input from 0 to ``size`` as data and holes, in order (holes are never read);
    holes shorter than ``min_hole`` are data (read, as zeros): data_extents merges those
    between data, and one at either end of the file joins the data next to it."""
    pos = 0
    for offset, length in data_extents(fd, size, max(MIN_HOLE, min_hole)):
        end = offset + length
        if offset - pos < min_hole:
            offset = pos
        if size - end < min_hole:
            end = size
        if offset > pos:
            yield Segment(pos, offset, True)
        yield Segment(offset, end, False)
        pos = end
    if pos < size:
        yield Segment(pos, size, size - pos >= min_hole)


class Layout:
    """The input's segments, looked up by offset. Offsets asked for never go backwards by
    more than what :meth:`forget` has not dropped; segments are read from SEEK_DATA/SEEK_HOLE
    lazily, as far ahead as asked."""

    def __init__(self, fd: int, size: int, min_hole: int = 0) -> None:
        self._source = segments(fd, size, min_hole) if fd >= 0 else iter([Segment(0, size, False)])
        self._known: deque[Segment] = deque()
        self._lock = threading.Lock()  # the reader and the chunker share one layout

    def at(self, offset: int) -> Segment:
        """The segment holding ``offset`` (which must be below the input's size)."""
        with self._lock:
            for seg in self._known:
                if seg.end > offset:
                    return seg
            for seg in self._source:
                self._known.append(seg)
                if seg.end > offset:
                    return seg
        raise AssertionError(f"offset {offset} is past the end of the input")

    def forget(self, offset: int) -> None:
        """Drop the segments that end at or before ``offset``."""
        with self._lock:
            while self._known and self._known[0].end <= offset:
                self._known.popleft()


def read_into(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fill ``view`` with the input's bytes at ``offset``; the file must still have them."""
    done = 0
    while done < len(view):
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            raise InputError(path, exc.strerror or str(exc)) from exc
        if n == 0:  # the file shrank under us
            raise InputChangedError(path)
        done += n


class InputFile:
    """Reads a commit's input. Bytes already in the page cache are copied from it; the rest
    is read with direct I/O into the caller's page-aligned buffer: no page-cache copy and
    about half the kernel's CPU time on a cold read, and the cache is not flooded with an
    image read once. Plain reads where direct I/O is refused (some file systems, unaligned
    ranges)."""

    def __init__(self, fd: int, path: Path, direct: bool = True) -> None:
        self.fd, self.path = fd, path
        self._direct = open_direct(fd) if direct else -1

    def read(self, room: memoryview, offset: int, length: int) -> int:
        """Fill ``room[:length]`` with the bytes at ``offset``; returns ``length``. ``room`` may
        be written past ``length``, up to ``length`` rounded up to a page; its start must be
        page-aligned."""
        done = 0
        if self._direct >= 0 and offset % PAGE == 0 and not cached(self.fd, offset, length):
            padded = min(len(room), -(-length // PAGE) * PAGE)
            try:
                got = os.preadv(self._direct, [room[:padded]], offset)
            except OSError:  # refused after all (alignment rules of this device): plain reads
                os.close(self._direct)
                self._direct = -1
                got = 0
            if got >= length:
                return length
            done = got - got % PAGE  # the rest (the end of the file moved?) the plain way
        read_into(self.fd, room[done:length], offset + done, self.path)
        return length

    def close(self) -> None:
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1


class InputStream:
    """Reads a commit's input that has no size and cannot be read twice (a pipe, stdin, a
    binary file object): in order, each read filled unless the stream ends. Its layout is
    one data segment up to :data:`STREAM_END` (no holes to ask for: the reader finds zero
    runs in the bytes)."""

    def __init__(self, source: int | BinaryIO, path: Path) -> None:
        self.path = path
        self._file = None if isinstance(source, int) else source
        self.fd = source if isinstance(source, int) else -1
        if self.fd >= 0:
            with suppress(OSError):  # a pipe: fewer, larger reads (not a pipe: refused, harmless)
                fcntl.fcntl(self.fd, _F_SETPIPE_SZ, _PIPE_SIZE)

    def read(self, room: memoryview, offset: int, length: int) -> int:
        """Fill ``room[:length]`` with the stream's next bytes (``offset`` is where they are in
        the stream); returns how many: fewer than ``length`` only at the end of the stream."""
        done = 0
        while done < length:
            try:
                if self._file is not None:
                    n = self._file.readinto(room[done:length])  # type: ignore[attr-defined]
                else:
                    n = os.readv(self.fd, [room[done:length]])
            except OSError as exc:
                raise InputError(self.path, exc.strerror or str(exc)) from exc
            if not n:
                break
            done += n
        return done

    def close(self) -> None:
        pass


class DigestWorker:
    """BLAKE3 of a whole stream, fed in order on its own thread (blake3 releases the GIL).

    ``update`` takes a buffer and, optionally, a callback run once the buffer has been
    hashed (so the caller can reuse its memory); the queue is bounded. A zero run is hashed
    in steps, so that :meth:`cancel` stops even a hostile manifest's 4 EiB run at once."""

    def __init__(self, depth: int = 16) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._hasher = StreamHasher()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="snap-digest", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, int):
                while item > 0 and not self._stop.is_set():
                    self._hasher.update_zeros(min(item, _ZERO_STEP))
                    item -= _ZERO_STEP
                continue
            data, release = cast(tuple[Buffer, Callable[[], None] | None], item)
            try:
                if self._error is None and not self._stop.is_set():
                    self._hasher.update(data)
            except BaseException as exc:  # pragma: no cover - blake3 does not fail
                self._error = exc
            finally:
                if release is not None:
                    release()

    def update(self, data: Buffer, release: Callable[[], None] | None = None) -> None:
        self._queue.put((data, release))

    def update_zeros(self, length: int) -> None:
        self._queue.put(length)

    def digest(self) -> bytes:
        self.close()
        if self._error is not None:
            raise self._error
        return self._hasher.digest()

    def close(self) -> None:
        """End the thread once it has hashed everything queued (idempotent). Every release
        callback queued so far has run when this returns."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def cancel(self) -> None:
        """End the thread now, after an error: what is queued is released, not hashed."""
        self._stop.set()
        self.close()
