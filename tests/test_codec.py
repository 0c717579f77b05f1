"""Chunk compression: round trips, raw storage of incompressible data, damaged payloads."""

from __future__ import annotations

import random
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import codec
from snapstore.codec import CODEC_NONE, CODEC_ZSTD, decode, encode
from snapstore.errors import CorruptError, IntegrityError


def text(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(2, 8)) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


@pytest.mark.parametrize("n", [1, 100, 4096, 65_536, 300_000, 2 << 20])
def test_compressible_round_trip(n: int) -> None:
    data = text(n) if n > 100 else b"a" * n
    codec_id, payload = encode(data, 3)
    if n >= 100:
        assert codec_id == CODEC_ZSTD
        assert len(payload) < len(data)
    assert decode(codec_id, payload, len(data)) == data


@pytest.mark.parametrize("n", [1, 1000, 65_536, 256 * 1024 - 1, 256 * 1024, 4 << 20])
def test_incompressible_is_stored_raw(n: int) -> None:
    data = random.Random(n).randbytes(n)
    codec_id, payload = encode(data, 3)
    assert codec_id == CODEC_NONE
    assert payload == data
    assert decode(codec_id, payload, n) == data


def test_empty_chunk() -> None:
    assert encode(b"", 3) == (CODEC_NONE, b"")
    assert decode(CODEC_NONE, b"", 0) == b""


def test_small_saving_is_stored_raw() -> None:
    """Compression that saves less than MIN_SAVING is not worth a decompression."""
    rng = random.Random(5)
    data = rng.randbytes(60_000) + bytes(1000)  # saves ~1.6%
    codec_id, payload = encode(data, 3)
    assert codec_id == CODEC_NONE and payload == data


def test_probe_stores_random_large_chunks_raw_without_compressing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(9).randbytes(1 << 20)
    assert codec.incompressible(data)
    assert not codec.incompressible(text(1 << 20))
    calls: list[int] = []
    real = codec._compressor

    def spy(level: int) -> zstandard.ZstdCompressor:
        calls.append(level)
        return real(level)

    monkeypatch.setattr(codec, "_compressor", spy)
    assert encode(data, 19) == (CODEC_NONE, data)
    assert calls == [1]  # only the probe compressed anything, at level 1


@settings(max_examples=50)
@given(data=st.binary(max_size=5000), level=st.integers(1, 19))
def test_round_trip_property(data: bytes, level: int) -> None:
    codec_id, payload = encode(data, level)
    assert codec_id in (CODEC_NONE, CODEC_ZSTD)
    assert len(payload) <= len(data)
    assert decode(codec_id, payload, len(data)) == data


@pytest.mark.parametrize(
    "payload",
    [b"garbage", b"", b"\x28\xb5\x2f\xfd", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, bytes(64)],
)
def test_decode_garbage_is_corrupt(payload: bytes) -> None:
    with pytest.raises(CorruptError):
        decode(CODEC_ZSTD, payload, 1000)


def test_decode_truncated_payload_is_corrupt() -> None:
    data = text(50_000)
    _, payload = encode(data, 3)
    for cut in (1, 10, len(payload) // 2, len(payload) - 1):
        with pytest.raises(CorruptError):
            decode(CODEC_ZSTD, payload[:cut], len(data))


def test_decode_wrong_sizes_are_corrupt() -> None:
    data = text(50_000)
    _, payload = encode(data, 3)
    with pytest.raises(CorruptError):
        decode(CODEC_ZSTD, payload, len(data) + 1)
    with pytest.raises(CorruptError):
        decode(CODEC_ZSTD, payload, 10)
    with pytest.raises(CorruptError):
        decode(CODEC_NONE, b"abc", 4)
    with pytest.raises(CorruptError):
        decode(7, b"abc", 3)


def test_decode_frame_declaring_a_huge_size_is_corrupt_without_allocating_it() -> None:
    """A damaged frame header must not make decode allocate what it claims (MemoryError)."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0b11100000]) + struct.pack("<Q", 1 << 60)
    with pytest.raises(CorruptError):
        decode(CODEC_ZSTD, header + b"\x01\x00\x00", 1000)
    data = text(50_000)
    _, payload = encode(data, 3)
    assert zstandard.frame_content_size(payload) == len(data)
    with pytest.raises(CorruptError):
        decode(CODEC_ZSTD, payload, 1 << 20)  # the frame says 50_000: mismatch, no 1 MiB decode


def test_every_damaged_compressed_payload_is_an_integrity_error() -> None:
    """A damaged chunk payload is data that does not match its hash (exit 5), whether or
    not the damage also stops zstd from decoding it; it still is a CorruptError for callers
    that catch those."""
    data = text(20_000, seed=3)
    codec_id, payload = encode(data, 3)
    assert codec_id == CODEC_ZSTD
    undecodable = 0
    for i in range(0, len(payload), 7):
        damaged = bytearray(payload)
        damaged[i] ^= 0x5A
        try:
            out = decode(codec_id, bytes(damaged), len(data))
        except CorruptError as exc:
            undecodable += 1
            assert isinstance(exc, IntegrityError)
            assert exc.exit_code == 5
        else:
            assert len(out) == len(data)  # decodes to other bytes: the hash check catches it
    assert undecodable > 0


def half_random(n: int, seed: int = 3) -> bytes:
    """Data whose samples shrink by well under half (like executables): text and random bytes
    interleaved in 1 KiB pieces."""
    rng = random.Random(seed)
    return b"".join(text(1024, seed + i) if i % 2 else rng.randbytes(1024) for i in range(n // 1024))


@pytest.mark.parametrize("level", [2, 3])
def test_poorly_compressing_chunk_is_compressed_at_level_1_at_fast_levels(level: int) -> None:
    data = half_random(1 << 20)
    assert codec.FAST_ABOVE < codec.sample_ratio(data) < 1 - codec.PROBE_SAVING
    codec_id, payload = encode(data, level)
    assert codec_id == CODEC_ZSTD
    assert payload == zstandard.ZstdCompressor(level=1, write_content_size=True).compress(data)
    assert decode(codec_id, payload, len(data)) == data


def test_well_compressing_and_small_chunks_keep_the_level() -> None:
    assert codec.sample_ratio(text(1 << 20)) < codec.FAST_ABOVE
    for data in (text(1 << 20), half_random(64 * 1024)):  # text; too small to be probed
        codec_id, payload = encode(data, 3)
        assert codec_id == CODEC_ZSTD
        assert payload == zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)


def test_a_high_level_is_kept_for_every_compressible_chunk() -> None:
    data = half_random(1 << 20)
    codec_id, payload = encode(data, 19)
    assert codec_id == CODEC_ZSTD
    assert payload == zstandard.ZstdCompressor(level=19, write_content_size=True).compress(data)
    assert codec.chunk_level(19, 0.9) == 19
    assert codec.chunk_level(3, 0.9) == 1 and codec.chunk_level(3, 0.3) == 3
