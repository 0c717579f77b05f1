"""Which entries of a committed directory are left out: gitignore-style patterns (pure).

``snap commit DIR --exclude PATTERN --exclude-file FILE``; the meaning is gitignore's, with
the committed directory as the repository's top:

- ``*`` matches any run of characters but ``/``, ``?`` one character but ``/``, ``[a-z]`` and
  ``[!a-z]`` (or ``[^a-z]``) a class; ``\\`` makes the next character literal.
- A pattern with a ``/`` at its start or in its middle is anchored at the committed
  directory (``/build``, ``doc/tmp``); one without matches a name at any depth (``*.tmp``).
- A trailing ``/`` matches directories only (``cache/``).
- ``**`` as a whole component: ``**/x`` is x at any depth, ``a/**`` everything inside a,
  ``a/**/b`` b under a at any depth; any other ``**`` is a ``*``.
- ``!`` negates: the last pattern that matches a path decides. A directory left out is not
  walked, so nothing under it can be taken back in (gitignore's rule, and what makes a
  left-out subtree cost nothing).

Paths are bytes relative to the committed directory, ``/``-separated; a pattern is text
turned into bytes as the file system's names are (``os.fsencode``), so it can match a name
that is not UTF-8.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from snapstore.errors import UsageError

MAX_PATTERN_LENGTH = 4096  # characters


@dataclass(frozen=True)
class Pattern:
    text: str  # as given
    regex: re.Pattern[bytes]  # over a whole relative path
    negated: bool  # '!': takes a path back in
    dir_only: bool  # trailing '/': directories only


@dataclass(frozen=True)
class Excludes:
    """Patterns in the order given; the last that matches a path decides."""

    patterns: tuple[Pattern, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(p.text for p in self.patterns)

    def excluded(self, path: bytes, is_dir: bool) -> bool:
        """Whether the entry at ``path`` (relative, e.g. ``b"a/b.tmp"``) is left out."""
        for pattern in reversed(self.patterns):
            if (is_dir or not pattern.dir_only) and pattern.regex.fullmatch(path):
                return not pattern.negated
        return False


NO_EXCLUDES = Excludes()


def compile_excludes(texts: Iterable[str]) -> Excludes:
    """The patterns of ``--exclude`` options and exclude files, in order."""
    return Excludes(tuple(parse_pattern(t) for t in texts))


def pattern_lines(text: str) -> list[str]:
    """The patterns of an exclude file: one a line; blank lines and lines starting with ``#``
    are skipped (``\\#`` starts a pattern with ``#``), trailing white space that is not
    escaped is dropped."""
    found = []
    for line in text.split("\n"):
        line = _strip_trailing_space(line.removesuffix("\r"))
        if line and not line.startswith("#"):
            found.append(line)
    return found


def parse_pattern(text: str) -> Pattern:
    """One pattern; UsageError if it can match nothing (empty, ``!`` alone, ``/``)."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise UsageError(f"exclude pattern {text[:20]!r}... is longer than {MAX_PATTERN_LENGTH} characters")
    body = text
    negated = body.startswith("!")
    if negated or body.startswith(("\\!", "\\#")):  # '\!', '\#': a literal first character
        body = body[1:]
    dir_only = body.endswith("/")
    body = body.rstrip("/") if dir_only else body
    anchored = "/" in body
    body = body.lstrip("/")
    if not body:
        raise UsageError(f"exclude pattern {text!r} matches nothing", hint="e.g. --exclude '*.tmp'")
    regex = _translate(body.split("/"))
    if not anchored:
        regex = b"(?:.*/)?" + regex
    return Pattern(text, re.compile(regex, re.DOTALL), negated, dir_only)


def _translate(parts: list[str]) -> bytes:
    """The regex of a pattern's components (``**`` handled as gitignore does)."""
    out = b""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "**":
            if i == last:  # 'a/**': everything inside (or, alone, everything)
                out += b".+" if i else b".*"
            else:  # '**/b', 'a/**/b': any number of directories, none included
                out += b"(?:.*/)?"
            continue
        out += _component(part)
        if i != last:
            out += b"/"
    return out


def _component(part: str) -> bytes:
    """The regex of one component: ``*``, ``?``, ``[...]``, ``\\x``, literal bytes."""
    raw = os.fsencode(part)
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b"*":
            while raw[i : i + 1] == b"*":
                i += 1
            out += b"[^/]*"
            continue
        if c == b"?":
            out += b"[^/]"
        elif c == b"\\" and i + 1 < len(raw):
            i += 1
            out += re.escape(raw[i : i + 1])
        elif c == b"[":
            end, cls = _bracket(raw, i)
            if end < 0:
                out += re.escape(c)
            else:
                out += cls
                i = end
        else:
            out += re.escape(c)
        i += 1
    return bytes(out)


def _bracket(raw: bytes, start: int) -> tuple[int, bytes]:
    """A character class starting at ``raw[start] == '['``: the index of its ``]`` and its
    regex; (-1, b"") if it is not closed (then ``[`` is literal)."""
    i = start + 1
    negate = raw[i : i + 1] in (b"!", b"^")
    if negate:
        i += 1
    members = bytearray()
    first = True
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b"]" and not first:
            return i, (b"[^/" if negate else b"[") + bytes(members) + b"]"
        if c == b"\\" and i + 1 < len(raw):
            i += 1
            c = raw[i : i + 1]
        if c == b"-" and members and not first and raw[i + 1 : i + 2] not in (b"]", b""):
            members += b"-"
        else:
            members += b"\\" + c if c in b"\\]^-[" else c
        first = False
        i += 1
    return -1, b""


def _strip_trailing_space(line: str) -> str:
    stripped = line.rstrip(" \t")
    if stripped.endswith("\\") and len(stripped) < len(line):
        return stripped + line[len(stripped)]  # '\ ' keeps one space
    return stripped
