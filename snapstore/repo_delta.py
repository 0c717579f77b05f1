"""Delta records for the repository (docs/FORMAT.md, "delta records"): a delta's plaintext
read with its base (itself read and verified, and kept while neighbouring reads need it),
and the choice, at commit, of storing a changed chunk as a delta against the keyframe of the
chunk that stood at its place in the previous snapshot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from snapstore import codec, deltacodec
from snapstore.errors import CorruptError, IntegrityError
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import Buffer, ChunkId, ChunkLocation

BASES_KEPT = 8  # verified base plaintexts kept per repository (at most 8 x 4 MiB at the default sizes)


class BaseCache:
    """The last few bases read, verified (safe from several threads). Deltas of one region of
    a disk, read by checkout or NBD one after another, often share a keyframe."""

    def __init__(self, limit: int = BASES_KEPT) -> None:
        self._limit = limit
        self._kept: OrderedDict[ChunkId, Buffer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, base_id: ChunkId, load: Callable[[ChunkId], Buffer]) -> Buffer:
        with self._lock:
            data = self._kept.get(base_id)
            if data is not None:
                self._kept.move_to_end(base_id)
                return data
        data = load(base_id)  # (outside the lock: two threads may both read it once)
        with self._lock:
            self._kept[base_id] = data
            while len(self._kept) > self._limit:
                self._kept.popitem(last=False)
        return data


def checked(chunk_id: ChunkId, data: Buffer) -> Buffer:
    actual = hash_chunk(data)
    if actual != chunk_id:
        raise IntegrityError(f"chunk {chunk_id.hex()[:16]}", chunk_id.hex(), actual.hex())
    return data


def decode_delta(chunk_id: ChunkId, loc: ChunkLocation, payload: Buffer, base: Buffer) -> Buffer:
    """A delta's plaintext from its payload and its base's plaintext (verified by the
    caller), checked against its id."""
    if loc.base is None or deltacodec.base_of(payload) != loc.base:
        raise CorruptError(f"chunk {chunk_id.hex()[:16]}", "its record names another base than the index")
    return checked(chunk_id, deltacodec.decode(payload, base, loc.raw_size))


def read_base(
    base_id: ChunkId,
    locate: Callable[[ChunkId], ChunkLocation | None],
    read_full: Callable[[ChunkId, ChunkLocation], Buffer],
) -> Buffer:
    """A base's plaintext, verified: it must be indexed and stored full (the one-level rule)."""
    loc = locate(base_id)
    if loc is None:
        raise CorruptError(f"base chunk {base_id.hex()[:16]}", "not in the index")
    if loc.codec == codec.CODEC_DELTA:
        raise CorruptError(f"base chunk {base_id.hex()[:16]}", "is itself a delta")
    return read_full(base_id, loc)


def keyframe(prev: ChunkId, locate: Callable[[ChunkId], ChunkLocation | None]) -> ChunkId | None:
    """The chunk a new chunk at ``prev``'s place is tried as a delta against: ``prev`` if it
    is stored full, else its base; None if it is not indexed."""
    loc = locate(prev)
    if loc is None:
        return None
    if loc.base is None:
        return prev
    base = locate(loc.base)
    return loc.base if base is not None and base.base is None else None


def encode_changed(data: Buffer, level: int, base_id: ChunkId, base: Buffer) -> tuple[int, Buffer]:
    """``(codec, payload)`` for a changed chunk: a delta against ``base`` when that pays
    (deltacodec.KEEP_BELOW), else as :func:`codec.encode` stores it. What storing it full
    would take is estimated from compressed samples for a large chunk (the full compression
    is then skipped when the delta wins by far), and computed for a small one."""
    delta = deltacodec.encode(data, base_id, base)
    if len(data) >= codec.PROBE_FROM:
        ratio = min(1.0, codec.sample_ratio(data))
        if deltacodec.pays(len(delta), len(data) * ratio):
            return codec.CODEC_DELTA, delta
    codec_id, payload = codec.encode(data, level)
    if deltacodec.pays(len(delta), len(payload)):
        return codec.CODEC_DELTA, delta
    return codec_id, payload


class PayloadDecoder:
    """Any stored payload's plaintext, checked against its id: a delta's with its base read
    (verified) through ``locate`` and ``read_record``, and kept a while (verify, repair)."""

    def __init__(
        self,
        locate: Callable[[ChunkId], ChunkLocation | None],
        read_record: Callable[[ChunkLocation, ChunkId], Buffer],
    ) -> None:
        self._locate = locate
        self._read_record = read_record
        self._bases = BaseCache()

    def _full(self, chunk_id: ChunkId, loc: ChunkLocation) -> Buffer:
        return checked(chunk_id, codec.decode(loc.codec, self._read_record(loc, chunk_id), loc.raw_size))

    def _base(self, base_id: ChunkId) -> Buffer:
        return read_base(base_id, self._locate, self._full)

    def __call__(self, chunk_id: ChunkId, loc: ChunkLocation, payload: Buffer) -> Buffer:
        if loc.codec != codec.CODEC_DELTA:
            return checked(chunk_id, codec.decode(loc.codec, payload, loc.raw_size))
        if loc.base is None:
            raise CorruptError(f"chunk {chunk_id.hex()[:16]}", "a delta without its base")
        return decode_delta(chunk_id, loc, payload, self._bases.get(loc.base, self._base))
