"""User-controlled strings (names, messages, host names, paths) made safe for a terminal,
cut to a column's width, and times shown in local time or UTC (pure)."""

from __future__ import annotations

import re
from datetime import datetime

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what follows them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}
ELLIPSIS = "\u2026"


def safe(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\e``, ``\\x07``...): it
    cannot move the cursor, change colours, break a table's line or hide text."""
    return _UNSAFE.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def cut(text: str, width: int) -> str:
    """Safe ``text`` in at most ``width`` characters, ending with an ellipsis when cut."""
    shown = safe(text)
    return shown if len(shown) <= width else shown[: width - 1] + ELLIPSIS


def when(moment: datetime, *, utc: bool) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or in the local time zone."""
    return f"{(moment if utc else moment.astimezone()):%Y-%m-%d %H:%M:%S}"
