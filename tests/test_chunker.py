"""Chunker: golden cut points, streaming equivalence, fixed-size chunking, chunker specs.

The golden values pin where FastCDC cuts deterministic data. A cut point that moves (a
fastcdc upgrade, a changed parameter mapping) makes every existing repository stop
deduplicating against new commits, so such a change must fail here, loudly.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import chunker
from snapstore.chunker import Splitter, cut, parse_spec, split, validate
from snapstore.errors import UsageError
from snapstore.model import ChunkerParams
from tests.conftest import SMALL_CHUNKER

DEFAULT = ChunkerParams()
MiB = 1 << 20


def random_data() -> bytes:
    return random.Random(1234).randbytes(3 * MiB)


def compressible_data() -> bytes:
    """Text-like: words from a small random vocabulary (compresses ~2.5x)."""
    rng = random.Random(4321)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10)))
        for _ in range(500)
    ]
    out = bytearray()
    while len(out) < 3 * MiB:
        out += rng.choice(words) + b" "
    return bytes(out[: 3 * MiB])


def big_random_data() -> bytes:
    return random.Random(99).randbytes(24 * MiB)


def lengths_digest(lengths: list[int]) -> str:
    return blake3.blake3(b"".join(struct.pack("<I", n) for n in lengths)).hexdigest()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


GOLDEN_RANDOM_DEFAULT = [2514341, 631387]
GOLDEN_RANDOM_DEFAULT_DIGEST = "4cc66c0c5205c93c018ce198d55d9caafe425fd4d666befb9bacf3b7caa2f0e5"
GOLDEN_RANDOM_SMALL = _ints(
    """
    10258 10624 26216 6423 6957 13510 22562 12651 13617 17438 17457 15294 21069 16078 8497 7113
    28724 14187 10909 13540 45274 28384 11213 17027 11826 21937 12539 18604 14372 21989 38284 65536
    14000 16069 15268 11079 10584 12342 17059 35704 27850 53065 15568 7112 15766 21143 13645 11915
    12057 21051 65536 38553 52782 7678 13720 11560 29856 10335 42275 17772 13956 11149 5164 10833
    12758 18261 11973 10805 10170 10519 18474 29731 56515 15115 16114 6825 8052 5637 19916 16007
    36541 42749 17179 12402 15024 5409 10692 15401 11851 15702 19920 15315 8068 10570 8573 20656
    6632 15706 20388 17704 17099 15741 14995 8304 12234 9974 13410 10489 14904 11639 12977 14147
    27410 21762 5980 10576 9147 8014 24315 5537 6755 13081 20110 11516 18948 19341 12975 13246
    14004 15454 5721 8457 17604 36161 11160 13460 14275 11980 7538 9634 10779 10773 37865 31462
    17479 11901 11970 12848 12191 15231 13097 10429 27222 25261 16775 18141 12278 33931 17516 23282
    6473 16536 16031 22622 14999 11111 14459 18558 21986 18048 5145 50891 15441 15909 12768 19119
    10684 14912 12825 13035 20622 10492 6001 647
    """
)
GOLDEN_RANDOM_SMALL_DIGEST = "4f94cc80594aeab7da15eab44b47465215fea55cf6efb2c88c8ad29446dc4809"
GOLDEN_TEXT_DEFAULT = [1079127, 1029134, 796222, 241245]
GOLDEN_TEXT_DEFAULT_DIGEST = "b629b95b915be4771a49d60fd676aed584d98ea37908810c1d000e6720e0cd03"
GOLDEN_TEXT_SMALL = _ints(
    """
    19781 15980 6942 10956 10813 17504 15302 25615 11453 21354 11018 12813 59165 18535 13708 16433
    23474 18777 19964 13250 8469 14323 26447 15622 28549 20285 10991 18216 20304 40224 10355 14454
    35319 13573 15426 31748 17925 5877 30354 7900 27234 18773 12624 9402 7457 15221 33322 21194
    20474 4182 11479 19562 24926 23245 13364 16896 12077 19617 5769 13111 10511 13935 5905 11423
    5308 10601 22913 11124 5379 22725 16656 17769 19303 10507 19810 15821 21428 10725 13278 5509
    16506 16599 11106 10333 35343 8679 25276 7619 7024 29617 13745 26431 4834 11967 10788 23148
    15541 10495 6319 19539 51024 14329 11238 8643 12890 4109 19835 13175 17607 42837 14136 38728
    6752 10718 10928 24435 32217 6107 18012 32626 22505 24984 9760 5506 11061 21103 12271 19020
    14816 17211 27357 10301 11943 15291 21145 20050 4885 19449 18014 7824 10833 13381 25761 20150
    16688 10397 18375 8331 13927 25802 13817 7163 10615 7726 32814 26929 12632 24076 9891 15168
    16446 31784 14553 26855 40218 26619 10629 14371 4210 6135 4782 15409 20602 7142 10805 17494
    11720 14301 17289 9079 13269 7379 11296 12679 24919 13979 16825 16029 10402 8524
    """
)
GOLDEN_TEXT_SMALL_DIGEST = "77fbec5c787051f74e89869f6f5a627bb3e2042a2a4423636f9f3f924805789b"
GOLDEN_BIG_DEFAULT = _ints(
    """
    748779 825280 1266109 2089654 1143378 2195768 1631505 1635351 1942610 674733 475079 774740
    1486894 1147355 1080798 873970 927301 827571 1139056 1099133 1180760
    """
)
GOLDEN_BIG_DEFAULT_DIGEST = "9c1b5732da22947f1e1ffb9f0b8fdbdd2875f87fe74302954a9269d99dd7660a"

GOLDEN = [
    pytest.param(
        random_data, DEFAULT, GOLDEN_RANDOM_DEFAULT, GOLDEN_RANDOM_DEFAULT_DIGEST, id="random-default"
    ),
    pytest.param(
        random_data, SMALL_CHUNKER, GOLDEN_RANDOM_SMALL, GOLDEN_RANDOM_SMALL_DIGEST, id="random-small"
    ),
    pytest.param(
        compressible_data, DEFAULT, GOLDEN_TEXT_DEFAULT, GOLDEN_TEXT_DEFAULT_DIGEST, id="text-default"
    ),
    pytest.param(
        compressible_data, SMALL_CHUNKER, GOLDEN_TEXT_SMALL, GOLDEN_TEXT_SMALL_DIGEST, id="text-small"
    ),
    pytest.param(big_random_data, DEFAULT, GOLDEN_BIG_DEFAULT, GOLDEN_BIG_DEFAULT_DIGEST, id="big-default"),
]


def test_golden_lists_are_consistent_with_their_digests() -> None:
    """The recorded lists and digests were taken together (guards against a bad edit)."""
    for p in GOLDEN:
        _, _, lengths, digest = p.values
        assert isinstance(lengths, list) and isinstance(digest, str)
        assert lengths_digest(lengths) == digest


@pytest.mark.parametrize(("make", "params", "lengths", "digest"), GOLDEN)
def test_golden_cut_points(
    make: Callable[[], bytes], params: ChunkerParams, lengths: list[int], digest: str
) -> None:
    data = make()
    got = cut(params, data, True)
    assert lengths_digest(got) == digest
    assert got == lengths
    assert sum(got) == len(data)


@pytest.mark.parametrize(("make", "params", "lengths", "digest"), GOLDEN)
def test_golden_split_and_splitter_agree(
    make: Callable[[], bytes], params: ChunkerParams, lengths: list[int], digest: str
) -> None:
    data = make()
    chunks = split(params, data)
    assert [len(c) for c in chunks] == lengths
    assert b"".join(chunks) == data
    # Fed in 1 MiB blocks, as a reader would.
    s = Splitter(params)
    streamed = [bytes(c) for i in range(0, len(data), MiB) for c in s.feed(data[i : i + MiB])]
    streamed += [bytes(c) for c in s.finish()]
    assert streamed == chunks


def test_chunk_sizes_respect_min_and_max() -> None:
    data = random_data()
    for params in (DEFAULT, SMALL_CHUNKER):
        lengths = cut(params, memoryview(data), True)
        assert all(params.min_size <= n <= params.max_size for n in lengths[:-1])
        assert 0 < lengths[-1] <= params.max_size


def test_cut_points_are_content_defined() -> None:
    """Inserting bytes near the start moves only the first cut points; the rest realign."""
    data = random_data()
    before = split(SMALL_CHUNKER, data)
    after = split(SMALL_CHUNKER, b"inserted!" * 7 + data)
    shared = set(before) & set(after)
    assert len(shared) >= len(before) - 3


def test_non_final_cut_holds_back_uncertain_chunks() -> None:
    data = random_data()
    all_cuts = cut(SMALL_CHUNKER, data, True)
    partial = cut(SMALL_CHUNKER, data, False)
    assert partial == all_cuts[: len(partial)]
    # Every chunk taken had its whole search window (max_size bytes) inside the buffer.
    assert sum(partial[:-1]) + SMALL_CHUNKER.max_size <= len(data)
    assert len(data) - sum(partial) <= 2 * SMALL_CHUNKER.max_size
    # Less than one window of data: nothing is certain yet.
    assert cut(SMALL_CHUNKER, data[: SMALL_CHUNKER.max_size - 1], False) == []
    assert cut(SMALL_CHUNKER, b"", False) == []
    assert cut(SMALL_CHUNKER, b"", True) == []


def test_iter_cuts_is_lazy_and_matches_cut() -> None:
    data = random_data()
    it = chunker.iter_cuts(SMALL_CHUNKER, data, True)
    first = [next(it) for _ in range(5)]
    assert first == cut(SMALL_CHUNKER, data, True)[:5]


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 400_000),
    zeros=st.booleans(),
    fixed=st.booleans(),
)
def test_cut_at_tells_exactly_where_the_chunker_cuts(seed: int, size: int, zeros: bool, fixed: bool) -> None:
    """cut_at answers from the chunk's bytes and the byte after them (or the end of the data)
    what the chunker decides from its whole window: True at each true cut, False a byte before
    or after it, None without the byte that decides."""
    params = ChunkerParams("fixed", 20_000, 20_000, 20_000) if fixed else SMALL_CHUNKER
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    if zeros:  # long zero runs: cuts at max_size or where the scanner steps over zeros
        at = rng.randrange(size)
        n = rng.randrange(size - at + 1)
        data[at : at + n] = bytes(n)
    lengths = cut(params, memoryview(data), True)
    start = 0
    for length in lengths:
        end = start + length
        final = end == size
        window = memoryview(data)[start : end + 1]
        assert chunker.cut_at(params, window, length, final) is True
        if length > 1:
            assert chunker.cut_at(params, window, length - 1, False) is False
        if not final:
            longer = memoryview(data)[start : end + 2]
            assert chunker.cut_at(params, longer, length + 1, end + 1 == size) is False
            assert chunker.cut_at(params, memoryview(data)[start:end], length, False) is None
        start = end


def test_small_inputs_are_one_chunk() -> None:
    for n in (1, 100, SMALL_CHUNKER.min_size):
        data = random.Random(n).randbytes(n)
        assert split(SMALL_CHUNKER, data) == [data]
        assert split(DEFAULT, data) == [data]
    assert split(SMALL_CHUNKER, b"") == []


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(0, 600_000),
    blocks=st.lists(st.integers(1, 200_000), min_size=1, max_size=40),
    zeros=st.booleans(),
)
def test_streaming_equals_one_call(seed: int, size: int, blocks: list[int], zeros: bool) -> None:
    """Feeding data through Splitter in arbitrary block sizes gives the one-call chunks."""
    rng = random.Random(seed)
    buf = bytearray(rng.randbytes(size))
    if zeros and size:
        at = rng.randrange(size)
        n = min(rng.randrange(1, 150_000), size - at)
        buf[at : at + n] = bytes(n)
    data = bytes(buf)
    expected = split(SMALL_CHUNKER, data)
    s = Splitter(SMALL_CHUNKER)
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        n = blocks[i % len(blocks)]
        got += [bytes(c) for c in s.feed(data[pos : pos + n])]
        pos += n
        i += 1
    got += [bytes(c) for c in s.finish()]
    assert got == expected
    assert b"".join(got) == data


_BIG = big_random_data()
_BIG_CHUNKS = split(DEFAULT, _BIG)


@settings(max_examples=15)
@given(blocks=st.lists(st.integers(64 * 1024, 6 * MiB), min_size=1, max_size=10))
def test_streaming_equals_one_call_default_params(blocks: list[int]) -> None:
    """The same with the default 256K/1M/4M chunker, whose window is larger than most blocks."""
    s = Splitter(DEFAULT)
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(_BIG):
        n = blocks[i % len(blocks)]
        got += [bytes(c) for c in s.feed(_BIG[pos : pos + n])]
        pos += n
        i += 1
    got += [bytes(c) for c in s.finish()]
    assert [len(c) for c in got] == GOLDEN_BIG_DEFAULT
    assert got == _BIG_CHUNKS


# fixed:SIZE ---------------------------------------------------------------------------------


FIXED = ChunkerParams("fixed", 4096, 4096, 4096, 0)


def test_fixed_chunks_are_all_full_but_the_last() -> None:
    data = random.Random(3).randbytes(10_000)
    assert cut(FIXED, data, True) == [4096, 4096, 1808]
    assert cut(FIXED, data, False) == [4096, 4096]  # the tail waits for more data
    assert cut(FIXED, data[:8192], True) == [4096, 4096]  # exact multiple: no empty tail
    assert cut(FIXED, data[:4095], False) == []
    assert cut(FIXED, b"", True) == []
    assert split(FIXED, data) == [data[:4096], data[4096:8192], data[8192:]]


@settings(max_examples=30)
@given(size=st.integers(0, 100_000), blocks=st.lists(st.integers(1, 20_000), min_size=1, max_size=10))
def test_fixed_streaming(size: int, blocks: list[int]) -> None:
    data = random.Random(size).randbytes(size)
    s = Splitter(FIXED)
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < size:
        n = blocks[i % len(blocks)]
        got += [bytes(c) for c in s.feed(data[pos : pos + n])]
        pos += n
        i += 1
    got += [bytes(c) for c in s.finish()]
    assert got == [data[i : i + 4096] for i in range(0, size, 4096)]


def test_fixed_cut_points_do_not_depend_on_content() -> None:
    a = random.Random(1).randbytes(50_000)
    b = bytes(50_000)
    assert cut(FIXED, a, True) == cut(FIXED, b, True)


# specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fastcdc", ChunkerParams()),
        ("fastcdc:4K:16K:64K", SMALL_CHUNKER),
        ("fastcdc:4096:16384:65536", SMALL_CHUNKER),
        ("fastcdc:256K:1M:4M", ChunkerParams()),
        ("fastcdc:64:256:1024", ChunkerParams("fastcdc", 64, 256, 1024)),
        ("fastcdc:1M:1M:64M", ChunkerParams("fastcdc", MiB, MiB, 64 * MiB)),
        ("fastcdc:4K:16K:64K:0", ChunkerParams("fastcdc", 4096, 16384, 65536, 0)),
        ("fastcdc:256K:1M:4M:1M", ChunkerParams(zero_run=MiB)),
        ("fixed:1M", ChunkerParams("fixed", MiB, MiB, MiB, 0)),
        ("fixed:4K", ChunkerParams("fixed", 4096, 4096, 4096, 0)),
        ("fixed:4096", ChunkerParams("fixed", 4096, 4096, 4096, 0)),
        ("fixed:64M", ChunkerParams("fixed", 64 * MiB, 64 * MiB, 64 * MiB, 0)),
    ],
)
def test_parse_spec_valid(spec: str, expected: ChunkerParams) -> None:
    assert parse_spec(spec) == expected
    assert validate(expected) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "rabin",
        "FASTCDC",
        "fixed",
        "fixed:",
        "fixed:1K",  # below 4 KiB
        "fixed:4095",
        "fixed:65M",  # above 64 MiB
        "fixed:abc",
        "fastcdc:1K:2K",
        "fastcdc:1K:2K:4K:8K:16K",
        "fastcdc:1K:2K:4K:1K",  # a zero run under 4 KiB
        "fastcdc:64K:16K:4K",  # not min <= avg <= max
        "fastcdc:4K:16K:8K",
        "fastcdc:32:256:1024",  # min below 64
        "fastcdc:64:128:1024",  # avg below 256
        "fastcdc:64:256:512",  # max below 1 KiB
        "fastcdc:1M:4M:128M",  # max above 64 MiB
        "fastcdc:x:y:z",
    ],
)
def test_parse_spec_invalid(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_spec(spec)
    assert info.value.exit_code == 2


def test_validate_rejects_unknown_algorithm() -> None:
    with pytest.raises(UsageError):
        validate(ChunkerParams("rabin"))


# -- the C scanner (snapstore/_cdc.c) against the fastcdc package ----------------------------


def test_the_c_scanner_is_built() -> None:
    """setup.py builds it (optional, for machines without a compiler); here it must be in use,
    or commits silently run at the fastcdc package's speed."""
    assert chunker.accelerated(), "snapstore._cdc was not built: reinstall with a C compiler"


