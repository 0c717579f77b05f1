"""Reading a commit's input ahead of the chunker, on a thread of its own.

The reader walks the input's layout in order. Data is read into blocks from a pool, each
block's data placed behind a carry area of ``carry`` bytes where the chunker later copies
the bytes it had not cut yet (so a block can be read before the chunker knows where it
stopped). Data not in the page cache is read with direct I/O (:class:`InputFile`), one
read at a time: the kernel's readahead hints cost more CPU than they gained. Holes are not
read: they are handed over as markers. The whole-file digest is fed
here, in stream order, so every byte is read exactly once and hashed as read. A failure
(unreadable input, a file that shrank) is handed over in place of the next piece.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from snapstore.ops.blocks import Block, BlockPool
from snapstore.ops.streams import DigestWorker, InputFile, Layout, Segment


@dataclass(frozen=True, slots=True)
class Data:
    block: Block  # holds [offset, offset + length) after its carry area, pinned for the taker
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Hole:
    segment: Segment


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException


Piece = Data | Hole | Failed | None  # None: the end of the input


class InputReader:
    def __init__(
        self,
        source: InputFile,
        size: int,
        layout: Layout,
        blocks: BlockPool,
        carry: int,
        read_size: int,
        digest: DigestWorker,
    ) -> None:
        self._source, self._size = source, size
        self._layout = layout
        self._blocks = blocks
        self._carry = carry
        self._read_size = read_size
        self._digest = digest
        self._queue: queue.Queue[Piece] = queue.Queue()
        self._stop = threading.Event()
        self.read_bytes = 0
        self._thread = threading.Thread(target=self._main, name="snap-reader", daemon=True)
        self._thread.start()

    def next(self, timeout: float | None) -> Piece | type[queue.Empty]:
        """The next piece, or ``queue.Empty`` if none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return queue.Empty

    def close(self) -> None:
        """Stop reading (idempotent); blocks handed over but not taken are released."""
        self._stop.set()
        self._thread.join()
        while True:
            try:
                piece = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(piece, Data):
                piece.block.unpin()

    def _main(self) -> None:
        try:
            pos = 0
            while pos < self._size and not self._stop.is_set():
                seg = self._layout.at(pos)
                if seg.hole:
                    self._digest.update_zeros(seg.end - seg.start)
                    self._queue.put(Hole(seg))
                else:
                    self._read(seg)
                pos = seg.end
            self._queue.put(None)
        except BaseException as exc:
            self._queue.put(Failed(exc))

    def _read(self, seg: Segment) -> None:
        offset = seg.start
        while offset < seg.end:
            block = self._take()
            if block is None:
                return
            n = min(self._read_size, seg.end - offset)
            try:
                self._source.read(block.view[self._carry :], offset, n)
            except BaseException:
                block.unpin()
                raise
            self.read_bytes += n
            block.start, block.end = offset - self._carry, offset + n
            block.pin()
            self._digest.update(block.view[self._carry : self._carry + n], block.unpin)
            self._queue.put(Data(block, offset, n))
            offset += n

    def _take(self) -> Block | None:
        while not self._stop.is_set():
            block = self._blocks.try_take()
            if block is not None:
                return block
            self._blocks.wait()
        return None
