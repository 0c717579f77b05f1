"""Reading a commit's input ahead of the chunker, on a thread of its own.

The reader walks the input's layout in order. Data is read into blocks from a pool, each
block's data placed behind a carry area of ``carry`` bytes where the chunker later copies
the bytes it had not cut yet (so a block can be read before the chunker knows where it
stopped). Data not in the page cache is read with direct I/O (:class:`InputFile`), one
read at a time: the kernel's readahead hints cost more CPU than they gained. Holes are not
read: they are handed over as markers. The whole-file digest is fed
here, in stream order, so every byte is read exactly once and hashed as read. A failure
(unreadable input, a file that shrank) is handed over in place of the next piece.

With zero runs on (``zero_run`` > 0, docs/FORMAT.md "Chunker"), the reader also finds them:
every maximal run of at least ``zero_run`` zero bytes, through holes and read zeros alike, is
handed over as a :class:`Run` and its bytes never as data, so the chunker sees only the data
between runs (holes shorter than a run are read: they are data). Zeros at the end of a block
are held back until what follows tells whether they start a run.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from snapstore.chunker import zero_runs
from snapstore.ops.blocks import Block, BlockPool
from snapstore.ops.streams import DigestWorker, InputFile, InputStream, Layout, Segment


@dataclass(frozen=True, slots=True)
class Data:
    block: Block  # holds [offset, offset + length) after its carry area, pinned for the taker
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Hole:
    segment: Segment


@dataclass(frozen=True, slots=True)
class Run:
    """A maximal run of zero bytes, at least ``zero_run`` long (zero-run mode only)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException


Piece = Data | Hole | Run | Failed | None  # None: the end of the input


class InputReader:
    def __init__(
        self,
        source: InputFile | InputStream,
        size: int,
        layout: Layout,
        blocks: BlockPool,
        carry: int,
        read_size: int,
        digest: DigestWorker,
        zero_run: int = 0,
    ) -> None:
        self._source, self._size = source, size
        self.size = size  # a stream's is known once its end is read
        self._layout = layout
        self._blocks = blocks
        self._carry = carry
        self._read_size = read_size
        self._digest = digest
        self._zero_run = zero_run
        self._zeros_from: int | None = None  # where the zeros up to the last byte read began
        self._held: list[tuple[Block, int, int]] = []  # their bytes not handed over, pinned
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
        self._drop_held()

    def _main(self) -> None:
        try:
            pos = 0
            while pos < self._size and not self._stop.is_set():
                seg = self._layout.at(pos)
                if seg.hole:
                    self._digest.update_zeros(seg.end - seg.start)
                    if not self._zero_run:
                        self._queue.put(Hole(seg))
                    elif self._zeros_from is None:  # a hole of a run's length at least
                        self._zeros_from = seg.start
                    self._drop_held()
                else:
                    self._read(seg)
                pos = seg.end
            if self._zeros_from is not None and not self._stop.is_set():
                self._zeros_end(self._size)
            self._queue.put(None)
        except BaseException as exc:
            self._queue.put(Failed(exc))

    def _read(self, seg: Segment) -> None:
        offset = seg.start
        while offset < min(seg.end, self._size):  # a stream's size drops to its end once read
            block = self._take()
            if block is None:
                return
            n = min(self._read_size, seg.end - offset)
            try:
                got = self._source.read(block.view[self._carry :], offset, n)
            except BaseException:
                block.unpin()
                raise
            if got < n:  # a stream ended: its size is known now
                self.size = self._size = offset + got
                if got == 0:
                    block.unpin()
                    return
                n = got
            self.read_bytes += n
            block.start, block.end = offset - self._carry, offset + n
            block.pin()
            self._digest.update(block.view[self._carry : self._carry + n], block.unpin)
            if self._zero_run:
                self._split(block, offset, n)
            else:
                self._queue.put(Data(block, offset, n))
            offset += n

    def _split(self, block: Block, offset: int, n: int) -> None:
        """Hand over a block read in zero-run mode: its data as pieces, its runs as runs, the
        zeros at its end held back (the caller's pin on the block is used up)."""
        end = offset + n
        runs = zero_runs(block.slice(offset, end), self._zero_run)
        if self._zeros_from is not None and not (runs and runs[0][0] == 0):
            self._zeros_end(offset)  # the zeros before this block end where it starts
        start = offset  # the first byte not handed over yet
        for a, b in runs:
            a, b = a + offset, b + offset
            if a == offset and self._zeros_from is not None:  # the zeros before go on
                if b < end:
                    start = self._zeros_end(b)
                    continue
            elif b == end or b - a >= self._zero_run:
                self._put_data(block, start, a)
                self._zeros_from = a
                if b < end:
                    start = self._zeros_end(b)
                    continue
            else:  # zeros at the start, shorter than a run: data
                continue
            if end - self._zeros_from < self._zero_run:  # zeros up to the end: hold them
                block.pin()
                self._held.append((block, a, end))
            else:  # a run already: its bytes are not needed
                self._drop_held()
            start = end
        self._put_data(block, start, end)
        block.unpin()

    def _zeros_end(self, at: int) -> int:
        """The zeros that began at ``_zeros_from`` end at ``at`` (the end of the input or a
        byte that is not zero): a run, or data handed over after all. Returns where the data
        after them starts."""
        begin, self._zeros_from = self._zeros_from, None
        assert begin is not None
        if at - begin >= self._zero_run:
            self._drop_held()
            self._queue.put(Run(begin, at))
            return at
        held, self._held = self._held, []
        for block, a, b in held:  # each keeps the pin it was held with
            self._queue.put(Data(block, a, b - a))
        return held[-1][2] if held else at

    def _put_data(self, block: Block, start: int, end: int) -> None:
        if end > start:
            block.pin()
            self._queue.put(Data(block, start, end - start))

    def _drop_held(self) -> None:
        held, self._held = self._held, []
        for block, _, _ in held:
            block.unpin()

    def _take(self) -> Block | None:
        while not self._stop.is_set():
            block = self._blocks.try_take()
            if block is not None:
                return block
            self._blocks.wait()
        return None
