"""Read-ahead hints for pack byte ranges (posix_fadvise WILLNEED) from a thread of its own."""

from __future__ import annotations

import os
import queue
import threading
from contextlib import suppress
from pathlib import Path

_MERGE = 4 * 1024 * 1024  # adjacent ranges are asked for together, up to this much


class Prefetch:
    """Asks the kernel to read byte ranges of files before they are needed, from a thread of
    its own: the readers that come later find them in the page cache, and the disk gets many
    requests at once instead of one per reader. Adjacent ranges are asked for together."""

    def __init__(self, max_open: int = 16) -> None:
        self._queue: queue.Queue[tuple[Path, int, int] | None] = queue.Queue()
        self._files: dict[Path, int] = {}
        self._max_open = max_open
        self._pending: tuple[Path, int, int] | None = None  # the range being extended
        self._thread = threading.Thread(target=self._main, name="snap-prefetch", daemon=True)
        self._thread.start()

    def want(self, path: Path, offset: int, length: int) -> None:
        """``[offset, offset+length)`` of ``path`` will be read soon."""
        held = self._pending
        if held is not None and held[0] == path and held[1] + held[2] == offset and held[2] < _MERGE:
            self._pending = (path, held[1], held[2] + length)
            return
        if held is not None:
            self._queue.put(held)
        self._pending = (path, offset, length)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _main(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                path, offset, length = item
                with suppress(OSError):  # a hint only
                    os.posix_fadvise(self._fd(path), offset, length, os.POSIX_FADV_WILLNEED)
        finally:
            for fd in self._files.values():
                os.close(fd)

    def _fd(self, path: Path) -> int:
        fd = self._files.get(path)
        if fd is None:
            if len(self._files) >= self._max_open:
                os.close(self._files.pop(next(iter(self._files))))
            # A hint only: never through a link, never blocking on a FIFO planted as a pack.
            fd = self._files[path] = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        return fd
