"""The storage backend interface: a store of immutable named objects (docs/BACKENDS.md).

A backend keeps byte strings under relative names such as ``packs/ab/<pack id>.pack``. Every
backend has :meth:`Backend.put` (whole object, atomic), ranged :meth:`Backend.get`,
:meth:`Backend.stat`, sorted :meth:`Backend.list` by prefix and idempotent
:meth:`Backend.delete`, batched :meth:`Backend.stat_many` for callers a network sits under,
and :meth:`Backend.usage`. What a backend can do beyond that it declares in
:class:`Capabilities`; calling an undeclared capability is a bug (NotImplementedError).

Every failure is a :class:`~snapstore.errors.SnapstoreError`: ObjectNotFoundError (exit 3),
ObjectExistsError, ShortObjectError and CorruptError (exit 4), ObjectNameError (exit 2),
NoSpaceError (exit 8), StorageIOError (exit 11), LockedError (exit 6).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from snapstore.errors import ObjectExistsError, ObjectNameError, ObjectNotFoundError
from snapstore.model import Buffer

MAX_NAME = 1024  # characters in a whole name
MAX_PART = 200  # characters between two slashes
_PART_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")

Data = Buffer | Iterable[Buffer]  # a whole object, or its parts in order (streamed)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the base interface."""

    append: bool = False  # open_append(): append in place with durable checkpoints
    punch: bool = False  # punch(): free a byte range; it reads back as zeros, size unchanged
    flock: bool = False  # lock(): a local advisory lock released when its holder dies
    create_exclusive: bool = False  # create_exclusive() and put() refusing to overwrite race-free
    local_path: bool = False  # local_path(): a file system path (LMDB, du fast paths)


class AppendWriter(abc.ABC):
    """One object being appended to (:meth:`Backend.open_append`). It exists under its name
    from the start; after a crash it holds at least what the last checkpoint made durable."""

    size: int  # bytes appended so far

    @abc.abstractmethod
    def write(self, data: Buffer) -> int:
        """Append ``data``; returns the offset it was written at."""

    @abc.abstractmethod
    def checkpoint(self) -> None:
        """Make every byte appended so far durable (fsync)."""

    @abc.abstractmethod
    def seal(self) -> None:
        """Checkpoint and close: the object is immutable from now on. Sealing twice does nothing."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close and delete the object (a failed writer). Never fails."""


