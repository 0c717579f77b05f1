"""BLAKE3-256: the one hash of snapstore (the only blake3 importer)."""

from __future__ import annotations

import blake3

from snapstore.model import Buffer, ChunkId

DIGEST_SIZE = 32
_ZERO_BLOCK = bytes(1 << 20)


def chunk_id(data: Buffer) -> ChunkId:
    """The id of a chunk: BLAKE3-256 of its plaintext."""
    return ChunkId(blake3.blake3(data).digest())


class StreamHasher:
    """Incremental BLAKE3-256 of a byte stream, with cheap runs of zeros. Single-threaded:
    its callers keep every core busy already (an idle multi-threaded hasher spins)."""

    def __init__(self) -> None:
        self._h = blake3.blake3()

    def update(self, data: Buffer) -> None:
        self._h.update(data)

    def update_zeros(self, length: int) -> None:
        while length > 0:
            n = min(length, len(_ZERO_BLOCK))
            self._h.update(memoryview(_ZERO_BLOCK)[:n])
            length -= n

    def digest(self) -> bytes:
        return bytes(self._h.digest())