def _mixed(seed: int, size: int) -> bytes:
    """Random bytes, zero runs of every length (2 to 200 000 bytes), repeated bytes."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind, length = rng.random(), rng.choice([2, 31, 32, 33, 64, 4095, 70_000, 200_000])
        if kind < 0.4:
            out += bytes(length)
        elif kind < 0.5:
            out += bytes([rng.randrange(1, 256)]) * length
        else:
            out += rng.randbytes(length)
    return bytes(out[:size])


PARAMS = st.sampled_from(
    [
        DEFAULT,
        SMALL_CHUNKER,
        ChunkerParams("fastcdc", 64, 256, 1024),
        ChunkerParams("fastcdc", 1000, 5000, 70_000),
        ChunkerParams("fastcdc", 64, 300, 100_000),
        ChunkerParams("fastcdc", 256 * 1024, 1 << 20, 8 << 20),
    ]
)


@settings(max_examples=60)
@given(params=PARAMS, seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3 * MiB), final=st.booleans())
def test_c_scanner_cuts_where_fastcdc_cuts(params: ChunkerParams, seed: int, size: int, final: bool) -> None:
    data = _mixed(seed, size)
    assert list(chunker.iter_cuts(params, data, final)) == list(
        chunker.iter_cuts(params, data, final, accelerated=False)
    )


@pytest.mark.parametrize("params", [DEFAULT, SMALL_CHUNKER, ChunkerParams("fastcdc", 64, 256, 1024)])
def test_c_scanner_on_long_zero_runs_between_data(params: ChunkerParams) -> None:
    """Zero runs are stepped over once the gear hash sits on a fixed point: the cuts around
    and inside them, and in the data after them, are fastcdc's."""
    rng = random.Random(5)
    data = rng.randbytes(300_000) + bytes(9 * MiB) + rng.randbytes(5000) + bytes(31) + rng.randbytes(MiB)
    for view in (data, memoryview(bytearray(data))[1:]):
        assert list(chunker.iter_cuts(params, view, True)) == list(
            chunker.iter_cuts(params, view, True, accelerated=False)
        )


