"""The ``generation`` object of a repository over a backend (docs/FORMAT.md, "the index as a
cache"): a random token that every writer replaces when it starts (marked *writing*) and
again when it finishes (marked *settled*), so that an index cache can tell whether it is in
step with the objects it was built from.

Layout (33 bytes): ``SNAPGEN1``, one state byte (0 settled, 1 writing), a 16-byte random
token, and the first 8 bytes of the BLAKE3-256 of the 25 bytes before them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from snapstore.errors import CorruptError
from snapstore.hashing import chunk_id as blake3_256

MAGIC = b"SNAPGEN1"
TOKEN_SIZE = 16
SIZE = len(MAGIC) + 1 + TOKEN_SIZE + 8


@dataclass(frozen=True)
class Generation:
    token: bytes
    writing: bool  # a writer started and has not finished (or died)


def new(*, writing: bool) -> Generation:
    return Generation(secrets.token_bytes(TOKEN_SIZE), writing)


def encode(generation: Generation) -> bytes:
    if len(generation.token) != TOKEN_SIZE:
        raise ValueError("a generation token is 16 bytes")
    body = MAGIC + bytes([generation.writing]) + generation.token
    return body + blake3_256(body)[:8]


def decode(data: bytes, where: str) -> Generation:
    body, check = data[:-8], data[-8:]
    if len(data) != SIZE or not body.startswith(MAGIC):
        raise CorruptError(where, "not a generation object")
    if blake3_256(body)[:8] != check:
        raise CorruptError(where, "checksum mismatch")
    state = body[len(MAGIC)]
    if state > 1:
        raise CorruptError(where, f"unknown state {state}")
    return Generation(bytes(body[len(MAGIC) + 1 :]), state == 1)
