"""A backend wrapper that injects faults on a deterministic schedule, so that tests can prove
what a failure at any call leaves behind (docs/BACKENDS.md, "faulty").

Calls are counted per operation (``put``, ``get``, ``stat``, ``stat_many``, ``list``,
``delete``, ``usage``, ``remove_temp``, ``open_append``, ``append.write``, ``append.checkpoint``,
``append.seal``, ``punch``, ``lock``, ``create_exclusive``) and all together (``*``). A
:class:`Fault` names the Nth call of one of them and what happens to it:

- ``eio`` / ``enospc``: the call fails before reaching the wrapped backend, as a failed
  system call does (StorageIOError / NoSpaceError);
- ``torn``: a put (or create_exclusive, or an append write) hands the wrapped backend the
  first half of the data, then the stream fails: the wrapped backend's own atomicity is what
  is tested (the object must stay absent, or an append keep only whole earlier writes);
- ``crash``: like ``torn`` for the writes above, like ``eio`` otherwise, and every later call
  of any operation fails too (the process "died"; a test then opens the wrapped backend
  again to see what a restart finds);
- ``short`` / ``flip``: a get returns its bytes cut short by one / with one bit flipped,
  breaking the interface on purpose, for tests of callers that verify what they read.

Not injected: the loss of writes not yet made durable (the page cache of a power cut);
the crash tests with real processes and kill -9 cover what the kernel keeps.
"""

from __future__ import annotations

import errno
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from snapstore.backends.base import AppendWriter, Backend, Data, parts_of
from snapstore.errors import SnapstoreError, StorageIOError, translate_os_error
from snapstore.model import Buffer

Kind = Literal["eio", "enospc", "torn", "crash", "short", "flip"]


@dataclass(frozen=True)
class Fault:
    op: str  # an operation's name, or "*" for any call
    nth: int  # 1 for its first call
    kind: Kind = "eio"


class _Torn(Exception):
    """Raised inside the data stream of a torn put."""


class FaultyBackend(Backend):
    def __init__(self, inner: Backend, faults: Iterable[Fault] = ()) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.faults = list(faults)
        self.calls: Counter[str] = Counter()
        self.injected: list[Fault] = []  # the faults met, in order
        self.crashed = False
        self._lock = threading.Lock()

    def _enter(self, op: str, name: str) -> Fault | None:
        """Count a call; raise a fault that fails it outright; return one that tears it."""
        with self._lock:
            if self.crashed:
                raise StorageIOError(f"stored object {name!r}", "the backend crashed (injected)")
            self.calls[op] += 1
            self.calls["*"] += 1
            fault = next(
                (f for f in self.faults if (f.op, f.nth) in ((op, self.calls[op]), ("*", self.calls["*"]))),
                None,
            )
            if fault is None:
                return None
            self.injected.append(fault)
            if fault.kind == "crash":
                self.crashed = True
        if fault.kind in ("torn", "crash", "short", "flip"):
            return fault
        raise _error(fault.kind, name)

    # -- the base interface -------------------------------------------------------------------

    def put(self, name: str, data: Data, *, overwrite: bool = False) -> None:
        if self._enter("put", name) is None:
            return self.inner.put(name, data, overwrite=overwrite)
        try:
            self.inner.put(name, _torn(data), overwrite=overwrite)
        except (_Torn, SnapstoreError) as exc:
            raise _error("eio", name) from exc
        raise AssertionError(f"{type(self.inner).__name__}.put swallowed a failing stream")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        fault = self._enter("get", name)
        if fault is not None and fault.kind in ("torn", "crash"):
            raise _error("eio", name)
        data = self.inner.get(name, offset, length)
        if fault is not None and fault.kind == "short":
            return data[:-1]
        if fault is not None and fault.kind == "flip" and data:
            return bytes([data[0] ^ 1]) + data[1:]
        return data

    def stat(self, name: str) -> int:
        self._plain("stat", name)
        return self.inner.stat(name)

    def stat_many(self, names: Sequence[str]) -> dict[str, int | None]:
        self._plain("stat_many", ", ".join(names[:3]))
        return self.inner.stat_many(names)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._plain("list", prefix)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self._plain("delete", name)
        self.inner.delete(name)

    def usage(self) -> int:
        self._plain("usage", "")
        return self.inner.usage()

    def remove_temp(self, *, skip: Sequence[str] = ()) -> int:
        self._plain("remove_temp", "")
        return self.inner.remove_temp(skip=skip)

    def close(self) -> None:
        self.inner.close()

    # -- capabilities -----------------------------------------------------------------------------

    def open_append(self, name: str) -> AppendWriter:
        self._plain("open_append", name)
        return _FaultyAppendWriter(self, name, self.inner.open_append(name))

    def punch(self, name: str, offset: int, length: int) -> None:
        self._plain("punch", name)
        self.inner.punch(name, offset, length)

    def lock(self, name: str, *, exclusive: bool) -> AbstractContextManager[None]:
        self._plain("lock", name)
        return self.inner.lock(name, exclusive=exclusive)

    def create_exclusive(self, name: str, data: Buffer) -> bool:
        if self._enter("create_exclusive", name) is None:
            return self.inner.create_exclusive(name, data)
        self.put_torn(name, data)
        raise AssertionError("unreachable")

    def local_path(self, name: str) -> Path:
        return self.inner.local_path(name)

    def put_torn(self, name: str, data: Buffer) -> None:
        """Hand the wrapped backend half of ``data`` as a put, then fail (always raises)."""
        try:
            self.inner.put(name, _torn(data))
        except (_Torn, SnapstoreError) as exc:
            raise _error("eio", name) from exc
        raise AssertionError(f"{type(self.inner).__name__}.put swallowed a failing stream")

    def _plain(self, op: str, name: str) -> None:
        """A call that can only fail outright (a tear is a failure before it starts)."""
        if self._enter(op, name) is not None:
            raise _error("eio", name)


class _FaultyAppendWriter(AppendWriter):
    def __init__(self, backend: FaultyBackend, name: str, inner: AppendWriter) -> None:
        self._backend = backend
        self._name = name
        self._inner = inner
        self.size = inner.size

    def write(self, data: Buffer) -> int:
        try:
            if self._backend._enter("append.write", self._name) is None:
                return self._inner.write(data)
            view = memoryview(data).cast("B")
            self._inner.write(view[: len(view) // 2])
            raise _error("eio", self._name)
        finally:
            self.size = self._inner.size

    def checkpoint(self) -> None:
        self._backend._plain("append.checkpoint", self._name)
        self._inner.checkpoint()

    def seal(self) -> None:
        self._backend._plain("append.seal", self._name)
        self._inner.seal()

    def abort(self) -> None:
        self._inner.abort()


def _torn(data: Data) -> Iterator[Buffer]:
    """The first half of the first part of ``data``, then a failure."""
    for part in parts_of(data):
        view = memoryview(part).cast("B")
        yield view[: len(view) // 2]
        break
    raise _Torn("injected: the stream broke midway")


def _error(kind: str, name: str) -> SnapstoreError:
    code = errno.ENOSPC if kind == "enospc" else errno.EIO
    exc = OSError(code, f"{errno.errorcode[code]} (injected)")
    return translate_os_error(exc, f"stored object {name!r}")
