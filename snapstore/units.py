"""Human units for sizes and durations (pure)."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from snapstore.errors import UsageError

# A number, then nothing, B, or a prefix with an optional B or iB (K, KB, KiB): not "iB" alone.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_DURATION = re.compile(r"(\d+)\s*([smhdwy])", re.IGNORECASE)
_DURATION_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}


def parse_size(text: str) -> int:
    """``500M``, ``20G``, ``1.5T``, ``4096`` -> bytes. Suffixes are binary (K = 1024); a
    fraction needs a unit (``1.5K`` is 1536 bytes; a fraction of a byte is rounded down), and
    a number of bytes is whole (``1.5`` is refused)."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"{text!r} is not a size", hint="write it like 500M, 20G or 1.5T")
    number, prefix = m.groups()
    if prefix is None and "." in number:
        raise UsageError(f"{text!r} is not a whole number of bytes", hint="give a unit, like 1.5K or 1.5M")
    return int(Fraction(number) * 1024 ** _POWERS[(prefix or "").lower()])


def format_size(n: int | float) -> str:
    """Bytes as a short human string: ``0 B``, ``512 B``, ``1.5 KiB``, ``20.0 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``2w3d``, ``1y`` -> timedelta (a year is 365 days)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", text):
        raise UsageError(f"{text!r} is not a duration", hint="write it like 7d, 12h or 2w3d")
    total = timedelta()
    for number, unit in parts:
        total += int(number) * _DURATION_UNITS[unit.lower()]
    return total
