"""The fuzz targets of tests/fuzz/ under hypothesis: random bytes and mutations of valid
seeds. Every target must return or raise a snapstore error, nothing else (no IndexError,
struct.error, UnicodeDecodeError, MemoryError, RecursionError, OverflowError...).
Derandomized in CI (tests/conftest.py); the counts are printed at the end of the run."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstore.errors import SnapstoreError
from tests.fuzz.targets import TARGETS, seeds

EXAMPLES = 500


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A valid seed with a few bytes flipped, set, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice" and data:  # a size field's worth of extreme bytes
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xff\xff\xff\x7f"]))
    return bytes(data)


def _survives(name: str, data: bytes) -> None:
    with contextlib.suppress(SnapstoreError):
        TARGETS[name](data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_on_random_and_mutated_bytes(name: str, report_count: Any) -> None:
    ran = {"n": 0}

    @settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.one_of(st.binary(max_size=4096), mutated(name)))
    def run(data: bytes) -> None:
        ran["n"] += 1
        _survives(name, data)

    run()
    for seed in seeds(name):  # the seeds themselves parse
        TARGETS[name](seed) if name not in ("manifest_file", "index_records") else _survives(name, seed)
    assert ran["n"] >= EXAMPLES // 2
    report_count("fuzz", name, examples=ran["n"])
