"""A put the server receives in pieces (docs/PROTOCOL.md, "put"): the backend's put runs in
a thread of its own, reading the pieces from a queue as the requests bring them, so that the
server answers other requests (a client copying an object reads it meanwhile) while a put
is open. The queue is short: a slow disk holds the client back, not the server's memory."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from snapstore.backends.base import Backend
from snapstore.errors import UsageError

_END = b""
_DEPTH = 4  # pieces waiting for the put, at most


class _Aborted(Exception):
    """The client gave the put up midway."""


class PutStream:
    def __init__(self, backend: Backend, name: str, overwrite: bool) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(backend, name, overwrite), daemon=True, name="snap-serve-put"
        )
        self._thread.start()

    def _run(self, backend: Backend, name: str, overwrite: bool) -> None:
        try:
            backend.put(name, self._pieces(), overwrite=overwrite)
        except BaseException as exc:  # raised to the client at the put's end
            self._failure = exc

    def _pieces(self) -> Iterator[bytes]:
        while True:
            piece = self._queue.get()
            if piece is None:
                raise _Aborted
            if piece is _END:
                return
            yield piece

    def add(self, piece: bytes) -> None:
        """One more piece (dropped when the put has failed already)."""
        if piece:
            self._offer(piece)

    def end(self) -> None:
        """Wait for the put to finish; raise what it failed with."""
        self._offer(_END)
        self._thread.join()
        if isinstance(self._failure, _Aborted):
            raise UsageError("the put was given up")
        if self._failure is not None:
            raise self._failure

    def abort(self) -> None:
        """Give the put up (the object stays absent, or its old version) and wait for it."""
        self._offer(None)
        self._thread.join()

    def _offer(self, item: bytes | None) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
