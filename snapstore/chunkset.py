"""Sets of chunk ids kept compact: the distinct ids, sorted, packed 32 bytes each (pure).

A manifest may name tens of millions of chunks. Held as Python objects, a set of them costs
~100 bytes per chunk; packed, 32. Sorted, they can be applied to the index in batches that
resume after the last id applied (docs/FORMAT.md, "index"), and merged with the index's own
order (verify).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from snapstore.model import Buffer, ChunkId

# bytes() typed as making a ChunkId: the ids come out of a sorted array of ids, and a NewType call
# per id would cost a Python-level call in loops over millions of them.
_chunk_id: Callable[[Buffer], ChunkId] = bytes  # type: ignore[assignment]

ID_SIZE = 32
_RUN = 1 << 18  # ids sorted as Python objects at a time (~20 MiB)


class ChunkIdSet:
    """Distinct chunk ids in ascending order (build one with :func:`collect`)."""

    __slots__ = ("_data",)

    def __init__(self, packed: bytes | bytearray = b"") -> None:
        if len(packed) % ID_SIZE:
            raise ValueError("packed chunk ids must be a multiple of 32 bytes")
        self._data = memoryview(packed)

    @property
    def packed(self) -> memoryview:
        """The ids back to back, 32 bytes each."""
        return self._data

    def __len__(self) -> int:
        return len(self._data) // ID_SIZE

    def __iter__(self) -> Iterator[ChunkId]:
        return self.iter_from(0)

    def __getitem__(self, i: int) -> ChunkId:
        return _chunk_id(self._data[i * ID_SIZE : (i + 1) * ID_SIZE])

    def __contains__(self, chunk_id: object) -> bool:
        if not isinstance(chunk_id, bytes) or len(chunk_id) != ID_SIZE:
            return False
        i = self.position(chunk_id)
        return i < len(self) and self[i] == chunk_id

    def iter_from(self, start: int, stop: int | None = None) -> Iterator[ChunkId]:
        data = self._data
        end = len(data) if stop is None else stop * ID_SIZE
        for i in range(start * ID_SIZE, end, ID_SIZE):
            yield _chunk_id(data[i : i + ID_SIZE])

    def position(self, chunk_id: bytes) -> int:
        """The index of the first id >= ``chunk_id``."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self[mid] < chunk_id:
                lo = mid + 1
            else:
                hi = mid
        return lo


def collect(chunk_ids: Iterable[ChunkId]) -> ChunkIdSet:
    """The distinct ids of ``chunk_ids`` (any order, repeats allowed). Memory: 32 bytes per
    id while they are read (64 while sorted runs are merged) plus one run of objects."""
    if isinstance(chunk_ids, set | frozenset):  # distinct already, and held as objects anyway
        return ChunkIdSet(b"".join(sorted(chunk_ids)))
    runs: list[bytes] = []
    run: list[ChunkId] = []
    for chunk_id in chunk_ids:
        run.append(chunk_id)
        if len(run) >= _RUN:
            runs.append(b"".join(sorted(set(run))))
            run = []
    if run or not runs:
        runs.append(b"".join(sorted(set(run))))
    del run
    if len(runs) == 1:
        return ChunkIdSet(runs[0])
    merged = bytearray()
    last = b""
    for chunk_id in heapq.merge(*(ChunkIdSet(r) for r in runs)):
        if chunk_id != last:
            merged += chunk_id
            last = chunk_id
    return ChunkIdSet(merged)
