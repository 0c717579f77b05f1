"""An in-memory backend: a dict of names to bytes behind one lock. For tests, and for
repositories that need not outlive the process."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

from snapstore.backends.base import (
    AppendWriter,
    Backend,
    Capabilities,
    Data,
    check_name,
    check_prefix,
    check_range,
    parts_of,
)
from snapstore.errors import ObjectExistsError, ObjectNotFoundError, ShortObjectError
from snapstore.model import Buffer

_LIST_BATCH = 1000  # names copied out under the lock at a time


class MemoryBackend(Backend):
    """Objects are bytearrays never changed once visible, except by an appender (which
    only grows its own) and punch (which zeroes a range in place, under the lock)."""

    capabilities = Capabilities(append=True, punch=True, create_exclusive=True)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, bytearray] = {}
        self._names: list[str] = []  # sorted keys of _objects

    def put(self, name: str, data: Data, *, overwrite: bool = False) -> None:
        check_name(name)
        with self._lock:
            if name in self._objects and not overwrite:
                raise ObjectExistsError(name)
        body = bytearray()
        for part in parts_of(data):  # a failing stream leaves nothing behind
            body += part
        with self._lock:
            if name in self._objects and not overwrite:
                raise ObjectExistsError(name)
            self._store(name, body)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        check_range(offset, length)
        with self._lock:
            body = self._body(name)
            end = len(body) if length is None else offset + length
            if end > len(body) or offset > len(body):
                raise ShortObjectError(name, len(body), max(end, offset))
            return bytes(memoryview(body)[offset:end])

    def stat(self, name: str) -> int:
        check_name(name)
        with self._lock:
            return len(self._body(name))

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        after = prefix
        inclusive = True
        while True:
            with self._lock:
                find = bisect.bisect_left if inclusive else bisect.bisect_right
                start = find(self._names, after)
                batch = self._names[start : start + _LIST_BATCH]
            for name in batch:
                if not name.startswith(prefix):
                    return
                yield name
            if len(batch) < _LIST_BATCH:
                return
            after, inclusive = batch[-1], False

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            if self._objects.pop(name, None) is not None:
                del self._names[bisect.bisect_left(self._names, name)]

    def usage(self) -> int:
        with self._lock:
            return sum(len(body) for body in self._objects.values())

    def open_append(self, name: str) -> AppendWriter:
        check_name(name)
        with self._lock:
            if name in self._objects:
                raise ObjectExistsError(name)
            body = self._store(name, bytearray())
        return _MemoryAppendWriter(self, name, body)

    def punch(self, name: str, offset: int, length: int) -> None:
        check_name(name)
        check_range(offset, length)
        with self._lock:
            body = self._body(name)
            if offset + length > len(body):
                raise ShortObjectError(name, len(body), offset + length)
            body[offset : offset + length] = bytes(length)

    def create_exclusive(self, name: str, data: Buffer) -> bool:
        try:
            self.put(name, data)
        except ObjectExistsError:
            return False
        return True

    # -- under the lock ---------------------------------------------------------------------------

    def _body(self, name: str) -> bytearray:
        body = self._objects.get(name)
        if body is None:
            raise ObjectNotFoundError(name)
        return body

    def _store(self, name: str, body: bytearray) -> bytearray:
        if name not in self._objects:
            bisect.insort(self._names, name)
        self._objects[name] = body
        return body

    def _append(self, name: str, body: bytearray, data: Buffer) -> int:
        with self._lock:
            offset = len(body)
            body += data
            return offset

    def _drop(self, name: str, body: bytearray) -> None:
        with self._lock:
            if self._objects.get(name) is body:
                del self._objects[name]
                del self._names[bisect.bisect_left(self._names, name)]


class _MemoryAppendWriter(AppendWriter):
    """Appends visible at once; checkpoints have nothing to make durable."""

    def __init__(self, backend: MemoryBackend, name: str, body: bytearray) -> None:
        self._backend = backend
        self._name = name
        self._body = body
        self._open = True
        self.size = 0

    def write(self, data: Buffer) -> int:
        if not self._open:
            raise ValueError(f"stored object {self._name!r}: written after seal or abort")
        offset = self._backend._append(self._name, self._body, data)
        self.size = offset + memoryview(data).nbytes
        return offset

    def checkpoint(self) -> None:
        if not self._open:
            raise ValueError(f"stored object {self._name!r}: checkpoint after seal or abort")

    def seal(self) -> None:
        self._open = False

    def abort(self) -> None:
        if self._open:
            self._open = False
            self._backend._drop(self._name, self._body)