@settings(max_examples=200)
@given(
    pieces=st.lists(
        st.one_of(
            st.integers(1, 9000).map(bytes),  # zero runs of every length
            st.binary(min_size=1, max_size=64).filter(any),
        ),
        max_size=12,
    ),
    skew=st.integers(0, 7),
    min_zeros=st.sampled_from([8, 16, 100, 4096]),
)
def test_data_runs_cover_every_nonzero_byte(pieces: list[bytes], skew: int, min_zeros: int) -> None:
    """A checkout writes only these runs: every non-zero byte must be in one, and what is
    left out must be zero runs of at least ``min_zeros`` bytes, at any memory alignment."""
    data = b"".join(pieces)
    view = memoryview(bytearray(skew) + data)[skew:]
    runs = chunker.data_runs(view, min_zeros)
    covered = bytearray(len(data))
    previous = 0
    for start, end in runs:
        assert previous <= start < end <= len(data)
        if start > previous:
            assert start - previous >= min_zeros
        covered[start:end] = b"\x01" * (end - start)
        previous = end
    if previous < len(data):
        assert len(data) - previous >= min_zeros
    assert all(covered[i] for i, byte in enumerate(data) if byte), "a non-zero byte is left out"
    assert not any(data[i] for i in range(len(data)) if not covered[i])