class Backend(abc.ABC):
    """A store of immutable named objects. Thread-safe: any thread may call any method."""

    capabilities: Capabilities = Capabilities()

    # -- every backend --------------------------------------------------------------------------

    @abc.abstractmethod
    def put(self, name: str, data: Data, *, overwrite: bool = False) -> None:
        """Store ``data`` (bytes, or an iterable of parts streamed in order) under ``name``,
        atomically: readers see the whole object or nothing, also after a failure or a crash
        at any moment. ObjectExistsError if it exists and not ``overwrite`` (race-free where
        :attr:`Capabilities.create_exclusive` is declared); durable when put returns."""

    @abc.abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the object (to its end when ``length`` is
        None). ShortObjectError when the object ends before; ObjectNotFoundError."""

    @abc.abstractmethod
    def stat(self, name: str) -> int:
        """The object's size in bytes; ObjectNotFoundError."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Names that start with ``prefix`` (a plain string prefix: ``packs/a`` matches
        ``packs/ab/x``), in sorted order, produced as they are found. Objects being put are
        never listed; what a backend keeps for itself (temp files) neither."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object, durably; a missing object is not an error (idempotent)."""

    @abc.abstractmethod
    def usage(self) -> int:
        """Bytes the storage uses for every object (on a disk: allocated blocks, as ``du``)."""

    def stat_many(self, names: Sequence[str]) -> dict[str, int | None]:
        """The size of each name, None for those missing: one request where a network is."""
        sizes: dict[str, int | None] = {}
        for name in names:
            try:
                sizes[name] = self.stat(name)
            except ObjectNotFoundError:
                sizes[name] = None
        return sizes

    def exists_many(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` exist."""
        return {name for name, size in self.stat_many(names).items() if size is not None}

    def remove_temp(self, *, skip: Sequence[str] = ()) -> int:
        """Remove what puts killed midway left behind (a local backend's hidden temp files);
        returns how many. Only while no put runs below it (the repository's write lock);
        ``skip``: top-level directories left alone. Nothing where a put leaves nothing."""
        return 0

    def close(self) -> None:
        """Release what the backend holds open. Calls after close are bugs."""
        return None

    # -- declared capabilities ------------------------------------------------------------------

    def open_append(self, name: str) -> AppendWriter:
        """A new object to append to (ObjectExistsError if it exists). ``append``."""
        raise NotImplementedError(f"{type(self).__name__} cannot append")

    def punch(self, name: str, offset: int, length: int) -> None:
        """Free ``[offset, offset+length)`` of the object, durably: it reads back as zeros and
        the size is unchanged. ``punch``."""
        raise NotImplementedError(f"{type(self).__name__} cannot punch holes")

    def lock(self, name: str, *, exclusive: bool) -> AbstractContextManager[None]:
        """Hold a lock object (created if missing) for the ``with`` block; LockedError at once
        if another holder conflicts. ``flock``."""
        raise NotImplementedError(f"{type(self).__name__} has no local locks")

    def create_exclusive(self, name: str, data: Buffer) -> bool:
        """Put ``data`` unless the object exists: False when it does. Of any number of
        callers racing, across processes, exactly one gets True. ``create_exclusive``."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional create")

    def local_path(self, name: str) -> Path:
        """A path of the object (or directory) ``name`` on a local file system. ``local_path``."""
        raise NotImplementedError(f"{type(self).__name__} has no local paths")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def put_refusing(backend: Backend, name: str) -> None:
    """ObjectExistsError if ``name`` exists (for backends without a race-free create)."""
    if backend.exists_many([name]):
        raise ObjectExistsError(name)


def parts_of(data: Data) -> Iterator[Buffer]:
    """``data`` as an iterator of byte parts (one part when it is a buffer); a memoryview
    of wider items is seen as its bytes."""
    for part in (data,) if isinstance(data, bytes | bytearray | memoryview) else data:
        yield part.cast("B") if isinstance(part, memoryview) and part.format != "B" else part


# -- names (pure) --------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if a backend accepts it, else ObjectNameError: parts separated by single
    slashes, each 1-200 of ``a-z 0-9 . _ -`` not starting with a dot (``.``, ``..`` and
    hidden names are the backends' own), at most 1024 characters, not absolute."""
    if not isinstance(name, str) or not name:
        raise ObjectNameError(str(name), "empty")
    if len(name) > MAX_NAME:
        raise ObjectNameError(name, f"longer than {MAX_NAME} characters")
    for part in name.split("/"):
        _check_part(name, part)
    return name


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start a valid name (``""``, ``packs/``, ``packs/a``...)."""
    if not prefix:
        return prefix
    if len(prefix) > MAX_NAME:
        raise ObjectNameError(prefix, f"longer than {MAX_NAME} characters")
    *whole, last = prefix.split("/")
    for part in whole:
        _check_part(prefix, part)
    if last:
        _check_part(prefix, last)
    return prefix


def _check_part(name: str, part: str) -> None:
    if not part:
        raise ObjectNameError(name, "an empty part (a leading, trailing or double slash)")
    if part[0] == ".":
        raise ObjectNameError(name, "a part starts with a dot")
    if len(part) > MAX_PART:
        raise ObjectNameError(name, f"a part longer than {MAX_PART} characters")
    if not _PART_CHARS.issuperset(part):
        raise ObjectNameError(name, "characters other than a-z 0-9 . _ - /")


def check_range(offset: int, length: int | None) -> None:
    """A range a get may ask for (ValueError otherwise: a caller's bug)."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"negative offset or length ({offset}, {length})")
