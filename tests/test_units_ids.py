"""Human units (sizes, durations) and resolving user-given snapshot ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore import ids
from snapstore.errors import AmbiguousIdError, UnknownSnapshotError, UsageError
from snapstore.model import SnapshotId, SnapshotInfo
from snapstore.units import format_size, parse_duration, parse_size

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

# sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1K", KiB),
        ("1k", KiB),
        ("1KiB", KiB),
        ("1KB", KiB),
        ("1kb", KiB),
        ("500M", 500 * MiB),
        ("20G", 20 * GiB),
        ("1.5T", int(1.5 * TiB)),
        ("1.5K", 1536),
        ("2P", 2 << 50),
        ("1E", 1 << 60),
        (" 64 M ", 64 * MiB),
        ("10B", 10),
        ("0.5K", 512),
        ("99999999999999999999T", 99999999999999999999 << 40),  # exact, not a float's guess
        ("0.0001K", 0),  # a fraction of a byte is rounded down
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "M",
        "abc",
        "-1",
        "1X",
        "1.5.5G",
        "1 2",
        "1MM",
        "ten",
        "1e3",
        "0x10",
        "1.5",
        "1.5B",
        "5ib",
        "5iB",
        "iB",
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_size(text)
    assert info.value.exit_code == 2
    assert info.value.hint


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB, "1.0 MiB"),
        (20 * GiB, "20.0 GiB"),
        (int(1.5 * TiB), "1.5 TiB"),
        (1 << 50, "1.0 PiB"),
        (1 << 60, "1024.0 PiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@given(st.integers(0, 1 << 60))
def test_format_then_parse_is_close(n: int) -> None:
    text = format_size(n).replace(" ", "").replace("iB", "").replace("B", "")
    back = parse_size(text)
    assert abs(back - n) <= max(1, n * 0.051)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("2w3d", timedelta(weeks=2, days=3)),
        ("1y", timedelta(days=365)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1D", timedelta(days=1)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("0d", timedelta()),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "d7", "7d3", "-7d", "1.5d", "7 days", "7dd"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


# ids --------------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def snap(hex_id: str, name: str = "vm.img", minutes: int = 0) -> SnapshotInfo:
    return SnapshotInfo(
        id=SnapshotId(bytes.fromhex(hex_id)),
        name=name,
        created=T0 + timedelta(minutes=minutes),
        message="",
        size=0,
        entries=1,
        chunk_refs=0,
    )


A = snap("abcd01" + "0" * 58, minutes=0)
B = snap("abcd02" + "1" * 58, minutes=1)
C = snap("1234ff" + "2" * 58, "other.img", minutes=2)
D = snap("9999aa" + "3" * 58, minutes=3)
ALL = [A, B, C, D]


def test_resolve_full_id_and_unique_prefixes() -> None:
    for s in ALL:
        assert ids.resolve(s.hex, ALL) == s
        assert ids.resolve(s.hex.upper(), ALL) == s
        assert ids.resolve(f"  {s.hex[:12]} ", ALL) == s
    assert ids.resolve("1234", ALL) == C
    assert ids.resolve("abcd01", ALL) == A
    assert ids.resolve("ABCD02", ALL) == B


@pytest.mark.parametrize("ref", ["", "a", "abc", "123"])
def test_resolve_too_short(ref: str) -> None:
    with pytest.raises(UsageError) as info:
        ids.resolve(ref, ALL)
    assert not isinstance(info.value, AmbiguousIdError)
    assert info.value.exit_code == 2
    assert "4" in (info.value.hint or "")


@pytest.mark.parametrize("ref", ["xyzw", "abcg", "12 34", "abcd-", "lates", "latest!"])
def test_resolve_not_hex(ref: str) -> None:
    with pytest.raises(UsageError) as info:
        ids.resolve(ref, ALL)
    assert info.value.exit_code == 2


def test_resolve_ambiguous() -> None:
    with pytest.raises(AmbiguousIdError) as info:
        ids.resolve("abcd", ALL)
    err = info.value
    assert err.exit_code == 2
    assert err.candidates == sorted([A.hex, B.hex])
    assert A.hex[:12] in err.message and B.hex[:12] in err.message
    assert err.hint


@pytest.mark.parametrize("ref", ["abce", "0000", "abcd03", "f" * 64, "a" * 65])
def test_resolve_unknown(ref: str) -> None:
    with pytest.raises(UnknownSnapshotError) as info:
        ids.resolve(ref, ALL)
    assert info.value.exit_code == 3


def test_resolve_latest() -> None:
    assert ids.resolve("latest", ALL) == D
    assert ids.resolve("LATEST", ALL) == D
    assert ids.resolve("latest", ALL, name="vm.img") == D
    assert ids.resolve("latest", ALL, name="other.img") == C
    assert ids.resolve("latest", [A, B], name="vm.img") == B
    # The newest by creation time, not by list order.
    assert ids.resolve("latest", [D, C, B, A]) == D


def test_resolve_latest_without_snapshots() -> None:
    with pytest.raises(UnknownSnapshotError):
        ids.resolve("latest", [])
    with pytest.raises(UnknownSnapshotError) as info:
        ids.resolve("latest", ALL, name="nope.img")
    assert "nope.img" in info.value.message


def test_resolve_latest_ties_break_on_id() -> None:
    x = snap("00" * 32)
    y = snap("ff" * 32)
    assert ids.resolve("latest", [y, x]) == y
    assert ids.resolve("latest", [x, y]) == y


def test_resolve_with_name_filters_prefixes() -> None:
    with pytest.raises(UnknownSnapshotError):
        ids.resolve("abcd", ALL, name="other.img")
    with pytest.raises(UnknownSnapshotError):
        ids.resolve("1234", ALL, name="vm.img")
    assert ids.resolve("1234", ALL, name="other.img") == C


def test_short() -> None:
    assert ids.short(A.id) == A.hex[:12] == "abcd01000000"
